"""Slow, obviously-correct float64 NumPy reference for 3D transposed convolution.

Everything here is written independently of ``conv3dt`` (nothing is imported from it):

* :func:`resolve` turns user-facing arguments (stride, padding in all its forms,
  output_padding, output_size, dilation, data_format) into explicit per-dim
  ``pad_lo``, ``pad_hi``, ``dilation`` and ``out_size``, following PaddlePaddle's rules
  (and the ONNX-style 'SAME_UPPER'/'SAME_LOWER' extras).
* :func:`ref_conv3d_transpose` is a direct scatter: input position ``i`` reaches output
  position ``o = i*s + t*d - pad_lo`` through tap ``t``; positions outside
  ``[0, out_size)`` are dropped.
* :func:`ref_backward` computes the three gradients independently of the forward code:
  ``gx`` as a gather of ``gy`` at the same positions, ``gw`` as a sum of products of
  ``x`` and ``gy``, ``gb`` as plain sums of ``gy``.

All functions work on NCDHW float64 arrays; tests transpose NDHWC data themselves.
"""
import json
import math
import os

import numpy as np


# --------------------------------------------------------------------------------------
# argument resolution (independent of conv3dt._geometry)
# --------------------------------------------------------------------------------------

def triple(v):
    """int -> (v, v, v); sequence of 3 -> tuple."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * 3
    v = tuple(int(a) for a in v)
    assert len(v) == 3, v
    return v


def resolve(in_spatial, k_spatial, stride=1, padding=0, output_padding=0, dilation=1,
            output_size=None, data_format="NCDHW"):
    """Return ``(stride, pad_lo, pad_hi, dilation, out_size)``, each a 3-tuple.

    ``in_spatial``/``k_spatial`` are the (D, H, W) sizes of input and kernel.
    Raises ``AssertionError`` when the arguments are not a valid configuration; the
    random tests only draw valid configurations, so this is a sanity net only.
    """
    s = triple(stride)
    d = triple(dilation)
    op = triple(output_padding) if output_padding is not None else (0, 0, 0)
    ins = tuple(int(a) for a in in_spatial)
    ks = tuple(int(a) for a in k_spatial)

    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            lo = hi = (0, 0, 0)
        elif mode == "SAME":
            # Paddle's rule for the transposed op: dilation forced to 1
            d = (1, 1, 1)
            lo, hi = [], []
            for i in range(3):
                pad_sum = max((math.ceil(ins[i] / s[i]) - 1) * s[i] + ks[i] - ins[i], 0)
                lo.append(pad_sum // 2)
                hi.append(pad_sum - pad_sum // 2)
            lo, hi = tuple(lo), tuple(hi)
        elif mode in ("SAME_UPPER", "SAME_LOWER"):
            lo, hi = [], []
            for i in range(3):
                total = (s[i] * (ins[i] - 1) + op[i] + ((ks[i] - 1) * d[i] + 1)
                         - ins[i] * s[i])
                assert total >= 0, "negative total padding"
                if mode == "SAME_UPPER":
                    lo_i = total // 2
                    hi_i = total - lo_i
                else:
                    hi_i = total // 2
                    lo_i = total - hi_i
                lo.append(lo_i)
                hi.append(hi_i)
            lo, hi = tuple(lo), tuple(hi)
        else:
            raise AssertionError("bad padding string %r" % padding)
    elif isinstance(padding, (int, np.integer)):
        lo = hi = (int(padding),) * 3
    else:
        p = list(padding)
        if len(p) == 5 and all(not isinstance(e, (int, np.integer)) for e in p):
            pairs = [tuple(int(a) for a in e) for e in p]
            spatial = pairs[2:5] if data_format == "NCDHW" else pairs[1:4]
            lo = tuple(a for a, _ in spatial)
            hi = tuple(b for _, b in spatial)
        elif len(p) == 3:
            lo = hi = tuple(int(a) for a in p)
        elif len(p) == 6:
            lo = tuple(int(a) for a in p[0::2])
            hi = tuple(int(a) for a in p[1::2])
        else:
            raise AssertionError("bad padding %r" % (padding,))

    base = tuple((ins[i] - 1) * s[i] - lo[i] - hi[i] + d[i] * (ks[i] - 1) + 1
                 for i in range(3))
    if output_size is not None:
        out = triple(output_size)
        for i in range(3):
            assert base[i] <= out[i] < base[i] + s[i], "output_size out of range"
    else:
        for i in range(3):
            assert 0 <= op[i] < max(s[i], d[i]), "output_padding out of range"
        out = tuple(base[i] + op[i] for i in range(3))
    assert all(o >= 1 for o in out), "output size < 1"
    return s, lo, hi, d, out


def base_out_size(in_spatial, k_spatial, stride, pad_lo, pad_hi, dilation):
    """Output size without output_padding, per dim."""
    return tuple((in_spatial[i] - 1) * stride[i] - pad_lo[i] - pad_hi[i]
                 + dilation[i] * (k_spatial[i] - 1) + 1 for i in range(3))


# --------------------------------------------------------------------------------------
# tap geometry: which input indices i of one dim reach [0, out) through tap t
# --------------------------------------------------------------------------------------

def _tap_ranges(n_in, n_out, s, d, lo, t):
    """Input slice and output slice of one dim for tap ``t``.

    Output index ``o = i*s + t*d - lo`` must satisfy ``0 <= o < n_out`` and
    ``0 <= i < n_in``.  Returns ``(slice_i, slice_o)`` or ``None`` when empty.
    """
    idx_i = [i for i in range(n_in) if 0 <= i * s + t * d - lo < n_out]
    if not idx_i:
        return None
    i0, i1 = idx_i[0], idx_i[-1]
    # the valid i form a contiguous run; o = i*s + t*d - lo is then an arithmetic run
    assert idx_i == list(range(i0, i1 + 1))
    o0 = i0 * s + t * d - lo
    o1 = i1 * s + t * d - lo
    return slice(i0, i1 + 1), slice(o0, o1 + 1, s)


# --------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------

def ref_conv3d_transpose(x, w, b, stride, pad_lo, pad_hi, dilation, groups, out_size):
    """Direct scatter.  x [N, Cin, D, H, W], w [Cin, Cout/g, kD, kH, kW], b [Cout] or None.

    ``stride``, ``pad_lo``, ``dilation``, ``out_size`` are 3-tuples.  ``pad_hi`` is not
    needed by the scatter (the output size already accounts for it) but is accepted so
    that callers can pass the resolved plan verbatim.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, cin = x.shape[:2]
    in_sp = x.shape[2:]
    cin_w, cout_g = w.shape[:2]
    k_sp = w.shape[2:]
    assert cin_w == cin and cin % groups == 0
    cin_g = cin // groups
    cout = cout_g * groups
    out = np.zeros((n, cout) + tuple(out_size), dtype=np.float64)

    for g in range(groups):
        ci = slice(g * cin_g, (g + 1) * cin_g)
        co = slice(g * cout_g, (g + 1) * cout_g)
        for td in range(k_sp[0]):
            rd = _tap_ranges(in_sp[0], out_size[0], stride[0], dilation[0], pad_lo[0], td)
            if rd is None:
                continue
            for th in range(k_sp[1]):
                rh = _tap_ranges(in_sp[1], out_size[1], stride[1], dilation[1], pad_lo[1], th)
                if rh is None:
                    continue
                for tw in range(k_sp[2]):
                    rw = _tap_ranges(in_sp[2], out_size[2], stride[2], dilation[2],
                                     pad_lo[2], tw)
                    if rw is None:
                        continue
                    xs = x[:, ci, rd[0], rh[0], rw[0]]          # [N, cin_g, i...]
                    wt = w[ci, :, td, th, tw]                  # [cin_g, cout_g]
                    # out[n, co, i*s + t*d - lo] += sum_ci x[n, ci, i] * w[ci, co, t]
                    out[:, co, rd[1], rh[1], rw[1]] += np.einsum("nidhw,io->nodhw", xs, wt)
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape(1, cout, 1, 1, 1)
    return out


# --------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------

def ref_backward(gy, x, w, stride, pad_lo, pad_hi, dilation, groups, out_size=None):
    """Gradients of ``sum(gy * conv3d_transpose(x, w, b))`` w.r.t. x, w, b.

    ``gx[n, ci, i] = sum_{t, co} gy[n, co, i*s + t*d - lo] * w[ci, co, t]`` (a gather),
    ``gw[ci, co, t] = sum_{n, i} x[n, ci, i] * gy[n, co, i*s + t*d - lo]``,
    ``gb[co] = sum_{n, o} gy[n, co, o]``; terms with the output index outside the
    output are absent.
    """
    gy = np.asarray(gy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, cin = x.shape[:2]
    in_sp = x.shape[2:]
    cout_g = w.shape[1]
    k_sp = w.shape[2:]
    out_sp = gy.shape[2:]
    if out_size is not None:
        assert tuple(out_sp) == tuple(out_size)
    cin_g = cin // groups
    assert gy.shape[:2] == (n, cout_g * groups)

    gx = np.zeros(x.shape, dtype=np.float64)
    gw = np.zeros(w.shape, dtype=np.float64)
    # per dim and tap: the input indices i whose output index o = i*s + t*d - lo exists
    taps = []
    for dim in range(3):
        per_t = []
        for t in range(k_sp[dim]):
            ii = np.arange(in_sp[dim])
            oo = ii * stride[dim] + t * dilation[dim] - pad_lo[dim]
            ok = (oo >= 0) & (oo < out_sp[dim])
            per_t.append((ii[ok], oo[ok]))
        taps.append(per_t)
    # gather form, written with explicit index arrays rather than the forward's slices
    for g in range(groups):
        ci = slice(g * cin_g, (g + 1) * cin_g)
        co = slice(g * cout_g, (g + 1) * cout_g)
        for td in range(k_sp[0]):
            for th in range(k_sp[1]):
                for tw in range(k_sp[2]):
                    (i_d, o_d), (i_h, o_h), (i_w, o_w) = (taps[0][td], taps[1][th],
                                                          taps[2][tw])
                    if len(i_d) == 0 or len(i_h) == 0 or len(i_w) == 0:
                        continue
                    sel_i = np.ix_(i_d, i_h, i_w)
                    sel_o = np.ix_(o_d, o_h, o_w)
                    gy_g = gy[:, co][(slice(None), slice(None)) + sel_o]   # [N, cout_g, ...]
                    x_g = x[:, ci][(slice(None), slice(None)) + sel_i]     # [N, cin_g, ...]
                    wt = w[ci, :, td, th, tw]                                # [cin_g, cout_g]
                    # gather: gx[n, ci, i] += sum_co w[ci, co, t] * gy[n, co, o(i)]
                    contrib = np.einsum("io,nodhw->nidhw", wt, gy_g)
                    gx_group = gx[:, ci]                                      # a view of gx
                    # indices in np.ix_ are unique, so fancy "+=" adds each term once
                    gx_group[(slice(None), slice(None)) + sel_i] += contrib
                    # sum of products over batch and input positions
                    gw[ci, :, td, th, tw] += np.einsum("nidhw,nodhw->io", x_g, gy_g)
    gb = gy.sum(axis=(0, 2, 3, 4))
    return gx, gw, gb


def ref_backward_loops(gy, x, w, stride, pad_lo, dilation, groups):
    """Fully scalar loop version of the gradients (very slow; tiny shapes only).

    Used by the reference self-tests as a second, independent derivation.
    """
    gy = np.asarray(gy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, cin = x.shape[:2]
    cout_g = w.shape[1]
    cin_g = cin // groups
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    out_sp = gy.shape[2:]
    for nn in range(n):
        for c in range(cin):
            g = c // cin_g
            for i in np.ndindex(*x.shape[2:]):
                for t in np.ndindex(*w.shape[2:]):
                    o = tuple(i[k] * stride[k] + t[k] * dilation[k] - pad_lo[k]
                              for k in range(3))
                    if not all(0 <= o[k] < out_sp[k] for k in range(3)):
                        continue
                    for oc in range(cout_g):
                        gval = gy[(nn, g * cout_g + oc) + o]
                        gx[(nn, c) + i] += gval * w[(c, oc) + t]
                        gw[(c, oc) + t] += gval * x[(nn, c) + i]
    return gx, gw, gy.sum(axis=(0, 2, 3, 4))


# --------------------------------------------------------------------------------------
# helpers used by several test files
# --------------------------------------------------------------------------------------

def to_ncdhw(a, data_format):
    return a if data_format == "NCDHW" else np.transpose(a, (0, 4, 1, 2, 3))


def from_ncdhw(a, data_format):
    return a if data_format == "NCDHW" else np.transpose(a, (0, 2, 3, 4, 1))


def rel_err(actual, expected):
    """max|a - b| / max|b| (or the absolute error when the reference is all zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.size == 0:
        return 0.0
    if not np.all(np.isfinite(actual)):
        return np.inf
    scale = np.max(np.abs(expected))
    diff = np.max(np.abs(actual - expected))
    return diff / scale if scale > 0 else diff


def tol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                      "paddle_conv3d_transpose.npz")


def load_golden():
    """(cases, arrays) of the reference cases computed by PaddlePaddle (see data/)."""
    z = np.load(GOLDEN)
    cases = json.loads(z["cases.json"].tobytes())
    arrays = {k: z[k] for k in z.files if k != "cases.json"}
    return cases, arrays
