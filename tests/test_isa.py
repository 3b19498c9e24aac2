"""The instruction-set variants: selection, and each microkernel of each variant against
an independent float64 formula on random block shapes and tails (every variant this CPU
runs, whichever is in use)."""
import os

import numpy as np
import pytest

import conv3dt
from child import run_python
from conv3dt import _isa, _kernels

VARIANTS = [v for v in _kernels.isa_variants() if v["supported"]]
IDS = [v["name"] for v in VARIANTS]


@pytest.fixture(params=VARIANTS, ids=IDS)
def variant(request):
    return _isa.Isa(**request.param)


def _tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-13


def test_generic_is_always_there_and_runs():
    names = [v["name"] for v in _kernels.isa_variants()]
    assert names[-1] == "generic" and "generic" in conv3dt.available_isas()
    assert conv3dt.get_isa() in conv3dt.available_isas()


def test_default_is_the_best_variant_this_cpu_runs():
    code = "import conv3dt; print(conv3dt.get_isa())"
    env = {k: v for k, v in os.environ.items() if k != "CONV3DT_ISA"}
    out = run_python(code, env=env)
    assert out.stdout.strip() == conv3dt.available_isas()[0], out.stderr


@pytest.mark.parametrize("name", IDS)
def test_environment_variable_forces_a_variant(name):
    code = "import conv3dt; print(conv3dt.get_isa())"
    out = run_python(code, env=dict(os.environ, CONV3DT_ISA=name))
    assert out.stdout.strip() == name, out.stderr


def test_unknown_variant_in_the_environment_is_a_clear_error():
    code = "import conv3dt"
    out = run_python(code, env=dict(os.environ, CONV3DT_ISA="sse9"))
    assert out.returncode != 0
    names = ", ".join(v["name"] for v in _kernels.isa_variants())
    assert f"CONV3DT_ISA must be one of the variants of this build, {names}; got 'sse9'" \
        in out.stderr


def test_set_isa_switches_and_rejects(restore_isa):
    for name in conv3dt.available_isas():
        conv3dt.set_isa(name)
        assert conv3dt.get_isa() == name
    with pytest.raises(ValueError, match="isa must be one of the variants of this build, "
                                         ".*generic; got 'neon'"):
        conv3dt.set_isa("neon")
    with pytest.raises(TypeError, match="isa must be a str"):
        conv3dt.set_isa(2)


def test_a_variant_the_cpu_lacks_is_a_clear_error(monkeypatch):
    lacking = _isa.Isa(**dict(VARIANTS[0], supported=False))
    monkeypatch.setitem(_isa._BY_NAME, lacking.name, lacking)
    with pytest.raises(ValueError, match=f"this CPU does not run the {lacking.name} kernels"):
        conv3dt.set_isa(lacking.name)


@pytest.fixture
def restore_isa():
    before = conv3dt.get_isa()
    yield
    conv3dt.set_isa(before)


# ----------------------------------------------------------- microkernel conformance


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_panel_product(variant, dtype, seed):
    """Random numbers of vectors (every remainder of the register block), columns (panel
    tails), rows (with and without a row list), offsets, and beta 0 / 1."""
    r = np.random.default_rng(seed)
    nv = int(r.integers(1, 3 * variant.panel_mv + 2))
    n = int(r.integers(1, 3 * variant.panel_nr + 2))
    _check_panel_product(variant, dtype, seed, r, nv, n)


def _vector_offsets(r, nv, lanes, layout):
    """voff of nv vectors: at random offsets ("spread"), one after another ("run": a tile
    over whole rows of the window), or in rows of 1 to 5 consecutive vectors with gaps
    between them ("rows": a compact tile), so that some blocks are runs and some not."""
    if layout == "spread":
        return r.integers(0, 2000, size=nv).astype(np.intp)
    if layout == "run":
        return (int(r.integers(0, 200)) + lanes * np.arange(nv)).astype(np.intp)
    row = int(r.integers(1, 6))
    v = np.arange(nv)
    return (int(r.integers(0, 50)) + (v // row) * (row * lanes + int(r.integers(1, 9)))
            + (v % row) * lanes).astype(np.intp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nv", [1, 3, 7, 8, 11, 12, 13, 16, 23, 24, 25, 40, 49])
@pytest.mark.parametrize("layout", ["spread", "run", "rows"])
def test_panel_product_one_column(variant, dtype, nv, layout):
    """One weight column (one output channel per group) has a block of its own, of more
    vectors than the panel block's: every count of vectors up to two of its blocks and a
    remainder (the widest variant's block is 24 vectors), over vectors at any offsets and
    over consecutive ones (the block's form with one pointer)."""
    r = np.random.default_rng(100 + nv)
    voff = _vector_offsets(r, nv, variant.lanes(np.dtype(dtype).itemsize), layout)
    _check_panel_product(variant, dtype, nv, r, nv, 1, voff)


def _check_panel_product(variant, dtype, seed, r, nv, n, voff=None):
    lanes, nr = variant.lanes(np.dtype(dtype).itemsize), variant.panel_nr
    k_all = int(r.integers(1, 40))
    use_rows = bool(seed % 2)
    rows = np.sort(r.choice(k_all, size=int(r.integers(1, k_all + 1)), replace=False)) \
        if use_rows else np.arange(k_all)
    rows = rows.astype(np.intp)
    k = len(rows)
    a = r.standard_normal(4000).astype(dtype)
    aoff = r.integers(0, 1000, size=k).astype(np.intp)
    if voff is None:
        voff = _vector_offsets(r, nv, lanes, "spread")
    panels = -(-n // nr)
    wps = k_all * nr
    wfull = np.zeros((panels * nr, k_all), dtype)
    wfull[:n] = r.standard_normal((n, k_all))
    # W(r, q * NR + c) at wp[q * wps + r * NR + c]
    wp = np.ascontiguousarray(wfull.reshape(panels, nr, k_all).transpose(0, 2, 1)).ravel()
    beta = float(seed % 3 == 0)
    c0 = r.standard_normal(n * nv * lanes).astype(dtype)
    c = c0.copy()
    _kernels.microkernel_panel_gemm(variant.index, nv, n, k, a, aoff, voff, wp, wps, rows,
                                    use_rows, dtype(beta), c)
    # reference: C[col, v * lanes + j] = beta * C + sum_r A[aoff[r] + voff[v] + j] * W(rows[r], col)
    j = np.arange(lanes)
    B = a.astype(np.float64)[aoff[:, None, None] + voff[None, :, None] + j]  # [k, nv, lanes]
    ref = np.einsum("rvj,cr->cvj", B, wfull[:n, rows].astype(np.float64)).reshape(n, -1)
    ref += beta * c0.reshape(n, -1)
    scale = np.abs(ref).max()
    assert np.abs(c.reshape(n, -1) - ref).max() <= _tol(dtype) * scale * max(1, k) ** 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cig", [1, 2, 3, 5, 8, 9, 16, 17, 33, 40])
def test_weight_grad_product(variant, dtype, cig):
    """Both products of grad_weight (dot blocks for few channels, the register-blocked one
    otherwise), random runs with element tails, row counts past the register block."""
    r = np.random.default_rng(cig)
    lanes = variant.lanes(np.dtype(dtype).itemsize)
    small_n = 8
    kb = int(r.integers(1, 3 * max(variant.wgrad_nr, variant.dot_nb)))
    nrun, in_w = int(r.integers(1, 5)), int(r.integers(1, 3 * lanes + 3))
    a = r.standard_normal(3000).astype(dtype)
    aoff = r.integers(0, 1000, size=kb).astype(np.intp)
    roff = r.integers(0, 1500, size=nrun).astype(np.intp)
    rows = r.permutation(kb + 5)[:kb].astype(np.intp)        # destination rows of acc
    xt = r.standard_normal((nrun * in_w, cig))                # x tile [positions, channels]
    if cig <= small_n:
        X = np.ascontiguousarray(xt.T.astype(dtype)).ravel()  # [cig][positions]
        ldx = 0
    else:
        ldx = -(-cig // (variant.wgrad_mv * lanes)) * variant.wgrad_mv * lanes
        Xp = np.zeros((nrun * in_w, ldx), dtype)
        Xp[:, :cig] = xt
        X = Xp.ravel()
    acc0 = r.standard_normal((kb + 5) * cig).astype(dtype)
    acc = acc0.copy()
    _kernels.microkernel_weight_grad(variant.index, X, ldx, cig, small_n, a, aoff, rows, kb,
                                     roff, nrun, in_w, acc)
    # B[i, position] = A[aoff[i] + roff[k] + u], position = k * in_w + u
    pos = (roff[:, None] + np.arange(in_w)[None, :]).ravel()
    B = a.astype(np.float64)[aoff[:, None] + pos[None, :]]
    ref = acc0.astype(np.float64).reshape(kb + 5, cig)
    ref[rows] += B @ xt.astype(dtype).astype(np.float64)
    err = np.abs(acc.reshape(kb + 5, cig) - ref).max()
    assert err <= _tol(dtype) * np.abs(ref).max() * (nrun * in_w) ** 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 15, 16, 17, 31, 33, 100])
def test_axpy(variant, dtype, n):
    r = np.random.default_rng(n)
    y0 = r.standard_normal(n).astype(dtype)
    x = r.standard_normal(n + 3).astype(dtype)   # the tail must not read past n
    y = y0.copy()
    _kernels.microkernel_axpy(variant.index, y, x[:n], dtype(0.75))
    ref = y0.astype(np.float64) + 0.75 * x[:n].astype(np.float64)
    assert np.abs(y - ref).max() <= _tol(dtype) * np.abs(ref).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 8, 16, 17, 63, 64, 65, 1000])
def test_finiteness_check(variant, dtype, n, restore_isa):
    """Every position of a NaN / infinity, tails included, and finite extremes."""
    conv3dt.set_isa(variant.name)
    from conv3dt import _cpu
    finfo = np.finfo(dtype)
    a = np.full(n, finfo.max, dtype)
    a[::2] = finfo.tiny
    assert _cpu.all_finite(a)
    for pos in {0, n // 2, n - 1}:
        for bad in (np.nan, np.inf, -np.inf):
            b = a.copy()
            b[pos] = bad
            assert not _cpu.all_finite(b), (pos, bad)
