"""Activation functions and their derivatives: one table, used by the layer's ``act=``
argument and by the functions in ``conv3dt.layers``.

Each entry maps a name to ``(forward, derivative, defaults)``:

- ``forward(xp, x, **attrs) -> y``
- ``derivative(xp, x, y, **attrs) -> dy/dx`` (element-wise; the autograd multiplies it
  by the upstream gradient). It may use ``x``, ``y`` or both, whichever is cheaper.
- ``defaults``: the attributes PaddlePaddle's fluid ops use when none are given, which is
  what ``Conv3DTranspose(act=name)`` gets (Paddle's ``append_activation`` passes none).

``xp`` is the array module (numpy or cupy), so the same formulas run on both. Formulas are
written in the overflow-free form (e.g. ``exp(-|x|)``) so float32 never produces inf/nan.
At kinks (relu at 0, ...) the derivative takes the value Paddle's grad kernels use.

Example::

    >>> import numpy as np
    >>> from conv3dt._activations import apply
    >>> apply("relu6", np, np.array([-1.0, 3.0, 9.0]))
    array([0., 3., 6.])
"""
import math
from typing import Any, Callable, Dict, Optional, Tuple, overload

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def _erf(xp, x):
    # NumPy has no erf; SciPy, a dependency of conv3dt, has it (CuPy: cupyx.scipy).
    if xp.__name__ == "numpy":
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf(x)


def _sigmoid(xp, x):
    # exp(-|x|) never overflows: sigmoid(x) = 1/(1+e^-x) for x>=0, e^x/(1+e^x) for x<0.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _relu(xp, x):
    return xp.maximum(x, 0)


def _relu_grad(xp, x, y):
    return (x > 0).astype(x.dtype)


def _relu6(xp, x, threshold=6.0):
    return xp.clip(x, 0, threshold)


def _relu6_grad(xp, x, y, threshold=6.0):
    return ((x > 0) & (x < threshold)).astype(x.dtype)


def _leaky_relu(xp, x, alpha=0.02):
    return xp.where(x > 0, x, alpha * x)


def _leaky_relu_grad(xp, x, y, alpha=0.02):
    return xp.where(x > 0, 1, alpha).astype(x.dtype)


def _elu(xp, x, alpha=1.0):
    # expm1 of min(x, 0): exact near 0, and the unused branch never overflows.
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


def _elu_grad(xp, x, y, alpha=1.0):
    return xp.where(x > 0, 1, alpha * xp.exp(xp.minimum(x, 0))).astype(x.dtype)


def _selu(xp, x, scale=SELU_SCALE, alpha=SELU_ALPHA):
    return scale * xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))


def _selu_grad(xp, x, y, scale=SELU_SCALE, alpha=SELU_ALPHA):
    return (scale * xp.where(x > 0, 1, alpha * xp.exp(xp.minimum(x, 0)))).astype(x.dtype)


def _gelu(xp, x, approximate=False):
    if approximate:
        return 0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(xp, x / math.sqrt(2)))


def _gelu_grad(xp, x, y, approximate=False):
    if approximate:
        c = math.sqrt(2 / math.pi)
        t = xp.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    pdf = xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return 0.5 * (1 + _erf(xp, x / math.sqrt(2))) + x * pdf


def _sigmoid_grad(xp, x, y):
    return y * (1 - y)


def _hard_sigmoid(xp, x, slope=0.2, offset=0.5):
    return xp.clip(slope * x + offset, 0, 1)


def _hard_sigmoid_grad(xp, x, y, slope=0.2, offset=0.5):
    return xp.where((y > 0) & (y < 1), slope, 0).astype(x.dtype)


def _swish(xp, x, beta=1.0):
    return x * _sigmoid(xp, beta * x)


def _swish_grad(xp, x, y, beta=1.0):
    s = _sigmoid(xp, beta * x)
    return s + beta * x * s * (1 - s)


def _hard_swish(xp, x, threshold=6.0, scale=6.0, offset=3.0):
    return x * xp.clip(x + offset, 0, threshold) / scale


def _hard_swish_grad(xp, x, y, threshold=6.0, scale=6.0, offset=3.0):
    # Paddle's HardSwishGradFunctor: 0 below -offset, 1 above threshold-offset,
    # (2x + offset)/scale between.
    middle = (2 * x + offset) / scale
    return xp.where(x < -offset, 0, xp.where(x > threshold - offset, 1, middle)).astype(x.dtype)


def _tanh(xp, x):
    return xp.tanh(x)


def _tanh_grad(xp, x, y):
    return 1 - y * y


def _softplus(xp, x):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large |x|.
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def _softplus_grad(xp, x, y):
    return _sigmoid(xp, x)


def _softsign(xp, x):
    return x / (1 + xp.abs(x))


def _softsign_grad(xp, x, y):
    d = 1 + xp.abs(x)
    return 1 / (d * d)


ACTIVATIONS: Dict[str, Tuple[Callable[..., Any], Callable[..., Any], Dict[str, Any]]] = {
    # name:        (forward,       derivative,          Paddle fluid defaults)
    "relu":         (_relu,         _relu_grad,          {}),
    "relu6":        (_relu6,        _relu6_grad,         {"threshold": 6.0}),
    "leaky_relu":   (_leaky_relu,   _leaky_relu_grad,    {"alpha": 0.02}),
    "elu":          (_elu,          _elu_grad,           {"alpha": 1.0}),
    "selu":         (_selu,         _selu_grad,          {"scale": SELU_SCALE, "alpha": SELU_ALPHA}),
    "gelu":         (_gelu,         _gelu_grad,          {"approximate": False}),
    "sigmoid":      (_sigmoid,      _sigmoid_grad,       {}),
    "hard_sigmoid": (_hard_sigmoid, _hard_sigmoid_grad,  {"slope": 0.2, "offset": 0.5}),
    "swish":        (_swish,        _swish_grad,         {"beta": 1.0}),
    "hard_swish":   (_hard_swish,   _hard_swish_grad,    {"threshold": 6.0, "scale": 6.0, "offset": 3.0}),
    "tanh":         (_tanh,         _tanh_grad,          {}),
    "softplus":     (_softplus,     _softplus_grad,      {}),
    "softsign":     (_softsign,     _softsign_grad,      {}),
}


@overload
def check_name(act: str) -> str: ...
@overload
def check_name(act: Optional[str]) -> Optional[str]: ...
def check_name(act: Optional[str]) -> Optional[str]:
    """``act`` if it names a supported activation (or is None), else ValueError listing them."""
    if act is None or (isinstance(act, str) and act in ACTIVATIONS):
        return act
    raise ValueError(f"unsupported activation {act!r}; supported: None, "
                     + ", ".join(repr(name) for name in ACTIVATIONS))


def attrs_for(act: str, **attrs: Any) -> Dict[str, Any]:
    """The Paddle defaults of ``act`` overridden by ``attrs`` (None values mean 'default')."""
    merged = dict(ACTIVATIONS[check_name(act)][2])
    merged.update({k: v for k, v in attrs.items() if v is not None})
    return merged


def apply(act: str, xp: Any, x: Any, **attrs: Any) -> Any:
    """``act(x)`` on a plain array."""
    return ACTIVATIONS[check_name(act)][0](xp, x, **attrs_for(act, **attrs))
