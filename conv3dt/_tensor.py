"""Paddle 2.x/3.x tensor functions: ``to_tensor``, ``mean``, ``sum``, the default dtype.

``conv3dt.Tensor`` is ``conv3dt.Variable`` (one class, one autograd); these are the 2.x
spellings of what the 1.x front end offers as ``dygraph.to_variable`` and
``layers.reduce_mean`` / ``reduce_sum``. Unlike Paddle 1.x's reductions, a reduction over
every axis gives a 0-D Tensor (shape ``()``), as in Paddle 2.5 and later.

Example::

    >>> import conv3dt as paddle
    >>> x = paddle.to_tensor([[1.0, 2.0], [3.0, 4.0]], stop_gradient=False)
    >>> loss = paddle.mean(x * x)
    >>> loss.backward()
    >>> x.grad.numpy()                       # d mean(x^2) / dx = 2x / 4
    array([[0.5, 1. ],
           [1.5, 2. ]], dtype=float32)
"""
from __future__ import annotations

import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _place
from .autograd import Variable

__all__ = ["to_tensor", "mean", "sum", "get_default_dtype", "set_default_dtype"]

# An axis argument: None (all axes), an int, or several.
AxisArg = Union[None, int, Sequence[int]]

_default_dtype: np.dtype[Any] = np.dtype("float32")


def get_default_dtype() -> str:
    """The dtype of floating-point data that has none of its own (Python floats).

    Returns
    -------
    str
        ``'float32'`` unless :func:`set_default_dtype` changed it.
    """
    name: str = _default_dtype.name
    return name


def set_default_dtype(d: DTypeLike) -> None:
    """Set the dtype of floating-point data that has none of its own.

    Parameters
    ----------
    d : {'float32', 'float64'} or numpy dtype
        The new default.

    Raises
    ------
    TypeError
        ``d`` is not float32 or float64.
    """
    global _default_dtype
    try:
        dtype = np.dtype(d)
    except TypeError:
        dtype = None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"set_default_dtype: d must be 'float32' or 'float64', "
                        f"but received {d!r}")
    _default_dtype = dtype


def _place_of(place: Any) -> Optional[_place.Place]:
    """``place`` as a CPUPlace/CUDAPlace/None; Paddle's strings 'cpu', 'gpu', 'gpu:N'."""
    if isinstance(place, str):
        name = place.strip().lower()
        if name == "cpu":
            return _place.CPUPlace()
        if name in ("gpu", "cuda"):
            return _place.CUDAPlace(0)
        for prefix in ("gpu:", "cuda:"):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                return _place.CUDAPlace(int(name[len(prefix):]))
        raise ValueError(f"to_tensor: place must be 'cpu', 'gpu' or 'gpu:N' (or a "
                         f"CPUPlace/CUDAPlace), but received {place!r}")
    return _place._check_place(place)


def to_tensor(data: Union[Variable, ArrayLike], dtype: Optional[DTypeLike] = None,
              place: Union[_place.Place, str, None] = None,
              stop_gradient: bool = True) -> Variable:
    """A new Tensor holding a copy of ``data``, as ``paddle.to_tensor``.

    Parameters
    ----------
    data : scalar, (nested) list or tuple, numpy.ndarray, CuPy array or Tensor
        The value (copied).
    dtype : str or numpy dtype, optional
        Cast to it; None keeps an array's dtype, and for Python data takes floats as
        :func:`get_default_dtype` (float32), ints as int64, bools as bool.
    place : CPUPlace, CUDAPlace or {'cpu', 'gpu', 'gpu:i'}, optional
        None: the current ``dygraph.guard``'s place, else where the data is.
    stop_gradient : bool, default True
        True for data; False to get ``.grad`` (floating-point data only).

    Returns
    -------
    Tensor
        A :class:`conv3dt.autograd.Variable`.

    Raises
    ------
    TypeError
        ``data`` is not numeric (or ragged), ``dtype`` is not a dtype, ``stop_gradient``
        is not a bool, or a Tensor of integers would need a gradient.
    ValueError
        ``place`` is not a place.

    Examples
    --------

    >>> import numpy as np, conv3dt
    >>> t = conv3dt.to_tensor(np.arange(3.0))
    >>> t.dtype, t.shape, t.stop_gradient
    (dtype('float64'), (3,), True)
    """
    value: Any = data._data if isinstance(data, Variable) else data
    if hasattr(value, "__cuda_array_interface__"):
        array = value.copy()
    elif isinstance(value, np.ndarray):
        array = np.array(value, copy=True)
    elif isinstance(value, (numbers.Number, np.generic, list, tuple)):
        try:
            array = np.array(value)
        except ValueError:  # ragged nesting
            array = np.empty(0, dtype=object)
        if array.dtype == object or array.dtype.kind not in "biufc":
            raise TypeError("to_tensor: data must be numeric (a scalar or a regular nested "
                            f"list of numbers), but received {value!r:.80}")
        if not isinstance(value, np.generic):
            if array.dtype.kind == "f":
                array = array.astype(_default_dtype)
            elif array.dtype.kind == "i":
                array = array.astype(np.int64)
            elif array.dtype.kind == "c":
                array = array.astype(np.complex64 if _default_dtype == np.float32
                                     else np.complex128)
    else:
        raise TypeError("to_tensor: data must be a scalar, list, tuple, numpy.ndarray or "
                        f"Tensor, but received {type(value).__name__}")
    if dtype is not None:
        try:
            target = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"to_tensor: dtype {dtype!r} is not a dtype") from None
        array = array.astype(target, copy=False)
    if not isinstance(stop_gradient, (bool, np.bool_)):
        raise TypeError(f"to_tensor: stop_gradient must be a bool, "
                        f"but received {stop_gradient!r}")
    if not stop_gradient and array.dtype.kind != "f":
        raise TypeError(f"to_tensor: only floating-point Tensors can have gradients, "
                        f"this one is {array.dtype}")
    from .dygraph.base import current_place
    place = _place_of(place)
    array = _place.to_place(array, place if place is not None else current_place())
    return Variable(array, stop_gradient=bool(stop_gradient))


def _tensor(x: Any, func: str) -> Variable:
    if not isinstance(x, Variable):
        raise TypeError(f"{func}: x must be a Tensor (see conv3dt.to_tensor), "
                        f"but received {type(x).__name__}")
    return x


def _axes(x: Variable, axis: Any, func: str) -> Optional[Tuple[int, ...]]:
    if axis is None:
        return None
    axes: List[Any] = [axis] if isinstance(axis, numbers.Integral) else list(axis)
    for a in axes:
        if (isinstance(a, bool) or not isinstance(a, numbers.Integral)
                or not -x.ndim <= int(a) < max(x.ndim, 1)):
            raise ValueError(f"{func}: axis {a!r} is out of range for a {x.ndim}-D Tensor")
    return tuple(int(a) for a in axes) if axes else None


def mean(x: Variable, axis: AxisArg = None, keepdim: bool = False,
         name: Optional[str] = None) -> Variable:
    """Mean over ``axis``, as ``paddle.mean``.

    Parameters
    ----------
    x : Tensor
        The input.
    axis : int or sequence of ints, optional
        None: every axis (the result has shape ``()``).
    keepdim : bool, default False
        Keep the reduced axes with size 1.
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Tensor
        With the gradient recorded.

    Raises
    ------
    TypeError
        ``x`` is not a Tensor.
    ValueError
        An axis is out of range.

    Examples
    --------

    >>> import conv3dt
    >>> conv3dt.mean(conv3dt.to_tensor([[1.0, 2.0], [3.0, 5.0]]), axis=1).numpy()
    array([1.5, 4. ], dtype=float32)
    """
    x = _tensor(x, "mean")
    return x.mean(axis=_axes(x, axis, "mean"), keepdim=bool(keepdim))


def sum(x: Variable, axis: AxisArg = None, dtype: Optional[DTypeLike] = None,
        keepdim: bool = False, name: Optional[str] = None) -> Variable:
    """Sum over ``axis``, as ``paddle.sum``.

    Parameters
    ----------
    x : Tensor
        The input.
    axis : int or sequence of ints, optional
        None: every axis (the result has shape ``()``).
    dtype : str or numpy dtype, optional
        Cast ``x`` to it first.
    keepdim : bool, default False
        Keep the reduced axes with size 1.
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Tensor
        With the gradient recorded.

    Raises
    ------
    TypeError
        ``x`` is not a Tensor.
    ValueError
        An axis is out of range.

    Examples
    --------

    >>> import conv3dt
    >>> float(conv3dt.sum(conv3dt.to_tensor([1.0, 2.0, 3.5])))
    6.5
    """
    x = _tensor(x, "sum")
    if dtype is not None:
        x = x.astype(dtype)
    return x.sum(axis=_axes(x, axis, "sum"), keepdim=bool(keepdim))
