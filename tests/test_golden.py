"""Every PaddlePaddle reference case (tests/data/paddle_conv3d_transpose.npz, copied from
the project's shared golden data) must match: output and the three gradients.

The file also proves tests/reference.py: the reference reproduces all 60 Paddle cases,
and its gradients agree with a scalar-loop derivation and with the adjoint identity.

Tolerance: relative max error ``max|a - b| / max|ref|`` <= 1e-10 (float64), 1e-5 (float32).

One caveat about the golden data: for float32 case 44 Paddle's own ``gb`` (a float32
sum of 108 values of ``gy`` that nearly cancel: sum|gy| = 87, sum gy = -0.043) is
1.9e-5 (relative) away from the exact sum.  A float32 library result is therefore
accepted when it is within tolerance of Paddle's value *or* of the exact float64 value
computed from the same inputs; the tolerance itself is never widened.
"""

import numpy as np
import pytest

from reference import (from_ncdhw, load_golden, ref_backward, ref_backward_loops,
                       ref_conv3d_transpose, rel_err, resolve, to_ncdhw, tol_for)



CASES, ARRAYS = load_golden()
CASE_IDS = [c["id"] for c in CASES]
BY_ID = {c["id"]: c for c in CASES}


def test_golden_file_complete():
    assert len(CASES) == 60
    assert sorted(CASE_IDS) == list(range(60))
    forms = set()
    for c in CASES:
        p = c["cfg"]["padding"]
        if isinstance(p, str):
            forms.add(p.upper())
        elif isinstance(p, int):
            forms.add("int")
        elif len(p) == 5:
            forms.add("pairs")
        else:
            forms.add("%d ints" % len(p))
    assert forms == {"int", "3 ints", "6 ints", "pairs", "SAME", "VALID"}


def _case(cid):
    c = BY_ID[cid]
    a = {k.split("/", 1)[1]: v for k, v in ARRAYS.items() if k.split("/", 1)[0] == str(cid)}
    return c, a


def _kwargs(cfg):
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"], data_format=cfg["data_format"])
    if "output_padding" in cfg:
        kw["output_padding"] = cfg["output_padding"]
    if "output_size" in cfg:
        kw["output_size"] = cfg["output_size"]
    return kw


def _exact(c, a):
    """float64 reference (from tests/reference.py) on the case's own inputs, in the
    case's data format: (y, gx, gw, gb)."""
    cfg = c["cfg"]
    df = cfg["data_format"]
    x = to_ncdhw(a["x"], df)
    w = a["w"]
    s, lo, hi, d, out = resolve(x.shape[2:], w.shape[2:], stride=cfg["stride"],
                                padding=cfg["padding"],
                                output_padding=cfg.get("output_padding", 0),
                                dilation=cfg["dilation"], output_size=cfg.get("output_size"),
                                data_format=df)
    y = ref_conv3d_transpose(x, w, a.get("b"), s, lo, hi, d, cfg["groups"], out)
    gx, gw, gb = ref_backward(to_ncdhw(a["gy"], df), x, w, s, lo, hi, d, cfg["groups"], out)
    return from_ncdhw(y, df), from_ncdhw(gx, df), gw, gb


def _check(name, got, golden, exact, dtype):
    tol = tol_for(dtype)
    assert got is not None, name
    got = np.asarray(got)
    assert got.shape == golden.shape, (name, got.shape, golden.shape)
    assert got.dtype == np.dtype(dtype), (name, got.dtype)
    e_golden = rel_err(got, golden)
    if np.dtype(dtype) == np.float32:
        e = min(e_golden, rel_err(got, exact))
    else:
        e = e_golden
    assert e <= tol, "%s: relative error %.3g > %.0e" % (name, e, tol)


# --------------------------------------------------------------------------------------
# the library against Paddle
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", CASE_IDS)
def test_forward_matches_paddle(F, cid):
    c, a = _case(cid)
    y = F.conv3d_transpose(a["x"], a["w"], a.get("b"), **_kwargs(c["cfg"]))
    _check("y", y, a["y"], _exact(c, a)[0], c["dtype"])


@pytest.mark.parametrize("cid", CASE_IDS)
def test_backward_matches_paddle(F, cid):
    c, a = _case(cid)
    gx, gw, gb = F.conv3d_transpose_backward(a["gy"], a["x"], a["w"], **_kwargs(c["cfg"]))
    ey, egx, egw, egb = _exact(c, a)
    _check("gx", gx, a["gx"], egx, c["dtype"])
    _check("gw", gw, a["gw"], egw, c["dtype"])
    # Paddle only reports gb when the layer has a bias; the exact value is known anyway
    _check("gb", gb, a["gb"] if "gb" in a else egb.astype(c["dtype"]), egb, c["dtype"])


@pytest.mark.parametrize("cid", [0, 3, 17, 56])
def test_backward_needs_subsets_match_paddle(F, cid):
    c, a = _case(cid)
    for needs in [(True, False, False), (False, True, False), (False, False, True),
                  (False, True, True)]:
        got = F.conv3d_transpose_backward(a["gy"], a["x"], a["w"], needs=needs,
                                          **_kwargs(c["cfg"]))
        assert len(got) == 3
        for want, g, key in zip(needs, got, ("gx", "gw", "gb")):
            if not want:
                assert g is None, (needs, key)
            else:
                assert rel_err(g, a[key]) <= tol_for(c["dtype"]), (needs, key)


# --------------------------------------------------------------------------------------
# the reference against Paddle (proves tests/reference.py)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cid", CASE_IDS)
def test_reference_matches_paddle(cid):
    c, a = _case(cid)
    tol = tol_for(c["dtype"])
    y, gx, gw, gb = _exact(c, a)
    assert rel_err(y, a["y"]) <= tol
    assert rel_err(gx, a["gx"]) <= tol
    assert rel_err(gw, a["gw"]) <= tol
    if "gb" in a:
        if c["dtype"] == "float64":
            assert rel_err(gb, a["gb"]) <= tol
        else:
            # Paddle's float32 gb carries the float32 summation error of its own order;
            # bound it by the classic summation error scale max_c sum|gy_c|
            gy = to_ncdhw(a["gy"], c["cfg"]["data_format"]).astype(np.float64)
            scale = np.abs(gy).sum(axis=(0, 2, 3, 4)).max()
            assert np.max(np.abs(gb - a["gb"])) <= tol * scale


@pytest.mark.parametrize("seed", range(6))
def test_reference_gradients_agree_with_loops_and_adjoint(seed):
    """ref_backward vs. a scalar-loop derivation, and <conv(x), gy> == <x, gx> ==
    <w, gw> (the forward is linear in x and in w separately)."""
    r = np.random.default_rng(seed)
    groups = int(r.integers(1, 3))
    cin = groups * int(r.integers(1, 3))
    cout_g = int(r.integers(1, 3))
    n = int(r.integers(1, 3))
    ins = tuple(int(v) for v in r.integers(1, 4, size=3))
    ks = tuple(int(v) for v in r.integers(1, 4, size=3))
    s = tuple(int(v) for v in r.integers(1, 4, size=3))
    d = tuple(int(v) for v in r.integers(1, 3, size=3))
    lo = tuple(int(v) for v in r.integers(0, 3, size=3))
    hi = tuple(int(v) for v in r.integers(0, 2, size=3))
    base = [(ins[i] - 1) * s[i] - lo[i] - hi[i] + d[i] * (ks[i] - 1) + 1 for i in range(3)]
    out = tuple(max(base[i], 1) + int(r.integers(0, s[i])) for i in range(3))
    x = r.standard_normal((n, cin) + ins)
    w = r.standard_normal((cin, cout_g) + ks)
    gy = r.standard_normal((n, cout_g * groups) + out)
    gx, gw, gb = ref_backward(gy, x, w, s, lo, hi, d, groups, out)
    lx, lw, lb = ref_backward_loops(gy, x, w, s, lo, d, groups)
    np.testing.assert_allclose(gx, lx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, lw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, lb, rtol=1e-12, atol=1e-12)
    y = ref_conv3d_transpose(x, w, None, s, lo, hi, d, groups, out)
    lhs = np.vdot(y, gy)
    assert abs(lhs - np.vdot(x, gx)) <= 1e-10 * max(1.0, abs(lhs))
    assert abs(lhs - np.vdot(w, gw)) <= 1e-10 * max(1.0, abs(lhs))
    b = r.standard_normal(cout_g * groups)
    yb = ref_conv3d_transpose(x, w, b, s, lo, hi, d, groups, out)
    assert abs(np.vdot(yb - y, gy) - np.vdot(b, gb)) <= 1e-10 * max(1.0, abs(lhs))
