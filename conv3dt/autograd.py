"""A small reverse-mode autograd: ``Variable``, a tape of ``Function`` nodes, ``backward()``.

Read it in one sitting:

- A ``Variable`` wraps an array (NumPy, or CuPy on a GPU) plus ``stop_gradient``.
- Every operation is a ``Function`` subclass with ``forward(*arrays)`` and
  ``backward(grad_out, needs) -> one gradient per input``. ``Function.apply`` runs forward
  and, when some input needs a gradient and recording is on, stores the node on the output
  (``out._node``). That chain of nodes *is* the tape.
- ``loss.backward()`` orders the graph topologically, seeds ``d loss/d loss = 1`` and walks
  it in reverse, asking each node only for the input gradients that are needed (inputs with
  ``stop_gradient=True`` are skipped, so data never gets a gradient computed). Gradients
  reaching a leaf (a parameter, or data with ``stop_gradient=False``) are *added* to its
  ``.gradient()``: they accumulate across backward calls until ``clear_gradient()``.
- Binary ops broadcast like NumPy; the gradient of a broadcast operand is summed back to
  its shape (``_unbroadcast``).

Example (d/dx of sum(x*x + 3x) = 2x + 3)::

    >>> import numpy as np
    >>> from conv3dt.autograd import Variable
    >>> x = Variable(np.array([1.0, 2.0]), stop_gradient=False)
    >>> (x * x + 3 * x).sum().backward()
    >>> x.gradient()
    array([5., 7.])
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import (TYPE_CHECKING, Any, Callable, ContextManager, Dict, Iterator, List,
                    Optional, Sequence, Set, Tuple, Union)

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

if TYPE_CHECKING:
    from ._place import CPUPlace, CUDAPlace
    from .regularizer import WeightDecayRegularizer

__all__ = ["Variable", "Tensor", "Parameter", "Function", "no_grad", "is_grad_enabled",
           "set_grad_enabled", "array_module", "unique_name"]


from ._backend import array_module  # numpy, or cupy for arrays on a GPU

# An axis argument of the reductions: None (all), an int, or several.
AxisArg = Union[None, int, Sequence[int]]
# What the arithmetic operators take besides a Variable: numbers and arrays (constants).
Operand = Union["Variable", ArrayLike]


# ---------------------------------------------------------------------------------------
# Recording switch and unique names
# ---------------------------------------------------------------------------------------

# Thread-local, as in PyTorch: a no_grad block in one thread must not silently stop
# recording in another thread that is training.
_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations are being recorded for backward.

    Returns
    -------
    bool
        False inside :class:`no_grad` or ``set_grad_enabled(False)`` (in this thread).
    """
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    """Turn recording on or off inside a ``with`` block (in this thread).

    Parameters
    ----------
    mode : bool
        True records operations for backward, False does not.

    Notes
    -----
    The previous mode comes back on exit, also through an exception.
    """
    previous = is_grad_enabled()
    _state.grad_enabled = bool(mode)
    try:
        yield
    finally:
        _state.grad_enabled = previous


class no_grad:
    """Don't record operations: results get ``stop_gradient=True`` and no graph is kept.

    Usable as ``with no_grad():``, as ``@no_grad`` and as ``@no_grad()`` (on functions and
    methods). Recording is switched per thread, as in PyTorch.

    Parameters
    ----------
    func : callable, optional
        The function to wrap (the ``@no_grad`` form).

    Examples
    --------

        >>> import numpy as np
        >>> from conv3dt.autograd import Variable, no_grad
        >>> w = Variable(np.ones(2), stop_gradient=False)
        >>> with no_grad():
        ...     y = w * 2
        >>> y.stop_gradient
        True
    """

    def __init__(self, func: Optional[Callable[..., Any]] = None) -> None:
        self._func = func
        self._contexts: List[ContextManager[None]] = []
        if func is not None:
            functools.update_wrapper(self, func)

    def __enter__(self) -> no_grad:
        context = set_grad_enabled(False)
        context.__enter__()
        self._contexts.append(context)  # a stack, so one instance may be re-entered
        return self

    def __exit__(self, *exc_info: Any) -> Optional[bool]:
        return self._contexts.pop().__exit__(*exc_info)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._func is None:  # @no_grad() form: called once with the function
            if len(args) == 1 and not kwargs and callable(args[0]):
                return no_grad(args[0])
            raise TypeError("no_grad() used as a decorator takes exactly one function")
        with set_grad_enabled(False):
            return self._func(*args, **kwargs)

    def __get__(self, instance: Any, owner: Any) -> Any:  # so @no_grad also works on methods
        if instance is None or self._func is None:
            return self
        return functools.partial(self.__call__, instance)


# Paddle names things "<prefix>_<n>"; dygraph.guard() swaps in a fresh counter table so
# that names restart in each guard, as they do in Paddle.
_name_counters: Dict[str, int] = {}


def unique_name(prefix: str) -> str:
    """A new name ``prefix_0``, ``prefix_1``, ... (per prefix, in the current name table).

    Parameters
    ----------
    prefix : str
        The name's stem.

    Returns
    -------
    str
    """
    n = _name_counters.get(prefix, 0)
    _name_counters[prefix] = n + 1
    return f"{prefix}_{n}"


@contextlib.contextmanager
def fresh_names() -> Iterator[None]:
    """Use a new, empty name table inside the block; restore the old one after."""
    global _name_counters
    previous, _name_counters = _name_counters, {}
    try:
        yield
    finally:
        _name_counters = previous


# ---------------------------------------------------------------------------------------
# Function: one recorded operation
# ---------------------------------------------------------------------------------------

class Function:
    """Base class of all operations: one node of the tape.

    Subclasses implement ``forward(self, *arrays)`` (arrays in, one array out; keep what
    backward needs with ``self.save(...)``) and ``backward(self, grad, needs)``, returning
    one gradient per input, ``None`` where ``needs[i]`` is False. Attributes passed to
    :meth:`apply` as keywords are set on the node before forward runs.

    Parameters
    ----------
    inputs : tuple of Variable
        The operation's inputs.
    attrs : dict
        Attributes set on the node.

    Examples
    --------
    >>> import numpy as np
    >>> from conv3dt.autograd import Function, Variable
    >>> class Square(Function):
    ...     def forward(self, a):
    ...         self.save(a)
    ...         return a * a
    ...     def backward(self, g, needs):
    ...         (a,) = self.saved
    ...         return (2 * a * g,)
    >>> x = Variable(np.array([3.0]), stop_gradient=False)
    >>> Square.apply(x).backward(); x.gradient()
    array([6.])
    """

    def __init__(self, inputs: Tuple[Variable, ...], attrs: Dict[str, Any]) -> None:
        self.inputs = inputs
        self.saved: Any = ()  # the arrays backward needs (None once released)
        self.freed = False
        for key, value in attrs.items():
            setattr(self, key, value)

    def save(self, *arrays: Any) -> None:
        """Keep ``arrays`` for backward (as ``self.saved``; freed after backward unless
        ``retain_graph=True``)."""
        self.saved = arrays

    def release(self) -> None:
        # Free saved arrays as soon as they are used, unless retain_graph asks otherwise;
        # activations of big volumes are the memory that matters.
        self.saved = None
        self.freed = True

    @classmethod
    def apply(cls, *inputs: Variable, **attrs: Any) -> Variable:
        """Run the operation on ``inputs`` and record it when some input needs a gradient.

        Parameters
        ----------
        *inputs : Variable
            The inputs; ``forward`` receives their arrays.
        **attrs
            Attributes of the node, set before ``forward`` runs.

        Returns
        -------
        Variable
            The result, with ``stop_gradient=False`` when the node was recorded.
        """
        node = cls(inputs, attrs)
        out = node.forward(*(v._data for v in inputs))
        record = is_grad_enabled() and any(not v.stop_gradient for v in inputs)
        result = Variable(out, stop_gradient=not record)
        if record:
            result._node = node
        return result

    def forward(self, *arrays: Any, **kwargs: Any) -> Any:
        """The result array of the input arrays (subclasses implement it)."""
        raise NotImplementedError

    def backward(self, *args: Any, **kwargs: Any) -> Tuple[Any, ...]:
        """``backward(grad, needs)``: one gradient per input, None where ``needs[i]`` is
        False (subclasses implement it)."""
        raise NotImplementedError


def _unbroadcast(grad: Any, shape: Sequence[int]) -> Any:
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched, back to ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and grad.shape[lead + i] != 1)
    return grad.sum(axis=axes).reshape(shape)


class Add(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        return tuple(_unbroadcast(g, s) if n else None for s, n in zip(self.shapes, needs))


class Sub(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        return (_unbroadcast(g, self.shapes[0]) if needs[0] else None,
                _unbroadcast(-g, self.shapes[1]) if needs[1] else None)


class Mul(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.save(a, b)
        return a * b

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        a, b = self.saved
        return (_unbroadcast(g * b, a.shape) if needs[0] else None,
                _unbroadcast(g * a, b.shape) if needs[1] else None)


class Div(Function):
    def forward(self, a: Any, b: Any) -> Any:
        self.save(a, b)
        return a / b

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        a, b = self.saved
        return (_unbroadcast(g / b, a.shape) if needs[0] else None,
                _unbroadcast(-g * a / (b * b), b.shape) if needs[1] else None)


class Pow(Function):
    # d(a^b)/da = b a^(b-1);  d(a^b)/db = a^b log(a)
    def forward(self, a: Any, b: Any) -> Any:
        out = a ** b
        self.save(a, b, out)
        return out

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        a, b, out = self.saved
        xp = array_module(a)
        return (_unbroadcast(g * b * a ** (b - 1), a.shape) if needs[0] else None,
                _unbroadcast(g * out * xp.log(a), b.shape) if needs[1] else None)


class Neg(Function):
    def forward(self, a: Any) -> Any:
        return -a

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        return (-g,)


class Sum(Function):
    # attrs: axis (None, int or tuple), keepdim
    axis: Any
    keepdim: bool
    def forward(self, a: Any) -> Any:
        self.shape = a.shape
        return a.sum(axis=self.axis, keepdims=self.keepdim)

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        xp = array_module(g)
        if not self.keepdim and self.axis is not None:
            axes: Any = (self.axis,) if np.isscalar(self.axis) else self.axis
            g = xp.expand_dims(g, tuple(ax % len(self.shape) for ax in axes))
        return (xp.broadcast_to(g, self.shape).copy(),)


class Mean(Sum):
    def forward(self, a: Any) -> Any:
        out = super().forward(a)
        self.count = a.size // max(out.size, 1)
        return out / self.count

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        return (super().backward(g, needs)[0] / self.count,)


class Reshape(Function):
    shape: Tuple[int, ...]  # attr
    def forward(self, a: Any) -> Any:
        self.in_shape = a.shape
        return a.reshape(self.shape)

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        return (g.reshape(self.in_shape),)


class Cast(Function):
    dtype: np.dtype[Any]  # attr
    def forward(self, a: Any) -> Any:
        self.in_dtype = a.dtype
        return a.astype(self.dtype)

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        return (g.astype(self.in_dtype),)


class GetItem(Function):
    # attrs: index (anything NumPy indexing accepts)
    index: Any
    def forward(self, a: Any) -> Any:
        self.shape, self.dtype = a.shape, a.dtype
        return a[self.index]

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        xp = array_module(g)
        full = xp.zeros(self.shape, dtype=self.dtype)
        # add.at, not +=: with repeated integer indices every occurrence must count.
        if xp is np:
            np.add.at(full, self.index, g)
        else:
            import cupyx
            cupyx.scatter_add(full, self.index, g)
        return (full,)


class Activation(Function):
    # attrs: act (a name of conv3dt._activations.ACTIVATIONS), params (its attributes)
    act: str
    params: Dict[str, Any]
    def forward(self, x: Any) -> Any:
        from ._activations import ACTIVATIONS
        forward, self.derivative, _ = ACTIVATIONS[self.act]
        y = forward(array_module(x), x, **self.params)
        self.save(x, y)
        return y

    def backward(self, g: Any, needs: Tuple[bool, ...]) -> Tuple[Any, ...]:
        x, y = self.saved
        return (g * self.derivative(array_module(x), x, y, **self.params),)


# ---------------------------------------------------------------------------------------
# Variable
# ---------------------------------------------------------------------------------------

class Variable:
    """An array with a gradient, PaddlePaddle dygraph's ``VarBase`` (``conv3dt.Tensor``).

    Create them with :func:`conv3dt.dygraph.to_variable` or :func:`conv3dt.to_tensor`.
    ``stop_gradient`` is True for data (no gradient is computed for it) and False for
    parameters. The result of an operation has ``stop_gradient=False`` when any input has.

    ``x.backward()`` computes d x / d leaf for every leaf with ``stop_gradient=False``,
    seeding with ones (so for a non-scalar ``x`` it differentiates ``sum(x)``);
    ``leaf.gradient()`` returns it as a NumPy array. Only leaves keep gradients.

    Parameters
    ----------
    data : numpy.ndarray or CuPy array
        The value (kept, not copied).
    name : str, optional
        Default: a unique ``generated_var_N``.
    stop_gradient : bool, default True
        True for data, False for a variable that needs a gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from conv3dt.autograd import Variable
    >>> w = Variable(np.array([1.0, 2.0]), stop_gradient=False)
    >>> (w * w).sum().backward()
    >>> w.gradient()
    array([2., 4.])
    """

    # Make ndarray (op) Variable dispatch to our reflected operators instead of NumPy
    # turning the Variable into an object array.
    __array_ufunc__ = None

    def __init__(self, data: Any, name: Optional[str] = None, stop_gradient: bool = True) -> None:
        self._data: NDArray[Any] = data  # a NumPy array, or a CuPy array on a GPU
        self._grad: Any = None
        # the Function that produced this Variable (None for leaves)
        self._node: Optional[Function] = None
        self.name = name if name is not None else unique_name("generated_var")
        self.stop_gradient = bool(stop_gradient)

    # --- inspection -------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape as a tuple of ints (Paddle returns a list; indexing and ``len()``
        behave alike)."""
        return tuple(self._data.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The NumPy dtype of the value."""
        return self._data.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions, ``len(shape)``."""
        return self._data.ndim

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(self._data.size)

    @property
    def place(self) -> Union[CPUPlace, CUDAPlace]:
        """Where the value lives: :class:`conv3dt.CPUPlace` or :class:`conv3dt.CUDAPlace`."""
        from ._place import place_of
        return place_of(self._data)

    @property
    def is_leaf(self) -> bool:
        """True when no recorded operation produced the variable (data, parameters,
        detached variables); only leaves keep gradients."""
        return self._node is None

    def numpy(self) -> NDArray[Any]:
        """A copy of the value.

        Returns
        -------
        numpy.ndarray
            Copied from the GPU for CuPy data; writing into it leaves the variable alone.
        """
        data: Any = self._data
        if hasattr(data, "__cuda_array_interface__"):
            host: NDArray[Any] = data.get()
            return host
        return np.array(data, copy=True)

    def __array__(self, dtype: Optional[DTypeLike] = None,
                  copy: Optional[bool] = None) -> NDArray[Any]:
        """``np.asarray(x)`` / ``np.array(x)``, with NumPy 2's ``copy`` semantics.

        ``copy=None`` (``np.asarray``) and ``copy=False`` give the Variable's own memory
        when no conversion is needed (writing into it changes the Variable; no gradient
        flows through it); ``copy=True`` (``np.array``) a fresh array. Data on a GPU is
        copied to the host, so ``copy=False`` raises for it, as for a dtype change.
        """
        on_gpu = hasattr(self._data, "__cuda_array_interface__")
        dtype = None if dtype is None else np.dtype(dtype)
        needs_copy = on_gpu or (dtype is not None and dtype != self.dtype)
        if copy is False and needs_copy:
            why = "it lives on a GPU" if on_gpu else f"a cast {self.dtype} -> {dtype} is needed"
            raise ValueError(f"np.asarray(copy=False) of Variable '{self.name}': {why}, so a "
                             "copy cannot be avoided")
        data: Any = self._data
        out: NDArray[Any] = data.get() if on_gpu else data
        if dtype is not None and dtype != out.dtype:
            return out.astype(dtype)
        return np.array(out, copy=True) if copy and not on_gpu else out

    def __array_function__(self, func: Callable[..., Any], types: Any, args: Any,
                           kwargs: Any) -> Any:
        # NumPy functions (np.sum, np.mean, np.concatenate, ...) on Variables: computed by
        # NumPy on the values when no gradient is lost; refused with a clear message when
        # an argument needs one (NumPy would silently cut it from the graph), unless the
        # result carries no gradient anyway (np.allclose, np.argmax, np.shape, ...).
        variables: List[Variable] = []
        _collect_variables((args, kwargs), variables)
        tracked = [v for v in variables if not v.stop_gradient]
        if tracked and func not in _GRADIENT_FREE:
            raise TypeError(
                f"numpy.{func.__name__}() on Variable '{tracked[0].name}', which has "
                "stop_gradient=False: NumPy would drop its gradient. Use the Variable's "
                "own operations (x.sum(), x.mean(), conv3dt.sum(x), conv3dt.mean(x)) to "
                "keep it, or give NumPy x.numpy() (or x.detach()) explicitly")
        return func(*_replace_variables(args), **_replace_variables(kwargs))

    def __dlpack__(self, *, stream: Any = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Any = None, copy: Optional[bool] = None) -> Any:
        """DLPack export of the value (``np.from_dlpack(x)``, ``torch.from_dlpack(x)``,
        ``cupy.from_dlpack(x)``): shares the memory, no gradient flows through it."""
        kwargs: Dict[str, Any] = {
            k: v for k, v in (("stream", stream), ("max_version", max_version),
                              ("dl_device", dl_device), ("copy", copy)) if v is not None}
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Tuple[int, int]:
        return self._data.__dlpack_device__()

    def item(self) -> Any:
        """The value of a one-element variable as a Python number (ValueError otherwise)."""
        return self.numpy().item()

    def __float__(self) -> float:
        if self.size != 1:
            raise TypeError(f"only a one-element Variable converts to float, '{self.name}' "
                            f"has shape {self.shape}")
        return float(self.numpy().reshape(-1)[0])

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return (f"Variable(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, "
                f"stop_gradient={self.stop_gradient},\n{self.numpy()!r})")

    def set_value(self, value: Union[Variable, ArrayLike]) -> None:
        """Replace the value in place; it stays on its device.

        Parameters
        ----------
        value : Variable or array_like
            Of the variable's shape and dtype (ValueError otherwise, naming them).
        """
        array: Any = value.numpy() if isinstance(value, Variable) else value
        array = np.asarray(array) if not hasattr(array, "__cuda_array_interface__") else array
        if tuple(array.shape) != self.shape:
            raise ValueError(f"set_value of '{self.name}': shape {tuple(array.shape)} "
                             f"does not match {self.shape}")
        if array.dtype != self.dtype:
            raise ValueError(f"set_value of '{self.name}': dtype {array.dtype} "
                             f"does not match {self.dtype}")
        xp = array_module(self._data)
        self._data = xp.array(array, copy=True) if xp is np else xp.asarray(array).copy()

    # --- gradients --------------------------------------------------------------------
    def gradient(self) -> NDArray[Any]:
        """The gradient accumulated by backward calls, d(loss)/d(self).

        Returns
        -------
        numpy.ndarray
            A copy, of the variable's shape and dtype (from the GPU for CuPy data).

        Raises
        ------
        ValueError
            The variable has no gradient: it has ``stop_gradient=True``, is not a leaf,
            or no backward reached it since it was created or cleared.
        """
        if self._grad is None:
            why = ("it has stop_gradient=True" if self.stop_gradient else
                   "it is not a leaf (only leaves keep gradients)" if self._node is not None
                   else "no backward() reached it since it was created or cleared")
            raise ValueError(f"Variable '{self.name}' has no gradient: {why}")
        g = self._grad
        host: NDArray[Any] = (g.get() if hasattr(g, "__cuda_array_interface__")
                              else np.array(g, copy=True))
        return host

    def clear_gradient(self, set_to_zero: bool = True) -> None:
        """Zero the accumulated gradient (Paddle's behaviour), or drop it.

        Parameters
        ----------
        set_to_zero : bool, default True
            False drops the gradient: :meth:`gradient` then raises until the next
            backward.
        """
        if self._grad is not None and set_to_zero:
            self._grad = array_module(self._grad).zeros_like(self._grad)
        else:
            self._grad = None

    @property
    def grad(self) -> Optional[Variable]:
        """The accumulated gradient as a Variable, or None: Paddle 2.x's ``Tensor.grad``.

        The Variable has ``stop_gradient=True`` and shares the gradient's memory.
        Assigning None drops the gradient (anything else is a ValueError).
        """
        if self._grad is None:
            return None
        return Variable(self._grad, name=self.name + "@GRAD", stop_gradient=True)

    @grad.setter
    def grad(self, value: None) -> None:
        if value is not None:
            raise ValueError(f"the gradient of '{self.name}' can only be set to None "
                             "(which drops it); backward() computes it")
        self._grad = None

    def clear_grad(self, set_to_zero: bool = True) -> None:
        """Paddle 2.x's name of :meth:`clear_gradient`."""
        self.clear_gradient(set_to_zero)

    def detach(self) -> Variable:
        """The same value, cut from the graph.

        Returns
        -------
        Variable
            With ``stop_gradient=True``, sharing this variable's memory.
        """
        return Variable(self._data, stop_gradient=True)

    def backward(self, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf that needs a gradient.

        The seed is ones of this variable's shape: for a non-scalar variable the gradient
        is that of ``sum(self)``. Gradients add up across calls until
        :meth:`clear_gradient`.

        Parameters
        ----------
        retain_graph : bool, default False
            Keep the graph's saved arrays for another backward through it (they are freed
            otherwise).

        Raises
        ------
        RuntimeError
            The variable has ``stop_gradient=True``, or the graph was freed by an earlier
            backward.
        """
        if self.stop_gradient:
            raise RuntimeError(f"backward() on '{self.name}', which has stop_gradient=True: "
                               "no input of its graph needs a gradient")
        order = self._topological_order()
        xp = array_module(self._data)
        grads = {id(self): xp.ones_like(self._data)}
        for var in reversed(order):  # every consumer of var is handled before var
            g = grads.pop(id(var), None)
            if g is None:
                continue
            node = var._node
            if node is None:  # a leaf: keep the gradient, in the leaf's dtype
                g = g.astype(var.dtype, copy=False)
                var._grad = g.copy() if var._grad is None else var._grad + g
                continue
            if node.freed:
                raise RuntimeError(f"backward() through the graph of '{var.name}' a second "
                                   "time: its saved arrays were freed; pass "
                                   "retain_graph=True to the first backward()")
            needs = tuple(not v.stop_gradient for v in node.inputs)
            for parent, pg in zip(node.inputs, node.backward(g, needs)):
                if pg is not None and not parent.stop_gradient:
                    grads[id(parent)] = pg if id(parent) not in grads else grads[id(parent)] + pg
            if not retain_graph:
                node.release()

    def _topological_order(self) -> List[Variable]:
        # Iterative post-order DFS (deep graphs must not hit the recursion limit): a
        # variable is appended only after everything it depends on. Variables with
        # stop_gradient=True are not entered: nothing behind them needs a gradient.
        order: List[Variable] = []
        visited: Set[int] = set()
        stack: List[Tuple[Variable, bool]] = [(self, False)]
        while stack:
            var, done = stack.pop()
            if done:
                order.append(var)
                continue
            if id(var) in visited:
                continue
            visited.add(id(var))
            stack.append((var, True))
            if var._node is not None:
                for parent in var._node.inputs:
                    if not parent.stop_gradient and id(parent) not in visited:
                        stack.append((parent, False))
        return order

    # --- operators --------------------------------------------------------------------
    def _operand(self, other: Any) -> Variable:
        """``other`` as a Variable; scalars and arrays become constants of our dtype (so
        ``x * 2`` stays float32, as in Paddle)."""
        if isinstance(other, Variable):
            if other.dtype != self.dtype:
                raise TypeError(f"dtype mismatch: '{self.name}' is {self.dtype}, "
                                f"'{other.name}' is {other.dtype}; cast one with astype()")
            return other
        xp = array_module(self._data)
        try:
            value = xp.asarray(other, dtype=self.dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"unsupported operand of type {type(other).__name__} "
                            "for a Variable") from exc
        return Variable(value, stop_gradient=True)

    def __add__(self, other: Operand) -> Variable:
        return Add.apply(self, self._operand(other))

    def __radd__(self, other: Operand) -> Variable:
        return Add.apply(self._operand(other), self)

    def __sub__(self, other: Operand) -> Variable:
        return Sub.apply(self, self._operand(other))

    def __rsub__(self, other: Operand) -> Variable:
        return Sub.apply(self._operand(other), self)

    def __mul__(self, other: Operand) -> Variable:
        return Mul.apply(self, self._operand(other))

    def __rmul__(self, other: Operand) -> Variable:
        return Mul.apply(self._operand(other), self)

    def __truediv__(self, other: Operand) -> Variable:
        return Div.apply(self, self._operand(other))

    def __rtruediv__(self, other: Operand) -> Variable:
        return Div.apply(self._operand(other), self)

    def __pow__(self, other: Operand) -> Variable:
        return Pow.apply(self, self._operand(other))

    def __rpow__(self, other: Operand) -> Variable:
        return Pow.apply(self._operand(other), self)

    def __neg__(self) -> Variable:
        return Neg.apply(self)

    def __pos__(self) -> Variable:
        return self

    def __getitem__(self, index: Any) -> Variable:
        """``x[index]`` with NumPy indexing; the gradient scatters back (repeats add up)."""
        if isinstance(index, Variable):
            index = index._data
        elif isinstance(index, tuple):
            index = tuple(i._data if isinstance(i, Variable) else i for i in index)
        return GetItem.apply(self, index=index)

    def sum(self, axis: AxisArg = None, keepdim: bool = False) -> Variable:
        """Sum over ``axis``, NumPy-style, with its gradient.

        Parameters
        ----------
        axis : int or sequence of ints, optional
            None sums over every axis (the result has shape ``()``).
        keepdim : bool, default False
            Keep the reduced axes with size 1.

        Returns
        -------
        Variable
        """
        return Sum.apply(self, axis=_axis(axis), keepdim=keepdim)

    def mean(self, axis: AxisArg = None, keepdim: bool = False) -> Variable:
        """Mean over ``axis`` (None: all), NumPy-style, with its gradient; the arguments
        are those of :meth:`sum`."""
        return Mean.apply(self, axis=_axis(axis), keepdim=keepdim)

    def reshape(self, *shape: Union[int, Sequence[int]]) -> Variable:
        """The value in a new shape: ``x.reshape(2, -1)`` or ``x.reshape((2, -1))``.

        Returns
        -------
        Variable
            Its gradient is reshaped back.
        """
        dims: Any = shape[0] if len(shape) == 1 and not np.isscalar(shape[0]) else shape
        return Reshape.apply(self, shape=tuple(int(n) for n in dims))

    def astype(self, dtype: DTypeLike) -> Variable:
        """The value cast to ``dtype`` (the variable itself when it has that dtype already);
        the gradient is cast back."""
        dtype = np.dtype(dtype)
        return self if dtype == self.dtype else Cast.apply(self, dtype=dtype)


# Paddle 2.x's name for the same class: conv3dt.Tensor is conv3dt.Variable.
Tensor = Variable

# NumPy functions whose results carry no gradient (comparisons, shapes, indices, text):
# allowed on Variables that need one, since nothing is lost.
_GRADIENT_FREE: Set[Any] = {f for f in (getattr(np, name, None) for name in (
    "allclose", "isclose", "array_equal", "array_equiv", "shape", "ndim", "size", "argmax",
    "argmin", "argsort", "argwhere", "nonzero", "flatnonzero", "count_nonzero", "any", "all",
    "may_share_memory", "shares_memory", "array_repr", "array_str", "array2string",
    "iscomplexobj", "isrealobj")) if f is not None}


def _collect_variables(obj: Any, out: List[Variable]) -> None:
    if isinstance(obj, Variable):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _collect_variables(item, out)
    elif isinstance(obj, dict):
        for item in obj.values():
            _collect_variables(item, out)


def _replace_variables(obj: Any) -> Any:
    """``obj`` with every Variable replaced by its value as a NumPy array (no copy on
    the CPU), inside lists, tuples and dicts."""
    if isinstance(obj, Variable):
        data: Any = obj._data
        return data.get() if hasattr(data, "__cuda_array_interface__") else data
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace_variables(item) for item in obj)
    if isinstance(obj, dict):
        return {k: _replace_variables(v) for k, v in obj.items()}
    return obj


def _axis(axis: Any) -> Any:
    if axis is None or np.isscalar(axis):
        return axis
    return tuple(int(a) for a in axis)


class Parameter(Variable):
    """A trainable Variable owned by a Layer (``stop_gradient=False`` unless not trainable).

    Parameters
    ----------
    data : numpy.ndarray or CuPy array
        The value.
    name : str, optional
        The parameter's name (layers name theirs ``<layer>.w_0``, ``<layer>.b_0``).
    trainable : bool, default True
        False: no gradient is computed and optimizers leave it alone.
    learning_rate : float, default 1.0
        Scales the optimizer's learning rate (``optimize_attr['learning_rate']``).
    regularizer : conv3dt.regularizer.L2Decay or L1Decay, optional
        Overrides the optimizer's regularization, as with Paddle's ParamAttr.
    """

    def __init__(self, data: Any, name: Optional[str] = None, trainable: bool = True,
                 learning_rate: float = 1.0,
                 regularizer: Optional[WeightDecayRegularizer] = None) -> None:
        super().__init__(data, name=name, stop_gradient=not trainable)
        self.optimize_attr = {"learning_rate": float(learning_rate)}
        self.regularizer = regularizer

    @property
    def trainable(self) -> bool:
        """``not stop_gradient``; assignable."""
        return not self.stop_gradient

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self.stop_gradient = not value

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Variable"):]
