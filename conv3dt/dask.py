"""Volumes beyond one machine: the transposed convolution as a Dask graph, exact to the
whole-volume result.

The output is cut into chunks, and each output chunk is one ordinary call of
:func:`conv3dt.conv3d_transpose` on the input range it reads
(:func:`conv3dt._geometry.chunk_input_range`), never input chunks whose overlapping
outputs are added up: that would round differently from one call and needs an
accumulation step Dask does not have. Chunk boundaries lie at multiples of the stride,
so every chunk keeps the tap phases of the whole call, and the kernels' sums do not
depend on where the volume is cut: the chunked result equals one call's, bit for bit.

Gradients: grad_x is cut by x's chunks, each computed from the grad_output range its
inputs reach (started at a multiple of the stride, rows outside the chunk computed and
cropped), so it is exact too; grad_weight and grad_bias are sums over output chunks of
per-chunk partial sums, added in a fixed order (a tree of fixed shape), so they are the
same on every scheduler and for every run, and equal to one call's within rounding.

The graph is built directly: one task per output chunk, taking whole input blocks where
they lie inside its range and tasks slicing the blocks only partly inside; the weight
and the bias are single keys. It runs on every Dask scheduler, a ``distributed`` cluster
included. Requires ``pip install "conv3dt[dask]"``.

>>> import numpy as np, dask.array as da, conv3dt, conv3dt.dask
>>> x = da.random.default_rng(0).standard_normal((1, 4, 32, 32, 32), chunks=(1, 4, 16, 16, 16)).astype(np.float32)
>>> w = np.random.default_rng(1).standard_normal((4, 2, 3, 3, 3)).astype(np.float32)
>>> y = conv3dt.dask.conv3d_transpose(x, w, stride=2, padding=1, output_padding=1, chunks=32)
>>> y.chunks[2]
(32, 32)
>>> bool((y.compute() == conv3dt.conv3d_transpose(x.compute(), w, stride=2, padding=1, output_padding=1)).all())
True
"""

from __future__ import annotations

import bisect
import math
import multiprocessing
import operator
import os
import threading
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, Literal, Mapping,
                    Optional, Sequence, Tuple, TypeVar, Union, overload)

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

try:
    import dask
    import dask.array as da
    from dask.array.core import concatenate3, normalize_chunks
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
    from dask.utils import parse_bytes
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError("conv3dt.dask needs dask: pip install \"conv3dt[dask]\" (dask[array, "
                      "distributed] and zarr)") from exc

from . import _activations, _threads, functional
from ._typing import DataFormat, IntTriple, PaddingArg
from ._geometry import Plan, chunk_input_range, grad_input_output_range, resolve

if TYPE_CHECKING:
    import zarr
    from dask.delayed import Delayed

# These functions of dask have no annotations: the aliases say what they return.
_normalize_chunks: Callable[..., Tuple[Tuple[int, ...], ...]] = normalize_chunks
_dask_array: Callable[..., da.Array] = da.Array
_from_array: Callable[..., da.Array] = da.from_array
_rechunk: Callable[..., da.Array] = da.rechunk
_map_blocks: Callable[..., da.Array] = da.map_blocks
_concatenate3: Callable[..., NDArray[Any]] = concatenate3
_compute: Callable[[da.Array], Any] = da.Array.compute

__all__ = ["conv3d_transpose", "conv3d_transpose_backward", "layer_forward", "check_no_grad",
           "as_dask_array", "output_chunks", "create_zarr", "to_zarr"]

# Spatial input blocks smaller than this many points per dimension are merged (when the
# memory budget allows): tiny blocks make a large graph and slow passes.
MIN_BLOCK = 64
# Graphs of more chunks than this are refused: their scheduling alone would take long.
MAX_TASKS = 100_000
# Partial sums added per task of grad_weight's reduction tree.
SPLIT_EVERY = 8

_T = TypeVar("_T")
# A volume: a dask array, a zarr array, an h5py dataset, a NumPy array... Read by duck
# typing (``shape``, ``dtype``, slicing), so any object is accepted here.
VolumeLike = Any
# Bytes: a number or a size such as '256MiB' (None: dask's ``array.chunk-size``).
MemoryArg = Union[int, str, None]
# Chunks as dask.array takes them (an int, a tuple per axis, 'auto', a size...), or None.
ChunksArg = Any
# Chunks per axis: the sizes of the blocks along each axis.
Chunks = Tuple[Tuple[int, ...], ...]


# --------------------------------------------------------------------------- layout


def _axes(data_format: str) -> Tuple[int, int, Tuple[int, int, int]]:
    """(batch axis, channel axis, spatial axes) of data_format."""
    return (0, 1, (2, 3, 4)) if data_format == "NCDHW" else (0, 4, (1, 2, 3))


def _budget(memory_per_task: MemoryArg) -> int:
    """Bytes one task may use: memory_per_task (bytes or a string such as '256MiB'), by
    default dask's ``array.chunk-size``."""
    value = dask.config.get("array.chunk-size") if memory_per_task is None else memory_per_task
    if isinstance(value, str):
        try:
            value = parse_bytes(value)
        except ValueError:
            raise ValueError(f"memory_per_task must be a number of bytes or a size such as "
                             f"'256MiB', got {memory_per_task!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"memory_per_task must be a positive number of bytes, got "
                         f"{memory_per_task!r}")
    return int(value)


def _small_array(value: Any, name: str) -> Any:
    """A weight or bias as a NumPy array (a dask array is computed: it is small)."""
    if value is None:
        return None
    if isinstance(value, da.Array):
        value = _compute(value)
    return functional._as_array(value, name, np)


def as_dask_array(x: VolumeLike, chunks: ChunksArg = None, memory_per_task: MemoryArg = None,
                  expansion: float = 1.0, data_format: str = "NCDHW") -> da.Array:
    """A volume as a dask array.

    Parameters
    ----------
    x : dask.array.Array, zarr array, h5py dataset or array_like
        A dask array is returned as it is; other arrays are read in blocks (an h5py
        dataset under a lock: h5py is not thread-safe).
    chunks : chunks, optional
        The blocks, as :func:`dask.array.from_array` takes them. Default, for a 5-D
        volume in ``data_format``: one sample, whole channels and 'auto' spatial blocks
        that are multiples of the storage's chunks and hold ``memory_per_task / (1 +
        expansion)`` bytes.
    memory_per_task : int or str, optional
        Bytes one task may use (a number or a size such as ``'256MiB'``); default:
        dask's ``array.chunk-size``.
    expansion : float, default 1.0
        The ratio of the output's bytes to the input's.
    data_format : {'NCDHW', 'NDHWC'}, default 'NCDHW'
        The layout of a 5-D ``x``.

    Returns
    -------
    dask.array.Array
        ``x``, or a lazy array reading it.

    Raises
    ------
    ValueError
        For a ``memory_per_task`` that is not a positive number of bytes.
    """
    if isinstance(x, da.Array):
        return x
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    shape = tuple(int(s) for s in x.shape)
    storage: Any = getattr(x, "chunks", None)
    if not (isinstance(storage, tuple) and len(storage) == len(shape)
            and all(isinstance(c, (int, np.integer)) for c in storage)):
        storage = None
    if chunks is None:
        limit = max(1, int(_budget(memory_per_task) / (1.0 + expansion)))
        if len(shape) == 5:
            _, c_axis, _ = _axes(data_format)
            per_axis: List[Union[int, str]] = [1, "auto", "auto", "auto", "auto"]
            per_axis[c_axis] = -1
            chunks = tuple(per_axis)
        else:
            chunks = "auto"
        chunks = _normalize_chunks(chunks, shape, limit=limit, dtype=x.dtype,
                                  previous_chunks=storage)
    # h5py is not thread-safe: its reads take a lock.
    lock = type(x).__module__.startswith("h5py")
    return _from_array(x, chunks=chunks, lock=lock, asarray=True,
                       meta=np.empty((0,) * len(shape), dtype=x.dtype))


def _merge_small_blocks(x: da.Array, axes: Sequence[int], budget: float) -> da.Array:
    """x rechunked so that spatial blocks hold at least MIN_BLOCK points per dimension
    (or the whole dimension), when such blocks fit the budget."""
    target: List[Any] = list(x.chunks)
    changed = False
    for a in axes:
        size = x.shape[a]
        c = max(x.chunks[a])
        want = min(size, MIN_BLOCK)
        if c < want:
            target[a] = -(-want // c) * c
            changed = True
    if not changed:
        return x
    block = math.prod(max(t) if isinstance(t, tuple) else t for t in target) * x.dtype.itemsize
    if block > budget:
        return x
    return _rechunk(x, tuple(target))


# --------------------------------------------------------------------------- chunks


def _regular(size: int, chunk: int) -> Tuple[int, ...]:
    chunk = max(1, min(size, chunk))
    return (chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ())


def _aligned(chunks: Sequence[int], size: int, stride: int) -> Tuple[int, ...]:
    """Chunk sizes whose boundaries are multiples of the stride: regular chunks (equal
    ones and a last one no larger) stay regular, their size rounded to the nearest
    multiple of the stride; other boundaries are rounded one by one."""
    chunks = tuple(chunks)
    bounds: List[int]
    if len(chunks) == 1:
        return chunks
    if len(set(chunks[:-1])) == 1 and chunks[-1] <= chunks[0]:
        return _regular(size, max(stride, (chunks[0] + stride // 2) // stride * stride))
    bounds, pos = [], 0
    for c in chunks[:-1]:
        pos += c
        b = (pos + stride // 2) // stride * stride
        if 0 < b < size and (not bounds or b > bounds[-1]):
            bounds.append(b)
    edges = [0] + bounds + [size]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


def _task_bytes(plan: Plan, out_counts: Tuple[int, int, Sequence[int]], itemsize: int) -> int:
    """Estimated bytes of one forward task: its output and the input range it reads."""
    n, c, spatial = out_counts
    out = n * c * math.prod(spatial)
    ins = n * plan.c_in * math.prod(
        min(i, -(-o // s) + -(-(k - 1) * d // s) + 1)
        for o, i, s, k, d in zip(spatial, plan.in_size, plan.stride, plan.kernel,
                                 plan.dilation))
    return (out + ins) * itemsize


def output_chunks(plan: Plan, x_chunks: Sequence[Sequence[int]], chunks: ChunksArg = None,
                  memory_per_task: MemoryArg = None, itemsize: int = 4) -> Chunks:
    """The output chunks of a chunked call.

    Parameters
    ----------
    plan : conv3dt._geometry.Plan
        The resolved geometry of the whole call (:func:`conv3dt._geometry.resolve`).
    x_chunks : sequence of sequences of int
        The input's chunks (``x.chunks`` of a dask array).
    chunks : chunks, optional
        Anything ``dask.array.core.normalize_chunks`` takes, for the output's shape (an
        int: that size along D, H and W, whole samples and channels); the spatial
        boundaries are rounded to multiples of the stride. Default: the stride times
        ``x_chunks``, regular (equal chunks, a smaller last one), whole output channels,
        halved along the largest dimension (then the batch) while a task would use more
        than ``memory_per_task`` bytes.
    memory_per_task : int or str, optional
        Bytes one task may use; default: dask's ``array.chunk-size``.
    itemsize : int, default 4
        Bytes per element (4 for float32, 8 for float64).

    Returns
    -------
    tuple of tuples of int
        The chunk sizes along each of the output's 5 axes.

    Raises
    ------
    ValueError
        If ``chunks`` are not chunks of the output's shape.
    """
    n_axis, c_axis, spatial = _axes(plan.data_format)
    y_shape = plan.y_shape
    budget = _budget(memory_per_task)
    if chunks is not None:
        if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
            # One int: that size along the spatial dimensions, whole samples and channels.
            size = int(chunks)
            per_axis = [1, -1, -1, -1, -1]
            for a in spatial:
                per_axis[a] = size
            chunks = tuple(per_axis)
        try:
            normalized = _normalize_chunks(chunks, y_shape, limit=budget,
                                          dtype=np.dtype(f"f{itemsize}"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"chunks={chunks!r} are not chunks of the output, shape "
                             f"{y_shape}: {exc}") from None
        aligned = list(normalized)
        for k, a in enumerate(spatial):
            aligned[a] = _aligned(aligned[a], plan.out_size[k], plan.stride[k])
        return tuple(aligned)
    sizes: Dict[int, int] = {}
    for k, a in enumerate(spatial):
        sizes[k] = min(plan.out_size[k], plan.stride[k] * max(x_chunks[a]))
    n_chunk = max(x_chunks[n_axis])
    regular_n = False
    while _task_bytes(plan, (n_chunk, plan.c_out, [sizes[k] for k in range(3)]),
                      itemsize) > budget:
        k = max(range(3), key=lambda k: (sizes[k] if sizes[k] > plan.stride[k] else 0, -k))
        if sizes[k] > plan.stride[k]:
            sizes[k] = max(plan.stride[k], sizes[k] // 2 // plan.stride[k] * plan.stride[k])
        elif n_chunk > 1:
            n_chunk = max(1, n_chunk // 2)
            regular_n = True
        elif max(sizes.values()) > 1:
            # Chunks of one stride are still too large (a huge stride): boundaries off the
            # multiples of the stride are exact too, their chunks merely differ in plan.
            k = max(range(3), key=lambda k: (sizes[k], -k))
            sizes[k] = max(1, sizes[k] // 2)
        else:
            break
    out: List[Tuple[int, ...]] = [()] * 5
    out[n_axis] = _regular(plan.n, n_chunk) if regular_n else tuple(x_chunks[n_axis])
    out[c_axis] = (plan.c_out,)
    for k, a in enumerate(spatial):
        out[a] = _regular(plan.out_size[k], sizes[k])
    return tuple(out)


def _check_task_count(chunks: Chunks, shape: Sequence[int], budget: int) -> None:
    count = math.prod(len(c) for c in chunks)
    if count > MAX_TASKS:
        raise ValueError(f"the output of shape {tuple(shape)} would take {count} chunks "
                         f"(more than {MAX_TASKS}): raise memory_per_task (now {budget} "
                         "bytes) or give larger chunks")


def _starts(chunks: Sequence[Sequence[int]]) -> List[Tuple[int, ...]]:
    return [tuple(np.concatenate([[0], np.cumsum(c)]).tolist()) for c in chunks]


# --------------------------------------------------------------------------- graph


class _Graph:
    """Tasks of one chunked operation, and the blocks of its input arrays they read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dsk: Dict[Any, Any] = {}
        self._slice_name = "slice-" + name
        self._n_slices = 0

    def gather(self, arr: da.Array, starts: Sequence[Sequence[int]],
               region: Sequence[Tuple[int, int]]) -> Any:
        """Nested lists (one level per axis) of the blocks of ``arr`` covering ``region``
        (a (start, stop) per axis): the key of a block inside it, or of a task slicing a
        block only partly inside."""
        per_axis: List[List[Tuple[int, slice, bool]]] = []
        for axis, (a, b) in enumerate(region):
            st = starts[axis]
            first = bisect.bisect_right(st, a) - 1
            items = []
            j = first
            while j < len(st) - 1 and st[j] < b:
                s0, s1 = st[j], st[j + 1]
                if s1 > a:
                    items.append((j, slice(max(a, s0) - s0, min(b, s1) - s0),
                                  a <= s0 and s1 <= b))
                j += 1
            per_axis.append(items)

        def build(depth: int, index: Tuple[int, ...], slices: Tuple[slice, ...],
                  full: bool) -> Any:
            if depth == len(per_axis):
                key = (arr.name,) + index
                if full:
                    return key
                self._n_slices += 1
                skey = (self._slice_name, self._n_slices)
                self.dsk[skey] = (operator.getitem, key, slices)
                return skey
            return [build(depth + 1, index + (j,), slices + (sl,), full and inside)
                    for j, sl, inside in per_axis[depth]]

        return build(0, (), (), True)

    def array(self, dependencies: Sequence[Any], chunks: Chunks, dtype: DTypeLike) -> da.Array:
        graph = HighLevelGraph.from_collections(self.name, self.dsk, dependencies=dependencies)
        return _dask_array(graph, self.name, chunks=chunks, dtype=dtype,
                           meta=np.empty((0,) * len(chunks), dtype=dtype))


def _concat(blocks: Any) -> Any:
    """The array that nested lists of blocks make (the block itself when there is one)."""
    inner = blocks
    while isinstance(inner, list):
        if len(inner) != 1:
            return _concatenate3(blocks)
        inner = inner[0]
    return inner


# --------------------------------------------------------------------------- threads


def _task_threads(blocks: Optional[int] = None) -> Optional[int]:
    """Kernel threads for a task of a graph of ``blocks`` tasks: the user's choice
    (``CONV3DT_NUM_THREADS`` or :func:`conv3dt.set_num_threads`) if any; else
    ``OMP_NUM_THREADS`` if set (Dask's workers set it to 1: they run one task per core);
    else, inside a thread pool or a process pool (Dask's threaded and multiprocessing
    schedulers run one task per core), the cores shared among the tasks that run at once
    (1 when there are at least as many tasks as cores); else None (all cores: the
    synchronous scheduler)."""
    if os.environ.get(_threads.ENV_VAR, "").strip() or _threads._num_threads is not None:
        return None
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp:
        try:
            return max(1, int(omp.split(",")[0]))
        except ValueError:
            pass
    if (threading.current_thread() is not threading.main_thread()
            or multiprocessing.parent_process() is not None):
        cores = _threads._available_cores()
        return max(1, cores // max(1, min(blocks or cores, cores)))
    return None


_worker_checked = False


def _fit_cache_to_worker() -> None:
    """On a ``distributed`` worker with a memory limit, keep conv3dt's cache of idle
    memory (:func:`conv3dt.set_cache_limit`) to an eighth of that limit: the worker counts
    it as used memory."""
    global _worker_checked
    if _worker_checked:
        return
    _worker_checked = True
    import sys

    if "distributed" not in sys.modules:
        return
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except (ValueError, AttributeError, ImportError):
        return
    from . import _memory

    if limit and _memory.get_cache_limit() > limit // 8:
        _memory.set_cache_limit(int(limit // 8))


def _run(func: Callable[..., _T], *args: Any, blocks: Optional[int] = None,
         **kwargs: Any) -> _T:
    """func(*args, **kwargs) on the kernel threads a task of a graph of ``blocks`` tasks
    should use (see _task_threads)."""
    _fit_cache_to_worker()
    with _threads.thread_threads(_task_threads(blocks)):
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- forward


def _forward_chunk(blocks: Any, weight: NDArray[Any], bias: Optional[NDArray[Any]],
                   spec: Tuple[Any, ...]) -> NDArray[Any]:
    """One output chunk: a call on the input range it reads, or the bias alone."""
    (g0, g1, cig, cog, crop_c, padding, output_padding, conv, shape, c_axis, tails,
     blocks_n) = spec
    b = None if bias is None else bias[g0 * cog: g1 * cog]
    if blocks is None or any(tails.values()):  # outputs that no input reaches: the bias
        full = np.zeros(shape, dtype=weight.dtype)
        if bias is not None:
            view = [1] * 5
            view[c_axis] = -1
            full += bias[g0 * cog + crop_c[0]: g0 * cog + crop_c[1]].reshape(view)
        if blocks is None:
            return full
    x = _concat(blocks)
    y = _run(functional.conv3d_transpose, x, weight[g0 * cig: g1 * cig], b, blocks=blocks_n,
             padding=padding, output_padding=output_padding, groups=g1 - g0, **conv)
    if crop_c != (0, (g1 - g0) * cog):
        index = [slice(None)] * 5
        index[c_axis] = slice(*crop_c)
        y = y[tuple(index)]
    if any(tails.values()):
        index = [slice(None)] * 5
        for a, tail in tails.items():
            index[a] = slice(0, shape[a] - tail)
        full[tuple(index)] = y
        return full
    return y


def _chunk_geometry(plan: Plan, k: int, o0: int, o1: int) -> Tuple[int, int, int, int, int]:
    """(i0, i1, lo_c, hi_c, tail) of output range [o0, o1) along spatial dimension k.

    ``tail``: outputs at the end of the range that no input reaches, left out of the
    call. Only an ONNX 'SAME' padding with ``output_size`` extends the output by more
    rows than an ``output_padding`` may add (``-hi_c >= max(stride, dilation)``); those
    rows hold only the bias.
    """
    i0, i1, lo_c, hi_c = chunk_input_range(plan.in_size[k], plan.kernel[k], plan.stride[k],
                                           plan.dilation[k], plan.pad_lo[k], o0, o1)
    tail = 0
    if -hi_c >= max(plan.stride[k], plan.dilation[k]):
        tail, hi_c = -hi_c, 0
    return i0, i1, lo_c, hi_c, tail


def _call_padding(geoms: Sequence[Tuple[int, int, int, int, int]]) -> Tuple[List[int], List[int]]:
    """Explicit padding (6 ints) and output_padding of a chunk's call."""
    padding: List[int] = []
    output_padding: List[int] = []
    for _, _, lo_c, hi_c, _ in geoms:
        padding += [lo_c, max(hi_c, 0)]
        output_padding.append(max(-hi_c, 0))
    return padding, output_padding


def _blocks_of(chunks: Sequence[Sequence[int]]) -> List[List[Tuple[int, int, int]]]:
    """Per axis: (block index, start, stop) of every chunk."""
    out = []
    for c in chunks:
        starts = np.concatenate([[0], np.cumsum(c)]).tolist()
        out.append([(j, starts[j], starts[j + 1]) for j in range(len(c))])
    return out


def _product(lists: Sequence[Sequence[_T]]) -> List[Tuple[_T, ...]]:
    result: List[Tuple[_T, ...]] = [()]
    for items in lists:
        result = [r + (it,) for r in result for it in items]
    return result


def conv3d_transpose(x: VolumeLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
                     stride: IntTriple = 1, padding: PaddingArg = 0,
                     output_padding: IntTriple = 0, groups: int = 1, dilation: IntTriple = 1,
                     output_size: Optional[IntTriple] = None,
                     data_format: DataFormat = "NCDHW", *, chunks: ChunksArg = None,
                     memory_per_task: MemoryArg = None) -> da.Array:
    """:func:`conv3dt.conv3d_transpose` on a volume in chunks: a lazy dask array equal,
    bit for bit, to the whole call's result.

    Parameters
    ----------
    x : dask.array.Array, zarr array, h5py dataset or array_like
        ``[N, C_in, D, H, W]`` (or NDHWC), float32 or float64; arrays that are not dask
        arrays are read in blocks (see :func:`as_dask_array`).
    weight : array_like
        ``[C_in, C_out/groups, kD, kH, kW]``, of ``x``'s dtype; sent to the workers once
        (a dask array is computed first).
    bias : array_like, optional
        ``[C_out]``, of ``x``'s dtype.
    stride, padding, output_padding, groups, dilation, output_size, data_format
        As for :func:`conv3dt.conv3d_transpose`.
    chunks : chunks, optional
        The output's chunks, as ``dask.array`` takes them for the output's shape (an
        int means that size along D, H and W, whole samples and channels); their
        spatial boundaries are rounded to multiples of the stride. Default: the stride
        times x's chunks, regular, whole output channels, halved while a task would use
        more than ``memory_per_task`` bytes for its output and the input range it reads.
        Chunks that cut the output channels inside a group compute the group's channels
        and keep their own.
    memory_per_task : int or str, optional
        Bytes one task may use (a number or a size such as ``'256MiB'``); default:
        dask's ``array.chunk-size``, 128 MiB.

    Returns
    -------
    dask.array.Array
        The lazy output ``[N, C_out, D_out, H_out, W_out]`` (or NDHWC), of ``x``'s dtype.

    Raises
    ------
    TypeError
        If the dtype is not float32/float64 or the dtypes differ.
    ValueError
        For shapes or a geometry that do not fit, chunks that are not chunks of the
        output, or more than ``MAX_TASKS`` (100,000) chunks.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> x = da.ones((1, 2, 8, 8, 8), chunks=(1, 2, 4, 4, 4), dtype=np.float32)
    >>> y = conv3d_transpose(x, np.ones((2, 3, 2, 2, 2), np.float32), stride=2, chunks=5)
    >>> y.shape, y.chunks[2]     # boundaries at multiples of the stride
    ((1, 3, 16, 16, 16), (6, 6, 4))
    """
    w_arr: NDArray[Any] = _small_array(weight, "weight")
    b_arr: Optional[NDArray[Any]] = _small_array(bias, "bias")
    x_shape = tuple(int(s) for s in x.shape)
    plan = resolve(x_shape, w_arr.shape, stride, padding, output_padding, groups, dilation,
                   output_size, data_format)
    dtype = np.dtype(x.dtype)
    if dtype.name not in ("float32", "float64"):
        raise TypeError(f"x must be float32 or float64, got dtype {dtype} (shape {x_shape})")
    if w_arr.dtype != dtype or (b_arr is not None and b_arr.dtype != dtype):
        listed = f"x is {dtype}, weight is {w_arr.dtype}" + (
            "" if b_arr is None else f", bias is {b_arr.dtype}")
        raise TypeError(f"all arrays must have the same dtype (no silent promotion): {listed}")
    if b_arr is not None:
        functional._check_shape(b_arr, (plan.c_out,), "bias")
    budget = _budget(memory_per_task)
    n_axis, c_axis, spatial = _axes(plan.data_format)
    expansion = plan.c_out * math.prod(plan.stride) / plan.c_in
    x = as_dask_array(x, memory_per_task=budget, expansion=expansion,
                      data_format=plan.data_format)
    x = _merge_small_blocks(x, spatial, budget / (1.0 + expansion))
    y_chunks = output_chunks(plan, x.chunks, chunks, budget, dtype.itemsize)
    _check_task_count(y_chunks, plan.y_shape, budget)
    cig, cog = plan.c_in // plan.groups, plan.c_out // plan.groups
    conv = dict(stride=plan.stride, dilation=plan.dilation, data_format=plan.data_format)
    name = "conv3d_transpose-" + tokenize(x, w_arr, b_arr, plan, y_chunks)
    graph = _Graph(name)
    wkey, bkey = ("weight-" + name,), ("bias-" + name,)
    graph.dsk[wkey] = w_arr
    graph.dsk[bkey] = b_arr
    x_starts = _starts(x.chunks)
    n_blocks = math.prod(len(c) for c in y_chunks)
    for combo in _product(_blocks_of(y_chunks)):
        index = tuple(j for j, _, _ in combo)
        n0, n1 = combo[n_axis][1:]
        c0, c1 = combo[c_axis][1:]
        g0, g1 = c0 // cog, -(-c1 // cog)
        geoms = [_chunk_geometry(plan, k, *combo[a][1:]) for k, a in enumerate(spatial)]
        padding6, out_pad = _call_padding(geoms)
        shape = tuple(b - a for _, a, b in combo)
        tails = {a: geoms[k][4] for k, a in enumerate(spatial)}
        spec = (g0, g1, cig, cog, (c0 - g0 * cog, c1 - g0 * cog), padding6, out_pad, conv,
                shape, c_axis, tails, n_blocks)
        if any(g[1] <= g[0] for g in geoms):
            blocks = None
        else:
            region: List[Tuple[int, int]] = [(0, 0)] * 5
            region[n_axis] = (n0, n1)
            region[c_axis] = (g0 * cig, g1 * cig)
            for k, a in enumerate(spatial):
                region[a] = geoms[k][:2]
            blocks = graph.gather(x, x_starts, region)
        graph.dsk[(name,) + index] = (_forward_chunk, blocks, wkey, bkey, spec)
    return graph.array([x], y_chunks, dtype)


# --------------------------------------------------------------------------- backward


def _grad_x_chunk(blocks: Any, weight: NDArray[Any], spec: Tuple[Any, ...]) -> NDArray[Any]:
    """grad_x of one x chunk: a call on the grad_output range its inputs reach, cropped."""
    (g0, g1, cig, cog, crop_c, padding, output_padding, conv, x_shape, crops, shape,
     c_axis, blocks_n) = spec
    gx = np.zeros(shape, dtype=weight.dtype)
    if blocks is None:
        return gx
    gy = _concat(blocks)
    # grad_x needs x's shape only: a zero array costs untouched pages.
    x = np.zeros(x_shape, dtype=weight.dtype)
    sub, _, _ = _run(functional.conv3d_transpose_backward, gy, x, weight[g0 * cig: g1 * cig],
                     blocks=blocks_n,
                     padding=padding, output_padding=output_padding, groups=g1 - g0,
                     needs=(True, False, False), **conv)
    src: List[slice] = [slice(None)] * 5
    dst: List[slice] = [slice(None)] * 5
    src[c_axis] = slice(*crop_c)
    for a, (s0, s1, d0, d1) in crops.items():
        src[a], dst[a] = slice(s0, s1), slice(d0, d1)
    gx[tuple(dst)] = sub[tuple(src)]
    return gx


def _partial_chunk(gy_blocks: Any, x_blocks: Any, weight: NDArray[Any], spec: Tuple[Any, ...],
                   ) -> Tuple[Optional[NDArray[Any]], Optional[NDArray[Any]]]:
    """(grad_weight, grad_bias) partial sums of one output chunk (None where not asked)."""
    padding, output_padding, conv, need_w, need_b, reduce_axes, tails, blocks_n = spec
    gy = _concat(gy_blocks)
    if x_blocks is None or any(tails.values()):
        # Outputs that no input reaches: only the bias sees them, and NumPy sums the
        # chunk's grad_output for it.
        gb = gy.sum(axis=reduce_axes, dtype=gy.dtype) if need_b else None
        if x_blocks is None or not need_w:
            return (np.zeros_like(weight) if need_w else None), gb
        index = [slice(None)] * 5
        for a, tail in tails.items():
            index[a] = slice(0, gy.shape[a] - tail)
        x = _concat(x_blocks)
        _, gw, _ = _run(functional.conv3d_transpose_backward, gy[tuple(index)], x, weight,
                        blocks=blocks_n, padding=padding, output_padding=output_padding,
                        needs=(False, True, False), **conv)
        return gw, gb
    x = _concat(x_blocks)
    _, gw, gb = _run(functional.conv3d_transpose_backward, gy, x, weight, blocks=blocks_n,
                     padding=padding,
                     output_padding=output_padding, needs=(False, need_w, need_b), **conv)
    return gw, gb


def _sum_partials(*parts: Tuple[Optional[NDArray[Any]], Optional[NDArray[Any]]],
                  ) -> Tuple[Optional[NDArray[Any]], Optional[NDArray[Any]]]:
    """Pairs (grad_weight, grad_bias) added in the order given."""
    gw: Optional[NDArray[Any]] = None
    gb: Optional[NDArray[Any]] = None
    for pw, pb in parts:
        if pw is not None:
            gw = pw.copy() if gw is None else np.add(gw, pw, out=gw)
        if pb is not None:
            gb = pb.copy() if gb is None else np.add(gb, pb, out=gb)
    return gw, gb


def conv3d_transpose_backward(
        grad_output: VolumeLike, x: VolumeLike, weight: ArrayLike, stride: IntTriple = 1,
        padding: PaddingArg = 0, output_padding: IntTriple = 0, groups: int = 1,
        dilation: IntTriple = 1, output_size: Optional[IntTriple] = None,
        data_format: DataFormat = "NCDHW", needs: Sequence[bool] = (True, True, True), *,
        chunks: ChunksArg = None, memory_per_task: MemoryArg = None,
) -> Tuple[Optional[da.Array], Optional[da.Array], Optional[da.Array]]:
    """:func:`conv3dt.conv3d_transpose_backward` in chunks.

    Parameters
    ----------
    grad_output : dask.array.Array, zarr array, h5py dataset or array_like
        The gradient of the output, of the forward pass's output shape.
    x : dask.array.Array, zarr array, h5py dataset or array_like
        The forward pass's input.
    weight : array_like
        The forward pass's weight (sent to the workers once).
    stride, padding, output_padding, groups, dilation, output_size, data_format
        As for :func:`conv3dt.conv3d_transpose`.
    needs : sequence of 3 bools, default (True, True, True)
        Which of ``(grad_x, grad_weight, grad_bias)`` to compute.
    chunks : chunks, optional
        The chunks of ``grad_x`` (for x's shape); default: x's.
    memory_per_task : int or str, optional
        Bounds the default chunks, as in :func:`conv3d_transpose`.

    Returns
    -------
    grad_x, grad_weight, grad_bias : dask.array.Array or None
        Lazy arrays, None where ``needs`` says so.

    Raises
    ------
    TypeError
        If the dtypes differ.
    ValueError
        For shapes or a geometry that do not fit (``grad_output`` must have the forward
        pass's output shape).

    Notes
    -----
    Each chunk of ``grad_x`` is computed from the grad_output range its inputs reach and
    equals the whole call's, bit for bit. ``grad_weight`` (one chunk) and ``grad_bias``
    are sums of per-output-chunk partial sums (grad_output's chunks, boundaries rounded
    to multiples of the stride) added in a fixed order: the same on every scheduler and
    run, and equal to the whole call's within rounding.
    """
    needs = functional._check_needs(needs)
    w_arr: NDArray[Any] = _small_array(weight, "weight")
    x_shape = tuple(int(s) for s in x.shape)
    plan = resolve(x_shape, w_arr.shape, stride, padding, output_padding, groups, dilation,
                   output_size, data_format)
    dtype = np.dtype(x.dtype)
    for label, arr in (("grad_output", grad_output), ("x", x)):
        if np.dtype(arr.dtype) != w_arr.dtype:
            raise TypeError(f"all arrays must have the same dtype (no silent promotion): "
                            f"{label} is {np.dtype(arr.dtype)}, weight is {w_arr.dtype}")
    if tuple(int(s) for s in grad_output.shape) != plan.y_shape:
        raise ValueError(f"grad_output must have shape {plan.y_shape}, got "
                         f"{tuple(grad_output.shape)}")
    budget = _budget(memory_per_task)
    n_axis, c_axis, spatial = _axes(plan.data_format)
    expansion = plan.c_out * math.prod(plan.stride) / plan.c_in
    x = as_dask_array(x, memory_per_task=budget, expansion=expansion,
                      data_format=plan.data_format)
    if not isinstance(grad_output, da.Array):
        gy_chunks = output_chunks(plan, x.chunks, None, budget, dtype.itemsize)
        grad_output = as_dask_array(grad_output, chunks=gy_chunks)
    gy = grad_output
    conv = dict(stride=plan.stride, dilation=plan.dilation, data_format=plan.data_format)
    cig, cog = plan.c_in // plan.groups, plan.c_out // plan.groups
    gy_starts = _starts(gy.chunks)
    token = tokenize(gy, x, w_arr, plan, needs, chunks, budget)
    results: List[Optional[da.Array]] = [None, None, None]

    if needs[0]:
        if chunks is not None:
            gx_chunks = _normalize_chunks(chunks, plan.x_shape, limit=budget, dtype=dtype)
        else:
            gx_chunks = x.chunks
        name = "conv3d_transpose_grad_x-" + token
        graph = _Graph(name)
        wkey = ("weight-" + name,)
        graph.dsk[wkey] = w_arr
        n_blocks = math.prod(len(c) for c in gx_chunks)
        for combo in _product(_blocks_of(gx_chunks)):
            index = tuple(j for j, _, _ in combo)
            n0, n1 = combo[n_axis][1:]
            c0, c1 = combo[c_axis][1:]
            g0, g1 = c0 // cig, -(-c1 // cig)
            shape = tuple(b - a for _, a, b in combo)
            region: List[Tuple[int, int]] = [(0, 0)] * 5
            region[n_axis] = (n0, n1)
            region[c_axis] = (g0 * cog, g1 * cog)
            sub_shape: List[int] = [0] * 5
            sub_shape[n_axis] = n1 - n0
            sub_shape[c_axis] = (g1 - g0) * cig
            geoms: List[Tuple[int, int, int, int, int]] = []
            crops: Dict[int, Tuple[int, int, int, int]] = {}
            empty = False
            for k, a in enumerate(spatial):
                i0, i1 = combo[a][1:]
                o0, o1 = grad_input_output_range(plan.out_size[k], plan.kernel[k],
                                                 plan.stride[k], plan.dilation[k],
                                                 plan.pad_lo[k], i0, i1)
                if o1 <= o0:
                    empty = True
                    break
                geom = _chunk_geometry(plan, k, o0, o1)
                assert geom[4] == 0  # o1 lies within the reach of the inputs
                j0, j1 = max(i0, geom[0]), min(i1, geom[1])
                if j1 <= j0:
                    empty = True
                    break
                geoms.append(geom)
                region[a] = (o0, o1)
                sub_shape[a] = geom[1] - geom[0]
                crops[a] = (j0 - geom[0], j1 - geom[0], j0 - i0, j1 - i0)
            padding6: Optional[List[int]]
            out_pad: Optional[List[int]]
            if empty:
                blocks, padding6, out_pad = None, None, None
            else:
                blocks = graph.gather(gy, gy_starts, region)
                padding6, out_pad = _call_padding(geoms)
            spec = (g0, g1, cig, cog, (c0 - g0 * cig, c1 - g0 * cig), padding6, out_pad, conv,
                    tuple(sub_shape), crops, shape, c_axis, n_blocks)
            graph.dsk[(name,) + index] = (_grad_x_chunk, blocks, wkey, spec)
        results[0] = graph.array([gy], gx_chunks, dtype)

    if needs[1] or needs[2]:
        name = "conv3d_transpose_grad_wb-" + token
        graph = _Graph(name)
        wkey = ("weight-" + name,)
        graph.dsk[wkey] = w_arr
        part_chunks: List[Tuple[int, ...]] = list(gy.chunks)
        part_chunks[c_axis] = (plan.c_out,)
        for k, a in enumerate(spatial):
            part_chunks[a] = _aligned(gy.chunks[a], plan.out_size[k], plan.stride[k])
        x_starts = _starts(x.chunks)
        reduce_axes = tuple(a for a in range(5) if a != c_axis)
        n_parts = math.prod(len(c) for c in part_chunks)
        level: List[Tuple[str, int]] = []
        for combo in _product(_blocks_of(part_chunks)):
            part_region = [(a, b) for _, a, b in combo]
            gy_blocks = graph.gather(gy, gy_starts, part_region)
            geoms = [_chunk_geometry(plan, k, *combo[a][1:]) for k, a in enumerate(spatial)]
            tails = {a: geoms[k][4] for k, a in enumerate(spatial)}
            if any(g[1] <= g[0] for g in geoms):
                x_blocks, padding6, out_pad = None, None, None
            else:
                xr: List[Tuple[int, int]] = [(0, 0)] * 5
                xr[n_axis] = combo[n_axis][1:]
                xr[c_axis] = (0, plan.c_in)
                for k, a in enumerate(spatial):
                    xr[a] = geoms[k][:2]
                x_blocks = graph.gather(x, x_starts, xr)
                padding6, out_pad = _call_padding(geoms)
            part_spec = (padding6, out_pad, dict(conv, groups=plan.groups), needs[1], needs[2],
                         reduce_axes, tails, n_parts)
            key = ("partial-" + name, len(level))
            graph.dsk[key] = (_partial_chunk, gy_blocks, x_blocks, wkey, part_spec)
            level.append(key)
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt: List[Tuple[str, int]] = []
            for i in range(0, len(level), SPLIT_EVERY):
                key = (f"sum{depth}-" + name, len(nxt))
                graph.dsk[key] = (_sum_partials,) + tuple(level[i: i + SPLIT_EVERY])
                nxt.append(key)
            level = nxt
        root = level[0]
        if needs[1]:
            graph.dsk[(name + "-weight", 0, 0, 0, 0, 0)] = (operator.getitem, root, 0)
        if needs[2]:
            graph.dsk[(name + "-bias", 0)] = (operator.getitem, root, 1)
        dependencies: List[Any] = [gy, x]
        hlg = HighLevelGraph.from_collections(name, graph.dsk, dependencies=dependencies)
        if needs[1]:
            results[1] = _dask_array(hlg, name + "-weight",
                                     chunks=tuple((s,) for s in plan.w_shape), dtype=dtype,
                                     meta=np.empty((0,) * 5, dtype))
        if needs[2]:
            results[2] = _dask_array(hlg, name + "-bias", chunks=((plan.c_out,),),
                                     dtype=dtype, meta=np.empty((0,), dtype))
    return results[0], results[1], results[2]


# --------------------------------------------------------------------------- zarr


def create_zarr(path: Union[str, os.PathLike[str]], shape: Sequence[int], chunks: Sequence[int],
                dtype: DTypeLike, compressed: bool = True) -> zarr.Array[Any]:
    """A new zarr array at ``path`` (replacing one there), for zarr 3 and zarr 2 alike.

    Parameters
    ----------
    path : str or os.PathLike
        The store's folder.
    shape, chunks : sequence of int
        The array's shape and its chunk shape.
    dtype : data-type
        The array's dtype.
    compressed : bool, default True
        False stores raw chunks (faster for data that does not compress).

    Returns
    -------
    zarr.Array
        The new, empty array, open for writing.
    """
    import zarr

    shape, chunks = tuple(int(s) for s in shape), tuple(int(c) for c in chunks)
    if hasattr(zarr, "create_array"):  # zarr 3
        extra: Dict[str, Any] = {} if compressed else {"compressors": None}
        return zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=dtype,
                                 overwrite=True, **extra)
    extra = {} if compressed else {"compressor": None}
    return zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype,
                           **extra)


@overload
def to_zarr(y: da.Array, path: Union[str, os.PathLike[str]], compressed: bool = ...,
            compute: Literal[True] = ...) -> zarr.Array[Any]: ...
@overload
def to_zarr(y: da.Array, path: Union[str, os.PathLike[str]], compressed: bool = ...,
            *, compute: Literal[False]) -> Delayed: ...
@overload
def to_zarr(y: da.Array, path: Union[str, os.PathLike[str]], compressed: bool,
            compute: Literal[False]) -> Delayed: ...
def to_zarr(y: da.Array, path: Union[str, os.PathLike[str]], compressed: bool = True,
            compute: bool = True) -> Any:
    """Store the dask array ``y`` in a new zarr array at ``path``, one zarr chunk per
    block of ``y``.

    Parameters
    ----------
    y : dask.array.Array
        Its chunks must be regular: equal ones and a last one no larger, as
        :func:`conv3d_transpose`'s default chunks are.
    path : str or os.PathLike
        The store's folder (an array there is replaced).
    compressed : bool, default True
        False stores raw chunks.
    compute : bool, default True
        False: build the store without running it.

    Returns
    -------
    zarr.Array or dask.delayed.Delayed
        The zarr array, or with ``compute=False`` the delayed store.

    Raises
    ------
    ValueError
        If ``y``'s chunks are irregular (rechunk it first).
    """
    chunks = tuple(c[0] for c in y.chunks)
    for axis, c in enumerate(y.chunks):
        if len(set(c[:-1])) > 1 or c[-1] > c[0]:
            raise ValueError(f"y's chunks along axis {axis} are irregular ({c}): zarr needs "
                             "equal chunks and a last one no larger (rechunk y first)")
    z = create_zarr(path, y.shape, chunks, y.dtype, compressed)
    # (dask's annotations want an ArrayLike target; a zarr array is one, by duck typing)
    stored = da.store(y, z, lock=False, compute=compute)  # type: ignore[arg-type, unused-ignore]
    return z if compute else stored


# --------------------------------------------------------------------------- layers


def _activate(block: NDArray[Any], act: str, attrs: Mapping[str, Any]) -> NDArray[Any]:
    out: NDArray[Any] = _activations.apply(act, np, block, **attrs)
    return out.astype(block.dtype, copy=False)


def check_no_grad(layer: str = "layer") -> None:
    """Refuse to record gradients of a layer's dask input.

    A layer computes a dask array lazily, block by block, for inference only.

    Parameters
    ----------
    layer : str, default 'layer'
        The layer's name, for the message.

    Raises
    ------
    RuntimeError
        Unless gradients are off (inside ``conv3dt.no_grad()``).
    """
    from .autograd import is_grad_enabled

    if is_grad_enabled():
        raise RuntimeError(
            f"{layer}: a dask array input is computed lazily, block by block, for inference "
            "only: call the layer inside `with conv3dt.no_grad():` (or "
            "dygraph.no_grad()), or pass a NumPy array or Variable to record gradients")


def layer_forward(x: VolumeLike, weight: Any, bias: Any = None, act: Optional[str] = None,
                  act_attrs: Optional[Mapping[str, Any]] = None,
                  conv: Optional[Mapping[str, Any]] = None, *, layer: str = "layer",
                  chunks: ChunksArg = None, memory_per_task: MemoryArg = None) -> da.Array:
    """What a layer does with a dask array ``x``: ``act(conv3d_transpose(x, weight) +
    bias)`` as a lazy dask array, the activation applied block by block.

    Parameters
    ----------
    x : dask.array.Array
        The layer's input.
    weight, bias : conv3dt.autograd.Variable or array_like
        The layer's parameters (``bias`` may be None).
    act : str, optional
        The activation's name (see :class:`conv3dt.dygraph.Conv3DTranspose`).
    act_attrs : mapping, optional
        The activation's attributes.
    conv : mapping, optional
        The keyword arguments of the functional API (stride, padding...).
    layer : str, default 'layer'
        The layer's name, for messages.
    chunks, memory_per_task
        As for :func:`conv3d_transpose`.

    Returns
    -------
    dask.array.Array
        The lazy output.

    Raises
    ------
    RuntimeError
        With gradients recorded (outside ``no_grad``): it is for inference only.
    """
    check_no_grad(layer)

    def plain(p: Any) -> Any:
        return None if p is None else np.asarray(p.numpy() if hasattr(p, "numpy") else p)

    y = conv3d_transpose(x, plain(weight), plain(bias), **(conv or {}), chunks=chunks,
                         memory_per_task=memory_per_task)
    if act is None:
        return y
    attrs = _activations.attrs_for(act, **(act_attrs or {}))
    return _map_blocks(_activate, y, act, attrs, dtype=y.dtype, meta=y._meta)
