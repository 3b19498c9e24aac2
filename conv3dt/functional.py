"""Functional API: 3D transposed convolution and its gradients on plain arrays.

NumPy arrays (and array-likes: objects with ``__array__`` or ``__dlpack__``) are computed
by the Cython kernels; CuPy arrays (and other CUDA arrays) by the CuPy backend, on their
device. Argument names, order and semantics are PaddlePaddle's
``paddle.nn.functional.conv3d_transpose``.

A call's geometry (shapes, dtype, stride, padding...) is validated and resolved once: the
resolved plan is kept, keyed by those arguments, so a repeated call only checks what can
change from call to call (the arrays' types, dtypes, layouts, finiteness, ``out``).
"""

from __future__ import annotations

import math
import os
import threading
from typing import (Any, Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple,
                    TypeVar, overload)

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _backend, _memory
from ._geometry import Plan, arguments_key, resolve
from ._typing import DataFormat, FloatArray, IntTriple, PaddingArg, SizeArg

__all__ = ["conv3d_transpose", "conv3d_transpose_backward"]

_FLOAT_TYPES = ("float32", "float64")
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_ALL_NEEDS = (True, True, True)
_TooHardError = getattr(np, "exceptions", np).TooHardError
# Work an exact overlap test may take before two arrays are taken to overlap.
_OVERLAP_WORK = 10**5

_T = TypeVar("_T")
# The result's dtype follows the inputs' (one of the two the kernels compute).
_Float = TypeVar("_Float", np.float32, np.float64)
_Slices = Tuple[slice, ...]


def _refuse_autograd_tensor(value: Any, name: str) -> None:
    """A tensor that records gradients (torch's ``requires_grad``) would lose them here."""
    if getattr(value, "requires_grad", False) is True and hasattr(value, "__dlpack__"):
        kind = f"{type(value).__module__}.{type(value).__name__}"
        raise TypeError(
            f"{name} is a {kind} with requires_grad=True: conv3dt.functional computes on "
            f"plain arrays and records no gradient for it. Use conv3dt.torch, the PyTorch "
            f"bridge whose functions take part in torch.autograd, or pass "
            f"{name}.detach() to compute without gradients")


def _from_dlpack(value: Any, name: str) -> Any:
    from_dlpack = getattr(np, "from_dlpack", None) or getattr(np, "_from_dlpack", None)
    if from_dlpack is None:  # pragma: no cover - NumPy < 1.22
        raise TypeError(f"{name} is a DLPack array ({type(value).__name__}): reading it "
                        f"needs NumPy >= 1.23, this is NumPy {np.__version__}")
    try:
        return from_dlpack(value)
    except (TypeError, ValueError, BufferError, RuntimeError) as exc:
        raise TypeError(f"{name} must be an array of float32 or float64 in CPU memory, got "
                        f"{type(value).__name__} that NumPy cannot read through DLPack: "
                        f"{exc}") from None


def _as_array(value: Any, name: str, xp: Any) -> Any:
    """``value`` as a float32/float64 array the kernels can read, never copying needlessly."""
    if value is None:
        if name == "bias":
            return None
        raise TypeError(f"{name} must be an array of float32 or float64, got None")
    if xp is np:
        if isinstance(value, np.ndarray):
            arr = value
        elif (hasattr(value, "__dlpack__") and not hasattr(value, "__array__")
              and not hasattr(value, "__array_interface__")):
            arr = _from_dlpack(value, name)
        else:
            try:
                arr = np.asarray(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be an array of float32 or float64, got "
                                f"{type(value).__name__}: {exc}") from None
    elif isinstance(value, xp.ndarray) or hasattr(value, "__cuda_array_interface__"):
        arr = xp.asarray(value)
    else:
        arr = xp.from_dlpack(value)
    if arr.dtype.name not in _FLOAT_TYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got dtype {arr.dtype} (shape {arr.shape})"
        )
    if xp is np and not _kernel_readable(arr):
        # Byte-swapped or unaligned memory: the kernels read native, aligned elements.
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")
    return arr


def _kernel_readable(arr: Any) -> bool:
    """A NumPy array of native, aligned elements at strides of whole elements."""
    flags = arr.flags
    return arr.dtype.isnative and flags.aligned and (
        flags.c_contiguous or not any(s % arr.itemsize for s in arr.strides))


def _arrays(named: Dict[str, Any], xp: Any) -> Dict[str, Any]:
    arrays = {name: _as_array(value, name, xp) for name, value in named.items()}
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} is {dt}" for name, dt in dtypes.items())
        raise TypeError(f"all arrays must have the same dtype (no silent promotion): {listed}")
    return arrays


def _inputs(named: Dict[str, Any]) -> Tuple[Any, Any, List[Any]]:
    """(backend, xp, arrays) of the named input arrays (None: an absent bias).

    NumPy arrays of one native float dtype that the kernels read as they are take a few
    identity tests; anything else goes through the full conversion and its checks.
    """
    values = list(named.values())
    dtype = values[0].dtype if type(values[0]) is np.ndarray else None
    if dtype is _F32 or dtype is _F64:
        for name, v in named.items():
            if v is None:
                if name != "bias":
                    break
            elif type(v) is not np.ndarray or v.dtype is not dtype or not _kernel_readable(v):
                break
        else:
            return _backend.dispatch() + (values,)
    for name, v in named.items():
        if v is not None and type(v) is not np.ndarray:
            _refuse_autograd_tensor(v, name)
    backend, xp = _backend.dispatch(*values)
    return backend, xp, list(_arrays(named, xp).values())


def _ncdhw(arr: Any, data_format: str) -> Any:
    """An NCDHW view of an array in data_format (a transposed view for NDHWC, no copy)."""
    return arr if data_format == "NCDHW" else arr.transpose(0, 4, 1, 2, 3)


def _check_shape(arr: Any, expected: Sequence[int], name: str) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(arr.shape)}")


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} EiB"


def _memory_limit() -> Optional[int]:
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


def _size_message(shape: Sequence[int], dtype: Any, what: str) -> str:
    nbytes = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    return (f"{what} of shape {tuple(int(s) for s in shape)} ({np.dtype(dtype)}) needs "
            f"{nbytes} bytes ({_human(nbytes)})")


def _check_size(xp: Any, shape: Sequence[int], dtype: Any, what: str) -> int:
    """The bytes of ``what``, or a MemoryError stating its size if it cannot be allocated.

    The size is computed with Python ints, so an absurd geometry (say a huge stride making
    10^15 elements) is refused at once, with no allocation attempted and no overflow.
    """
    nbytes: int = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    if xp is np and _MEMORY_LIMIT and nbytes > _MEMORY_LIMIT:
        raise MemoryError(f"{_size_message(shape, dtype, what)}: more than this machine's "
                          f"memory, {_MEMORY_LIMIT} bytes ({_human(_MEMORY_LIMIT)})")
    if nbytes > np.iinfo(np.intp).max:
        raise MemoryError(f"{_size_message(shape, dtype, what)}: more than the largest "
                          f"possible array")
    return nbytes


def _allocate(xp: Any, shape: Tuple[int, ...], dtype: Any, what: str, backend: Any,
              small: bool) -> Any:
    """``xp.empty(shape, dtype)``, from ``backend.empty`` (which may reuse memory) unless
    ``small`` (the CPU memory cache keeps no arrays that small), or a MemoryError stating
    the size of ``what``."""
    try:
        if small:
            return np.empty(shape, dtype)
        return (backend or xp).empty(shape, dtype)
    except MemoryError as exc:
        raise MemoryError(f"{_size_message(shape, dtype, what)}, which could not be "
                          f"allocated: {exc}") from None


def _empty(xp: Any, shape: Sequence[int], dtype: Any, what: str, backend: Any = None) -> Any:
    """``xp.empty(shape, dtype)`` (``backend.empty``, which may reuse memory, for the
    results of a pass), or a MemoryError stating the size of ``what``."""
    shape = tuple(int(s) for s in shape)
    _check_size(xp, shape, dtype, what)
    return _allocate(xp, shape, np.dtype(dtype), what, backend, False)


def _result(xp: Any, shape: Sequence[int], dtype: Any,
            what: str) -> Tuple[Tuple[int, ...], str, bool]:
    """How a result of ``shape`` is allocated: (shape, what, small); checks its size."""
    shape = tuple(int(s) for s in shape)
    nbytes = _check_size(xp, shape, dtype, what)
    # conv3dt._memory.empty hands arrays under _MIN_BYTES straight from NumPy: so does a
    # small result here, without the cache's reading of its limit at every call.
    return shape, what, xp is np and nbytes < _memory._MIN_BYTES


class _SetupCache:
    """Resolved setups of calls, keyed by their hashable arguments (at most ``size``).

    A setup holds only what the key determines (the plan, the results' shapes, checks of
    the shapes); a call with an unhashable or non-plain argument is set up afresh.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._setups: Dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Optional[Hashable], make: Callable[..., _T], *args: Any) -> _T:
        if key is None:
            return make(*args)
        setup = self._setups.get(key)
        if setup is None:
            setup = make(*args)  # raises for bad arguments: nothing is kept
            with self._lock:
                while len(self._setups) >= self._size:
                    del self._setups[next(iter(self._setups))]  # the oldest
                self._setups[key] = setup
        return setup

    def clear(self) -> None:
        with self._lock:
            self._setups.clear()


_setups = _SetupCache()


def _overlap(a: Any, b: Any, xp: Any) -> bool:
    """``a`` and ``b`` may share an element (exactly tested when their bounds overlap)."""
    if not xp.may_share_memory(a, b):
        return False
    if xp is not np:
        return bool(xp.shares_memory(a, b))
    try:
        # (NumPy's stub admits only -1 and 0; its documentation any work bound.)
        return bool(np.shares_memory(a, b, max_work=_OVERLAP_WORK))  # type: ignore[arg-type]
    except _TooHardError:
        return True


def _overlaps_itself(arr: Any) -> bool:
    """Two indices of ``arr`` may address one element (a zero or interleaved stride).

    The dimensions sorted by stride must each step past everything the smaller ones span:
    so it is for every slice, transpose or reshape of an array that owns its memory.
    """
    if arr.size == 0 or arr.flags.c_contiguous or arr.flags.f_contiguous:
        return False  # (a contiguous array's elements are distinct: no sort needed)
    reach = arr.itemsize
    for stride, size in sorted((abs(st), n) for st, n in zip(arr.strides, arr.shape) if n > 1):
        if stride < reach:
            return True
        reach += stride * (size - 1)
    return False


def _check_out(out: Any, name: str, shape: Tuple[int, ...], dtype: Any, xp: Any,
               data_format: str, inputs: Dict[str, Any], contiguous: bool = False) -> Any:
    """``out`` can receive a result of ``shape`` and ``dtype``; a clear error otherwise."""
    if not isinstance(out, xp.ndarray) or _backend.is_gpu_array(out) != (xp is not np):
        where = "a NumPy array (on the CPU, as the inputs are)" if xp is np else \
            "a CuPy array (on the GPU, as the inputs are)"
        raise TypeError(f"{name} must be {where}, got {type(out).__module__}."
                        f"{type(out).__name__}")
    if tuple(out.shape) != shape:
        raise ValueError(f"{name} must have the result's shape {shape} ({data_format}), got "
                         f"shape {tuple(out.shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have the inputs' dtype {dtype}, got dtype {out.dtype}")
    if xp is np and not out.flags.writeable:
        raise ValueError(f"{name} is read-only (shape {shape}, {dtype}): give a writeable "
                         f"array")
    if contiguous and not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous, got strides {out.strides} for shape "
                         f"{shape}")
    if (xp is np and not (out.dtype.isnative and out.flags.aligned)) or any(
            s % out.itemsize for s in out.strides):
        raise ValueError(f"{name} must hold native, aligned elements at strides of whole "
                         f"elements, got strides {out.strides} ({out.dtype.str})")
    if _overlaps_itself(out):
        raise ValueError(f"{name} has strides {out.strides} for shape {shape} that make some "
                         f"of its elements the same memory: the results would overwrite "
                         f"each other")
    for other, arr in inputs.items():
        if arr is not None and arr.size and out.size and _overlap(out, arr, xp):
            raise ValueError(f"{name} overlaps {other} in memory: it would be overwritten "
                             f"while it is read; give a separate array")
    return out


def _padded(plan: Plan) -> bool:
    """Some (input position, tap) pairs fall outside the output (they contribute nothing)."""
    return any(lo > 0 or hi > 0 for lo, hi in zip(plan.pad_lo, plan.pad_hi))


def _tap_slices(plan: Plan, tap: Tuple[int, int, int]) -> Optional[Tuple[_Slices, _Slices]]:
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


def _tap_pairs(plan: Plan) -> Iterator[Tuple[Tuple[int, int, int], _Slices, _Slices]]:
    """(tap, input slices, output slices) for every kernel tap that connects some pair."""
    kd, kh, kw = plan.kernel
    for tap in ((td, th, tw) for td in range(kd) for th in range(kh) for tw in range(kw)):
        sl = _tap_slices(plan, tap)
        if sl is not None:
            yield (tap,) + sl


def _exact_forward(plan: Plan, x: Any, w: Any, bias: Any, out: Any, xp: Any) -> None:
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
            # The NaNs of existing products (0 * inf) and sums (inf - inf) are the result
            # IEEE arithmetic defines, as the kernels give it: no "invalid value" warning.
            # Channel by channel, in order (not one matmul, whose blocking depends on the
            # extents): a crop of the output computed from the matching crop of the input
            # then equals that region of the whole result bit for bit, as with the kernels.
            dst = out[:, g * cog:(g + 1) * cog, o_d, o_h, o_w]
            with np.errstate(invalid="ignore"):
                for ci in range(cig):
                    dst += xs[:, ci, None] * wt[ci].reshape(1, -1, 1, 1, 1)


def _exact_backward(plan: Plan, gy: Any, x: Any, w: Any, gx: Any, gw: Any, xp: Any) -> None:
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
            # NaNs of existing products and sums, as in _exact_forward: no warning.
            with np.errstate(invalid="ignore"):
                if gx is not None:
                    wt = w[g * cig:(g + 1) * cig, :, tap[0], tap[1], tap[2]]  # [cig, cog]
                    # channel by channel in order, as in _exact_forward (crops are exact)
                    dst = gx[:, g * cig:(g + 1) * cig, i_d, i_h, i_w]
                    for co in range(cog):
                        dst += gys[:, co, None] * wt[:, co].reshape(1, -1, 1, 1, 1)
                if gw is not None:
                    xs = x[:, g * cig:(g + 1) * cig, i_d, i_h, i_w]
                    gw[g * cig:(g + 1) * cig, :, tap[0], tap[1], tap[2]] = xp.tensordot(
                        xs, gys, axes=([0, 2, 3, 4], [0, 2, 3, 4]))


def _forward_setup(xp: Any, x_shape: Sequence[int], w_shape: Sequence[int],
                   b_shape: Optional[Sequence[int]], dtype: Any, stride: Any, padding: Any,
                   output_padding: Any, groups: Any, dilation: Any, output_size: Any,
                   data_format: Any) -> Tuple[Plan, Tuple[Tuple[int, ...], str, bool]]:
    plan = resolve(x_shape, w_shape, stride, padding, output_padding, groups, dilation,
                   output_size, data_format)
    if b_shape is not None and tuple(b_shape) != (plan.c_out,):
        raise ValueError(f"bias must have shape {(plan.c_out,)}, got {tuple(b_shape)}")
    return plan, _result(xp, plan.y_shape, dtype, "the output")


@overload
def conv3d_transpose(x: NDArray[_Float], weight: NDArray[_Float],
                     bias: Optional[NDArray[_Float]] = ..., stride: IntTriple = ...,
                     padding: PaddingArg = ..., output_padding: IntTriple = ...,
                     groups: int = ..., dilation: IntTriple = ..., output_size: SizeArg = ...,
                     data_format: DataFormat = ..., name: Optional[str] = ..., *,
                     out: Optional[NDArray[_Float]] = ...) -> NDArray[_Float]: ...
@overload
def conv3d_transpose(x: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = ...,
                     stride: IntTriple = ..., padding: PaddingArg = ...,
                     output_padding: IntTriple = ..., groups: int = ...,
                     dilation: IntTriple = ..., output_size: SizeArg = ...,
                     data_format: DataFormat = ..., name: Optional[str] = ..., *,
                     out: Optional[FloatArray] = ...) -> FloatArray: ...
def conv3d_transpose(x: Any, weight: Any, bias: Any = None, stride: IntTriple = 1,
                     padding: PaddingArg = 0, output_padding: IntTriple = 0, groups: int = 1,
                     dilation: IntTriple = 1, output_size: SizeArg = None,
                     data_format: DataFormat = "NCDHW", name: Optional[str] = None, *,
                     out: Any = None) -> Any:
    # (The overloads above are the signature users see; the arrays are Any here, since
    # they are converted in place: NumPy, CuPy or DLPack.)
    """3D transposed convolution ("deconvolution"), exact to PaddlePaddle.

    Input position ``i`` contributes to output ``o = i * stride + t * dilation - pad_lo``
    through kernel tap ``t``; per spatial dimension the output size is::

        (in - 1) * stride - pad_lo - pad_hi + dilation * (k - 1) + 1 + output_padding

    or ``output_size``.

    Parameters
    ----------
    x : array_like
        The input, ``[N, C_in, D, H, W]`` (``[N, D, H, W, C_in]`` for
        ``data_format="NDHWC"``), float32 or float64: a :class:`numpy.ndarray`, a CuPy
        array (computed on its GPU), or an object NumPy reads through ``__array__`` or
        DLPack (``__dlpack__``, e.g. a CPU :class:`torch.Tensor`).
    weight : array_like
        ``[C_in, C_out / groups, kD, kH, kW]``, of ``x``'s dtype.
    bias : array_like, optional
        ``[C_out]``, of ``x``'s dtype; None adds none.
    stride, dilation : int or sequence of 3 ints, default 1
        Per spatial dimension (D, H, W), or one for all three.
    padding : int, sequence of ints or str, default 0
        An int, 3 ints, 6 ints ``[d_lo, d_hi, h_lo, h_hi, w_lo, w_hi]``, 5 pairs (the
        batch and channel pairs ``[0, 0]``), ``'SAME'``/``'VALID'`` (Paddle's rules) or
        ``'SAME_UPPER'``/``'SAME_LOWER'`` (ONNX's: output = in * stride); the names are
        case-insensitive.
    output_padding : int or sequence of 3 ints, default 0
        Added to the high end of each output dimension; ``0 <= output_padding <
        max(stride, dilation)``. Exclusive with ``output_size``.
    groups : int, default 1
        ``C_in`` and ``C_out`` split into this many independent groups.
    output_size : int or sequence of 3 ints, optional
        The spatial output size; it must lie in ``[D', D' + stride)`` with ``D'`` the size
        above without ``output_padding``.
    data_format : {'NCDHW', 'NDHWC'}, default 'NCDHW'
        The layout of ``x`` and of the result.
    name : str, optional
        Paddle's (a name in its static graph): accepted and ignored.
    out : numpy.ndarray or CuPy array, optional
        Where to write the result (and what is returned): of the result's shape (in
        ``data_format``'s layout) and dtype, on the inputs' device, writeable, sharing no
        memory with ``x``, ``weight`` or ``bias``; any strided view (say a slice of a
        larger volume) is written in place.

    Returns
    -------
    numpy.ndarray or CuPy array
        The output, of the inputs' dtype and layout, on their device (``out`` when given).

    Raises
    ------
    TypeError
        An array is not float32/float64, the dtypes differ, arrays are on different
        devices, ``x`` is a :class:`torch.Tensor` with ``requires_grad=True`` (its
        gradient would be lost here; :mod:`conv3dt.torch` computes within torch's
        autograd), or ``out`` has the wrong type or dtype.
    ValueError
        A shape or geometry argument is invalid (the message names it and its value), or
        ``out`` has the wrong shape, is read-only or overlaps an input.
    MemoryError
        The result cannot be allocated (the message states its size).

    Notes
    -----
    Memory: on the CPU a result of 4 MiB or more is a view on a block of conv3dt's memory
    cache (its ``base`` is not None; ``.copy()`` gives an array that owns its memory), and
    the block is reused for a later result once no array refers to it, which spares the
    system the clearing of fresh pages. :func:`conv3dt.empty_cache` frees the idle blocks;
    :func:`conv3dt.set_cache_limit`, or the environment variable ``CONV3DT_CACHE_MIB``
    (MiB), bounds the idle memory kept (default 256 MiB; 0 keeps none, and results then
    own their memory); :func:`conv3dt.cache_info` reports it. With ``out=`` no result is
    allocated.

    Precision: float32 inputs accumulate in float32 (blocked GEMMs). Per output element
    the error against exact arithmetic stays within ``4 * eps32 * sum |x * w|`` over the
    element's products (``eps32 = 2**-23``), and within ``1e-5 * max |y|``; measured on the
    longest reductions tested (kernel 12 x 12 x 12, 512 input channels: 884,736 products
    per element) it is ``1.6 * eps32 * sum |x * w|``, ``2e-6 * max |y|`` (gradients
    ``4e-7``); float64 accumulates in float64. NaN and Inf propagate as
    IEEE arithmetic says: an element is NaN or +-Inf exactly when the sum of the products
    that reach it (input positions and taps inside the volumes, padding contributes
    nothing) is. Results do not depend on the number of threads, bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 2, 3, 3, 3), np.float32)
    >>> w = np.ones((2, 4, 2, 2, 2), np.float32)
    >>> conv3d_transpose(x, w, stride=2).shape
    (1, 4, 6, 6, 6)
    >>> y = np.empty((1, 4, 6, 6, 6), np.float32)
    >>> conv3d_transpose(x, w, stride=2, out=y) is y
    True
    """
    backend, xp, (x, weight, bias) = _inputs({"x": x, "weight": weight, "bias": bias})
    dtype = x.dtype
    args = arguments_key(stride, padding, output_padding, groups, dilation, output_size,
                         data_format)
    key = None if args is None else (
        "forward", xp, x.shape, weight.shape, None if bias is None else bias.shape, dtype,
        args)
    plan, (shape, what, small) = _setups.get(
        key, _forward_setup, xp, x.shape, weight.shape, None if bias is None else bias.shape,
        dtype, stride, padding, output_padding, groups, dilation, output_size, data_format)
    if out is None:
        out = _allocate(xp, shape, dtype, what, backend, small)
    else:
        _check_out(out, "out", shape, dtype, xp, plan.data_format,
                   {"x": x, "weight": weight, "bias": bias})
    if out.size == 0:
        return out
    x_v, out_v = _ncdhw(x, plan.data_format), _ncdhw(out, plan.data_format)
    if not backend.all_finite(weight):
        _exact_forward(plan, x_v, weight, bias, out_v, xp)
        return out
    if not weight.flags.c_contiguous:
        weight = xp.ascontiguousarray(weight)
    if bias is not None and not bias.flags.c_contiguous:
        bias = xp.ascontiguousarray(bias)
    backend.forward(plan, x_v, weight, bias, out_v)
    return out


def _check_needs(needs: Any) -> Tuple[bool, bool, bool]:
    if type(needs) is tuple and len(needs) == 3 and all(type(n) is bool for n in needs):
        return needs
    if (not isinstance(needs, (tuple, list)) or len(needs) != 3
            or not all(isinstance(n, (bool, np.bool_)) for n in needs)):
        raise ValueError(f"needs must be a sequence of 3 bools (grad_x, grad_weight, "
                         f"grad_bias), got {needs!r}")
    return bool(needs[0]), bool(needs[1]), bool(needs[2])


def _backward_setup(xp: Any, gy_shape: Sequence[int], x_shape: Sequence[int],
                    w_shape: Sequence[int], dtype: Any, needs: Tuple[bool, bool, bool],
                    stride: Any, padding: Any, output_padding: Any, groups: Any,
                    dilation: Any, output_size: Any, data_format: Any) -> Tuple[Any, ...]:
    plan = resolve(x_shape, w_shape, stride, padding, output_padding, groups, dilation,
                   output_size, data_format)
    if tuple(gy_shape) != tuple(plan.y_shape):
        raise ValueError(f"grad_output must have shape {tuple(plan.y_shape)}, got "
                         f"{tuple(gy_shape)}")
    results = tuple(_result(xp, shape, dtype, what) if need else None for need, shape, what
                    in zip(needs, (plan.x_shape, plan.w_shape, (plan.c_out,)),
                           ("grad_x", "grad_weight", "grad_bias")))
    return (plan,) + results + (_padded(plan),)


_OUT_NAMES = ("grad_x_out", "grad_weight_out", "grad_bias_out")


# The overloads: the gradients' dtype follows the inputs'; without ``needs`` all three are
# computed (none is None). A call without ``needs`` matches the first overload of a pair,
# which mypy reports as an overlap with the second (whose results are Optional): it picks
# the first, as intended.
@overload
def conv3d_transpose_backward(  # type: ignore[overload-overlap]
        grad_output: NDArray[_Float], x: NDArray[_Float], weight: NDArray[_Float],
        stride: IntTriple = ..., padding: PaddingArg = ..., output_padding: IntTriple = ...,
        groups: int = ..., dilation: IntTriple = ..., output_size: SizeArg = ...,
        data_format: DataFormat = ..., *, grad_x_out: Optional[NDArray[_Float]] = ...,
        grad_weight_out: Optional[NDArray[_Float]] = ...,
        grad_bias_out: Optional[NDArray[_Float]] = ...,
) -> Tuple[NDArray[_Float], NDArray[_Float], NDArray[_Float]]: ...
@overload
def conv3d_transpose_backward(
        grad_output: NDArray[_Float], x: NDArray[_Float], weight: NDArray[_Float],
        stride: IntTriple = ..., padding: PaddingArg = ..., output_padding: IntTriple = ...,
        groups: int = ..., dilation: IntTriple = ..., output_size: SizeArg = ...,
        data_format: DataFormat = ..., needs: Sequence[bool] = ..., *,
        grad_x_out: Optional[NDArray[_Float]] = ...,
        grad_weight_out: Optional[NDArray[_Float]] = ...,
        grad_bias_out: Optional[NDArray[_Float]] = ...,
) -> Tuple[Optional[NDArray[_Float]], Optional[NDArray[_Float]], Optional[NDArray[_Float]]]:
    ...
@overload
def conv3d_transpose_backward(
        grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike, stride: IntTriple = ...,
        padding: PaddingArg = ..., output_padding: IntTriple = ..., groups: int = ...,
        dilation: IntTriple = ..., output_size: SizeArg = ..., data_format: DataFormat = ...,
        *, grad_x_out: Optional[FloatArray] = ..., grad_weight_out: Optional[FloatArray] = ...,
        grad_bias_out: Optional[FloatArray] = ...,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv3d_transpose_backward(
        grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike, stride: IntTriple = ...,
        padding: PaddingArg = ..., output_padding: IntTriple = ..., groups: int = ...,
        dilation: IntTriple = ..., output_size: SizeArg = ..., data_format: DataFormat = ...,
        needs: Sequence[bool] = ..., *, grad_x_out: Optional[FloatArray] = ...,
        grad_weight_out: Optional[FloatArray] = ..., grad_bias_out: Optional[FloatArray] = ...,
) -> Tuple[Optional[FloatArray], Optional[FloatArray], Optional[FloatArray]]: ...
def conv3d_transpose_backward(
        grad_output: Any, x: Any, weight: Any, stride: IntTriple = 1, padding: PaddingArg = 0,
        output_padding: IntTriple = 0, groups: int = 1, dilation: IntTriple = 1,
        output_size: SizeArg = None, data_format: DataFormat = "NCDHW",
        needs: Sequence[bool] = _ALL_NEEDS, *, grad_x_out: Any = None,
        grad_weight_out: Any = None, grad_bias_out: Any = None) -> Tuple[Any, Any, Any]:
    """Gradients of :func:`conv3d_transpose` given the gradient of its output.

    With ``y = conv3d_transpose(x, w, b)`` and upstream gradient ``gy``::

        grad_x[ci, i]     = sum_{co, t} w[ci, co, t] * gy[co, i * stride + t * dilation - pad_lo]
        grad_w[ci, co, t] = sum_{n, i} x[n, ci, i] * gy[n, co, i * stride + t * dilation - pad_lo]
        grad_b[co]        = sum_{n, o} gy[n, co, o]

    (within a group; positions outside the output contribute nothing).

    Parameters
    ----------
    grad_output : array_like
        The gradient of the loss with respect to the output, of the output's shape.
    x, weight : array_like
        The forward pass's input and weight, taken as :func:`conv3d_transpose` takes them.
    stride, padding, output_padding, groups, dilation, output_size, data_format
        The forward pass's arguments (see :func:`conv3d_transpose`).
    needs : sequence of 3 bools, default (True, True, True)
        Which of ``(grad_x, grad_weight, grad_bias)`` to compute.
    grad_x_out, grad_weight_out, grad_bias_out : numpy.ndarray or CuPy array, optional
        Arrays to write the gradients into (and return), as ``out`` of
        :func:`conv3d_transpose`: of the gradient's shape and the inputs' dtype,
        writeable, on the inputs' device, sharing no memory with the inputs or each other;
        ``grad_x_out`` may be any strided view, ``grad_weight_out`` and ``grad_bias_out``
        must be C-contiguous.

    Returns
    -------
    grad_x : numpy.ndarray or CuPy array or None
        Of ``x``'s shape and layout; None unless ``needs[0]``.
    grad_weight : numpy.ndarray or CuPy array or None
        Of ``weight``'s shape; None unless ``needs[1]``.
    grad_bias : numpy.ndarray or CuPy array or None
        Of shape ``[C_out]``; None unless ``needs[2]``.

    Raises
    ------
    TypeError
        As for :func:`conv3d_transpose`.
    ValueError
        As for :func:`conv3d_transpose`; also a ``grad_output`` of the wrong shape,
        ``needs`` that is not 3 bools, or an ``*_out`` array given for a gradient that
        ``needs`` does not ask for.
    MemoryError
        A gradient cannot be allocated.

    Notes
    -----
    Gradients of 4 MiB or more are views on blocks of conv3dt's memory cache, as the
    results of :func:`conv3d_transpose` are (:func:`conv3dt.empty_cache`,
    :func:`conv3dt.set_cache_limit`, ``CONV3DT_CACHE_MIB``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 2, 3, 3, 3)); w = np.ones((2, 4, 2, 2, 2))
    >>> gy = np.ones((1, 4, 6, 6, 6))
    >>> gx, gw, gb = conv3d_transpose_backward(gy, x, w, stride=2)
    >>> float(gx[0, 0, 0, 0, 0]), float(gb[0])
    (32.0, 216.0)
    """
    needs = _check_needs(needs)
    outs = (grad_x_out, grad_weight_out, grad_bias_out)
    backend, xp, (grad_output, x, weight) = _inputs(
        {"grad_output": grad_output, "x": x, "weight": weight})
    dtype = x.dtype
    args = arguments_key(stride, padding, output_padding, groups, dilation, output_size,
                         data_format)
    key = None if args is None else (
        "backward", xp, grad_output.shape, x.shape, weight.shape, dtype, needs, args)
    plan, *results, padded = _setups.get(
        key, _backward_setup, xp, grad_output.shape, x.shape, weight.shape, dtype, needs,
        stride, padding, output_padding, groups, dilation, output_size, data_format)
    grads = [None, None, None]
    if grad_x_out is None and grad_weight_out is None and grad_bias_out is None:
        for i, result in enumerate(results):
            if result is not None:
                grads[i] = _allocate(xp, result[0], dtype, result[1], backend, result[2])
    else:
        inputs = {"grad_output": grad_output, "x": x, "weight": weight}
        for i, (result, given, name) in enumerate(zip(results, outs, _OUT_NAMES)):
            if given is not None and result is None:
                raise ValueError(f"{name} is given but needs[{i}] is False: that gradient "
                                 f"is not computed (needs={needs})")
            if given is not None:
                grads[i] = _check_out(given, name, result[0], dtype, xp, plan.data_format,
                                      inputs, contiguous=i > 0)
                inputs[name] = given
        for i, result in enumerate(results):
            if result is not None and grads[i] is None:
                grads[i] = _allocate(xp, result[0], dtype, result[1], backend, result[2])
    gx, gw, gb = grads
    if plan.n == 0:
        # An empty batch: nothing flows back, the gradients are zero.
        for g in grads:
            if g is not None:
                g[...] = 0
        return gx, gw, gb
    gy_v, x_v = _ncdhw(grad_output, plan.data_format), _ncdhw(x, plan.data_format)
    gx_v = None if gx is None else _ncdhw(gx, plan.data_format)
    if not weight.flags.c_contiguous:
        weight = xp.ascontiguousarray(weight)
    # The kernels gather grad_output with zeros standing for positions outside the output;
    # with padding, a non-finite weight (grad_x) or x (grad_weight) times such a zero would
    # be a NaN that the arithmetic of the operation does not produce. Those rare inputs take
    # the exact tap-by-tap path.
    exact_gx = gx is not None and padded and not backend.all_finite(weight)
    exact_gw = gw is not None and padded and not backend.all_finite(x)
    if not (exact_gx and exact_gw and gb is None):
        backend.backward(plan, gy_v, x_v, weight, None if exact_gx else gx_v,
                         None if exact_gw else gw, gb)
    if exact_gx or exact_gw:
        _exact_backward(plan, gy_v, x_v, weight, gx_v if exact_gx else None,
                        gw if exact_gw else None, xp)
    return gx, gw, gb
