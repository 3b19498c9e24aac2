"""Random configurations over every option, compared with tests/reference.py.

Hypothesis draws tiny problems (spatial <= 5, channels <= 6, kernel <= 4, stride <= 3)
covering all padding forms ('SAME'/'VALID' in any letter case, 'SAME_UPPER',
'SAME_LOWER', int, 3 ints, 6 ints, 5 pairs in the data format's order), output_padding,
output_size (int or 3 ints), groups, dilation, stride, both data formats, both dtypes,
bias or not, and arrays with unusual memory layouts (Fortran order, strided views,
negative strides, transposed views, read-only).  The library's results must match the
float64 reference (relative max error 1e-10 float64, 1e-5 float32), have the input's
dtype and the expected shape, and leave every input untouched.

The profile (tests/conftest.py) is derandomized and database-less: every run draws the
same examples.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reference import (base_out_size, from_ncdhw, ref_backward, ref_conv3d_transpose,
                       rel_err, resolve, to_ncdhw, tol_for)

LAYOUTS = ["C", "F", "strided", "negative", "transposed", "readonly"]


# --------------------------------------------------------------------------------------
# array layouts
# --------------------------------------------------------------------------------------

def with_layout(a, layout, r):
    """An array equal to ``a`` (values, shape, dtype) with the requested memory layout."""
    a = np.ascontiguousarray(a)
    if layout == "C":
        out = a.copy()
    elif layout == "F":
        out = np.asfortranarray(a)
    elif layout == "strided":
        # every other element of a bigger buffer along a random subset of axes
        steps = [int(v) for v in r.integers(1, 3, size=a.ndim)]
        steps[int(r.integers(0, a.ndim))] = 2
        big_shape = tuple(n * s for n, s in zip(a.shape, steps))
        big = np.full(big_shape, np.nan, dtype=a.dtype)
        sl = tuple(slice(0, None, s) for s in steps)
        big[sl] = a
        out = big[sl]
    elif layout == "negative":
        flip = [bool(v) for v in r.integers(0, 2, size=a.ndim)]
        flip[int(r.integers(0, a.ndim))] = True
        sl = tuple(slice(None, None, -1) if f else slice(None) for f in flip)
        out = np.ascontiguousarray(a[sl])[sl]
    elif layout == "transposed":
        perm = [int(v) for v in r.permutation(a.ndim)]
        inv = np.argsort(perm)
        out = np.ascontiguousarray(np.transpose(a, perm)).transpose(inv)
    elif layout == "readonly":
        out = a.copy()
        out.setflags(write=False)
    else:  # pragma: no cover
        raise AssertionError(layout)
    assert out.shape == a.shape and out.dtype == a.dtype
    assert np.array_equal(out, a)
    return out


def snapshot(*arrays):
    return [(None if a is None else (a.copy(), a.strides, a.flags.writeable)) for a in arrays]


def assert_unchanged(snap, *arrays):
    for s, a in zip(snap, arrays):
        if a is None:
            continue
        copy, strides, writeable = s
        assert a.strides == strides
        assert a.flags.writeable == writeable
        assert np.array_equal(a, copy, equal_nan=True), "an input was modified"


# --------------------------------------------------------------------------------------
# configuration strategy
# --------------------------------------------------------------------------------------

PAD_FORMS = ["int", "3 ints", "6 ints", "pairs", "SAME", "VALID", "SAME_UPPER",
             "SAME_LOWER"]


def _case_variant(draw, word):
    return draw(st.sampled_from([word, word.lower(), word.capitalize()]))


def _int_or_triple(draw, values, as_int_ok=True):
    """Either an int (when all three values agree) or a list/tuple of three."""
    if as_int_ok and len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    kind = draw(st.sampled_from([list, tuple]))
    return kind(values)


@st.composite
def configs(draw, pad_forms=PAD_FORMS, extras=("none", "output_padding", "output_size")):
    df = draw(st.sampled_from(["NCDHW", "NDHWC"]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 2))
    cout_g = draw(st.integers(1, 6 // groups))
    n = draw(st.integers(1, 2))
    ins = tuple(draw(st.lists(st.integers(1, 5), min_size=3, max_size=3)))
    ks = tuple(draw(st.lists(st.integers(1, 4), min_size=3, max_size=3)))
    s = tuple(draw(st.lists(st.integers(1, 3), min_size=3, max_size=3)))
    d = tuple(draw(st.lists(st.integers(1, 3), min_size=3, max_size=3)))
    if draw(st.booleans()):  # often use the same value in all dims (int form possible)
        s = (s[0],) * 3
    if draw(st.booleans()):
        d = (d[0],) * 3

    form = draw(st.sampled_from(list(pad_forms)))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "3 ints":
        padding = draw(st.sampled_from([list, tuple]))(
            draw(st.lists(st.integers(0, 2), min_size=3, max_size=3)))
    elif form == "6 ints":
        padding = draw(st.lists(st.integers(0, 3), min_size=6, max_size=6))
    elif form == "pairs":
        sp = [draw(st.lists(st.integers(0, 3), min_size=2, max_size=2)) for _ in range(3)]
        padding = ([[0, 0], [0, 0]] + sp) if df == "NCDHW" else ([[0, 0]] + sp + [[0, 0]])
        if draw(st.booleans()):
            padding = tuple(tuple(p) for p in padding)
    else:
        padding = _case_variant(draw, form) if form in ("SAME", "VALID") else form

    # dilation that bounds output_padding (Paddle forces dilation to 1 under 'SAME')
    d_eff = (1, 1, 1) if form == "SAME" else d
    if form in ("SAME_UPPER", "SAME_LOWER"):
        extras = [e for e in extras if e != "output_size"]
    extra = draw(st.sampled_from(list(extras)))

    kwargs = {}
    stride_arg = _int_or_triple(draw, list(s))
    dil_arg = _int_or_triple(draw, list(d))
    # leave out defaulted arguments now and then
    if s != (1, 1, 1) or draw(st.booleans()):
        kwargs["stride"] = stride_arg
    if d != (1, 1, 1) or draw(st.booleans()):
        kwargs["dilation"] = dil_arg
    if padding != 0 or draw(st.booleans()):
        kwargs["padding"] = padding
    if groups != 1 or draw(st.booleans()):
        kwargs["groups"] = groups
    if df != "NCDHW" or draw(st.booleans()):
        kwargs["data_format"] = df

    op = (0, 0, 0)
    out_size = None
    if extra == "output_padding":
        op = tuple(draw(st.integers(0, max(s[i], d_eff[i]) - 1)) for i in range(3))
        kwargs["output_padding"] = _int_or_triple(draw, list(op))
    if form in ("SAME_UPPER", "SAME_LOWER"):
        # total padding must not be negative: (k-1)*d + 1 + output_padding >= stride
        assume(all((ks[i] - 1) * d[i] + 1 + op[i] >= s[i] for i in range(3)))
    if extra == "output_size":
        try:
            _, lo, hi, dd, base = resolve(ins, ks, s, padding, 0, d, None, df)
        except AssertionError:  # output size < 1 without output_padding
            assume(False)
        out_size = tuple(base[i] + draw(st.integers(0, s[i] - 1)) for i in range(3))
        kwargs["output_size"] = _int_or_triple(draw, list(out_size))
        if draw(st.integers(0, 4)) == 0:
            kwargs["output_padding"] = 0  # explicit zero is compatible with output_size
    try:
        plan = resolve(ins, ks, s, padding, op, d, out_size, df)
    except AssertionError:
        assume(False)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    layouts = draw(st.lists(st.sampled_from(LAYOUTS), min_size=4, max_size=4))
    has_bias = draw(st.booleans())
    return dict(df=df, dtype=dtype, groups=groups, cin=cin, cout=cout_g * groups, n=n,
                ins=ins, ks=ks, kwargs=kwargs, plan=plan, seed=seed, layouts=layouts,
                has_bias=has_bias)


def make_arrays(cfg):
    """x, w, b (in the library's layout conventions) with the drawn memory layouts,
    plus the NCDHW float64 versions for the reference."""
    r = np.random.default_rng(cfg["seed"])
    df, dt = cfg["df"], cfg["dtype"]
    x_ncdhw = r.standard_normal((cfg["n"], cfg["cin"]) + cfg["ins"]).astype(dt)
    w = r.standard_normal((cfg["cin"], cfg["cout"] // cfg["groups"]) + cfg["ks"]).astype(dt)
    b = r.standard_normal(cfg["cout"]).astype(dt) if cfg["has_bias"] else None
    x_user = from_ncdhw(x_ncdhw, df)
    lx, lw, lb, _ = cfg["layouts"]
    x_arg = with_layout(x_user, lx, r)
    w_arg = with_layout(w, lw, r)
    b_arg = None if b is None else with_layout(b, lb, r)
    return r, x_arg, w_arg, b_arg, x_ncdhw.astype(np.float64), w.astype(np.float64), \
        None if b is None else b.astype(np.float64)


def _out_shape(cfg):
    out = cfg["plan"][4]
    if cfg["df"] == "NCDHW":
        return (cfg["n"], cfg["cout"]) + tuple(out)
    return (cfg["n"],) + tuple(out) + (cfg["cout"],)


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------

def _run_forward(F, cfg):
    r, x, w, b, x64, w64, b64 = make_arrays(cfg)
    snap = snapshot(x, w, b)
    y = F.conv3d_transpose(x, w, b, **cfg["kwargs"])
    assert_unchanged(snap, x, w, b)
    assert isinstance(y, np.ndarray)
    assert not any(a is not None and np.shares_memory(y, a) for a in (x, w, b))
    assert y.dtype == cfg["dtype"]
    assert y.shape == _out_shape(cfg), (y.shape, _out_shape(cfg), cfg["kwargs"])
    s, lo, hi, d, out = cfg["plan"]
    ref = from_ncdhw(ref_conv3d_transpose(x64, w64, b64, s, lo, hi, d, cfg["groups"], out),
                     cfg["df"])
    err = rel_err(y, ref)
    assert err <= tol_for(cfg["dtype"]), (err, cfg["kwargs"])


def _run_backward(F, cfg, needs):
    r, x, w, _, x64, w64, _ = make_arrays(cfg)
    s, lo, hi, d, out = cfg["plan"]
    gy_user = r.standard_normal(_out_shape(cfg)).astype(cfg["dtype"])
    gy = with_layout(gy_user, cfg["layouts"][3], r)
    snap = snapshot(gy, x, w)
    kw = dict(cfg["kwargs"])
    if needs != (True, True, True) or r.integers(0, 2):
        kw["needs"] = needs
    got = F.conv3d_transpose_backward(gy, x, w, **kw)
    assert_unchanged(snap, gy, x, w)
    assert len(got) == 3
    refs = ref_backward(to_ncdhw(gy_user.astype(np.float64), cfg["df"]), x64, w64,
                        s, lo, hi, d, cfg["groups"], out)
    refs = (from_ncdhw(refs[0], cfg["df"]), refs[1], refs[2])
    shapes = (x.shape, w.shape, (cfg["cout"],))
    for name, want, g, ref, shape in zip(("gx", "gw", "gb"), needs, got, refs, shapes):
        if not want:
            assert g is None, name
            continue
        assert isinstance(g, np.ndarray), name
        assert not any(np.shares_memory(g, a) for a in (gy, x, w)), name
        assert g.dtype == cfg["dtype"], (name, g.dtype)
        assert g.shape == shape, (name, g.shape, shape)
        err = rel_err(g, ref)
        assert err <= tol_for(cfg["dtype"]), (name, err, kw)


@settings(max_examples=1200)
@given(cfg=configs())
def test_forward_random(F, cfg):
    _run_forward(F, cfg)


@settings(max_examples=1000)
@given(cfg=configs(), needs=st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_backward_random(F, cfg, needs):
    _run_backward(F, cfg, needs)


@pytest.mark.parametrize("form", PAD_FORMS)
@settings(max_examples=80)
@given(data=st.data())
def test_each_padding_form(F, form, data):
    """Each padding form on its own, forward and all gradients."""
    cfg = data.draw(configs(pad_forms=[form]))
    _run_forward(F, cfg)
    _run_backward(F, cfg, (True, True, True))


@pytest.mark.parametrize("extra", ["output_padding", "output_size"])
@settings(max_examples=100)
@given(data=st.data())
def test_output_padding_and_output_size(F, extra, data):
    cfg = data.draw(configs(pad_forms=["int", "3 ints", "6 ints", "pairs", "SAME", "VALID"],
                            extras=[extra]))
    _run_forward(F, cfg)
    _run_backward(F, cfg, (True, True, True))


@settings(max_examples=150)
@given(cfg=configs())
def test_equivalent_padding_forms_agree(F, cfg):
    """The explicit pads of the drawn configuration, written in the four numeric forms
    (6 ints, 5 pairs, and where symmetric int / 3 ints), all give the reference result."""
    s, lo, hi, d, out = cfg["plan"]
    kw = {k: v for k, v in cfg["kwargs"].items() if k not in ("padding", "dilation")}
    kw["dilation"] = list(d)
    if "output_size" not in kw:
        # keep the output size of the drawn config through explicit output_padding
        base = base_out_size(cfg["ins"], cfg["ks"], s, lo, hi, d)
        op = [out[i] - base[i] for i in range(3)]
        if any(op[i] >= max(s[i], d[i]) for i in range(3)):
            kw.pop("output_padding", None)
            kw["output_size"] = list(out)
        else:
            kw["output_padding"] = op
    forms = [[lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]]]
    pairs = [[lo[i], hi[i]] for i in range(3)]
    forms.append([[0, 0], [0, 0]] + pairs if cfg["df"] == "NCDHW"
                 else [[0, 0]] + pairs + [[0, 0]])
    if lo == hi:
        forms.append(list(lo))
        if len(set(lo)) == 1:
            forms.append(lo[0])
    r, x, w, b, x64, w64, b64 = make_arrays(cfg)
    ref = from_ncdhw(ref_conv3d_transpose(x64, w64, b64, s, lo, hi, d, cfg["groups"], out),
                     cfg["df"])
    for p in forms:
        y = F.conv3d_transpose(x, w, b, padding=p, **kw)
        assert y.shape == ref.shape, (p, y.shape, ref.shape)
        assert rel_err(y, ref) <= tol_for(cfg["dtype"]), p


def test_same_ignores_dilation_and_is_case_insensitive(F):
    """Paddle forces dilation to 1 under 'SAME' (explicit, non-random check)."""
    r = np.random.default_rng(7)
    x = r.standard_normal((1, 2, 4, 3, 5))
    w = r.standard_normal((2, 3, 3, 2, 4))
    ref = None
    for pad in ["SAME", "same", "Same"]:
        for dil in [1, 2, [3, 1, 2]]:
            y = F.conv3d_transpose(x, w, stride=2, padding=pad, dilation=dil)
            s, lo, hi, d, out = resolve(x.shape[2:], w.shape[2:], 2, "SAME", 0, 1)
            want = ref_conv3d_transpose(x, w, None, s, lo, hi, d, 1, out)
            assert d == (1, 1, 1)
            assert rel_err(y, want) <= 1e-10
            if ref is None:
                ref = y
            assert np.array_equal(y, ref)
