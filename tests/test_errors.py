"""Bad arguments raise ValueError/TypeError whose message names the argument and the
offending value (checked on the forward and, where the argument exists there, on the
backward entry point)."""
import re

import numpy as np
import pytest

R = np.random.default_rng(0)
X = R.standard_normal((1, 4, 3, 3, 3))           # N=1, C_in=4, D=H=W=3
W = R.standard_normal((4, 3, 2, 2, 2))           # C_out/groups = 3, k = 2
B = R.standard_normal(3)
# with stride 2, padding 0: out = (3-1)*2 + 2 = 6 per dim, output_size range [6, 8)
GY = R.standard_normal((1, 3, 6, 6, 6))


def _has_word(msg, word):
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(word) + r"(?![A-Za-z0-9_])",
                     msg) is not None


def _check_msg(exc, name, *value_forms):
    """The message names ``name`` and contains one of the representations of the value."""
    msg = str(exc.value)
    assert _has_word(msg, name), "message %r does not name %r" % (msg, name)
    if value_forms:
        assert any((_has_word(msg, v) if re.fullmatch(r"-?\w+", v) else v in msg)
                   for v in value_forms), \
            "message %r shows none of %r" % (msg, value_forms)


def _seq_forms(v):
    """list and tuple spellings of a sequence value."""
    return (str(list(v)), str(tuple(v)))


def fwd(F, **kw):
    args = dict(x=X, weight=W, bias=B, stride=2)
    args.update(kw)
    x = args.pop("x")
    w = args.pop("weight")
    b = args.pop("bias")
    return F.conv3d_transpose(x, w, b, **args)


def bwd(F, **kw):
    args = dict(grad_output=GY, x=X, weight=W, stride=2)
    args.update(kw)
    gy = args.pop("grad_output")
    x = args.pop("x")
    w = args.pop("weight")
    return F.conv3d_transpose_backward(gy, x, w, **args)


BOTH = pytest.mark.parametrize("call", [fwd, bwd], ids=["forward", "backward"])


def test_valid_baseline(F):
    """The fixtures above are valid (so every failure below is due to the one bad arg)."""
    assert fwd(F).shape == (1, 3, 6, 6, 6)
    gx, gw, gb = bwd(F)
    assert gx.shape == X.shape and gw.shape == W.shape and gb.shape == (3,)
    assert fwd(F, output_size=7).shape == (1, 3, 7, 7, 7)
    assert fwd(F, output_padding=1).shape == (1, 3, 7, 7, 7)
    assert fwd(F, output_size=[6, 7, 6], output_padding=0).shape == (1, 3, 6, 7, 6)


# ------------------------------------------------------------------------- shapes / ranks

@BOTH
@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (1, 1, 4, 3, 3, 3), (4,)])
def test_x_wrong_rank(F, call, shape):
    with pytest.raises(ValueError) as ei:
        call(F, x=np.zeros(shape))
    _check_msg(ei, "x", str(shape), str(len(shape)), str(list(shape)))


@BOTH
@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (4, 3, 2, 2, 2, 1)])
def test_weight_wrong_rank(F, call, shape):
    with pytest.raises(ValueError) as ei:
        call(F, weight=np.zeros(shape))
    _check_msg(ei, "weight", str(shape), str(len(shape)), str(list(shape)))


@BOTH
def test_channel_mismatch(F, call):
    w = np.zeros((5, 3, 2, 2, 2))
    with pytest.raises(ValueError) as ei:
        call(F, weight=w)
    msg = str(ei.value)
    assert _has_word(msg, "weight") or _has_word(msg, "x"), msg
    assert _has_word(msg, "5") and _has_word(msg, "4"), msg


@BOTH
def test_channel_mismatch_ndhwc(F, call):
    """NDHWC: channels are the last axis of x (here 4), not axis 1 (here 3)."""
    x = np.zeros((1, 3, 3, 3, 5))
    with pytest.raises(ValueError) as ei:
        kw = dict(x=x, data_format="NDHWC")
        if call is bwd:
            kw["grad_output"] = np.zeros((1, 6, 6, 6, 3))
        call(F, **kw)
    assert _has_word(str(ei.value), "5"), str(ei.value)


@BOTH
def test_cin_not_divisible_by_groups(F, call):
    with pytest.raises(ValueError) as ei:
        call(F, groups=3)
    _check_msg(ei, "groups", "3")


@BOTH
@pytest.mark.parametrize("g", [0, -2])
def test_groups_not_positive(F, call, g):
    with pytest.raises(ValueError) as ei:
        call(F, groups=g)
    _check_msg(ei, "groups", str(g))


@BOTH
def test_groups_not_integer(F, call):
    with pytest.raises((TypeError, ValueError)) as ei:
        call(F, groups=1.5)
    _check_msg(ei, "groups", "1.5")


# ------------------------------------------------------------------ stride / dilation

@BOTH
@pytest.mark.parametrize("arg", ["stride", "dilation"])
@pytest.mark.parametrize("bad", [0, -3, [1, -3, 1], [2, 0, 2]])
def test_stride_dilation_not_positive(F, call, arg, bad):
    with pytest.raises(ValueError) as ei:
        call(F, **{arg: bad})
    forms = (str(bad),) if isinstance(bad, int) else _seq_forms(bad) + (str(min(bad)),)
    _check_msg(ei, arg, *forms)


@BOTH
@pytest.mark.parametrize("arg", ["stride", "dilation"])
@pytest.mark.parametrize("bad", [[1, 2], [1, 2, 2, 1], []])
def test_stride_dilation_wrong_length(F, call, arg, bad):
    with pytest.raises(ValueError) as ei:
        call(F, **{arg: bad})
    _check_msg(ei, arg, *_seq_forms(bad))


@BOTH
@pytest.mark.parametrize("arg", ["stride", "dilation"])
def test_stride_dilation_not_integer(F, call, arg):
    with pytest.raises((TypeError, ValueError)) as ei:
        call(F, **{arg: 1.5})
    _check_msg(ei, arg, "1.5")


# --------------------------------------------------------------------------- padding

@BOTH
@pytest.mark.parametrize("bad", [-6, [1, -6, 1], [0, 1, -6, 0, 1, 1],
                                 [[0, 0], [0, 0], [1, 1], [-6, 0], [0, 0]]])
def test_negative_padding(F, call, bad):
    with pytest.raises(ValueError) as ei:
        call(F, padding=bad)
    forms = ("-6",) if isinstance(bad, int) else ("-6",) + _seq_forms(bad)
    _check_msg(ei, "padding", *forms)


@BOTH
@pytest.mark.parametrize("bad", ["FULL", "same_middle", "", "VALIDX"])
def test_bad_padding_string(F, call, bad):
    with pytest.raises(ValueError) as ei:
        call(F, padding=bad)
    _check_msg(ei, "padding", repr(bad), '"%s"' % bad, *([bad] if bad else []))


@BOTH
@pytest.mark.parametrize("bad", [[1, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1], [1] * 7])
def test_padding_wrong_length(F, call, bad):
    with pytest.raises(ValueError) as ei:
        call(F, padding=bad)
    _check_msg(ei, "padding", *_seq_forms(bad))


@BOTH
@pytest.mark.parametrize("df,bad,pair", [
    ("NCDHW", [[1, 0], [0, 0], [1, 1], [1, 1], [1, 1]], [1, 0]),   # batch pair
    ("NCDHW", [[0, 0], [0, 2], [1, 1], [1, 1], [1, 1]], [0, 2]),   # channel pair
    ("NDHWC", [[0, 0], [1, 1], [1, 1], [1, 1], [0, 2]], [0, 2]),   # channel pair is last
    # NCDHW-ordered pairs given with NDHWC: the last pair is then the channel pair
    ("NDHWC", [[0, 0], [0, 0], [1, 1], [1, 1], [1, 1]], [1, 1]),
])
def test_pairs_with_nonzero_batch_or_channel_pair(F, call, df, bad, pair):
    kw = dict(padding=bad, data_format=df)
    if df == "NDHWC":
        kw["x"] = np.ascontiguousarray(np.transpose(X, (0, 2, 3, 4, 1)))
        if call is bwd:
            kw["grad_output"] = np.zeros((1, 6, 6, 6, 3))
    with pytest.raises(ValueError) as ei:
        call(F, **kw)
    _check_msg(ei, "padding", *(_seq_forms(pair) + _seq_forms(bad)))


@BOTH
def test_padding_bad_type(F, call):
    with pytest.raises((TypeError, ValueError)) as ei:
        call(F, padding=1.5)
    _check_msg(ei, "padding", "1.5")


# -------------------------------------------------------- output_padding / output_size

@BOTH
@pytest.mark.parametrize("bad", [2, 5, -1, [0, 2, 0], [0, 0, -1]])
def test_output_padding_out_of_range(F, call, bad):
    # stride 2, dilation 1: allowed 0 <= output_padding < 2
    with pytest.raises(ValueError) as ei:
        call(F, output_padding=bad)
    forms = (str(bad),) if isinstance(bad, int) else _seq_forms(bad) + (
        str(max(bad)) if max(bad) > 0 else str(min(bad)),)
    _check_msg(ei, "output_padding", *forms)


def test_output_padding_bound_uses_max_of_stride_and_dilation(F):
    # stride 1, dilation 3: output_padding 2 is allowed, 3 is not
    assert fwd(F, stride=1, dilation=3, output_padding=2).shape == (1, 3, 8, 8, 8)
    with pytest.raises(ValueError) as ei:
        fwd(F, stride=1, dilation=3, output_padding=3)
    _check_msg(ei, "output_padding", "3")


@BOTH
@pytest.mark.parametrize("arg,bad", [("output_padding", [1, 1]), ("output_size", [6, 6]),
                                     ("output_size", [6, 6, 6, 6])])
def test_output_args_wrong_length(F, call, arg, bad):
    with pytest.raises(ValueError) as ei:
        call(F, **{arg: bad})
    _check_msg(ei, arg, *_seq_forms(bad))


@BOTH
def test_output_padding_and_output_size_exclusive(F, call):
    with pytest.raises(ValueError) as ei:
        kw = dict(output_padding=1, output_size=7)
        if call is bwd:
            kw["grad_output"] = np.zeros((1, 3, 7, 7, 7))
        call(F, **kw)
    msg = str(ei.value)
    assert _has_word(msg, "output_padding") and _has_word(msg, "output_size"), msg


@BOTH
@pytest.mark.parametrize("bad,shown", [(20, "20"), (5, "5"), (8, "8"), ([6, 9, 6], "9"),
                                       ([6, 7, 3], "3")])
def test_output_size_out_of_range(F, call, bad, shown):
    # allowed range per dim: [6, 8)
    with pytest.raises(ValueError) as ei:
        call(F, output_size=bad)
    msg = str(ei.value)
    _check_msg(ei, "output_size", shown, *(_seq_forms(bad) if not isinstance(bad, int) else ()))
    # the message names the allowed range: its lower bound 6 and its (open or closed)
    # upper bound 8 or 7
    assert _has_word(msg, "6") and (_has_word(msg, "8") or _has_word(msg, "7")), msg


@BOTH
def test_output_size_below_one(F, call):
    # D = H = W = 1, k = 1, stride 1, padding 1: out = 0 - 2 + 1 = -1
    kw = dict(x=np.zeros((1, 4, 1, 1, 1)), weight=np.zeros((4, 3, 1, 1, 1)), stride=1,
              padding=1)
    if call is bwd:
        kw["grad_output"] = np.zeros((1, 3, 1, 1, 1))
    with pytest.raises(ValueError) as ei:
        call(F, **kw)
    msg = str(ei.value)
    assert any(_has_word(msg, w) for w in ("padding", "output_size", "output")), msg
    assert _has_word(msg, "-1"), msg


# ------------------------------------------------------------------------ data_format

@BOTH
@pytest.mark.parametrize("bad", ["NCHW", "NHWC", "", "NCDWH"])
def test_bad_data_format(F, call, bad):
    with pytest.raises(ValueError) as ei:
        call(F, data_format=bad)
    _check_msg(ei, "data_format", repr(bad), '"%s"' % bad, *([bad] if bad else []))


@BOTH
def test_data_format_not_string(F, call):
    with pytest.raises((TypeError, ValueError)) as ei:
        call(F, data_format=5)
    _check_msg(ei, "data_format", "5")


# ----------------------------------------------------------------------------- dtypes

BAD_DTYPES = [np.int32, np.int64, np.complex64, np.complex128, np.float16, np.bool_]


@pytest.mark.parametrize("dt", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("arg", ["x", "weight", "bias"])
def test_bad_dtype_forward(F, arg, dt):
    kw = {arg: {"x": X, "weight": W, "bias": B}[arg].astype(dt)}
    with pytest.raises(TypeError) as ei:
        fwd(F, **kw)
    _check_msg(ei, arg, np.dtype(dt).name)


@pytest.mark.parametrize("dt", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("arg", ["grad_output", "x", "weight"])
def test_bad_dtype_backward(F, arg, dt):
    kw = {arg: {"grad_output": GY, "x": X, "weight": W}[arg].astype(dt)}
    with pytest.raises(TypeError) as ei:
        bwd(F, **kw)
    _check_msg(ei, arg, np.dtype(dt).name)


def test_bad_dtype_all_same(F):
    """All integer (consistent, but unsupported) still raises TypeError."""
    with pytest.raises(TypeError) as ei:
        fwd(F, x=X.astype(np.int64), weight=W.astype(np.int64), bias=B.astype(np.int64))
    assert "int64" in str(ei.value)


@pytest.mark.parametrize("odd", ["x", "weight", "bias"])
def test_mixed_float_dtypes_forward(F, odd):
    arrs = {"x": X.astype(np.float32), "weight": W.astype(np.float32),
            "bias": B.astype(np.float32)}
    arrs[odd] = arrs[odd].astype(np.float64)
    with pytest.raises(TypeError) as ei:
        fwd(F, **arrs)
    msg = str(ei.value)
    assert "float32" in msg and "float64" in msg, msg
    assert _has_word(msg, odd), msg


@pytest.mark.parametrize("odd", ["grad_output", "x", "weight"])
def test_mixed_float_dtypes_backward(F, odd):
    arrs = {"grad_output": GY.astype(np.float32), "x": X.astype(np.float32),
            "weight": W.astype(np.float32)}
    arrs[odd] = arrs[odd].astype(np.float64)
    with pytest.raises(TypeError) as ei:
        bwd(F, **arrs)
    msg = str(ei.value)
    assert "float32" in msg and "float64" in msg, msg
    assert _has_word(msg, odd), msg


def test_non_array_input(F):
    with pytest.raises((TypeError, ValueError)) as ei:
        fwd(F, x="not an array")
    assert _has_word(str(ei.value), "x"), str(ei.value)


# ------------------------------------------------------------------------------ bias

@pytest.mark.parametrize("shape", [(2,), (4,), (3, 1), (1, 3), ()])
def test_bias_shape_mismatch(F, shape):
    with pytest.raises(ValueError) as ei:
        fwd(F, bias=np.zeros(shape))
    _check_msg(ei, "bias", str(shape), str(list(shape)))


# ----------------------------------------------------------------------- grad_output

@pytest.mark.parametrize("shape", [(1, 3, 6, 6, 7), (1, 4, 6, 6, 6), (2, 3, 6, 6, 6),
                                   (1, 3, 6, 6), (1, 6, 6, 6, 3)])
def test_grad_output_shape_mismatch(F, shape):
    with pytest.raises(ValueError) as ei:
        bwd(F, grad_output=np.zeros(shape))
    msg = str(ei.value)
    _check_msg(ei, "grad_output", str(shape), str(list(shape)))
    # and shows the expected shape
    assert "(1, 3, 6, 6, 6)" in msg or "[1, 3, 6, 6, 6]" in msg, msg


def test_grad_output_shape_uses_output_size(F):
    """With output_size=7 the expected grad_output is 7^3; 6^3 must be rejected."""
    gx, gw, gb = bwd(F, grad_output=np.zeros((1, 3, 7, 7, 7)), output_size=7)
    assert gx.shape == X.shape
    with pytest.raises(ValueError) as ei:
        bwd(F, output_size=7)
    _check_msg(ei, "grad_output")


# ----------------------------------------------------------------------------- needs

@pytest.mark.parametrize("bad", [(True, False), (True, True, True, True), "abc",
                                 (True, "no", False), None, True, (True, None, False)])
def test_needs_not_three_bools(F, bad):
    with pytest.raises((TypeError, ValueError)) as ei:
        bwd(F, needs=bad)
    _check_msg(ei, "needs")


def test_needs_accepts_list_and_numpy_bools(F):
    gx, gw, gb = bwd(F, needs=[False, True, False])
    assert gx is None and gb is None and gw.shape == W.shape
    gx, gw, gb = bwd(F, needs=(np.bool_(True), np.bool_(False), np.bool_(True)))
    assert gw is None and gx.shape == X.shape and gb.shape == (3,)
