"""CPU backend: tile planning and the calls into the Cython kernels.

Arrays arrive as NCDHW views (an NDHWC array is its transposed view) of a validated
geometry (:class:`conv3dt._geometry.Plan`); outputs are written in place. Workspace per
thread is ``kblock * ncol + 2 * C_g * ncol`` elements: bounded by the tile sizes below,
never by the volume.
"""

import functools

import numpy as np

from . import _kernels
from ._geometry import phase_tables
from ._threads import blas_single_threaded, get_num_threads

# Tile sizes: columns per GEMM tile and rows of the packed column block. B [kblock x ncol]
# is sized to stay in the L2 cache next to the GEMM's other operand.
_NCOL = 256
_B_BYTES = 256 * 1024
# Partial grad_weight sums may use this much memory (a fixed chunk count, not a thread
# count, keeps grad_weight bitwise independent of the number of threads).
_CHUNK_BYTES = 32 * 1024 * 1024
_MAX_CHUNKS = 32


def _kblock(rows, ncol, itemsize):
    return max(1, min(rows, _B_BYTES // (ncol * itemsize)))


def _raise_if_failed(code, what):
    if code != 0:
        raise MemoryError(f"could not allocate the per-thread workspace of {what}")


@functools.lru_cache(maxsize=128)
def _forward_schedule(plan):
    """Phase tables padded into arrays, phase combinations and output tiles of a plan."""
    tables = phase_tables(plan)
    p_max = max(1, max(len(t.phases) for t in tables))
    t_max = max(1, max(len(t.taps) for t in tables))
    phases = np.zeros((3, p_max, 5), dtype=np.intp)
    taps = np.zeros((3, t_max, 2), dtype=np.intp)
    for a, t in enumerate(tables):
        phases[a, : len(t.phases)] = t.phases
        taps[a, : len(t.taps)] = t.taps
    cig, cog = plan.c_in // plan.groups, plan.c_out // plan.groups
    combos, tiles = [], []
    offset = 0
    q_max = 1
    for pd, row_d in enumerate(tables[0].phases):
        for ph, row_h in enumerate(tables[1].phases):
            for pw, row_w in enumerate(tables[2].phases):
                ntaps = int(row_d[4] * row_h[4] * row_w[4])
                count = int(row_d[2] * row_h[2] * row_w[2])
                combos.append((pd, ph, pw, offset))
                offset += plan.groups * cog * cig * ntaps
                q_max = max(q_max, count)
    ncol = min(_NCOL, q_max)
    for c, (pd, ph, pw, _) in enumerate(combos):
        count = int(tables[0].phases[pd, 2] * tables[1].phases[ph, 2] * tables[2].phases[pw, 2])
        tiles.extend((c, j0) for j0 in range(0, count, ncol))
    combos = np.array(combos, dtype=np.intp).reshape(-1, 4)
    tiles = np.array(tiles, dtype=np.intp).reshape(-1, 2)
    fill = not all(t.covers_all for t in tables)
    kc_max = cig * max((int(tables[0].phases[d, 4] * tables[1].phases[h, 4]
                            * tables[2].phases[w, 4]) for d, h, w, _ in combos), default=1)
    for arr in (phases, taps, combos, tiles):
        arr.setflags(write=False)
    return phases, taps, combos, tiles, max(offset, 1), fill, ncol, kc_max


def forward(plan, x, w, bias, out):
    """out[...] = conv3d_transpose(x, w) + bias, all NCDHW (views); w C-contiguous."""
    phases, taps, combos, tiles, wsize, fill, ncol, kc_max = _forward_schedule(plan)
    dtype = out.dtype
    wpack = np.empty(wsize, dtype=dtype)
    _kernels.pack_forward_weight(w, wpack, plan.groups, phases, taps, combos)
    bias = np.empty(0, dtype=dtype) if bias is None else bias
    if len(tiles) == 0:
        # No output receives a tap (e.g. a stride larger than the kernel's reach).
        fill = True
    with blas_single_threaded():
        code = _kernels.forward(x, wpack, bias, out, plan.groups, phases, taps, combos, tiles,
                                *plan.stride, fill, ncol, _kblock(kc_max, ncol, dtype.itemsize),
                                get_num_threads())
    _raise_if_failed(code, "the forward pass")


def backward(plan, gy, x, w, gx_out, gw_out, gb_out):
    """Write grad_x, grad_weight and grad_bias into the outputs that are not None.

    gy, x, gx_out: NCDHW views; w, gw_out: C-contiguous [C_in, C_out_g, kD, kH, kW].
    """
    n_threads = get_num_threads()
    dtype = gy.dtype
    if gb_out is not None:
        _kernels.bias_grad(gy, gb_out, n_threads)
    if gx_out is None and gw_out is None:
        return
    volume = int(np.prod(plan.in_size))
    ncol = min(_NCOL, volume)
    cog = plan.c_out // plan.groups
    kc = cog * int(np.prod(plan.kernel))
    n_items = plan.groups * plan.n * (-(-volume // ncol))
    if gw_out is not None:
        budget = max(1, _CHUNK_BYTES // (w.size * dtype.itemsize))
        n_chunks = max(1, min(n_items, _MAX_CHUNKS, budget))
        chunks = np.zeros((n_chunks, w.size), dtype=dtype)
    else:
        n_chunks = n_items
        chunks = np.empty((0, 1), dtype=dtype)
    gx = gx_out if gx_out is not None else np.empty((0,) * 5, dtype=dtype)
    geometry = np.array(plan.stride + plan.dilation + plan.pad_lo, dtype=np.intp)
    with blas_single_threaded():
        code = _kernels.backward(gy, x, w, gx, chunks, gx_out is not None, gw_out is not None,
                                 plan.groups, geometry, ncol, _kblock(kc, ncol, dtype.itemsize),
                                 n_chunks, n_threads)
    _raise_if_failed(code, "the backward pass")
    if gw_out is not None:
        _kernels.sum_chunks(chunks, gw_out.reshape(-1), n_threads)
