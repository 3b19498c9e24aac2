"""CPU backend: tile planning and the calls into the Cython kernels.

Arrays arrive as NCDHW views (an NDHWC array is its transposed view) of a validated
geometry (:class:`conv3dt._geometry.Plan`); outputs are written in place. Workspace per
thread: the padded window of the input (forward) or of grad_output's residue grids
(backward), at most Tuning.window_bytes or one channel's window, and tiles of ncol columns;
besides it, the packed weights and grad_weight's partial sums (at most Tuning.chunk_bytes).
Block sizes, vector widths and panel widths are the instruction-set variant's
(:mod:`conv3dt._isa`), read from its record, never literals of this module.
Outputs and the partial sums come from :func:`conv3dt._memory.empty` (``empty``), which
reuses the memory of large arrays.
"""

import dataclasses
import functools
import math
from typing import Optional

import numpy as np

from . import _isa, _kernels
from ._geometry import phase_tables
from ._memory import empty
from ._threads import get_num_threads, note_parallel


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The tile and workspace sizes of the CPU backend (measured choices, see
    benchmarks/RESULTS.md). Tests pass small ones (:func:`tuned`) to force the code that
    splits work onto small problems; results do not depend on them."""

    # Columns per tile (a longer reduction per grad_weight block; 512 -> 1024 measured
    # 0-8% faster).
    ncol: int = 1024
    # Rows of W per product call: the product's block of columns of the shifted rows
    # (kblock x a register block, less where taps share lines) then stays in the L1 cache
    # while every panel of output channels passes over it.
    kblock: int = 256
    # The padded window of x (or of grad_output's residue grids) per thread holds at most
    # this much (whole channels; at least one).
    window_bytes: int = 4 * 1024 * 1024
    # Output bytes per forward work item (a slab of output depths): the phases interleave
    # their writes within it, so it should stay in the L2 cache.
    slab_bytes: int = 1024 * 1024
    # Slabs are made thinner until the forward pass has this many work items (samples x
    # groups x slabs), so that small batches keep every thread busy. A property of the
    # shape, not of the thread count: results do not depend on the number of threads.
    min_items: int = 8
    # Partial grad_weight sums may use this much memory, in at most max_chunks chunks (a
    # fixed chunk count, not a thread count, keeps grad_weight bitwise independent of the
    # number of threads).
    chunk_bytes: int = 32 * 1024 * 1024
    max_chunks: int = 32
    # Few output channels: the forward pass accumulates straight from x (_direct_phase)
    # when C_out / groups <= direct_cout (None: the variant's crossover, Isa.direct_cout);
    # grad_weight's products run as dot blocks when C_in / groups <= small_cin.
    direct_cout: Optional[int] = None
    small_cin: int = 8
    # Below this many multiply-adds a pass runs on one thread: waking threads costs more.
    serial_macs: int = 1 << 20


DEFAULT_TUNING = Tuning()
_tuning = DEFAULT_TUNING


class tuned:
    """Context manager: the CPU backend uses ``tuning`` (a :class:`Tuning`) inside the
    block, then the one before."""

    def __init__(self, tuning):
        if not isinstance(tuning, Tuning):
            raise TypeError(f"tuning must be a Tuning, got {type(tuning).__name__}")
        self.tuning = tuning

    def __enter__(self):
        global _tuning
        self.previous, _tuning = _tuning, self.tuning
        return self.tuning

    def __exit__(self, *exc):
        global _tuning
        _tuning = self.previous


# Arrays of fewer elements are checked for finiteness on one thread.
_FINITE_SERIAL = 1 << 18


def all_finite(arr):
    """No NaN or infinity in ``arr`` (a NumPy float array): one pass, in parallel when
    it is contiguous."""
    if arr.size == 0:
        return True
    if arr.flags.c_contiguous:
        # Waking threads costs more than checking a small array on one.
        n_threads = 1 if arr.size < _FINITE_SERIAL else get_num_threads()
        note_parallel(n_threads)
        return _kernels.all_finite(arr.reshape(-1), _isa.current().index, n_threads)
    # min and max propagate NaN and infinity, and make no temporary the size of arr
    return bool(np.isfinite(arr.min())) and bool(np.isfinite(arr.max()))


def _n_threads(plan, tuning):
    """Threads for one pass of ``plan``: the configured count, or 1 for tiny problems."""
    macs = (plan.n * plan.c_in * (plan.c_out // plan.groups) * math.prod(plan.kernel)
            * math.prod(plan.in_size))
    n_threads = 1 if macs < tuning.serial_macs else get_num_threads()
    note_parallel(n_threads)
    return n_threads


def _raise_if_failed(code, what, n_threads):
    """KeyboardInterrupt where Ctrl-C stopped the pass (the kernel returns
    _kernels.INTERRUPTED; its outputs are unfinished and never returned), else MemoryError
    stating the per-thread workspace that the kernel (which returns its size in bytes when
    an allocation failed) could not allocate."""
    if code == _kernels.INTERRUPTED:
        raise KeyboardInterrupt
    if code != 0:
        raise MemoryError(f"could not allocate the per-thread workspace of {what}: "
                          f"{n_threads} x {code} bytes")


@dataclasses.dataclass(frozen=True)
class Window:
    """The padded copy of x (forward) or of grad_output's residue grids (backward) that a
    work item reads in place (see _kernels.Window): planes of hp rows of wp elements, with
    zero gaps where a tap reads outside the data, `lead` zero elements before each
    channel's planes, channels cs elements apart (an odd number of cache lines),
    `channels` channels at once; `elements` in all, with slack for the last vector."""

    hp: int
    wp: int
    lead: int
    cs: int
    channels: int
    elements: int

    @functools.cached_property
    def as_array(self):
        """The window as the kernels take it (made once: schedules are cached)."""
        arr = np.array([self.hp, self.wp, self.lead, self.cs, self.channels, self.elements],
                       dtype=np.intp)
        arr.setflags(write=False)
        return arr


def _odd_lines(elements, itemsize):
    """elements rounded up to an odd number of 64-byte lines: channels a power of two of
    bytes apart would map to the same few sets of the L1 cache and evict each other while
    the product reads one shifted row per channel."""
    per_line = 64 // itemsize
    lines = -(-elements // per_line)
    return (lines + 1 - lines % 2) * per_line


def _window(hp, wp, lead, depth, per_channel, channels_max, isa, itemsize, tuning):
    """The Window of `depth` planes of hp x wp, per_channel grids a channel, as many
    channels (<= channels_max) as tuning.window_bytes holds (at least one)."""
    cs = _odd_lines(lead + depth * hp * wp, itemsize)
    channels = max(1, min(channels_max, tuning.window_bytes // (per_channel * cs * itemsize)))
    # Slack past the last channel: a tile's last vector may read past its last column.
    elements = channels * per_channel * cs + wp + max(64, 8 * isa.lanes(itemsize))
    return Window(hp, wp, lead, cs, channels, elements)


def _gap(table, size):
    """Zero rows (or columns) the window needs beside x along one axis: the farthest any
    tap of any phase reads outside [0, size) (see _kernels._copy_window)."""
    gap = 0
    for _, q0, count, start, ntaps in table.phases:
        for _, m in table.taps[start: start + ntaps]:
            gap = max(gap, m - q0, count - 1 + q0 - m - (size - 1))
    return int(gap)


def _slab_depths(table, in_d, out_d, stride_d, slab):
    """(n_slabs, 2): the input depths [lo, hi) that each slab of output depths reads, within
    x: planes where some tap reads outside x are tiled alone, and their tiles leave that
    tap out (see _kernels._plane_tile)."""
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


def _tile_layout(hp, wp, count_h, count_w, ncol, lanes, panel_mv, thin=False):
    """How the forward pass or grad_x tiles planes of hp x wp holding count_h x count_w
    kept outputs: (compact, planes per tile; 1: tiles of rows of one plane).

    The panel product computes whole vectors of `lanes` elements, in register blocks of
    panel_mv vectors. A `compact` tile gives each row vectors of its own (count_w rounded
    up to whole vectors), so that no gap column or row is computed; it can be when that is
    at most wp columns. Otherwise a tile's vectors run over the window from its first kept
    column to its last, the gaps included. Of the numbers of whole planes within ncol
    columns, and of both layouts, pick the one that computes the fewest vectors per output
    (a last register block of a single vector runs at a fraction of the speed: it counts
    twice), the most planes among equals (the kernels tile the planes at the borders of x,
    where some taps read only zeros, on their own), the compact layout among equals.

    `thin`: the product has one column (one channel per group on the other side; see the
    one-column block in kernels/microkernels.h). Its blocks are many vectors long and run
    at full speed only over consecutive vectors; over a compact tile's rows they load
    each vector's pointer besides its data, so compact vectors count twice.
    """
    pitch = -(-count_w // lanes) * lanes

    def cost(compact, n):
        if compact:
            nv = n * count_h * pitch // lanes
        else:
            nv = -(-(((n - 1) * hp + count_h - 1) * wp + count_w) // lanes)
        if thin:
            return nv * (2 if compact else 1) / (n * count_h * count_w)
        return (nv + (nv % panel_mv == 1)) / (n * count_h * count_w)

    layouts = [(compact, n) for compact in ((True, False) if pitch <= wp else (False,))
               for n in range(1, max(1, ncol // (count_h * pitch if compact else hp * wp)) + 1)]
    return min(layouts, key=lambda c_n: (cost(*c_n), -c_n[1], not c_n[0]))


@dataclasses.dataclass(frozen=True)
class ForwardSchedule:
    """How the forward pass of one plan runs. Its arrays are in `tables`, as the kernels
    take them (see _kernels.forward): the phase and tap tables, padded, (3, P, 5) and
    (3, T, 2); the phase combinations (C, 4): (pd, ph, pw, weight offset); where each
    kernel tap lands in the packed weight (K, 4); the input depths each slab reads
    (n_slabs, 2); and the window."""

    wpack_size: int          # elements of the row-major packed weight (direct path)
    panel_size: int          # elements of the weight in panels
    fill: bool               # some outputs get no tap: fill them with the bias first
    slab: int                # output depths per work item
    planes_per_tile: int
    compact: bool            # tiles of kept columns only
    n_pw: int                # combinations per (d, h) phase pair (w-phases tiled together)
    kblock: int              # rows of W per product call
    window: Window
    tables: "_kernels.ForwardTables"


@functools.lru_cache(maxsize=128)
def _forward_schedule(plan, itemsize, isa, tuning):
    """Phase tables padded into arrays, phase combinations, tap destinations, tiling and
    the geometry of the padded window of x, for the variant `isa`."""
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
    kc_max = 1
    for pd, row_d in enumerate(tables[0].phases):
        for ph, row_h in enumerate(tables[1].phases):
            for pw, row_w in enumerate(tables[2].phases):
                ntaps = int(row_d[4] * row_h[4] * row_w[4])
                combos.append((pd, ph, pw, offset))
                offset += plan.groups * cog * cig * ntaps
                kc_max = max(kc_max, cig * ntaps)
    combos = np.array(combos, dtype=np.intp).reshape(-1, 4)
    # Consecutive combinations that differ only in their w-phase, tiled together.
    n_pw = max(1, len(tables[2].phases))
    # Where each kernel tap lands in the packed weight (see _kernels.pack_forward_weight).
    cog_panels = -(-cog // isa.panel_nr) * isa.panel_nr
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
    # in each slab) holding about tuning.slab_bytes of output, and thin enough for
    # tuning.min_items work items.
    s_d = plan.stride[0]
    row_bytes = cog * plan.out_size[1] * plan.out_size[2] * itemsize
    slab = max(1, tuning.slab_bytes // (row_bytes * s_d)) * s_d
    per_sample = -(-tuning.min_items // (plan.n * plan.groups))
    slab = min(slab, max(s_d, -(-plan.out_size[0] // (per_sample * s_d)) * s_d))
    fill = not all(t.covers_all for t in tables) or len(combos) == 0
    # The padded window: planes of hp x wp, where a read outside x lands in a zero gap.
    in_d, in_h, in_w = plan.in_size
    gap_h, gap_w = _gap(tables[1], in_h), _gap(tables[2], in_w)
    count_h = max([int(p[2]) for p in tables[1].phases] + [1])
    count_w = max([int(p[2]) for p in tables[2].phases] + [1])
    hp, wp = max(in_h + gap_h, count_h), max(in_w + gap_w, count_w)
    lead = gap_h * wp + gap_w
    compact, planes_per_tile = _tile_layout(hp, wp, count_h, count_w, tuning.ncol,
                                            isa.lanes(itemsize), isa.panel_mv, cog == 1)
    slab_depths = _slab_depths(tables[0], in_d, plan.out_size[0], s_d, slab)
    depth = max(1, int((slab_depths[:, 1] - slab_depths[:, 0]).max(initial=1)))
    window = _window(hp, wp, lead, depth, 1, cig, isa, itemsize, tuning)
    for arr in (phases, taps, combos, tap_dest, slab_depths):
        arr.setflags(write=False)
    tables = _kernels.ForwardTables(phases, taps, combos, slab_depths, tap_dest,
                                    window.as_array)
    return ForwardSchedule(max(offset, 1), panel_size, fill, slab, planes_per_tile, compact,
                           n_pw, min(kc_max, tuning.kblock), window, tables)


def forward(plan, x, w, bias, out):
    """out[...] = conv3d_transpose(x, w) + bias, all NCDHW (views); w C-contiguous."""
    dtype = out.dtype
    isa, tuning = _isa.current(), _tuning
    sched = _forward_schedule(plan, dtype.itemsize, isa, tuning)
    n_threads = _n_threads(plan, tuning)
    cog = plan.c_out // plan.groups
    direct_cout = isa.direct_cout if tuning.direct_cout is None else tuning.direct_cout
    direct = cog <= direct_cout and x.strides[4] == dtype.itemsize
    # the weight in panels, or row-major for the direct path
    wpacked = np.empty(sched.wpack_size if direct else sched.panel_size, dtype=dtype)
    _kernels.pack_forward_weight(w, wpacked, plan.groups, sched.tables, not direct,
                                 isa.index, n_threads)
    code = _kernels.forward(x, wpacked, bias, out, sched.tables, plan.groups, *plan.stride,
                            sched.fill, sched.slab, direct, tuning.ncol,
                            sched.planes_per_tile, sched.compact, sched.n_pw, sched.kblock,
                            isa.index, n_threads)
    _raise_if_failed(code, "the forward pass", n_threads)


@dataclasses.dataclass(frozen=True)
class BackwardSchedule:
    """How the gradients of one plan run. Its arrays are in `tables`, as the kernels take
    them (see _kernels.backward): the residue combinations (n_res, 6): (r_d, r_h, r_w,
    counts); per tap its residue combination and offsets a_d, a_h, a_w (K, 4); the
    residue-grid depths each slab reads (n_slabs, 2); the input depths and rows where
    every tap reads inside grad_output; the stride and the window."""

    slab: int                # input depths per work item
    n_slabs: int
    gx_planes: int           # grad_x's tiles (_tile_layout)
    gx_compact: bool
    window: Window
    kblock: int
    tables: "_kernels.BackwardTables"


@functools.lru_cache(maxsize=128)
def _backward_schedule(plan, itemsize, isa, tuning):
    """Residue grids of grad_output, the tap table and the padded window's geometry.

    Per dimension, tap t reads grad_output at i * s + e_t (e_t = t * dil - lo), which is
    (i + a_t) * s + r_t: residue grid r_t at offset a_t. Computes
    res (n_res, 6): (r_d, r_h, r_w, cnt_d, cnt_h, cnt_w) of each residue combination used;
    tap_table (K, 4): (residue combination, a_d, a_h, a_w) per tap; slab: input depths per
    work item; gx_planes, gx_compact: grad_x's tiles (_tile_layout); depths (n_slabs, 2):
    the residue-grid depths each slab reads; window and inner (see _kernels.backward);
    returns them as a BackwardSchedule (the arrays in its tables).
    """
    per_dim = []
    for a in range(3):
        e = np.arange(plan.kernel[a]) * plan.dilation[a] - plan.pad_lo[a]
        r, off = e % plan.stride[a], e // plan.stride[a]
        used = sorted(set(r.tolist()))
        cnt = {v: max(0, -(-(plan.out_size[a] - v) // plan.stride[a])) for v in used}
        per_dim.append((r, off, used, cnt))
    (rd, ad, ud, cd), (rh, ah, uh, chh), (rw, aw, uw, cw) = per_dim
    res = np.array([(i, j, k, cd[i], chh[j], cw[k]) for i in ud for j in uh for k in uw],
                   dtype=np.intp).reshape(-1, 6)
    td, th, tw = np.meshgrid(np.arange(plan.kernel[0]), np.arange(plan.kernel[1]),
                             np.arange(plan.kernel[2]), indexing="ij")
    td, th, tw = td.ravel(), th.ravel(), tw.ravel()
    rho = ((np.searchsorted(ud, rd[td]) * len(uh) + np.searchsorted(uh, rh[th])) * len(uw)
           + np.searchsorted(uw, rw[tw]))
    tap_table = np.stack([rho, ad[td], ah[th], aw[tw]], axis=1).astype(np.intp)
    in_d, in_h, in_w = plan.in_size

    def pitch(size, offs, counts, j_space):
        # Rows (or columns) per plane (or row): the data, a gap wide enough that every
        # read outside the data lands on a zero, and (along w) the tile's columns.
        p = size if j_space else 1
        for o, c in zip(offs.tolist(), counts):
            p = max(p, c, c - o, size + o)
        return p

    hp = pitch(in_h, ah[th], [chh[v] for v in rh[th].tolist()], True)
    wp = pitch(in_w, aw[tw], [cw[v] for v in rw[tw].tolist()], True)
    lead = max(0, -int(ah.min())) * wp + max(0, -int(aw.min()))
    # Work items: slabs of whole input planes forming one tile of up to ncol columns (as
    # many slabs as that takes, of equal size), or single planes tiled by rows. Planes
    # where some tap reads outside the grids are tiled alone, and their tiles leave that
    # tap out: no tile reads a plane outside them.
    n_slabs = -(-in_d // max(1, tuning.ncol // (hp * wp)))
    slab = -(-in_d // n_slabs)
    # grad_x tiles the slab on its own (see _kernels._grad_item).
    gx_compact, gx_planes = _tile_layout(hp, wp, in_h, in_w, tuning.ncol, isa.lanes(itemsize),
                                         isa.panel_mv, plan.c_in == plan.groups)
    cnt_d = max(cd.values())
    i = np.arange(0, in_d, slab)
    depths = np.stack([np.maximum(0, i + int(ad.min())),
                       np.minimum(cnt_d, np.minimum(i + slab, in_d) - 1 + int(ad.max()) + 1)],
                      axis=1)
    depths[:, 1] = np.maximum(depths[:, 0], depths[:, 1])
    depth = max(1, int((depths[:, 1] - depths[:, 0]).max()))
    cog = plan.c_out // plan.groups
    window = _window(hp, wp, lead, depth, len(res), cog, isa, itemsize, tuning)
    depths = np.ascontiguousarray(depths, dtype=np.intp)
    # The input depths and rows [lo, hi) where every tap reads inside grad_output
    # (0 <= i + a_t < cnt(r_t)): grad_w tiles the others apart.
    inner = []
    for (r, off, _, cnt), size in zip(per_dim[:2], plan.in_size[:2]):
        lo = min(size, max([0] + [-int(a) for a in off]))
        hi = min(size, min(cnt[int(v)] - int(a) for v, a in zip(r, off)))
        inner += [lo, max(lo, hi)]
    inner = np.array(inner, dtype=np.intp)
    for arr in (res, tap_table, depths, inner):
        arr.setflags(write=False)
    kblock = min(cog * int(np.prod(plan.kernel)), tuning.kblock)
    tables = _kernels.BackwardTables(np.array(plan.stride, dtype=np.intp), res, tap_table,
                                     depths, window.as_array, inner)
    return BackwardSchedule(slab, len(depths), gx_planes, gx_compact, window, kblock, tables)


def backward(plan, gy, x, w, gx_out, gw_out, gb_out):
    """Write grad_x, grad_weight and grad_bias into the outputs that are not None.

    gy, x, gx_out: NCDHW views; w, gw_out: C-contiguous [C_in, C_out_g, kD, kH, kW].
    """
    isa, tuning = _isa.current(), _tuning
    n_threads = _n_threads(plan, tuning)
    dtype = gy.dtype
    if gb_out is not None:
        _kernels.bias_grad(gy, gb_out, n_threads)
    if gx_out is None and gw_out is None:
        return
    sched = _backward_schedule(plan, dtype.itemsize, isa, tuning)
    cig, cog = plan.c_in // plan.groups, plan.c_out // plan.groups
    kc = cog * math.prod(plan.kernel)
    n_items = plan.groups * plan.n * sched.n_slabs
    if gw_out is not None:
        budget = max(1, tuning.chunk_bytes // (w.size * dtype.itemsize))
        n_chunks = max(1, min(n_items, tuning.max_chunks, budget))
        chunks = empty((n_chunks, w.size), dtype)
    else:
        n_chunks = n_items
        chunks = np.empty((0, 1), dtype=dtype)
    gx = gx_out if gx_out is not None else np.empty((0,) * 5, dtype=dtype)
    if gx_out is not None:
        nr = isa.panel_nr
        wpanel = np.empty(plan.groups * -(-cig // nr) * nr * kc, dtype=dtype)
        _kernels.pack_backward_weight(w, wpanel, plan.groups, isa.index, n_threads)
    else:
        wpanel = np.empty(1, dtype)
    code = _kernels.backward(gy, x, wpanel, gx, chunks, gx_out is not None,
                             gw_out is not None, plan.groups, sched.tables, sched.slab,
                             tuning.ncol, sched.gx_planes, sched.gx_compact, sched.kblock,
                             n_chunks, tuning.small_cin, isa.index, n_threads)
    _raise_if_failed(code, "the backward pass", n_threads)
    if gw_out is not None:
        _kernels.sum_chunks(chunks, gw_out.reshape(-1), cig, kc, n_threads)
