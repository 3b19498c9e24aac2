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
import math

import numpy as np

__all__ = ["seed", "Initializer", "Constant", "Uniform", "Normal", "TruncatedNormal",
           "Xavier", "MSRA", "NumpyArrayInitializer", "ConstantInitializer",
           "UniformInitializer", "NormalInitializer", "TruncatedNormalInitializer",
           "XavierInitializer", "MSRAInitializer"]

_global_rng = np.random.default_rng()


def seed(n):
    """Reset the global generator used by every initializer with ``seed=0``.

    >>> import conv3dt.initializer as I
    >>> I.seed(7); a = I.Uniform()._draw((3,), "float64")
    >>> I.seed(7); b = I.Uniform()._draw((3,), "float64")
    >>> bool((a == b).all())
    True
    """
    global _global_rng
    _global_rng = np.random.default_rng(int(n))


def compute_fans(shape):
    """``(fan_in, fan_out)`` as Paddle computes them."""
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
    """Base class: subclasses implement ``_draw(shape, dtype) -> ndarray``."""

    seed = 0

    def _rng(self):
        # A fixed per-initializer seed must give the same draw every time, as Paddle's
        # per-op seed does; seed=0 means "use the global stream".
        return np.random.default_rng(self.seed) if self.seed else _global_rng

    def _draw(self, shape, dtype):
        raise NotImplementedError

    def __call__(self, var, block=None):
        """Fill ``var`` (``block`` is accepted for Paddle compatibility and ignored)."""
        from ._place import place_of, to_place
        value = np.asarray(self._draw(var.shape, var.dtype), dtype=var.dtype)
        var._data = to_place(value, place_of(var._data))

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Initializer):
    """Every element equals ``value``."""

    def __init__(self, value=0.0, force_cpu=False):
        self.value = value

    def _draw(self, shape, dtype):
        return np.full(shape, self.value, dtype=dtype)


class Uniform(Initializer):
    """U(low, high)."""

    def __init__(self, low=-1.0, high=1.0, seed=0):
        if low > high:
            raise ValueError(f"Uniform initializer: low ({low}) must not exceed high ({high})")
        self.low, self.high, self.seed = low, high, seed

    def _draw(self, shape, dtype):
        return self._rng().uniform(self.low, self.high, size=shape).astype(dtype)


class Normal(Initializer):
    """N(loc, scale^2)."""

    def __init__(self, loc=0.0, scale=1.0, seed=0):
        self.loc, self.scale, self.seed = loc, scale, seed

    def _draw(self, shape, dtype):
        return self._rng().normal(self.loc, self.scale, size=shape).astype(dtype)


class TruncatedNormal(Initializer):
    """N(loc, scale^2) restricted to [loc - 2 scale, loc + 2 scale] (redrawing outliers,
    as Paddle's truncated_gaussian_random does)."""

    def __init__(self, loc=0.0, scale=1.0, seed=0):
        self.loc, self.scale, self.seed = loc, scale, seed

    def _draw(self, shape, dtype):
        rng = self._rng()
        out = rng.standard_normal(size=shape)
        bad = np.abs(out) > 2
        while bad.any():  # each pass keeps ~95%, so this ends after a few passes
            out[bad] = rng.standard_normal(size=int(bad.sum()))
            bad = np.abs(out) > 2
        return (self.loc + self.scale * out).astype(dtype)


class Xavier(Initializer):
    """Glorot: uniform U(-sqrt(6/(fan_in+fan_out)), +sqrt(6/(fan_in+fan_out))), or normal
    with std sqrt(2/(fan_in+fan_out)) when ``uniform=False``. Fans default to the shape's."""

    def __init__(self, uniform=True, fan_in=None, fan_out=None, seed=0):
        self.uniform, self.fan_in, self.fan_out, self.seed = uniform, fan_in, fan_out, seed

    def _draw(self, shape, dtype):
        fan_in, fan_out = compute_fans(shape)
        fan_in = fan_in if self.fan_in is None else self.fan_in
        fan_out = fan_out if self.fan_out is None else self.fan_out
        if self.uniform:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            return self._rng().uniform(-limit, limit, size=shape).astype(dtype)
        return self._rng().normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape).astype(dtype)


class MSRA(Initializer):
    """He/Kaiming: U(-sqrt(6/fan_in), +sqrt(6/fan_in)), or normal with std sqrt(2/fan_in)."""

    def __init__(self, uniform=True, fan_in=None, seed=0):
        self.uniform, self.fan_in, self.seed = uniform, fan_in, seed

    def _draw(self, shape, dtype):
        fan_in = compute_fans(shape)[0] if self.fan_in is None else self.fan_in
        if self.uniform:
            limit = math.sqrt(6.0 / fan_in)
            return self._rng().uniform(-limit, limit, size=shape).astype(dtype)
        return self._rng().normal(0.0, math.sqrt(2.0 / fan_in), size=shape).astype(dtype)


class NumpyArrayInitializer(Initializer):
    """Copy a given array (its shape must equal the parameter's)."""

    def __init__(self, value):
        if not isinstance(value, np.ndarray):
            raise TypeError("NumpyArrayInitializer: value must be a numpy.ndarray, "
                            f"but received {type(value).__name__}")
        self.value = value

    def _draw(self, shape, dtype):
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
