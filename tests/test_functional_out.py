"""``out=`` of conv3d_transpose and ``grad_*_out=`` of conv3d_transpose_backward.

Results written in place are compared with the float64 reference of tests/reference.py
(computed from the same inputs, independently of conv3dt); every refused ``out`` must be a
TypeError or ValueError that names the argument.
"""
import sys

import numpy as np
import pytest

import reference as R
from conv3dt import _cuda
from conv3dt import functional as F
from gpu_shim import NumpyGpuArray, numpy_as_cupy
from spies import record_calls

KW = dict(stride=(2, 1, 2), padding=[1, 0, 0, 1, 1, 1], output_padding=(1, 0, 0), groups=2)
X_SHAPE = (2, 4, 3, 4, 3)          # NCDHW
W_SHAPE = (4, 3, 3, 2, 3)


def _to_ndhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 4, 1))


def _to_ncdhw(a):
    return a.transpose(0, 4, 1, 2, 3)


def _inputs(dtype, data_format="NCDHW", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(X_SHAPE).astype(dtype)
    w = rng.standard_normal(W_SHAPE).astype(dtype)
    b = rng.standard_normal(W_SHAPE[1] * KW["groups"]).astype(dtype)
    return (_to_ndhwc(x) if data_format == "NDHWC" else x), w, b


def _reference(x, w, b, data_format="NCDHW", **kw):
    """(y, resolved geometry) from tests/reference.py, in data_format's layout."""
    kw = dict(KW, **kw)
    x_n = _to_ncdhw(x) if data_format == "NDHWC" else x
    s, lo, hi, d, out = R.resolve(x_n.shape[2:], w.shape[2:], kw["stride"], kw["padding"],
                                  kw["output_padding"], 1, None, "NCDHW")
    with np.errstate(invalid="ignore"):
        y = R.ref_conv3d_transpose(x_n, w, b, s, lo, hi, d, kw["groups"], out)
    return (_to_ndhwc(y) if data_format == "NDHWC" else y), (s, lo, hi, d, out)


def _tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def _close(got, ref, dtype):
    scale = max(1.0, float(np.abs(ref[np.isfinite(ref)]).max(initial=0)))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
    finite = np.isfinite(ref)
    assert np.abs(got[finite] - ref[finite]).max(initial=0) <= _tol(dtype) * scale


# ---------------------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("data_format", ["NCDHW", "NDHWC"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_out_receives_the_result(dtype, data_format, with_bias):
    x, w, b = _inputs(dtype, data_format)
    b = b if with_bias else None
    ref, _ = _reference(x, w, b, data_format)
    out = np.full(ref.shape, np.nan, dtype)     # stale contents must not leak through
    got = F.conv3d_transpose(x, w, b, data_format=data_format, out=out, **KW)
    assert got is out
    _close(out, ref, dtype)


@pytest.mark.parametrize("data_format", ["NCDHW", "NDHWC"])
def test_out_may_be_a_strided_view_of_a_larger_array(data_format):
    """A crop with steps of a bigger volume is written in place; around it nothing moves."""
    x, w, b = _inputs(np.float64, data_format)
    ref, _ = _reference(x, w, b, data_format)
    big_shape = tuple(2 * n + 3 for n in ref.shape)
    big = np.full(big_shape, -7.0)
    region = tuple(slice(1, 1 + 2 * n, 2) for n in ref.shape)
    view = big[region]
    assert not view.flags.c_contiguous and view.shape == ref.shape
    assert F.conv3d_transpose(x, w, b, data_format=data_format, out=view, **KW) is view
    _close(big[region], ref, np.float64)
    untouched = np.ones(big_shape, bool)
    untouched[region] = False
    assert (big[untouched] == -7.0).all()


def test_out_as_a_transposed_view():
    """An NCDHW result into the NCDHW view of an NDHWC buffer (a channels-last array)."""
    x, w, b = _inputs(np.float32)
    ref, _ = _reference(x, w, b)
    buf = np.empty((ref.shape[0],) + ref.shape[2:] + (ref.shape[1],), np.float32)
    view = _to_ncdhw(buf)
    F.conv3d_transpose(x, w, b, out=view, **KW)
    _close(view, ref, np.float32)


def test_out_takes_the_exact_path_of_non_finite_weights():
    x, w, b = _inputs(np.float64)
    w[1, 2, 0, 1, 2] = np.inf
    w[2, 0, 2, 0, 0] = -np.inf
    ref, _ = _reference(x, w, b)
    big = np.zeros((ref.shape[0], ref.shape[1] + 2) + ref.shape[2:])
    view = big[:, 1:-1]
    F.conv3d_transpose(x, w, b, out=view, **KW)
    _close(view, ref, np.float64)
    assert np.isfinite(view).any() and not np.isfinite(view).all()
    assert (big[:, 0] == 0).all() and (big[:, -1] == 0).all()


def test_out_with_an_empty_batch_is_returned():
    x = np.ones((0, 2, 3, 3, 3))
    w = np.ones((2, 1, 2, 2, 2))
    out = np.empty((0, 1, 6, 6, 6))
    assert F.conv3d_transpose(x, w, stride=2, out=out) is out


def test_out_is_written_again_on_a_repeated_call():
    """The second call of one geometry (its plan cached) writes out too."""
    x, w, b = _inputs(np.float32)
    ref, _ = _reference(x, w, b)
    out = np.empty(ref.shape, np.float32)
    F.conv3d_transpose(x, w, b, out=out, **KW)
    out[...] = 0
    F.conv3d_transpose(x, w, b, out=out, **KW)
    _close(out, ref, np.float32)


def _bad_out(x, w, b, out, error, *words):
    with pytest.raises(error) as info:
        F.conv3d_transpose(x, w, b, out=out, **KW)
    message = str(info.value)
    assert "out" in message, message
    for word in words:
        assert word in message, message


def test_out_of_the_wrong_shape_dtype_or_kind_is_refused():
    x, w, b = _inputs(np.float32)
    shape = _reference(x, w, b)[0].shape
    _bad_out(x, w, b, np.empty(shape[:-1] + (shape[-1] + 1,), np.float32), ValueError,
             str(shape))
    _bad_out(x, w, b, np.empty(shape[::-1], np.float32), ValueError, "shape")
    _bad_out(x, w, b, np.empty(shape, np.float64), TypeError, "float32", "float64")
    _bad_out(x, w, b, np.empty(shape, ">f4"), TypeError, "dtype")
    _bad_out(x, w, b, np.empty(shape, np.float32).tolist(), TypeError, "list")
    _bad_out(x, w, b, np.empty(shape[:1] + shape[2:] + shape[1:2], np.float32), ValueError,
             "shape")                                # NDHWC-shaped out of an NCDHW call


def test_read_only_unaligned_and_self_overlapping_out_are_refused():
    x, w, b = _inputs(np.float32)
    shape = _reference(x, w, b)[0].shape
    frozen = np.empty(shape, np.float32)
    frozen.flags.writeable = False
    _bad_out(x, w, b, frozen, ValueError, "read-only")
    count = int(np.prod(shape))
    raw = np.zeros(count * 4 + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(shape)
    if not unaligned.flags.aligned:
        _bad_out(x, w, b, unaligned, ValueError, "aligned")
    row = np.zeros(shape[1:], np.float32)
    broadcast = np.lib.stride_tricks.as_strided(row, shape=shape, strides=(0,) + row.strides)
    _bad_out(x, w, b, broadcast, ValueError, "same memory")
    half = np.zeros(count, np.float32)
    steps = np.lib.stride_tricks.as_strided(half, shape=shape,
                                            strides=(4,) + half.strides[:1] * 4)
    _bad_out(x, w, b, steps, ValueError, "same memory")


def test_out_overlapping_an_input_is_refused():
    x, w, b = _inputs(np.float64)
    shape = _reference(x, w, b)[0].shape
    n_out = int(np.prod(shape))
    pool = np.zeros(n_out + x.size)
    x_in_pool = pool[n_out - 5: n_out - 5 + x.size].reshape(x.shape)
    x_in_pool[...] = x
    _bad_out(x_in_pool, w, b, pool[:n_out].reshape(shape), ValueError, "overlaps x")
    wb = np.zeros(n_out + w.size)
    w_in = wb[-w.size:].reshape(w.shape)
    w_in[...] = w
    _bad_out(x, w_in, b, wb[-n_out:].reshape(shape), ValueError, "overlaps weight")
    bb = np.zeros(n_out)
    b_in = bb[:b.size]
    b_in[...] = b
    _bad_out(x, w, b_in, bb.reshape(shape), ValueError, "overlaps bias")


def test_out_interleaved_with_an_input_but_disjoint_is_accepted():
    """Bounds that overlap are tested exactly: every other element is not the same memory."""
    x, w, b = _inputs(np.float64)
    ref, _ = _reference(x, w, b)
    n = max(ref.size, x.size)
    pool = np.zeros(2 * n)
    x_view = pool[0::2][:x.size].reshape(x.shape)
    x_view[...] = x
    out = pool[1::2][:ref.size].reshape(ref.shape)
    F.conv3d_transpose(x_view, w, b, out=out, **KW)
    _close(out, ref, np.float64)
    np.testing.assert_array_equal(x_view, x)


# --------------------------------------------------------------------------- backward


def _backward_reference(gy, x, w, data_format="NCDHW"):
    _, (s, lo, hi, d, out) = _reference(x, w, None, data_format)
    n = (lambda a: _to_ncdhw(a)) if data_format == "NDHWC" else (lambda a: a)
    with np.errstate(invalid="ignore"):
        gx, gw, gb = R.ref_backward(n(gy), n(x), w, s, lo, hi, d, KW["groups"], out)
    return (_to_ndhwc(gx) if data_format == "NDHWC" else gx), gw, gb


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("data_format", ["NCDHW", "NDHWC"])
def test_gradient_outs_receive_the_gradients(dtype, data_format):
    x, w, b = _inputs(dtype, data_format)
    y_shape = _reference(x, w, b, data_format)[0].shape
    gy = np.random.default_rng(3).standard_normal(y_shape).astype(dtype)
    refs = _backward_reference(gy, x, w, data_format)
    big = np.full((x.shape[0] + 1,) + x.shape[1:], 5, dtype)
    gx_out = big[1:]                                  # a view inside a larger array
    gw_out = np.full(w.shape, np.nan, dtype)
    gb_out = np.full(b.shape, np.nan, dtype)
    got = F.conv3d_transpose_backward(gy, x, w, data_format=data_format, grad_x_out=gx_out,
                                      grad_weight_out=gw_out, grad_bias_out=gb_out, **KW)
    assert got[0] is gx_out and got[1] is gw_out and got[2] is gb_out
    for g, r in zip(got, refs):
        _close(g, r, dtype)
    assert (big[0] == 5).all()


def test_some_gradient_outs_given_the_others_allocated():
    x, w, b = _inputs(np.float64)
    gy = np.random.default_rng(4).standard_normal(_reference(x, w, b)[0].shape)
    refs = _backward_reference(gy, x, w)
    gw_out = np.empty(w.shape)
    gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, grad_weight_out=gw_out, **KW)
    assert gw is gw_out and gx is not None and gb is not None
    for g, r in zip((gx, gw, gb), refs):
        _close(g, r, np.float64)
    gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, needs=(True, False, False),
                                             grad_x_out=np.zeros(x.shape), **KW)
    assert gw is None and gb is None
    _close(gx, refs[0], np.float64)


def test_gradient_outs_on_the_exact_path():
    """Non-finite weight and x with padding: the tap-by-tap path writes the outs."""
    x, w, b = _inputs(np.float64)
    w[0, 1, 1, 0, 2] = np.inf
    x[1, 3, 2, 1, 0] = -np.inf
    gy = np.random.default_rng(5).standard_normal(_reference(x, w, b)[0].shape)
    refs = _backward_reference(gy, x, w)
    outs = dict(grad_x_out=np.empty(x.shape), grad_weight_out=np.empty(w.shape),
                grad_bias_out=np.empty(b.shape))
    got = F.conv3d_transpose_backward(gy, x, w, **outs, **KW)
    for g, r, o in zip(got, refs, outs.values()):
        assert g is o
        _close(g, r, np.float64)


def _bad_grad_out(error, words, **kwargs):
    x, w, b = _inputs(np.float64)
    gy = np.ones(_reference(x, w, b)[0].shape)
    args = dict(gy=gy, x=x, w=w)
    args.update({k: v for k, v in kwargs.items() if k in args})
    outs = {k: v for k, v in kwargs.items() if k not in args and k != "needs"}
    with pytest.raises(error) as info:
        F.conv3d_transpose_backward(args["gy"], args["x"], args["w"],
                                    needs=kwargs.get("needs", (True, True, True)), **outs,
                                    **KW)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_gradient_outs_are_checked():
    xs, ws, bs = X_SHAPE, W_SHAPE, (W_SHAPE[1] * KW["groups"],)
    _bad_grad_out(ValueError, ["grad_x_out", "shape"], grad_x_out=np.empty(ws))
    _bad_grad_out(TypeError, ["grad_weight_out", "float64", "float32"],
                  grad_weight_out=np.empty(ws, np.float32))
    _bad_grad_out(ValueError, ["grad_weight_out", "C-contiguous"],
                  grad_weight_out=np.empty(ws[::-1]).T)
    _bad_grad_out(ValueError, ["grad_bias_out", "C-contiguous"],
                  grad_bias_out=np.empty(2 * bs[0])[::2])
    _bad_grad_out(ValueError, ["grad_bias_out", "needs[2] is False"],
                  grad_bias_out=np.empty(bs), needs=(True, True, False))
    _bad_grad_out(ValueError, ["grad_x_out", "needs[0] is False"],
                  grad_x_out=np.empty(xs), needs=(False, True, True))
    pool = np.empty(int(np.prod(xs)) + int(np.prod(ws)))
    _bad_grad_out(ValueError, ["grad_weight_out", "overlaps grad_x_out"],
                  grad_x_out=pool[:int(np.prod(xs))].reshape(xs),
                  grad_weight_out=pool[:int(np.prod(ws))].reshape(ws))
    x = np.ones(xs)
    _bad_grad_out(ValueError, ["grad_x_out", "overlaps x"], x=x, grad_x_out=x)
    w = np.ones(ws)
    _bad_grad_out(ValueError, ["grad_weight_out", "overlaps weight"], w=w,
                  grad_weight_out=w)
    _bad_grad_out(TypeError, ["grad_bias_out", "NumPy"], grad_bias_out=[0.0] * bs[0])


# ------------------------------------------------------------------- the GPU backend


@pytest.mark.parametrize("data_format", ["NCDHW", "NDHWC"])
def test_out_on_the_gpu_backend(monkeypatch, data_format):
    """GPU arrays with out= go to conv3dt._cuda, which writes the (strided) out in place."""
    monkeypatch.setitem(sys.modules, "cupy", numpy_as_cupy())
    calls = []
    for name in ("forward", "backward"):
        record_calls(monkeypatch, _cuda, name, order=calls)
    x, w, b = _inputs(np.float64, data_format)
    ref, _ = _reference(x, w, b, data_format)
    gpu = [a.view(NumpyGpuArray) for a in (x, w, b)]
    big = np.zeros((ref.shape[0] * 2,) + ref.shape[1:]).view(NumpyGpuArray)
    out = big[::2]
    got = F.conv3d_transpose(*gpu, data_format=data_format, out=out, **KW)
    assert got is out and calls == ["forward"]
    _close(np.asarray(out), ref, np.float64)
    assert not np.asarray(big[1::2]).any()
    gy = np.random.default_rng(6).standard_normal(ref.shape)
    refs = _backward_reference(gy, x, w, data_format)
    outs = [np.empty(a.shape).view(NumpyGpuArray) for a in (x, w, b)]
    got = F.conv3d_transpose_backward(gy.view(NumpyGpuArray), gpu[0], gpu[1],
                                      data_format=data_format, grad_x_out=outs[0],
                                      grad_weight_out=outs[1], grad_bias_out=outs[2], **KW)
    assert calls == ["forward", "backward"]
    for g, o, r in zip(got, outs, refs):
        assert g is o
        _close(np.asarray(g), r, np.float64)
    with pytest.raises(TypeError, match="out must be a CuPy array"):
        F.conv3d_transpose(*gpu, data_format=data_format, out=np.empty(ref.shape), **KW)
    n_out = int(np.prod(ref.shape))
    pool = np.zeros(n_out + x.size).view(NumpyGpuArray)
    x_in_pool = pool[n_out - 3: n_out - 3 + x.size].reshape(x.shape)
    x_in_pool[...] = x
    with pytest.raises(ValueError, match="out overlaps x"):
        F.conv3d_transpose(x_in_pool, gpu[1], gpu[2], data_format=data_format,
                           out=pool[:n_out].reshape(ref.shape), **KW)


def test_a_gpu_out_for_cpu_inputs_is_refused():
    x, w, b = _inputs(np.float64)
    shape = _reference(x, w, b)[0].shape
    with pytest.raises(TypeError, match="out must be a NumPy array"):
        F.conv3d_transpose(x, w, b, out=np.empty(shape).view(NumpyGpuArray), **KW)
