"""CPU backend: tile planning and the calls into the Cython kernels.

Arrays arrive as NCDHW views (an NDHWC array is its transposed view) of a validated
geometry (:class:`conv3dt._geometry.Plan`); outputs are written in place. Workspace per
thread is about ``kblock * ncol + 2 * C_g * ncol`` elements, bounded by the tile sizes
below, never by the volume; besides it, the packed weights and grad_weight's partial sums
(at most _CHUNK_BYTES).
"""

import functools

import numpy as np

from . import _kernels
from ._geometry import phase_tables
from ._threads import blas_single_threaded, get_num_threads

# Tile sizes: columns per tile and rows of the packed column block B [kblock x ncol], sized
# to stay in the L2 cache next to the product's other operand (measured flat from 128 KiB
# to 2 MiB and 128 to 1024 columns; benchmarks/RESULTS.md).
_NCOL = 512
_B_BYTES = 512 * 1024
# Partial grad_weight sums may use this much memory (a fixed chunk count, not a thread
# count, keeps grad_weight bitwise independent of the number of threads).
_CHUNK_BYTES = 32 * 1024 * 1024
_MAX_CHUNKS = 32
# Few output channels: the forward pass accumulates straight from x (_direct_phase) when
# C_out / groups <= _DIRECT_COUT; the gradients' thin products run as vector loops instead
# of BLAS when C_in / groups <= _SMALL_CIN (see _kernels._gemm). Crossovers measured on
# the benchmark shapes (benchmarks/RESULTS.md).
_DIRECT_COUT = 2
_SMALL_CIN = 8
# Below this many multiply-adds a pass runs on one thread: waking threads costs more.
_SERIAL_MACS = 1 << 20


def _n_threads(plan):
    """Threads for one pass of ``plan``: the configured count, or 1 for tiny problems."""
    macs = (plan.n * plan.c_in * (plan.c_out // plan.groups) * int(np.prod(plan.kernel))
            * int(np.prod(plan.in_size)))
    return 1 if macs < _SERIAL_MACS else get_num_threads()


def _kblock(rows, ncol, itemsize):
    return max(1, min(rows, _B_BYTES // (ncol * itemsize)))


# Bytes of a run descriptor (conv3dt._kernels.Segment: five Py_ssize_t).
_SEGMENT_BYTES = 5 * np.dtype(np.intp).itemsize


def _raise_if_failed(code, what, n_threads, elements, ncol):
    """MemoryError stating the per-thread workspace the kernel could not allocate."""
    if code != 0:
        nbytes = elements + ncol * _SEGMENT_BYTES
        raise MemoryError(f"could not allocate the per-thread workspace of {what}: "
                          f"{n_threads} x {nbytes} bytes")


# Output bytes per forward work item (a slab of output depths): the phases interleave their
# writes within it, so it should stay in the L2 cache.
_SLAB_BYTES = 256 * 1024
# The padded window of x per thread holds at most this much (whole channels; at least one).
_WINDOW_BYTES = 4 * 1024 * 1024
# Rows of W per product call of the forward pass: the product's 2-vector column of the
# shifted rows (kblock x 64 bytes, less where taps share lines) then stays in the L1 cache
# while every panel of output channels passes over it.
_KBLOCK = 256


def _odd_lines(elements, itemsize):
    """elements rounded up to an odd number of 64-byte lines (see _kernels._row_stride)."""
    per_line = 64 // itemsize
    lines = -(-elements // per_line)
    return (lines + 1 - lines % 2) * per_line


def _gap(table, size):
    """Zero rows (or columns) the window needs beside x along one axis: the farthest any
    tap of any phase reads outside [0, size) (see _kernels._copy_window)."""
    gap = 0
    for _, q0, count, start, ntaps in table.phases:
        for _, m in table.taps[start: start + ntaps]:
            gap = max(gap, m - q0, count - 1 + q0 - m - (size - 1))
    return int(gap)


def _slab_depths(table, in_d, out_d, stride_d, slab):
    """(n_slabs, 2): the input depths [lo, hi) that each slab of output depths reads."""
    out = []
    for od_lo in range(0, out_d, slab):
        od_hi = min(out_d, od_lo + slab)
        lo, hi = in_d, 0
        for o0, q0, count, start, ntaps in table.phases:
            jd_lo = min(max(-((o0 - od_lo) // stride_d), 0), count)
            jd_hi = min(max(-((o0 - od_hi) // stride_d), jd_lo), count)
            if jd_hi > jd_lo:
                m = table.taps[start: start + ntaps, 1]
                lo = min(lo, max(0, jd_lo + q0 - int(m.max())))
                hi = max(hi, min(in_d, jd_hi - 1 + q0 - int(m.min()) + 1))
        out.append((lo, max(lo, hi)))
    return np.array(out, dtype=np.intp).reshape(-1, 2)


@functools.lru_cache(maxsize=128)
def _forward_schedule(plan, itemsize):
    """Phase tables padded into arrays, phase combinations, tap destinations, tiling and
    the geometry of the padded window of x."""
    tables = phase_tables(plan)
    p_max = max(1, max(len(t.phases) for t in tables))
    t_max = max(1, max(len(t.taps) for t in tables))
    phases = np.zeros((3, p_max, 5), dtype=np.intp)
    taps = np.zeros((3, t_max, 2), dtype=np.intp)
    for a, t in enumerate(tables):
        phases[a, : len(t.phases)] = t.phases
        taps[a, : len(t.taps)] = t.taps
    cig, cog = plan.c_in // plan.groups, plan.c_out // plan.groups
    combos = []
    offset = 0
    plane_max, kc_max = 1, 1
    for pd, row_d in enumerate(tables[0].phases):
        for ph, row_h in enumerate(tables[1].phases):
            for pw, row_w in enumerate(tables[2].phases):
                ntaps = int(row_d[4] * row_h[4] * row_w[4])
                combos.append((pd, ph, pw, offset))
                offset += plan.groups * cog * cig * ntaps
                plane_max = max(plane_max, int(row_h[2] * row_w[2]))
                kc_max = max(kc_max, cig * ntaps)
    combos = np.array(combos, dtype=np.intp).reshape(-1, 4)
    # Where each kernel tap lands in the packed weight (see _kernels.pack_forward_weight).
    cog_panels = -(-cog // _kernels.PANEL_NR) * _kernels.PANEL_NR
    tap_dest = np.full((int(np.prod(plan.kernel)), 4), -1, dtype=np.intp)
    kh, kw = plan.kernel[1], plan.kernel[2]
    for (pd, ph, pw, base) in combos:
        rows = [tables[a].taps[p[3]: p[3] + p[4], 0]
                for a, p in enumerate((tables[0].phases[pd], tables[1].phases[ph],
                                       tables[2].phases[pw]))]
        td, th, tw = np.meshgrid(*rows, indexing="ij")
        nt = td.size
        tap_dest[((td * kh + th) * kw + tw).ravel()] = np.stack(
            [np.full(nt, base), np.full(nt, base // cog * cog_panels), np.full(nt, nt),
             np.arange(nt)], axis=1)
    panel_size = max(offset, 1) // cog * cog_panels if offset else 1
    # Slabs of output depths: a multiple of the depth stride (so every depth phase has rows
    # in each slab) holding about _SLAB_BYTES of output.
    s_d = plan.stride[0]
    row_bytes = cog * plan.out_size[1] * plan.out_size[2] * itemsize
    slab = max(1, _SLAB_BYTES // (row_bytes * s_d)) * s_d
    ncol = min(_NCOL, plane_max * max(1, slab // s_d))
    fill = not all(t.covers_all for t in tables) or len(combos) == 0
    # The padded window: planes of hp x wp, where a read outside x lands in a zero gap.
    in_d, in_h, in_w = plan.in_size
    gap_h, gap_w = _gap(tables[1], in_h), _gap(tables[2], in_w)
    count_w = max([int(p[2]) for p in tables[2].phases] + [1])
    hp, wp = in_h + gap_h, max(in_w + gap_w, count_w)
    lead = gap_h * wp + gap_w
    slab_depths = _slab_depths(tables[0], in_d, plan.out_size[0], s_d, slab)
    depth = max(1, int((slab_depths[:, 1] - slab_depths[:, 0]).max(initial=1)))
    cs = _odd_lines(lead + depth * hp * wp, itemsize)
    cib = max(1, min(cig, _WINDOW_BYTES // (cs * itemsize)))
    window = np.array([hp, wp, lead, cs, cib, cib * cs + wp + 64], dtype=np.intp)
    for arr in (phases, taps, combos, tap_dest, slab_depths, window):
        arr.setflags(write=False)
    return (phases, taps, combos, tap_dest, max(offset, 1), panel_size, fill, slab, ncol,
            kc_max, slab_depths, window)


def forward(plan, x, w, bias, out):
    """out[...] = conv3d_transpose(x, w) + bias, all NCDHW (views); w C-contiguous."""
    dtype = out.dtype
    (phases, taps, combos, tap_dest, wsize, panel_size, fill, slab, ncol, kc_max,
     slab_depths, window) = _forward_schedule(plan, dtype.itemsize)
    n_threads = _n_threads(plan)
    cog = plan.c_out // plan.groups
    wpack = np.empty(wsize, dtype=dtype)
    wpanel = np.zeros(panel_size, dtype=dtype)
    _kernels.pack_forward_weight(w, wpack, wpanel, plan.groups, tap_dest, n_threads)
    bias = np.empty(0, dtype=dtype) if bias is None else bias
    direct = cog <= _DIRECT_COUT and x.strides[4] == dtype.itemsize
    kblock = min(kc_max, _KBLOCK)
    code = _kernels.forward(x, wpack, wpanel, bias, out, plan.groups, phases, taps, combos,
                            *plan.stride, fill, slab, slab_depths, window, direct, ncol,
                            kblock, n_threads)
    # Per thread: the window, Y [C_out_g x max(ncol, wp)], the run table and 2 row lists.
    window_elements = 1 if direct else int(window[5])
    _raise_if_failed(code, "the forward pass", n_threads,
                     (window_elements + cog * max(ncol, int(window[1]))) * dtype.itemsize
                     + 2 * kblock * np.dtype(np.intp).itemsize, ncol)


def _weight_panels(w, groups):
    """W_g [C_in_g x C_out_g * K] of each group in panels of PANEL_NR rows (grad_x's
    product, see _simd.h): element (ci, r) at [g][ci // NR][r][ci % NR], zero-padded."""
    nr = _kernels.PANEL_NR
    cig = w.shape[0] // groups
    cigp = -(-cig // nr) * nr
    padded = np.zeros((groups, cigp, w[0].size), dtype=w.dtype)
    padded[:, :cig] = w.reshape(groups, cig, -1)
    return np.ascontiguousarray(
        padded.reshape(groups, cigp // nr, nr, -1).transpose(0, 1, 3, 2)).reshape(-1)


def backward(plan, gy, x, w, gx_out, gw_out, gb_out):
    """Write grad_x, grad_weight and grad_bias into the outputs that are not None.

    gy, x, gx_out: NCDHW views; w, gw_out: C-contiguous [C_in, C_out_g, kD, kH, kW].
    """
    n_threads = _n_threads(plan)
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
    wpanel = _weight_panels(w, plan.groups) if gx_out is not None else np.empty(1, dtype)
    geometry = np.array(plan.stride + plan.dilation + plan.pad_lo, dtype=np.intp)
    with blas_single_threaded():
        code = _kernels.backward(gy, x, w, wpanel, gx, chunks, gx_out is not None,
                                 gw_out is not None,
                                 plan.groups, geometry, ncol, _kblock(kc, ncol, dtype.itemsize),
                                 n_chunks, _SMALL_CIN, n_threads)
    _raise_if_failed(code, "the backward pass", n_threads,
                     (_kblock(kc, ncol, dtype.itemsize) * (ncol + 128 // dtype.itemsize)
                      + 2 * (plan.c_in // plan.groups) * ncol) * dtype.itemsize, ncol)
    if gw_out is not None:
        _kernels.sum_chunks(chunks, gw_out.reshape(-1), n_threads)
