"""Functional API: 3D transposed convolution and its gradients on plain arrays.

NumPy arrays (and array-likes) are computed by the Cython kernels; CuPy arrays by the CuPy
backend, on their device. Argument names, order and semantics are PaddlePaddle's
``paddle.nn.functional.conv3d_transpose``.
"""

import numpy as np

from . import _backend
from ._geometry import resolve

__all__ = ["conv3d_transpose", "conv3d_transpose_backward"]

_FLOAT_TYPES = ("float32", "float64")


def _as_array(value, name, xp):
    """``value`` as a float32/float64 array the kernels can read, never copying needlessly."""
    if value is None:
        return None
    if xp is np:
        if isinstance(value, np.ndarray):
            arr = value
        else:
            try:
                arr = np.asarray(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be an array of float32 or float64, got "
                                f"{type(value).__name__}: {exc}") from None
    else:
        arr = xp.asarray(value)
    if arr.dtype.name not in _FLOAT_TYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got dtype {arr.dtype} (shape {arr.shape})"
        )
    if xp is np and (not arr.dtype.isnative or not arr.flags.aligned
                     or any(s % arr.itemsize for s in arr.strides)):
        # Byte-swapped or unaligned memory: the kernels read native, aligned elements.
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")
    return arr


def _arrays(named, xp):
    arrays = {name: _as_array(value, name, xp) for name, value in named.items()}
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} is {dt}" for name, dt in dtypes.items())
        raise TypeError(f"all arrays must have the same dtype (no silent promotion): {listed}")
    return arrays


def _ncdhw(arr, data_format):
    """An NCDHW view of an array in data_format (a transposed view for NDHWC, no copy)."""
    return arr if data_format == "NCDHW" else arr.transpose(0, 4, 1, 2, 3)


def _check_shape(arr, expected, name):
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(arr.shape)}")


def conv3d_transpose(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, output_size=None, data_format="NCDHW"):
    """3D transposed convolution ("deconvolution"), exact to PaddlePaddle.

    ``x`` is ``[N, C_in, D, H, W]`` (``[N, D, H, W, C_in]`` for ``data_format="NDHWC"``),
    ``weight`` is ``[C_in, C_out / groups, kD, kH, kW]``, ``bias`` is ``[C_out]`` or None.
    Input position ``i`` contributes to output ``o = i * stride + t * dilation - pad_lo``
    through kernel tap ``t``; per spatial dimension the output size is

        (in - 1) * stride - pad_lo - pad_hi + dilation * (k - 1) + 1 + output_padding

    or ``output_size`` (which must lie in ``[that - output_padding, that + stride)``).
    ``padding`` is an int, 3 ints, 6 ints ``[d_lo, d_hi, h_lo, h_hi, w_lo, w_hi]``, 5 pairs
    (batch and channel pairs ``[0, 0]``), ``'SAME'``/``'VALID'`` (Paddle's rules) or
    ``'SAME_UPPER'``/``'SAME_LOWER'`` (ONNX's: output = in * stride).

    Returns an array of the input's dtype (float32 or float64) and layout, on its device.

    >>> import numpy as np
    >>> x = np.ones((1, 2, 3, 3, 3), np.float32)
    >>> w = np.ones((2, 4, 2, 2, 2), np.float32)
    >>> conv3d_transpose(x, w, stride=2).shape
    (1, 4, 6, 6, 6)
    """
    backend = _backend.backend_for(x, weight, bias)
    xp = _backend.array_module(x, weight, bias)
    a = _arrays({"x": x, "weight": weight, "bias": bias}, xp)
    x, weight, bias = a["x"], a["weight"], a["bias"]
    plan = resolve(x.shape, weight.shape, stride, padding, output_padding, groups, dilation,
                   output_size, data_format)
    if bias is not None:
        _check_shape(bias, (plan.c_out,), "bias")
    out = xp.empty(plan.y_shape, dtype=x.dtype)
    if out.size == 0:
        return out
    backend.forward(plan, _ncdhw(x, plan.data_format), xp.ascontiguousarray(weight),
                    None if bias is None else xp.ascontiguousarray(bias),
                    _ncdhw(out, plan.data_format))
    return out


def _check_needs(needs):
    if (not isinstance(needs, (tuple, list)) or len(needs) != 3
            or not all(isinstance(n, (bool, np.bool_)) for n in needs)):
        raise ValueError(f"needs must be a sequence of 3 bools (grad_x, grad_weight, "
                         f"grad_bias), got {needs!r}")
    return tuple(bool(n) for n in needs)


def conv3d_transpose_backward(grad_output, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, output_size=None, data_format="NCDHW",
                              needs=(True, True, True)):
    """Gradients of :func:`conv3d_transpose` given the gradient of its output.

    Returns ``(grad_x, grad_weight, grad_bias)``, each computed only if asked for in
    ``needs`` (None otherwise). With ``y = conv3d_transpose(x, w, b)`` and upstream
    gradient ``gy``:

        grad_x[ci, i]     = sum_{co, t} w[ci, co, t] * gy[co, i * stride + t * dilation - pad_lo]
        grad_w[ci, co, t] = sum_{n, i} x[n, ci, i] * gy[n, co, i * stride + t * dilation - pad_lo]
        grad_b[co]        = sum_{n, o} gy[n, co, o]

    (within a group; positions outside the output contribute nothing).

    >>> import numpy as np
    >>> x = np.ones((1, 2, 3, 3, 3)); w = np.ones((2, 4, 2, 2, 2))
    >>> gy = np.ones((1, 4, 6, 6, 6))
    >>> gx, gw, gb = conv3d_transpose_backward(gy, x, w, stride=2)
    >>> float(gx[0, 0, 0, 0, 0]), float(gb[0])
    (32.0, 216.0)
    """
    needs = _check_needs(needs)
    backend = _backend.backend_for(grad_output, x, weight)
    xp = _backend.array_module(grad_output, x, weight)
    a = _arrays({"grad_output": grad_output, "x": x, "weight": weight}, xp)
    grad_output, x, weight = a["grad_output"], a["x"], a["weight"]
    plan = resolve(x.shape, weight.shape, stride, padding, output_padding, groups, dilation,
                   output_size, data_format)
    _check_shape(grad_output, plan.y_shape, "grad_output")
    dtype = x.dtype
    gx = xp.empty(plan.x_shape, dtype=dtype) if needs[0] else None
    gw = xp.empty(plan.w_shape, dtype=dtype) if needs[1] else None
    gb = xp.empty((plan.c_out,), dtype=dtype) if needs[2] else None
    if plan.n == 0:
        # An empty batch: nothing flows back, the gradients are zero.
        for g in (gx, gw, gb):
            if g is not None:
                g[...] = 0
        return gx, gw, gb
    backend.backward(plan, _ncdhw(grad_output, plan.data_format), _ncdhw(x, plan.data_format),
                     xp.ascontiguousarray(weight),
                     None if gx is None else _ncdhw(gx, plan.data_format), gw, gb)
    return gx, gw, gb
