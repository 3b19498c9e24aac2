"""GPU backend (CuPy): the phase-decomposed transposed convolution as gathers + ``matmul``.

Same interface and semantics as :mod:`conv3dt._cpu`: arrays arrive as NCDHW views (an NDHWC
array is its transposed view) of a validated geometry (:class:`conv3dt._geometry.Plan`) and
outputs are written in place. Every array operation goes through the array module ``xp``
(``cupy`` by default, imported lazily), so the same code runs with ``xp=numpy``: that is
how CI, which has no GPU, tests this file.

Forward. Per spatial dimension the outputs split into phases (see
:func:`conv3dt._geometry.phase_tables`); phase ``r`` owns the outputs ``o = q*s + r - lo``
and reads input ``i = q - m_t`` through its taps ``t``. The taps of one phase form an
arithmetic progression (``t*d = r mod s``), so all shifted input columns of a phase
combination are ONE strided view of the input::

    cols[c, a_d, a_h, a_w, n, j_d, j_h, j_w] = x[n, c, start_d + a_d*mstep_d + j_d, ...]

copied once into a contiguous ``[G, C_in_g*taps, N*count]`` buffer, multiplied by the
phase weight ``[G, C_out_g, C_in_g*taps]`` (one batched cuBLAS GEMM) and written (plus
bias) to the strided output slice ``out[:, :, o0_d::s_d, o0_h::s_h, o0_w::s_w]``. Phase
combinations that read the same columns (e.g. ``k == s``, no padding: every phase has
one tap and reads the input unshifted) share one gather and one GEMM with their weights
stacked. Phases partition the output: no element is written twice, no atomics, no
zero-inserted input, deterministic.

Backward. grad_input is a strided correlation of grad_output, again one strided view::

    cols[co, t_d, t_h, t_w, n, i_d, i_h, i_w] = gy[n, co, i_d*s_d + t_d*d_d - lo_d, ...]

``gx_g = W_g [C_in_g x C_out_g*K] @ cols_g`` and ``gW_g += X_g @ cols_g^T``, summed over
chunks in a fixed order; grad_bias is a sum over batch and space.

Reads outside the input (or grad_output) come from a zero-padded *window* built only for
the chunk being processed; when a window lies inside the array it is a view (no copy).
Workspace (columns, GEMM result, window) is bounded by :data:`WORKSPACE_BYTES` by
processing the batch, then the depth axis, in chunks.

Precision: CuPy's float32 ``matmul`` computes in float32 (TF32 only if the user sets
``CUPY_TF32=1``); float64 stays float64.
"""

import functools
import math
from typing import NamedTuple, Tuple

from ._geometry import phase_tables

__all__ = ["all_finite", "empty", "forward", "backward", "WORKSPACE_BYTES"]

# Upper bound (bytes) on one chunk's workspace: columns buffer, GEMM result and zero-padded
# window. Chunks are whole samples when they fit, else planes of the depth axis (at least
# one plane, so a single plane larger than this is still processed).
WORKSPACE_BYTES = 256 * 1024 * 1024


def all_finite(arr):
    """No NaN or infinity in ``arr`` (min and max propagate both; no temporary the size of
    arr)."""
    if arr.size == 0:
        return True
    return math.isfinite(float(arr.min())) and math.isfinite(float(arr.max()))


def empty(shape, dtype, *, xp=None):
    """An uninitialised array on the GPU (from CuPy's memory pool)."""
    return _module(xp).empty(shape, dtype)


def _module(xp):
    """The array module: ``xp`` itself, or CuPy (with a clear error when it is missing)."""
    if xp is not None:
        return xp
    from ._backend import cupy_module

    return cupy_module()


# ----------------------------------------------------------------------------- schedule


class _Dim(NamedTuple):
    """One spatial dimension of a phase combination's gather.

    Grid index ``j`` of tap ``a`` (taps in *descending* kernel order) reads input
    ``start + a * mstep + j``; ``taps`` taps, ``count`` grid points.
    """

    start: int
    taps: int
    mstep: int
    # (A field that shadows tuple.count, which a type checker reports; nothing here calls it.)
    count: int  # type: ignore[assignment]


class _Group(NamedTuple):
    """Phase combinations that share one column gather (and so one GEMM)."""

    dims: Tuple[_Dim, _Dim, _Dim]
    # per combination: the first output index per dim, and the kernel-tap slice per dim
    # (descending, matching the gather's tap order)
    o0: Tuple[Tuple[int, int, int], ...]
    tap_slices: Tuple[Tuple[slice, slice, slice], ...]


def _dim_phase(table, p):
    o0, q0, count, tap_start, tap_count = (int(v) for v in table.phases[p])
    rows = table.taps[tap_start:tap_start + tap_count]
    ts = [int(t) for t in rows[:, 0]]
    ms = [int(m) for m in rows[:, 1]]
    if tap_count > 1:
        tstep, mstep = ts[1] - ts[0], ms[1] - ms[0]
        # The taps of a phase solve t*d = r (mod s): an arithmetic progression.
        assert all(b - a == tstep for a, b in zip(ts, ts[1:])), ts
        assert all(b - a == mstep for a, b in zip(ms, ms[1:])), ms
    else:
        tstep, mstep = 1, 0
    # Descending taps: tap a = 0 is the last kernel tap, which reads the lowest input.
    stop = ts[0] - 1 if ts[0] > 0 else None
    tap_slice = slice(ts[-1], stop, -tstep)
    return o0, _Dim(q0 - ms[-1], tap_count, mstep, count), tap_slice


@functools.lru_cache(maxsize=128)
def _forward_schedule(plan):
    """(groups of phase combinations sharing a gather, whether every output is covered)."""
    tables = phase_tables(plan)
    per_dim = [[_dim_phase(t, p) for p in range(len(t.phases))] for t in tables]
    groups = {}
    for od, dd, sd in per_dim[0]:
        for oh, dh, sh in per_dim[1]:
            for ow, dw, sw in per_dim[2]:
                key = (dd, dh, dw)
                o0s, slices = groups.setdefault(key, ([], []))
                o0s.append((od, oh, ow))
                slices.append((sd, sh, sw))
    groups = tuple(_Group(k, tuple(v[0]), tuple(v[1])) for k, v in groups.items())
    covers_all = all(t.covers_all for t in tables) and bool(groups)
    return groups, covers_all


# ------------------------------------------------------------------------------ helpers


def _chunks(n, planes, per_plane, itemsize):
    """(samples, planes) per chunk so that ``samples*planes*per_plane`` elements fit the
    workspace; whole samples first, then planes of the depth axis (at least one)."""
    budget = max(1, WORKSPACE_BYTES // itemsize)
    per_sample = per_plane * planes
    if per_sample * n <= budget:
        return max(n, 1), planes
    if per_sample <= budget:
        return budget // per_sample, planes
    return 1, max(1, min(planes, budget // max(1, per_plane)))


def _window(src, n0, n1, starts, extents, xp):
    """``src[n0:n1, :, starts[0]:starts[0]+extents[0], ...]`` of the zero-padded ``src``.

    A view when the window lies inside ``src``; else a zero-filled copy of just the window.
    """
    sizes = src.shape[2:]
    inside = all(0 <= a and a + e <= s for a, e, s in zip(starts, extents, sizes))
    if inside:
        return src[(slice(n0, n1), slice(None))
                   + tuple(slice(a, a + e) for a, e in zip(starts, extents))]
    buf = xp.zeros((n1 - n0, src.shape[1]) + tuple(extents), dtype=src.dtype)
    lo = [max(a, 0) for a in starts]
    hi = [min(a + e, s) for a, e, s in zip(starts, extents, sizes)]
    if all(h > l for l, h in zip(lo, hi)):
        buf[(slice(None), slice(None))
            + tuple(slice(l - a, h - a) for l, h, a in zip(lo, hi, starts))] = \
            src[(slice(n0, n1), slice(None)) + tuple(slice(l, h) for l, h in zip(lo, hi))]
    return buf


def _gather(win, taps, tap_step, counts, grid_step, xp):
    """Contiguous ``[C, tD, tH, tW, n, cD, cH, cW]`` copy of the strided view
    ``win[n, c, a_d*tap_step_d + j_d*grid_step_d, ...]`` (all indices inside ``win``)."""
    sn, sc, sd, sh, sw = win.strides
    spatial = (sd, sh, sw)
    shape = (win.shape[1],) + tuple(taps) + (win.shape[0],) + tuple(counts)
    strides = ((sc,) + tuple(t * s for t, s in zip(tap_step, spatial)) + (sn,)
               + tuple(g * s for g, s in zip(grid_step, spatial)))
    view = xp.lib.stride_tricks.as_strided(win, shape=shape, strides=strides)
    return xp.ascontiguousarray(view)


def _out_slice(o0, j0, count, stride):
    """Outputs ``o0 + (j0 + j) * stride`` for ``j`` in ``[0, count)``, as a slice."""
    first = o0 + j0 * stride
    return slice(first, first + (count - 1) * stride + 1, stride)


# ------------------------------------------------------------------------------ forward


def forward(plan, x, w, bias, out, *, xp=None):
    """out[...] = conv3d_transpose(x, w) + bias, all NCDHW (views); w C-contiguous."""
    xp = _module(xp)
    groups, covers_all = _forward_schedule(plan)
    g = plan.groups
    cig, cog = plan.c_in // g, plan.c_out // g
    n = plan.n
    bias_b = None if bias is None else bias.reshape(1, plan.c_out, 1, 1, 1)
    if not covers_all:
        # Some outputs receive no tap: they hold the bias (or zero).
        out[...] = 0 if bias_b is None else bias_b
    w_g = w.reshape((g, cig, cog) + tuple(plan.kernel))
    sd, sh, sw = plan.stride
    for group in groups:
        dd, dh, dw = group.dims
        taps = dd.taps * dh.taps * dw.taps
        n_comb = len(group.o0)
        # Phase weights [G, C_out_g, P, C_in_g*taps] -> [G, C_out_g*P, C_in_g*taps]: with P
        # innermost, result[:, :, p] merges (G, C_out_g) into C_out without a copy.
        mats = [w_g[(slice(None),) * 3 + tuple(sl)].transpose(0, 2, 1, 3, 4, 5)
                .reshape(g, cog, cig * taps) for sl in group.tap_slices]
        wmat = xp.ascontiguousarray(xp.stack(mats, axis=2).reshape(g, cog * n_comb,
                                                                    cig * taps))
        plane = dh.count * dw.count
        # per sample and depth plane: columns, GEMM result and (at most) the input window
        win_plane = ((dh.taps - 1) * dh.mstep + dh.count) * ((dw.taps - 1) * dw.mstep
                                                             + dw.count)
        nb, pb = _chunks(n, dd.count, (plan.c_in * taps + plan.c_out * n_comb) * plane
                         + plan.c_in * win_plane, out.dtype.itemsize)
        for n0 in range(0, n, nb):
            n1 = min(n, n0 + nb)
            for j0 in range(0, dd.count, pb):
                cd = min(dd.count, j0 + pb) - j0
                counts = (cd, dh.count, dw.count)
                dims = (dd, dh, dw)
                win = _window(x, n0, n1, (dd.start + j0, dh.start, dw.start),
                              tuple((d.taps - 1) * d.mstep + c for d, c in zip(dims, counts)),
                              xp)
                cols = _gather(win, (dd.taps, dh.taps, dw.taps),
                               (dd.mstep, dh.mstep, dw.mstep), counts, (1, 1, 1), xp)
                cols = cols.reshape(g, cig * taps, (n1 - n0) * cd * plane)
                res = xp.matmul(wmat, cols).reshape((g, cog, n_comb, n1 - n0) + counts)
                for p, (od, oh, ow) in enumerate(group.o0):
                    src = res[:, :, p].reshape((plan.c_out, n1 - n0) + counts)
                    src = src.transpose(1, 0, 2, 3, 4)
                    dst = out[n0:n1, :, _out_slice(od, j0, cd, sd),
                              _out_slice(oh, 0, dh.count, sh), _out_slice(ow, 0, dw.count, sw)]
                    if bias_b is None:
                        dst[...] = src
                    else:
                        xp.add(src, bias_b, out=dst)


# ----------------------------------------------------------------------------- backward


def backward(plan, gy, x, w, gx_out, gw_out, gb_out, *, xp=None):
    """Write grad_x, grad_weight and grad_bias into the outputs that are not None.

    gy, x, gx_out: NCDHW views; w, gw_out: C-contiguous [C_in, C_out_g, kD, kH, kW].
    """
    xp = _module(xp)
    if gb_out is not None:
        gb_out[...] = gy.sum(axis=(0, 2, 3, 4))
    if gx_out is None and gw_out is None:
        return
    g = plan.groups
    cig, cog = plan.c_in // g, plan.c_out // g
    kernel = tuple(plan.kernel)
    k = kernel[0] * kernel[1] * kernel[2]
    n = plan.n
    d_in, h_in, w_in = plan.in_size
    plane = h_in * w_in
    w_mat = w.reshape(g, cig, cog * k)
    gw_acc = None
    # per sample and input depth plane: columns, x's chunk, grad_x's GEMM result and (at
    # most) the grad_output window, which spans stride[0] planes of grad_output
    win_plane = plan.stride[0] * ((kernel[1] - 1) * plan.dilation[1]
                                  + (h_in - 1) * plan.stride[1] + 1) * (
        (kernel[2] - 1) * plan.dilation[2] + (w_in - 1) * plan.stride[2] + 1)
    nb, pb = _chunks(n, d_in, (plan.c_out * k + 2 * plan.c_in) * plane
                     + plan.c_out * win_plane, gy.dtype.itemsize)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        for i0 in range(0, d_in, pb):
            cd = min(d_in, i0 + pb) - i0
            counts = (cd, h_in, w_in)
            starts = (i0 * plan.stride[0] - plan.pad_lo[0], -plan.pad_lo[1], -plan.pad_lo[2])
            extents = tuple((kk - 1) * dl + (c - 1) * s + 1 for kk, dl, c, s
                            in zip(kernel, plan.dilation, counts, plan.stride))
            win = _window(gy, n0, n1, starts, extents, xp)
            cols = _gather(win, kernel, plan.dilation, counts, plan.stride, xp)
            cols = cols.reshape(g, cog * k, (n1 - n0) * cd * plane)
            if gx_out is not None:
                res = xp.matmul(w_mat, cols).reshape((plan.c_in, n1 - n0) + counts)
                gx_out[n0:n1, :, i0:i0 + cd] = res.transpose(1, 0, 2, 3, 4)
            if gw_out is not None:
                xs = xp.ascontiguousarray(x[n0:n1, :, i0:i0 + cd].transpose(1, 0, 2, 3, 4))
                part = xp.matmul(xs.reshape(g, cig, (n1 - n0) * cd * plane),
                                 cols.transpose(0, 2, 1))
                # Chunks are summed in a fixed order: results do not depend on scheduling.
                if gw_acc is None:
                    gw_acc = part
                else:
                    gw_acc += part
    if gw_out is not None:
        if gw_acc is None:  # an empty batch
            gw_out[...] = 0
        else:
            gw_out[...] = gw_acc.reshape(gw_out.shape)
