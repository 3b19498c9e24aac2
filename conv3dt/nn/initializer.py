"""Initializers under Paddle 2.x/3.x's names (``paddle.nn.initializer``).

They are the 1.x initializers of :mod:`conv3dt.initializer` with 2.x argument names:

=================================  ==============================================================
``Constant(value=0.0)``            every element ``value``
``Normal(mean=0.0, std=1.0)``      N(mean, std^2)
``TruncatedNormal(mean, std)``     N(mean, std^2) restricted to ``mean +- 2 std``
``Uniform(low=-1.0, high=1.0)``    U(low, high)
``XavierUniform()``                U(-sqrt(6 / (fan_in + fan_out)), +sqrt(6 / (fan_in + fan_out)))
``XavierNormal()``                 N(0, 2 / (fan_in + fan_out))
``KaimingUniform()``               U(-gain sqrt(3 / fan_in), +gain sqrt(3 / fan_in))
``KaimingNormal()``                N(0, gain^2 / fan_in)
``Assign(value)``                  a copy of ``value`` (an array, list or Tensor)
=================================  ==============================================================

Fans are Paddle's (see :mod:`conv3dt.initializer`); ``gain`` is Paddle's
``calculate_gain(nonlinearity, negative_slope)``: sqrt(2) for relu,
sqrt(2 / (1 + slope^2)) for leaky_relu, 5/3 for tanh, 3/4 for selu, 1 otherwise.

Example::

    >>> import numpy as np, conv3dt as paddle
    >>> attr = paddle.ParamAttr(initializer=paddle.nn.initializer.Constant(0.5))
    >>> conv = paddle.nn.Conv3DTranspose(2, 3, 2, weight_attr=attr)
    >>> float(conv.weight.numpy().mean())
    0.5
"""
import math

import numpy as np

from .. import initializer as _init
from ..autograd import Variable

__all__ = ["Constant", "Normal", "TruncatedNormal", "Uniform", "XavierUniform",
           "XavierNormal", "KaimingUniform", "KaimingNormal", "Assign", "calculate_gain"]


def calculate_gain(nonlinearity, param=None):
    """Paddle's recommended gain for a nonlinearity (see the module docstring)."""
    name = str(nonlinearity).lower()
    if name in ("sigmoid", "linear", "conv1d", "conv2d", "conv3d", "conv1d_transpose",
                "conv2d_transpose", "conv3d_transpose"):
        return 1.0
    if name == "tanh":
        return 5.0 / 3.0
    if name == "relu":
        return math.sqrt(2.0)
    if name == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope * slope))
    if name == "selu":
        return 3.0 / 4.0
    raise ValueError(f"calculate_gain: nonlinearity {nonlinearity!r} is not one of sigmoid, "
                     "linear, conv*, tanh, relu, leaky_relu, selu")


class Constant(_init.Constant):
    def __init__(self, value=0.0):
        super().__init__(value)


class Normal(_init.Normal):
    def __init__(self, mean=0.0, std=1.0, name=None):
        super().__init__(loc=mean, scale=std)


class TruncatedNormal(_init.TruncatedNormal):
    def __init__(self, mean=0.0, std=1.0, name=None):
        super().__init__(loc=mean, scale=std)


class Uniform(_init.Uniform):
    def __init__(self, low=-1.0, high=1.0, name=None):
        super().__init__(low=low, high=high)


class XavierUniform(_init.Xavier):
    def __init__(self, fan_in=None, fan_out=None, name=None):
        super().__init__(uniform=True, fan_in=fan_in, fan_out=fan_out)


class XavierNormal(_init.Xavier):
    def __init__(self, fan_in=None, fan_out=None, name=None):
        super().__init__(uniform=False, fan_in=fan_in, fan_out=fan_out)


class _Kaiming(_init.Initializer):
    uniform = True

    def __init__(self, fan_in=None, negative_slope=0.0, nonlinearity="relu"):
        self.fan_in, self.negative_slope, self.nonlinearity = fan_in, negative_slope, nonlinearity
        self.gain = calculate_gain(nonlinearity, negative_slope)

    def _draw(self, shape, dtype):
        fan_in = _init.compute_fans(shape)[0] if self.fan_in is None else self.fan_in
        if self.uniform:
            limit = self.gain * math.sqrt(3.0 / fan_in)
            return self._rng().uniform(-limit, limit, size=shape).astype(dtype)
        return self._rng().normal(0.0, self.gain / math.sqrt(fan_in), size=shape).astype(dtype)


class KaimingUniform(_Kaiming):
    uniform = True


class KaimingNormal(_Kaiming):
    uniform = False


class Assign(_init.NumpyArrayInitializer):
    def __init__(self, value, name=None):
        if isinstance(value, Variable):
            value = value.numpy()
        super().__init__(np.asarray(value))
