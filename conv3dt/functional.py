"""Functional API: 3D transposed convolution and its gradients on plain arrays.

NumPy arrays (and array-likes) are computed by the Cython kernels; CuPy arrays by the CuPy
backend, on their device. Argument names, order and semantics are PaddlePaddle's
``paddle.nn.functional.conv3d_transpose``.
"""

import math
import os

import numpy as np

from . import _backend
from ._geometry import resolve

__all__ = ["conv3d_transpose", "conv3d_transpose_backward"]

_FLOAT_TYPES = ("float32", "float64")


def _as_array(value, name, xp):
    """``value`` as a float32/float64 array the kernels can read, never copying needlessly."""
    if value is None:
        if name == "bias":
            return None
        raise TypeError(f"{name} must be an array of float32 or float64, got None")
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


def _human(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if nbytes < 1024 or unit == "EiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def _memory_limit():
    """Bytes of memory this process may use at most (physical memory, or a cgroup limit)."""
    limit = None
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if 0 < value < (limit or float("inf")):
            limit = value
    return limit


_MEMORY_LIMIT = _memory_limit()


def _empty(xp, shape, dtype, what, backend=None):
    """``xp.empty(shape, dtype)`` (``backend.empty``, which may reuse memory, for the
    results of a pass), or a MemoryError stating the size of ``what``.

    The size is computed with Python ints first, so an absurd geometry (say a huge stride
    making 10^15 elements) is refused at once, with no allocation attempted and no overflow.
    """
    dtype = np.dtype(dtype)
    count = math.prod(int(s) for s in shape)
    nbytes = count * dtype.itemsize
    message = (f"{what} of shape {tuple(int(s) for s in shape)} ({dtype}) needs {nbytes} "
               f"bytes ({_human(nbytes)})")
    if xp is np and _MEMORY_LIMIT and nbytes > _MEMORY_LIMIT:
        raise MemoryError(f"{message}: more than this machine's memory, {_MEMORY_LIMIT} "
                          f"bytes ({_human(_MEMORY_LIMIT)})")
    if nbytes > np.iinfo(np.intp).max:
        raise MemoryError(f"{message}: more than the largest possible array")
    try:
        return (backend or xp).empty(tuple(int(s) for s in shape), dtype)
    except MemoryError as exc:
        raise MemoryError(f"{message}, which could not be allocated: {exc}") from None


def _padded(plan):
    """Some (input position, tap) pairs fall outside the output (they contribute nothing)."""
    return any(lo > 0 or hi > 0 for lo, hi in zip(plan.pad_lo, plan.pad_hi))


def _tap_slices(plan, tap):
    """(input slices, output slices) of the pairs that tap ``tap`` = (td, th, tw) connects.

    Input ``i`` reaches output ``o = i * s + t * d - pad_lo``; only pairs with both ends
    inside their volumes exist. None when the tap reaches no output.
    """
    in_sl, out_sl = [], []
    for a in range(3):
        s, off = plan.stride[a], tap[a] * plan.dilation[a] - plan.pad_lo[a]
        i_min = max(0, -(off // s))                      # ceil(-off / s)
        i_max = min(plan.in_size[a] - 1, (plan.out_size[a] - 1 - off) // s)
        if i_min > i_max:
            return None
        in_sl.append(slice(i_min, i_max + 1))
        out_sl.append(slice(i_min * s + off, i_max * s + off + 1, s))
    return tuple(in_sl), tuple(out_sl)


def _tap_pairs(plan):
    """(tap, input slices, output slices) for every kernel tap that connects some pair."""
    kd, kh, kw = plan.kernel
    for tap in ((td, th, tw) for td in range(kd) for th in range(kh) for tw in range(kw)):
        sl = _tap_slices(plan, tap)
        if sl is not None:
            yield (tap,) + sl


def _exact_forward(plan, x, w, bias, out, xp):
    """out = conv3d_transpose(x, w) + bias tap by tap, multiplying only the pairs that exist.

    The kernels multiply whole phase blocks of the weight by packed columns that hold zeros
    where a tap reads outside the input: with a non-finite weight that would make
    ``0 * inf = nan`` where no such product exists. Used only for non-finite weights.
    """
    cig, cog = plan.c_in // plan.groups, plan.c_out // plan.groups
    out[...] = 0
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1, 1)
    for tap, (i_d, i_h, i_w), (o_d, o_h, o_w) in _tap_pairs(plan):
        for g in range(plan.groups):
            xs = x[:, g * cig:(g + 1) * cig, i_d, i_h, i_w]
            wt = w[g * cig:(g + 1) * cig, :, tap[0], tap[1], tap[2]]    # [cig, cog]
            contrib = xp.matmul(xs.transpose(0, 2, 3, 4, 1), wt)       # [N, d, h, w, cog]
            out[:, g * cog:(g + 1) * cog, o_d, o_h, o_w] += contrib.transpose(0, 4, 1, 2, 3)


def _exact_backward(plan, gy, x, w, gx, gw, xp):
    """grad_x and/or grad_weight tap by tap over the pairs that exist (see _exact_forward).

    Used when the kernels' zero-padded gathers would multiply a non-finite weight (grad_x)
    or input (grad_weight) by a zero that stands for "no such output position".
    """
    cig, cog = plan.c_in // plan.groups, plan.c_out // plan.groups
    if gx is not None:
        gx[...] = 0
    if gw is not None:
        gw[...] = 0
    for tap, (i_d, i_h, i_w), (o_d, o_h, o_w) in _tap_pairs(plan):
        for g in range(plan.groups):
            gys = gy[:, g * cog:(g + 1) * cog, o_d, o_h, o_w]
            if gx is not None:
                wt = w[g * cig:(g + 1) * cig, :, tap[0], tap[1], tap[2]]  # [cig, cog]
                contrib = xp.matmul(gys.transpose(0, 2, 3, 4, 1), wt.T)   # [N, d, h, w, cig]
                gx[:, g * cig:(g + 1) * cig, i_d, i_h, i_w] += contrib.transpose(0, 4, 1, 2, 3)
            if gw is not None:
                xs = x[:, g * cig:(g + 1) * cig, i_d, i_h, i_w]
                gw[g * cig:(g + 1) * cig, :, tap[0], tap[1], tap[2]] = xp.tensordot(
                    xs, gys, axes=([0, 2, 3, 4], [0, 2, 3, 4]))


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

    Precision: float32 inputs accumulate in float32 (blocked GEMMs). Per output element
    the error against exact arithmetic stays within ``4 * eps32 * sum |x * w|`` over the
    element's products (``eps32 = 2**-23``), and within ``1e-5 * max |y|``; measured on the
    longest reductions tested (kernel 12 x 12 x 12, 512 input channels: 884,736 products
    per element) it is ``1.6 * eps32 * sum |x * w|``, ``2e-6 * max |y|`` (gradients
    ``4e-7``); float64 accumulates in float64. NaN and Inf propagate as
    IEEE arithmetic says: an element is NaN or +-Inf exactly when the sum of the products
    that reach it (input positions and taps inside the volumes, padding contributes
    nothing) is. Results do not depend on the number of threads, bit for bit.

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
    out = _empty(xp, plan.y_shape, x.dtype, "the output", backend)
    if out.size == 0:
        return out
    if not backend.all_finite(weight):
        _exact_forward(plan, _ncdhw(x, plan.data_format), weight, bias,
                       _ncdhw(out, plan.data_format), xp)
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
    gx = _empty(xp, plan.x_shape, dtype, "grad_x", backend) if needs[0] else None
    gw = _empty(xp, plan.w_shape, dtype, "grad_weight", backend) if needs[1] else None
    gb = _empty(xp, (plan.c_out,), dtype, "grad_bias", backend) if needs[2] else None
    if plan.n == 0:
        # An empty batch: nothing flows back, the gradients are zero.
        for g in (gx, gw, gb):
            if g is not None:
                g[...] = 0
        return gx, gw, gb
    gy_v, x_v, gx_v = (_ncdhw(grad_output, plan.data_format), _ncdhw(x, plan.data_format),
                       None if gx is None else _ncdhw(gx, plan.data_format))
    weight = xp.ascontiguousarray(weight)
    # The kernels gather grad_output with zeros standing for positions outside the output;
    # with padding, a non-finite weight (grad_x) or x (grad_weight) times such a zero would
    # be a NaN that the arithmetic of the operation does not produce. Those rare inputs take
    # the exact tap-by-tap path.
    padded = _padded(plan)
    exact_gx = gx is not None and padded and not backend.all_finite(weight)
    exact_gw = gw is not None and padded and not backend.all_finite(x)
    if not (exact_gx and exact_gw and gb is None):
        backend.backward(plan, gy_v, x_v, weight, None if exact_gx else gx_v,
                         None if exact_gw else gw, gb)
    if exact_gx or exact_gw:
        _exact_backward(plan, gy_v, x_v, weight, gx_v if exact_gx else None,
                        gw if exact_gw else None, xp)
    return gx, gw, gb
