"""Functions on Variables for building losses, named as in ``paddle.fluid.layers``.

Reductions follow Paddle 1.8: reducing over all dims (``dim=None``) without ``keep_dim``
gives shape ``[1]``, not ``()``.

Activations take Paddle's fluid defaults (``leaky_relu`` alpha 0.02, ...); the formulas
are in ``conv3dt._activations``.

Example (a mean squared error)::

    >>> import numpy as np
    >>> import conv3dt.layers as L
    >>> from conv3dt.dygraph import to_variable
    >>> pred = to_variable(np.array([1.0, 2.0]))
    >>> L.mse_loss(pred, to_variable(np.array([0.0, 0.0]))).numpy()
    array([2.5])
"""
from __future__ import annotations

import numbers
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _activations
from .autograd import Activation, Variable

__all__ = ["reduce_sum", "reduce_mean", "square", "elementwise_add", "elementwise_sub",
           "elementwise_mul", "mse_loss"] + list(_activations.ACTIVATIONS)


# A dim argument of the reductions: None (all dims), an int, or several.
DimArg = Union[None, int, Sequence[int]]


def _variable(x: Any, label: str) -> Variable:
    if not isinstance(x, Variable):
        raise TypeError(f"{label} must be a Variable (see dygraph.to_variable), "
                        f"but received {type(x).__name__}")
    return x


def _reduce(method: str, input: Variable, dim: Any, keep_dim: bool, label: str) -> Variable:
    input = _variable(input, f"{label}: input")
    if dim is None or (not isinstance(dim, numbers.Integral) and len(dim) == 0):
        out: Variable = getattr(input, method)(axis=None, keepdim=keep_dim)
        return out if keep_dim else out.reshape(1)  # Paddle 1.8's shape [1]
    dims: List[Any] = [dim] if isinstance(dim, numbers.Integral) else list(dim)
    for d in dims:
        if not -input.ndim <= d < input.ndim:
            raise ValueError(f"{label}: dim {d} is out of range for a {input.ndim}-D input")
    out = getattr(input, method)(axis=tuple(dims), keepdim=keep_dim)
    return out if out.ndim else out.reshape(1)


def reduce_sum(input: Variable, dim: DimArg = None, keep_dim: bool = False,
               name: Optional[str] = None) -> Variable:
    """Sum over ``dim``.

    Parameters
    ----------
    input : Variable
        The input.
    dim : int or sequence of ints, optional
        None (or an empty list): every dim, and the result has shape ``[1]`` (Paddle
        1.8's) unless ``keep_dim``.
    keep_dim : bool, default False
        Keep the reduced dims with size 1.
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        With the gradient recorded.

    Raises
    ------
    TypeError
        ``input`` is not a Variable.
    ValueError
        A dim is out of range.
    """
    return _reduce("sum", input, dim, keep_dim, "reduce_sum")


def reduce_mean(input: Variable, dim: DimArg = None, keep_dim: bool = False,
                name: Optional[str] = None) -> Variable:
    """Mean over ``dim``.

    Parameters
    ----------
    input : Variable
        The input.
    dim : int or sequence of ints, optional
        None (or an empty list): every dim, and the result has shape ``[1]`` (Paddle
        1.8's) unless ``keep_dim``.
    keep_dim : bool, default False
        Keep the reduced dims with size 1.
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        With the gradient recorded.

    Raises
    ------
    TypeError
        ``input`` is not a Variable.
    ValueError
        A dim is out of range.
    """
    return _reduce("mean", input, dim, keep_dim, "reduce_mean")


def square(x: Variable, name: Optional[str] = None) -> Variable:
    """``x * x``, with its gradient.

    Parameters
    ----------
    x : Variable
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
    """
    x = _variable(x, "square: x")
    return x * x


def _align(x: Variable, y: Variable, axis: int, label: str) -> Tuple[Variable, Variable]:
    # Paddle's elementwise axis: y's dims line up with x's dims starting at `axis`
    # (-1: trailing dims, i.e. NumPy broadcasting).
    x = _variable(x, f"{label}: x")
    y = _variable(y, f"{label}: y")
    if axis == -1 or y.ndim == x.ndim:
        return x, y
    if not 0 <= axis <= x.ndim - y.ndim or any(
            n not in (1, m) for n, m in zip(y.shape, x.shape[axis:axis + y.ndim])):
        raise ValueError(f"{label}: axis {axis} does not fit y of shape {y.shape} into x of "
                         f"shape {x.shape}")
    return x, y.reshape((1,) * axis + y.shape + (1,) * (x.ndim - axis - y.ndim))


def _maybe_act(out: Variable, act: Optional[str]) -> Variable:
    return out if act is None else _apply(act, out)


def elementwise_add(x: Variable, y: Variable, axis: int = -1, act: Optional[str] = None,
                    name: Optional[str] = None) -> Variable:
    """``x + y`` (broadcasting y along ``axis``), then optional ``act``.

    Parameters
    ----------
    x, y : Variable
        Of one dtype.
    axis : int, default -1
        Where y's dims line up with x's (Paddle's rule); -1: the trailing dims, as NumPy
        broadcasting does.
    act : str, optional
        An activation applied to the result (see :func:`relu` and the others).
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        With the gradient recorded (summed back over y's broadcast dims).

    Raises
    ------
    TypeError
        ``x`` or ``y`` is not a Variable, or their dtypes differ.
    ValueError
        ``axis`` does not fit y's shape into x's.
    """
    x, y = _align(x, y, axis, "elementwise_add")
    return _maybe_act(x + y, act)


def elementwise_sub(x: Variable, y: Variable, axis: int = -1, act: Optional[str] = None,
                    name: Optional[str] = None) -> Variable:
    """``x - y`` (broadcasting y along ``axis``), then optional ``act``.

    Parameters
    ----------
    x, y : Variable
        Of one dtype.
    axis : int, default -1
        Where y's dims line up with x's (Paddle's rule); -1: the trailing dims, as NumPy
        broadcasting does.
    act : str, optional
        An activation applied to the result (see :func:`relu` and the others).
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        With the gradient recorded (summed back over y's broadcast dims).

    Raises
    ------
    TypeError
        ``x`` or ``y`` is not a Variable, or their dtypes differ.
    ValueError
        ``axis`` does not fit y's shape into x's.
    """
    x, y = _align(x, y, axis, "elementwise_sub")
    return _maybe_act(x - y, act)


def elementwise_mul(x: Variable, y: Variable, axis: int = -1, act: Optional[str] = None,
                    name: Optional[str] = None) -> Variable:
    """``x * y`` (broadcasting y along ``axis``), then optional ``act``.

    Parameters
    ----------
    x, y : Variable
        Of one dtype.
    axis : int, default -1
        Where y's dims line up with x's (Paddle's rule); -1: the trailing dims, as NumPy
        broadcasting does.
    act : str, optional
        An activation applied to the result (see :func:`relu` and the others).
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        With the gradient recorded (summed back over y's broadcast dims).

    Raises
    ------
    TypeError
        ``x`` or ``y`` is not a Variable, or their dtypes differ.
    ValueError
        ``axis`` does not fit y's shape into x's.
    """
    x, y = _align(x, y, axis, "elementwise_mul")
    return _maybe_act(x * y, act)


def mse_loss(input: Variable, label: Variable) -> Variable:
    """The mean squared error ``mean((input - label)^2)``.

    Parameters
    ----------
    input, label : Variable
        Of one shape (or broadcastable) and dtype.

    Returns
    -------
    Variable
        Of shape ``[1]``.
    """
    return reduce_mean(square(elementwise_sub(input, label)))


def _apply(act: str, x: Variable, **attrs: Any) -> Variable:
    x = _variable(x, f"{act}: x")
    return Activation.apply(x, act=act, params=_activations.attrs_for(act, **attrs))


def relu(x: Variable, name: Optional[str] = None) -> Variable:
    """``max(x, 0)``.

    Parameters
    ----------
    x : Variable
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("relu", x)


def relu6(x: Variable, threshold: float = 6.0, name: Optional[str] = None) -> Variable:
    """``min(max(x, 0), threshold)``.

    Parameters
    ----------
    x : Variable
    threshold : float, default 6.0
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("relu6", x, threshold=threshold)


def leaky_relu(x: Variable, alpha: float = 0.02, name: Optional[str] = None) -> Variable:
    """``x if x > 0 else alpha * x``.

    Parameters
    ----------
    x : Variable
    alpha : float, default 0.02
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("leaky_relu", x, alpha=alpha)


def elu(x: Variable, alpha: float = 1.0, name: Optional[str] = None) -> Variable:
    """``x if x > 0 else alpha * (exp(x) - 1)``.

    Parameters
    ----------
    x : Variable
    alpha : float, default 1.0
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("elu", x, alpha=alpha)


def selu(x: Variable, scale: Optional[float] = None, alpha: Optional[float] = None,
         name: Optional[str] = None) -> Variable:
    """``scale * (x if x > 0 else alpha * (exp(x) - 1))``, scale 1.0507..., alpha 1.6732...

    Parameters
    ----------
    x : Variable
    scale : float, optional
        None: Paddle's, 1.0507...
    alpha : float, optional
        None: Paddle's, 1.6732...
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("selu", x, scale=scale, alpha=alpha)


def gelu(x: Variable, approximate: bool = False, name: Optional[str] = None) -> Variable:
    """``0.5 x (1 + erf(x / sqrt 2))``; tanh approximation when ``approximate``.

    Parameters
    ----------
    x : Variable
    approximate : bool, default False
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("gelu", x, approximate=approximate)


def sigmoid(x: Variable, name: Optional[str] = None) -> Variable:
    """``1 / (1 + exp(-x))``.

    Parameters
    ----------
    x : Variable
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("sigmoid", x)


def hard_sigmoid(x: Variable, slope: float = 0.2, offset: float = 0.5,
                 name: Optional[str] = None) -> Variable:
    """``clip(slope * x + offset, 0, 1)``.

    Parameters
    ----------
    x : Variable
    slope : float, default 0.2
    offset : float, default 0.5
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("hard_sigmoid", x, slope=slope, offset=offset)


def swish(x: Variable, beta: float = 1.0, name: Optional[str] = None) -> Variable:
    """``x * sigmoid(beta * x)``.

    Parameters
    ----------
    x : Variable
    beta : float, default 1.0
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("swish", x, beta=beta)


def hard_swish(x: Variable, threshold: float = 6.0, scale: float = 6.0, offset: float = 3.0,
               name: Optional[str] = None) -> Variable:
    """``x * min(max(x + offset, 0), threshold) / scale``.

    Parameters
    ----------
    x : Variable
    threshold : float, default 6.0
    scale : float, default 6.0
    offset : float, default 3.0
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("hard_swish", x, threshold=threshold, scale=scale, offset=offset)


def tanh(x: Variable, name: Optional[str] = None) -> Variable:
    """``tanh(x)``.

    Parameters
    ----------
    x : Variable
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("tanh", x)


def softplus(x: Variable, name: Optional[str] = None) -> Variable:
    """``log(1 + exp(x))``.

    Parameters
    ----------
    x : Variable
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("softplus", x)


def softsign(x: Variable, name: Optional[str] = None) -> Variable:
    """``x / (1 + |x|)``.

    Parameters
    ----------
    x : Variable
    name : str, optional
        Paddle's; ignored.

    Returns
    -------
    Variable
        Elementwise, with the gradient recorded.
    """
    return _apply("softsign", x)
