"""Values: NaN and Inf propagate as IEEE arithmetic says, thread counts give identical bits,
and float32 accumulation error on long reductions stays within the documented bound.

The non-finite pattern (NaN, +Inf, -Inf per element) is compared with a scalar float64 loop
that forms exactly the products the operation defines, i.e. input position ``i`` and tap
``t`` with ``o = i * s + t * d - pad_lo`` inside the output: a fast path that multiplies a
padding zero by an infinite weight (``0 * inf = nan``) or skips a product shows up here.
"""
import itertools

import numpy as np
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

import conv3dt
import conv3dt.functional as F
from conv3dt._geometry import resolve as plan_of


def _pairs(plan):
    """(n, ci, group, input index, tap, output index) of every pair that exists."""
    cig = plan.c_in // plan.groups
    for n, ci in itertools.product(range(plan.n), range(plan.c_in)):
        for i in np.ndindex(*plan.in_size):
            for t in np.ndindex(*plan.kernel):
                o = tuple(i[a] * plan.stride[a] + t[a] * plan.dilation[a] - plan.pad_lo[a]
                          for a in range(3))
                if all(0 <= o[a] < plan.out_size[a] for a in range(3)):
                    yield n, ci, ci // cig, i, t, o


def _loop_forward(x, w, b, plan):
    """Scalar float64 scatter over the pairs that exist (NCDHW, tiny shapes only)."""
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    cog = plan.c_out // plan.groups
    y = np.zeros((plan.n, plan.c_out) + plan.out_size)
    for n, ci, g, i, t, o in _pairs(plan):
        for co in range(cog):
            y[(n, g * cog + co) + o] += x[(n, ci) + i] * w[(ci, co) + t]
    if b is not None:
        y += b.astype(np.float64).reshape(1, -1, 1, 1, 1)
    return y


def _loop_backward(gy, x, w, plan):
    gy, x, w = (a.astype(np.float64) for a in (gy, x, w))
    cog = plan.c_out // plan.groups
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    for n, ci, g, i, t, o in _pairs(plan):
        for co in range(cog):
            gv = gy[(n, g * cog + co) + o]
            gx[(n, ci) + i] += gv * w[(ci, co) + t]
            gw[(ci, co) + t] += gv * x[(n, ci) + i]
    return gx, gw, gy.sum(axis=(0, 2, 3, 4))


def _pattern(a):
    a = np.asarray(a)
    return np.stack([np.isnan(a), np.isposinf(a), np.isneginf(a)])


def _assert_same_values(actual, expected, dtype, what):
    assert actual.shape == expected.shape, what
    pa, pe = _pattern(actual), _pattern(expected)
    bad = np.argwhere((pa != pe).any(axis=0))
    assert not bad.size, (f"{what}: non-finite pattern differs at {len(bad)} positions, "
                          f"e.g. {tuple(bad[0])}: got {actual[tuple(bad[0])]}, "
                          f"reference {expected[tuple(bad[0])]}")
    finite = np.isfinite(expected)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=tol, atol=tol,
                               err_msg=what)


# (x shape, C_out, kernel, kwargs): every fast path: GEMM phases, the thin (direct) vector
# path, kernel == stride (x read in place), groups, padding, output_size trimming.
GEOMETRIES = {
    "gemm_pad": ((2, 3, 3, 4, 3), 5, (3, 3, 2), dict(stride=2, padding=1, output_padding=1)),
    "direct_cout1": ((1, 2, 3, 3, 3), 1, (3, 2, 3), dict(stride=[1, 2, 2], padding=[1, 0, 1])),
    "k_eq_s": ((1, 4, 3, 3, 2), 6, (2, 2, 2), dict(stride=2)),
    "groups_dil": ((1, 4, 3, 3, 3), 4, (2, 3, 2),
                   dict(groups=2, dilation=[2, 1, 2], padding=[0, 1, 1, 0, 2, 1])),
    "trimmed": ((1, 2, 3, 3, 3), 3, (3, 3, 3), dict(stride=3, padding=2, output_size=[5, 6, 7])),
    "ndhwc": ((1, 3, 3, 3, 2), 4, (3, 2, 2), dict(stride=2, padding=1, data_format="NDHWC")),
}

# Where the non-finite values go: x, weight, grad_output or bias, and which ones.
PLACEMENTS = ["x_inf", "x_nan", "w_inf", "w_neg_inf_and_nan", "x_and_w_inf", "gy_inf",
              "bias_nan", "w_zero_tap_x_inf"]


def _case(name, placement, dtype, seed=0):
    xshape, cout, kernel, kw = GEOMETRIES[name]
    r = np.random.default_rng(seed)
    fmt = kw.get("data_format", "NCDHW")
    cin = xshape[1] if fmt == "NCDHW" else xshape[4]
    groups = kw.get("groups", 1)
    x = r.uniform(-1, 1, xshape).astype(dtype)
    w = r.uniform(-1, 1, (cin, cout // groups) + kernel).astype(dtype)
    b = r.uniform(-1, 1, cout).astype(dtype)
    plan = plan_of(x.shape, w.shape, **kw)
    gy = r.uniform(-1, 1, plan.y_shape).astype(dtype)
    # Corners and a middle element: borders are where padding zeros live.
    picks = lambda a: [(0,) * a.ndim, tuple(s - 1 for s in a.shape),
                       tuple(s // 2 for s in a.shape)]
    if placement in ("x_inf", "x_and_w_inf", "w_zero_tap_x_inf"):
        for p in picks(x):
            x[p] = np.inf
    if placement == "x_nan":
        x[picks(x)[1]] = np.nan
    if placement in ("w_inf", "x_and_w_inf"):
        for p in picks(w):
            w[p] = np.inf
    if placement == "w_neg_inf_and_nan":
        w[picks(w)[0]] = -np.inf
        w[picks(w)[1]] = np.nan
    if placement == "w_zero_tap_x_inf":
        w[:, :, 0, 0, 0] = 0          # inf * 0 = nan exactly where that tap contributes
    if placement == "gy_inf":
        for p in picks(gy):
            gy[p] = -np.inf
    if placement == "bias_nan":
        b[0] = np.nan
    return x, w, b, gy, kw, plan


def _to_ncdhw(a, fmt):
    return a if fmt == "NCDHW" else np.transpose(a, (0, 4, 1, 2, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_non_finite_values_follow_the_arithmetic(name, placement, dtype):
    x, w, b, gy, kw, plan = _case(name, placement, dtype)
    fmt = plan.data_format
    y = F.conv3d_transpose(x, w, b, **kw)
    gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, **kw)
    xn, gyn = _to_ncdhw(x, fmt), _to_ncdhw(gy, fmt)
    _assert_same_values(_to_ncdhw(y, fmt), _loop_forward(xn, w, b, plan), dtype, "forward")
    rgx, rgw, rgb = _loop_backward(gyn, xn, w, plan)
    _assert_same_values(_to_ncdhw(gx, fmt), rgx, dtype, "grad_x")
    _assert_same_values(gw, rgw, dtype, "grad_weight")
    _assert_same_values(gb, rgb, dtype, "grad_bias")


def test_inf_weight_with_padding_gives_finite_values_where_no_product_exists():
    """The example that motivated the exact path: a padding zero times an infinite weight."""
    x = np.ones((1, 1, 3, 3, 3))
    w = np.ones((1, 1, 3, 3, 3))
    w[0, 0, 0, 0, 0] = np.inf
    y = F.conv3d_transpose(x, w, padding=1)
    # Tap (0,0,0) reaches output o = i - 1 for i >= 1 only: output (2,2,2) gets no product
    # from it, so it is finite (8 ones through the other taps); outputs 0 and 1 are +inf.
    assert np.isposinf(y[0, 0, :2, :2, :2]).all()
    assert np.isfinite(y[0, 0, 2]).all() and np.isfinite(y[0, 0, :, 2]).all()
    gx, gw, _ = F.conv3d_transpose_backward(np.ones_like(y), x, w, padding=1)
    assert np.isfinite(gx[0, 0, 0]).all() and np.isposinf(gx[0, 0, 1:, 1:, 1:]).all()
    x2 = x.copy()
    x2[0, 0, 0, 0, 0] = np.inf
    _, gw, _ = F.conv3d_transpose_backward(np.ones_like(y), x2, np.ones((1, 1, 3, 3, 3)),
                                           padding=1)
    # x[0,0,0] reaches only taps t >= 1 (o = 0 + t - 1 >= 0): tap (0,0,0) stays finite.
    assert np.isfinite(gw[0, 0, 0, 0, 0]) and np.isposinf(gw[0, 0, 1:, 1:, 1:]).all()


@pytest.fixture
def restore_threads():
    before = conv3dt.get_num_threads()
    yield
    conv3dt.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("placement", ["x_inf", "x_nan", "w_inf", "gy_inf", "x_and_w_inf"])
def test_non_finite_results_bitwise_equal_with_1_and_2_threads(restore_threads, placement,
                                                               dtype):
    # Large enough to span several tiles and run threaded (above the serial threshold).
    r = np.random.default_rng(7)
    x = r.standard_normal((2, 16, 10, 10, 10)).astype(dtype)
    w = r.standard_normal((16, 16, 3, 3, 3)).astype(dtype)
    kw = dict(stride=2, padding=1, output_padding=1)
    gy = r.standard_normal(plan_of(x.shape, w.shape, **kw).y_shape).astype(dtype)
    x.flat[r.integers(0, x.size, 5)] = np.nan if placement == "x_nan" else np.inf
    if placement in ("w_inf", "x_and_w_inf"):
        w.flat[r.integers(0, w.size, 3)] = -np.inf
    if placement == "gy_inf":
        gy.flat[r.integers(0, gy.size, 5)] = np.inf
    results = []
    for n in (1, 2):
        conv3dt.set_num_threads(n)
        y = F.conv3d_transpose(x, w, **kw)
        results.append([y] + list(F.conv3d_transpose_backward(gy, x, w, **kw)))
    for a, b, what in zip(*results, ("y", "gx", "gw", "gb")):
        assert a.tobytes() == b.tobytes(), f"{what} differs between 1 and 2 threads"
    assert any(not np.isfinite(a).all() for a in results[0]), "no non-finite value at all"


# Measured (seeds 0-2, this test's shapes): max |y32 - y64| / max |y64| about 2.1e-6 forward,
# 4e-7 grad_x, 1.1e-7 grad_weight; per element |y32 - y64| <= 1.6 * eps32 * sum |x * w|.
# Documented bound (docstring of conv3d_transpose, "Precision"): 1e-5 relative to the largest
# output, and 4 * eps32 * sum |x * w| per element.
PRECISION_REL = 1e-5
PRECISION_EPS_FACTOR = 4


def test_float32_accumulation_error_on_long_reductions():
    """k = 12 (1728 taps) and 512 input channels: 884,736 products per output element."""
    r = np.random.default_rng(0)
    x64 = r.standard_normal((1, 512, 2, 2, 2))
    w64 = r.standard_normal((512, 2, 12, 12, 12)) / np.sqrt(512 * 1728)
    x32, w32 = x64.astype(np.float32), w64.astype(np.float32)
    # The same (float32) inputs evaluated in float64: only the accumulation differs.
    xd, wd = x32.astype(np.float64), w32.astype(np.float64)
    y64 = F.conv3d_transpose(xd, wd)
    y32 = F.conv3d_transpose(x32, w32)
    assert np.abs(y32 - y64).max() / np.abs(y64).max() < PRECISION_REL
    eps = np.finfo(np.float32).eps
    sum_abs = F.conv3d_transpose(np.abs(xd), np.abs(wd))
    assert (np.abs(y32 - y64) <= PRECISION_EPS_FACTOR * eps * sum_abs).all()
    gy32 = r.standard_normal(y32.shape).astype(np.float32)
    gx64, gw64, _ = F.conv3d_transpose_backward(gy32.astype(np.float64), xd, wd,
                                                needs=(True, True, False))
    gx32, gw32, _ = F.conv3d_transpose_backward(gy32, x32, w32, needs=(True, True, False))
    for a32, a64, what in ((gx32, gx64, "grad_x"), (gw32, gw64, "grad_weight")):
        rel = np.abs(a32 - a64).max() / np.abs(a64).max()
        assert rel < PRECISION_REL, (what, rel)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_all_finite_finds_every_non_finite_element(dtype, contiguous):
    """The finiteness check that routes non-finite inputs to the exact path, in each of its
    parallel blocks and at their edges; the largest finite values and subnormals are finite."""
    from conv3dt import _cpu

    base = np.random.default_rng(3).standard_normal(2 * 200_003).astype(dtype)
    info = np.finfo(dtype)
    base[[10, 11, 12]] = [info.max, -info.max, info.tiny / 4]
    view = (lambda a: a[::2]) if not contiguous else (lambda a: a[:200_003])
    assert _cpu.all_finite(view(base))
    for value in (np.inf, -np.inf, np.nan):
        for pos in (0, 65_535, 65_536, 131_072, 200_002):
            arr = base.copy()
            arr[2 * pos if not contiguous else pos] = value
            assert not _cpu.all_finite(view(arr)), (value, pos)
    assert _cpu.all_finite(np.empty(0, dtype))
