"""Parameter initializers, following ``paddle.fluid.initializer``.

An initializer is called with a Variable and fills it: ``init(var)``. Values are always
drawn on the CPU with NumPy and then moved to the Variable's place, so a seed gives the
same numbers on every machine and device.

Randomness: an initializer with ``seed=0`` (the default, as in Paddle) draws from the
global generator, which :func:`seed` resets; a non-zero ``seed`` gives the initializer its
own generator, so it yields the same values at every call.

Fans (Paddle's ``_compute_fans``) for a shape ``[a, b, k...]``: ``fan_in = b * prod(k)``,
``fan_out = a * prod(k)``. For Conv3DTranspose's weight ``[C_in, C_out/groups, kD, kH, kW]``
that is ``fan_in = C_out/groups * kD*kH*kW`` and ``fan_out = C_in * kD*kH*kW``.

Example::

    >>> import numpy as np, conv3dt.initializer as I
    >>> from conv3dt.autograd import Variable
    >>> I.seed(1)
    >>> w = Variable(np.empty((4, 2, 3, 3, 3), "float32"))
    >>> I.Xavier()(w)                                   # U(-limit, limit)
    >>> limit = np.sqrt(6 / (2 * 27 + 4 * 27))
    >>> bool(np.abs(w.numpy()).max() <= limit)
    True
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

if TYPE_CHECKING:
    from .autograd import Variable

__all__ = ["seed", "Initializer", "Constant", "Uniform", "Normal", "TruncatedNormal",
           "Xavier", "MSRA", "NumpyArrayInitializer", "ConstantInitializer",
           "UniformInitializer", "NormalInitializer", "TruncatedNormalInitializer",
           "XavierInitializer", "MSRAInitializer"]

_global_rng = np.random.default_rng()


def seed(n: int) -> None:
    """Reset the global generator used by every initializer with ``seed=0``.

    Parameters
    ----------
    n : int
        The seed of the new :class:`numpy.random.Generator`.

    Examples
    --------
    >>> import conv3dt.initializer as I
    >>> I.seed(7); a = I.Uniform()._draw((3,), "float64")
    >>> I.seed(7); b = I.Uniform()._draw((3,), "float64")
    >>> bool((a == b).all())
    True
    """
    global _global_rng
    _global_rng = np.random.default_rng(int(n))


def compute_fans(shape: Sequence[int]) -> Tuple[int, int]:
    """``(fan_in, fan_out)`` of a parameter's shape, as Paddle computes them.

    Parameters
    ----------
    shape : sequence of int
        ``[a, b, k...]``: ``fan_in = b * prod(k)``, ``fan_out = a * prod(k)``; a 2-D
        shape ``[a, b]`` gives ``(a, b)``, a 1-D one ``(a, a)``, a 0-D one ``(1, 1)``.

    Returns
    -------
    tuple of (int, int)
        ``(fan_in, fan_out)``.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))
    return shape[1] * receptive, shape[0] * receptive


class Initializer:
    """Base class of the initializers: ``init(var)`` fills the Variable ``var``.

    Subclasses implement ``_draw(shape, dtype)``, which returns a :class:`numpy.ndarray`
    of that shape and dtype.
    """

    seed: int = 0

    def _rng(self) -> np.random.Generator:
        # A fixed per-initializer seed must give the same draw every time, as Paddle's
        # per-op seed does; seed=0 means "use the global stream".
        return np.random.default_rng(self.seed) if self.seed else _global_rng

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        raise NotImplementedError

    def __call__(self, var: Variable, block: Any = None) -> None:
        """Fill ``var`` in place, on its place (CPU or GPU).

        Parameters
        ----------
        var : conv3dt.autograd.Variable
            The parameter to fill; its shape and dtype are kept.
        block : object, optional
            Accepted for Paddle's signature and ignored.
        """
        from ._place import place_of, to_place
        value = np.asarray(self._draw(var.shape, var.dtype), dtype=var.dtype)
        var._data = to_place(value, place_of(var._data))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Initializer):
    """Every element equals ``value``.

    Parameters
    ----------
    value : float, default 0.0
        The value of every element.
    force_cpu : bool, default False
        Accepted for Paddle's signature; values are always drawn on the CPU.
    """

    def __init__(self, value: float = 0.0, force_cpu: bool = False) -> None:
        self.value = value

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        return np.full(shape, self.value, dtype=dtype)


class Uniform(Initializer):
    """Uniform values in ``[low, high)``.

    Parameters
    ----------
    low, high : float, default -1.0 and 1.0
        The bounds.
    seed : int, default 0
        0: draw from the global generator (see :func:`seed`); another value: a
        generator of the initializer's own, so every call draws the same values.

    Raises
    ------
    ValueError
        If ``low > high``.
    """

    def __init__(self, low: float = -1.0, high: float = 1.0, seed: int = 0) -> None:
        if low > high:
            raise ValueError(f"Uniform initializer: low ({low}) must not exceed high ({high})")
        self.low, self.high, self.seed = low, high, seed

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        return self._rng().uniform(self.low, self.high, size=shape).astype(dtype)


class Normal(Initializer):
    """Normal values, N(loc, scale^2).

    Parameters
    ----------
    loc : float, default 0.0
        The mean.
    scale : float, default 1.0
        The standard deviation.
    seed : int, default 0
        As for :class:`Uniform`.
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0, seed: int = 0) -> None:
        self.loc, self.scale, self.seed = loc, scale, seed

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        return self._rng().normal(self.loc, self.scale, size=shape).astype(dtype)


class TruncatedNormal(Initializer):
    """N(loc, scale^2) restricted to ``[loc - 2 scale, loc + 2 scale]`` (outliers are
    drawn again, as Paddle's ``truncated_gaussian_random`` does).

    Parameters
    ----------
    loc : float, default 0.0
        The mean.
    scale : float, default 1.0
        The standard deviation before truncation.
    seed : int, default 0
        As for :class:`Uniform`.
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0, seed: int = 0) -> None:
        self.loc, self.scale, self.seed = loc, scale, seed

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        rng = self._rng()
        out = rng.standard_normal(size=shape)
        bad = np.abs(out) > 2
        while bad.any():  # each pass keeps ~95%, so this ends after a few passes
            out[bad] = rng.standard_normal(size=int(bad.sum()))
            bad = np.abs(out) > 2
        return (self.loc + self.scale * out).astype(dtype)


class Xavier(Initializer):
    """Glorot: uniform ``U(-sqrt(6/(fan_in+fan_out)), +sqrt(6/(fan_in+fan_out)))``, or
    normal with std ``sqrt(2/(fan_in+fan_out))`` when ``uniform=False``.

    Parameters
    ----------
    uniform : bool, default True
        Uniform (True) or normal (False) values.
    fan_in, fan_out : int, optional
        Default: the fans of the parameter's shape (:func:`compute_fans`).
    seed : int, default 0
        As for :class:`Uniform`.
    """

    def __init__(self, uniform: bool = True, fan_in: Optional[float] = None,
                 fan_out: Optional[float] = None, seed: int = 0) -> None:
        self.uniform, self.fan_in, self.fan_out, self.seed = uniform, fan_in, fan_out, seed

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        shape_fans = compute_fans(shape)
        fan_in = shape_fans[0] if self.fan_in is None else self.fan_in
        fan_out = shape_fans[1] if self.fan_out is None else self.fan_out
        if self.uniform:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            return self._rng().uniform(-limit, limit, size=shape).astype(dtype)
        return self._rng().normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape).astype(dtype)


class MSRA(Initializer):
    """He/Kaiming: uniform ``U(-sqrt(6/fan_in), +sqrt(6/fan_in))``, or normal with std
    ``sqrt(2/fan_in)`` when ``uniform=False``.

    Parameters
    ----------
    uniform : bool, default True
        Uniform (True) or normal (False) values.
    fan_in : int, optional
        Default: the ``fan_in`` of the parameter's shape (:func:`compute_fans`).
    seed : int, default 0
        As for :class:`Uniform`.
    """

    def __init__(self, uniform: bool = True, fan_in: Optional[float] = None,
                 seed: int = 0) -> None:
        self.uniform, self.fan_in, self.seed = uniform, fan_in, seed

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        fan_in = compute_fans(shape)[0] if self.fan_in is None else self.fan_in
        if self.uniform:
            limit = math.sqrt(6.0 / fan_in)
            return self._rng().uniform(-limit, limit, size=shape).astype(dtype)
        return self._rng().normal(0.0, math.sqrt(2.0 / fan_in), size=shape).astype(dtype)


class NumpyArrayInitializer(Initializer):
    """A copy of a given array, cast to the parameter's dtype.

    Parameters
    ----------
    value : numpy.ndarray
        The values; its shape must equal the parameter's.

    Raises
    ------
    TypeError
        If ``value`` is not a :class:`numpy.ndarray`.
    ValueError
        When the initializer is called on a parameter of another shape.
    """

    def __init__(self, value: NDArray[Any]) -> None:
        if not isinstance(value, np.ndarray):
            raise TypeError("NumpyArrayInitializer: value must be a numpy.ndarray, "
                            f"but received {type(value).__name__}")
        self.value = value

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        if tuple(self.value.shape) != tuple(shape):
            raise ValueError(f"NumpyArrayInitializer: array shape {self.value.shape} does not "
                             f"match the parameter shape {tuple(shape)}")
        return self.value.astype(dtype, copy=True)


# Paddle's long names
ConstantInitializer = Constant
UniformInitializer = Uniform
NormalInitializer = Normal
TruncatedNormalInitializer = TruncatedNormal
XavierInitializer = Xavier
MSRAInitializer = MSRA
