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
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from .. import initializer as _init
from ..autograd import Variable

__all__ = ["Constant", "Normal", "TruncatedNormal", "Uniform", "XavierUniform",
           "XavierNormal", "KaimingUniform", "KaimingNormal", "Assign", "calculate_gain"]


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """Paddle's recommended gain for a nonlinearity (``paddle.nn.initializer.calculate_gain``).

    Parameters
    ----------
    nonlinearity : str
        ``'sigmoid'``, ``'linear'``, ``'conv1d'``... ``'conv3d_transpose'`` (gain 1),
        ``'tanh'`` (5/3), ``'relu'`` (sqrt(2)), ``'leaky_relu'``
        (sqrt(2 / (1 + slope^2))) or ``'selu'`` (3/4); case-insensitive.
    param : float, optional
        The negative slope of ``'leaky_relu'`` (default 0.01); ignored otherwise.

    Returns
    -------
    float
        The gain.

    Raises
    ------
    ValueError
        If ``nonlinearity`` is none of these.

    Examples
    --------
    >>> from conv3dt.nn.initializer import calculate_gain
    >>> calculate_gain("tanh")
    1.6666666666666667
    """
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
    """Every element ``value`` (``paddle.nn.initializer.Constant``).

    Parameters
    ----------
    value : float, default 0.0
        The value of every element.
    """

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(value)


class Normal(_init.Normal):
    """Normal values, N(mean, std^2) (``paddle.nn.initializer.Normal``).

    Parameters
    ----------
    mean : float, default 0.0
        The mean.
    std : float, default 1.0
        The standard deviation.
    name : str, optional
        Accepted for Paddle's signature and ignored.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0, name: Optional[str] = None) -> None:
        super().__init__(loc=mean, scale=std)


class TruncatedNormal(_init.TruncatedNormal):
    """N(mean, std^2) restricted to ``mean +- 2 std`` (``paddle.nn.initializer.TruncatedNormal``).

    Parameters
    ----------
    mean : float, default 0.0
        The mean.
    std : float, default 1.0
        The standard deviation before truncation.
    name : str, optional
        Accepted for Paddle's signature and ignored.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0, name: Optional[str] = None) -> None:
        super().__init__(loc=mean, scale=std)


class Uniform(_init.Uniform):
    """Uniform values in ``[low, high)`` (``paddle.nn.initializer.Uniform``).

    Parameters
    ----------
    low, high : float, default -1.0 and 1.0
        The bounds.
    name : str, optional
        Accepted for Paddle's signature and ignored.

    Raises
    ------
    ValueError
        If ``low > high``.
    """

    def __init__(self, low: float = -1.0, high: float = 1.0, name: Optional[str] = None) -> None:
        super().__init__(low=low, high=high)


class XavierUniform(_init.Xavier):
    """``U(-sqrt(6 / (fan_in + fan_out)), +sqrt(6 / (fan_in + fan_out)))``
    (``paddle.nn.initializer.XavierUniform``).

    Parameters
    ----------
    fan_in, fan_out : float, optional
        Default: the fans of the parameter's shape.
    name : str, optional
        Accepted for Paddle's signature and ignored.
    """

    def __init__(self, fan_in: Optional[float] = None, fan_out: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        super().__init__(uniform=True, fan_in=fan_in, fan_out=fan_out)


class XavierNormal(_init.Xavier):
    """N(0, 2 / (fan_in + fan_out)) (``paddle.nn.initializer.XavierNormal``).

    Parameters
    ----------
    fan_in, fan_out : float, optional
        Default: the fans of the parameter's shape.
    name : str, optional
        Accepted for Paddle's signature and ignored.
    """

    def __init__(self, fan_in: Optional[float] = None, fan_out: Optional[float] = None,
                 name: Optional[str] = None) -> None:
        super().__init__(uniform=False, fan_in=fan_in, fan_out=fan_out)


class _Kaiming(_init.Initializer):
    uniform = True

    def __init__(self, fan_in: Optional[float] = None, negative_slope: float = 0.0,
                 nonlinearity: str = "relu") -> None:
        self.fan_in, self.negative_slope, self.nonlinearity = fan_in, negative_slope, nonlinearity
        self.gain = calculate_gain(nonlinearity, negative_slope)

    def _draw(self, shape: Sequence[int], dtype: DTypeLike) -> NDArray[Any]:
        fan_in = _init.compute_fans(shape)[0] if self.fan_in is None else self.fan_in
        if self.uniform:
            limit = self.gain * math.sqrt(3.0 / fan_in)
            return self._rng().uniform(-limit, limit, size=shape).astype(dtype)
        return self._rng().normal(0.0, self.gain / math.sqrt(fan_in), size=shape).astype(dtype)


class KaimingUniform(_Kaiming):
    """``U(-gain sqrt(3 / fan_in), +gain sqrt(3 / fan_in))``
    (``paddle.nn.initializer.KaimingUniform``).

    Parameters
    ----------
    fan_in : float, optional
        Default: the ``fan_in`` of the parameter's shape.
    negative_slope : float, default 0.0
        The slope of ``'leaky_relu'`` in the gain.
    nonlinearity : str, default 'relu'
        The nonlinearity whose gain (:func:`calculate_gain`) scales the values.
    """

    uniform = True


class KaimingNormal(_Kaiming):
    """N(0, gain^2 / fan_in) (``paddle.nn.initializer.KaimingNormal``).

    Parameters
    ----------
    fan_in : float, optional
        Default: the ``fan_in`` of the parameter's shape.
    negative_slope : float, default 0.0
        The slope of ``'leaky_relu'`` in the gain.
    nonlinearity : str, default 'relu'
        The nonlinearity whose gain (:func:`calculate_gain`) scales the values.
    """

    uniform = False


class Assign(_init.NumpyArrayInitializer):
    """A copy of ``value`` (``paddle.nn.initializer.Assign``).

    Parameters
    ----------
    value : array_like or conv3dt.autograd.Variable
        The values (an array, a nested list or a Tensor); their shape must equal the
        parameter's.
    name : str, optional
        Accepted for Paddle's signature and ignored.
    """

    def __init__(self, value: Union[Variable, ArrayLike], name: Optional[str] = None) -> None:
        if isinstance(value, Variable):
            value = value.numpy()
        super().__init__(np.asarray(value))
