"""The functional API's smaller contracts: Paddle's ``name=``, DLPack inputs, torch tensors
that require grad, no warnings from the exact path of non-finite inputs, the cache of
resolved setups (repeated calls still check every argument), the memory cache's views,
and the layer's ``repr``.

Results are compared with tests/reference.py (float64, independent of conv3dt) or with a
scalar loop over the pairs the operation defines.
"""
import itertools
import warnings

import numpy as np
import pytest

import reference as R
import conv3dt
from conv3dt import functional as F
from conv3dt.dygraph import Conv3DTranspose, guard

KW = dict(stride=2, padding=1, output_padding=1)


def _data(dtype=np.float64, seed=0, x_shape=(1, 2, 3, 3, 3), w_shape=(2, 3, 3, 3, 3)):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape).astype(dtype),
            rng.standard_normal(w_shape).astype(dtype),
            rng.standard_normal(w_shape[1]).astype(dtype))


def _reference(x, w, b, stride=2, padding=1, output_padding=1, groups=1):
    s, lo, hi, d, out = R.resolve(x.shape[2:], w.shape[2:], stride, padding, output_padding)
    with np.errstate(invalid="ignore"):
        return R.ref_conv3d_transpose(x, w, b, s, lo, hi, d, groups, out)


def _close(got, ref, tol=1e-12):
    got = np.asarray(got)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref))
    fin = np.isfinite(ref)
    assert np.abs(got[fin] - ref[fin]).max(initial=0) <= tol * max(1, np.abs(ref[fin]).max())


# ----------------------------------------------------------------------------- name=


def test_name_is_accepted_and_ignored():
    x, w, b = _data()
    ref = _reference(x, w, b)
    _close(F.conv3d_transpose(x, w, b, name="deconv_1", **KW), ref)
    # Paddle's positional order: ..., output_size, data_format, name
    _close(F.conv3d_transpose(x, w, b, 2, 1, 1, 1, 1, None, "NCDHW", "deconv_2"), ref)


def test_every_layer_function_takes_paddles_name():
    import inspect

    import conv3dt.layers as L
    from conv3dt.dygraph import to_variable

    v = to_variable(np.array([-1.0, 0.5, 2.0]))
    for fname in L.__all__:
        if fname == "mse_loss":          # fluid.layers.mse_loss(input, label): no name
            continue
        params = inspect.signature(getattr(L, fname)).parameters
        assert "name" in params and params["name"].default is None, fname
        args = (v, v) if fname.startswith("elementwise_") else (v,)
        ref = getattr(L, fname)(*args).numpy()
        np.testing.assert_array_equal(getattr(L, fname)(*args, name="n").numpy(), ref)


# ----------------------------------------------------------- no warnings, exact results


def _loop_forward(x, w, b, stride, pad_lo, out_size):
    """Scalar scatter over the (input position, tap) pairs inside the output."""
    y = np.zeros((x.shape[0], w.shape[1]) + out_size)
    with np.errstate(invalid="ignore"):
        for n, ci, co in itertools.product(range(x.shape[0]), range(x.shape[1]),
                                           range(w.shape[1])):
            for i in np.ndindex(*x.shape[2:]):
                for t in np.ndindex(*w.shape[2:]):
                    o = tuple(i[a] * stride - pad_lo + t[a] for a in range(3))
                    if all(0 <= o[a] < out_size[a] for a in range(3)):
                        y[(n, co) + o] += x[(n, ci) + i] * w[(ci, co) + t]
        y += b.reshape(1, -1, 1, 1, 1)
    return y


def test_one_inf_weight_raises_no_warning_even_as_an_error():
    """The exact path's 0 * inf = nan is the defined result, not an 'invalid value'."""
    x, w, b = _data()
    x[0, 0, 1, 1, 1] = 0.0                    # a real product 0 * inf: NaN where it lands
    w[0, 1, 1, 1, 1] = np.inf
    w[1, 2, 0, 2, 1] = -np.inf
    ref = _loop_forward(x, w, b, 2, 1, (6, 6, 6))
    assert np.isnan(ref).any() and np.isinf(ref).any() and np.isfinite(ref).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.conv3d_transpose(x, w, b, **KW)
    _close(y, ref)


def test_non_finite_backward_raises_no_warning_even_as_an_error():
    x, w, b = _data(seed=1)
    w[1, 0, 2, 2, 2] = np.inf
    x[0, 1, 0, 2, 1] = -np.inf
    gy = np.random.default_rng(2).standard_normal((1, 3, 6, 6, 6))
    gy[0, 0, :2] = 0.0                        # zeros of gy times inf: real NaN products
    s, lo, hi, d, out = R.resolve(x.shape[2:], w.shape[2:], 2, 1, 1)
    with np.errstate(invalid="ignore"):
        refs = R.ref_backward(gy, x, w, s, lo, hi, d, 1, out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = F.conv3d_transpose_backward(gy, x, w, **KW)
    for g, r in zip(got, refs):
        _close(g, r)


def test_the_exact_path_leaves_the_warning_state_as_it_was():
    x, w, b = _data()
    w[0, 0, 0, 0, 0] = np.inf
    before = np.geterr()
    F.conv3d_transpose(x, w, b, **KW)
    assert np.geterr() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning):       # elsewhere NumPy still warns
            np.array([0.0]) * np.array([np.inf])


# ------------------------------------------------------------------------- DLPack


class _DLPackOnly:
    """An array that offers nothing but the DLPack protocol (as a NumPy array does)."""

    def __init__(self, array, device=None):
        self._array = array
        self._device = device

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device or self._array.__dlpack_device__()


def test_dlpack_objects_are_read_in_place():
    if not hasattr(np.ndarray, "__dlpack__"):
        pytest.skip("this NumPy has no DLPack")
    x, w, b = _data()
    ref = _reference(x, w, b)
    wrapped = [_DLPackOnly(a) for a in (x, w, b)]
    assert not hasattr(wrapped[0], "__array__")
    _close(F.conv3d_transpose(*wrapped, **KW), ref)
    _close(F.conv3d_transpose(wrapped[0], w, b, **KW), ref)
    gy = np.random.default_rng(3).standard_normal(ref.shape)
    s, lo, hi, d, out = R.resolve(x.shape[2:], w.shape[2:], 2, 1, 1)
    refs = R.ref_backward(gy, x, w, s, lo, hi, d, 1, out)
    got = F.conv3d_transpose_backward(_DLPackOnly(gy), wrapped[0], wrapped[1], **KW)
    for g, r in zip(got, refs):
        _close(g, r)


def test_dlpack_objects_are_checked_as_arrays():
    if not hasattr(np.ndarray, "__dlpack__"):
        pytest.skip("this NumPy has no DLPack")
    x, w, b = _data()
    with pytest.raises(TypeError, match="x must be float32 or float64, got dtype int32"):
        F.conv3d_transpose(_DLPackOnly(x.astype(np.int32)), w, b, **KW)
    with pytest.raises(TypeError, match="same dtype"):
        F.conv3d_transpose(_DLPackOnly(x.astype(np.float32)), w, b, **KW)


def test_a_dlpack_object_in_gpu_memory_goes_to_the_gpu_backend(monkeypatch):
    """Device type 2 (CUDA): the GPU backend, which without CuPy says what to install."""
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    x, w, b = _data()
    with pytest.raises(RuntimeError, match="CuPy"):
        F.conv3d_transpose(_DLPackOnly(x, device=(2, 0)), _DLPackOnly(w, device=(2, 0)),
                           **KW)
    with pytest.raises(TypeError, match="same device"):
        F.conv3d_transpose(_DLPackOnly(x, device=(2, 0)), w, **KW)


class _FakeGradTensor(_DLPackOnly):
    """Duck-typed like a torch tensor that records gradients."""

    requires_grad = True


def test_an_array_that_requires_grad_points_to_the_torch_bridge():
    x, w, b = _data()
    for args, name in (((_FakeGradTensor(x), w, b), "x"), ((x, _FakeGradTensor(w), b), "weight"),
                       ((x, w, _FakeGradTensor(b)), "bias")):
        with pytest.raises(TypeError) as info:
            F.conv3d_transpose(*args, **KW)
        message = str(info.value)
        assert f"{name} is a" in message and "requires_grad=True" in message
        assert "conv3dt.torch" in message and f"{name}.detach()" in message
    gy = np.zeros((1, 3, 6, 6, 6))
    with pytest.raises(TypeError, match="grad_output is a .*conv3dt.torch"):
        F.conv3d_transpose_backward(_FakeGradTensor(gy), x, w, **KW)
    plain = _DLPackOnly(x)
    plain.requires_grad = False                     # not recording: an ordinary array
    if hasattr(np.ndarray, "__dlpack__"):
        _close(F.conv3d_transpose(plain, w, b, **KW), _reference(x, w, b))


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    x, w, b = _data()
    ref = _reference(x, w, b)
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    _close(F.conv3d_transpose(tx, tw, tb, **KW), ref)
    with pytest.raises(TypeError, match=r"x is a torch\.Tensor with requires_grad=True.*"
                                        r"conv3dt\.torch"):
        F.conv3d_transpose(tx.clone().requires_grad_(), tw, tb, **KW)
    with pytest.raises(TypeError, match="weight is a torch.Tensor"):
        F.conv3d_transpose_backward(torch.zeros(1, 3, 6, 6, 6, dtype=torch.float64), tx,
                                    tw.clone().requires_grad_(), **KW)
    _close(F.conv3d_transpose(tx.clone().requires_grad_().detach(), tw, tb, **KW), ref)


# ----------------------------------------------------------- the cache of setups


def test_a_repeated_geometry_is_resolved_once(monkeypatch):
    calls = []
    real = F.resolve

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "resolve", counting)
    F._setups.clear()
    x, w, b = _data()
    ref = _reference(x, w, b)
    for _ in range(3):
        _close(F.conv3d_transpose(x, w, b, **KW), ref)
    assert len(calls) == 1
    _close(F.conv3d_transpose(x, w, b, stride=[2, 2, 2], padding=(1, 1, 1),
                              output_padding=1), ref)
    assert len(calls) == 2                     # other arguments, another key
    F.conv3d_transpose(x, w, None, **KW)
    F.conv3d_transpose(x.astype(np.float32), w.astype(np.float32), None, **KW)
    assert len(calls) == 4                     # bias or not, dtype: part of the key
    # Not plain (NumPy ints): resolved at every call, same result.
    for _ in range(2):
        _close(F.conv3d_transpose(x, w, b, stride=np.int64(2), padding=np.int32(1),
                                  output_padding=1), ref)
    assert len(calls) == 6


def test_checks_of_the_arrays_stay_with_a_cached_setup():
    x, w, b = _data()
    F.conv3d_transpose(x, w, b, **KW)           # the geometry is now cached
    with pytest.raises(TypeError, match="x must be float32 or float64, got dtype float16"):
        F.conv3d_transpose(x.astype(np.float16), w, b, **KW)
    with pytest.raises(TypeError, match="same dtype"):
        F.conv3d_transpose(x, w, b.astype(np.float32), **KW)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\), got \(4,\)"):
        F.conv3d_transpose(x, w, np.zeros(4), **KW)
    w_inf = w.copy()
    w_inf[0, 0, 0, 0, 0] = np.inf               # the finiteness check still runs
    _close(F.conv3d_transpose(x, w_inf, b, **KW), _loop_forward(x, w_inf, b, 2, 1, (6, 6, 6)))
    swapped = x.astype(x.dtype.newbyteorder(">"))
    _close(F.conv3d_transpose(swapped, w, b, **KW), _reference(x, w, b))
    strided = np.zeros((1, 4, 3, 3, 3))[:, ::2]
    strided[...] = x
    _close(F.conv3d_transpose(strided, w, b, **KW), _reference(x, w, b))


def test_bad_arguments_raise_at_every_call():
    x, w, b = _data()
    for _ in range(2):
        with pytest.raises(ValueError, match="output_padding"):
            F.conv3d_transpose(x, w, b, stride=2, padding=1, output_padding=2)
        with pytest.raises((TypeError, ValueError), match="stride"):
            F.conv3d_transpose(x, w, b, stride=True, padding=1)
        with pytest.raises(ValueError, match="grad_output must have shape"):
            F.conv3d_transpose_backward(np.zeros((1, 3, 5, 5, 5)), x, w, **KW)
        with pytest.raises(ValueError, match="needs"):
            F.conv3d_transpose_backward(np.zeros((1, 3, 6, 6, 6)), x, w, needs=(1, 1, 1),
                                        **KW)


def test_the_setup_cache_is_bounded():
    cache = F._SetupCache(size=4)
    made = []
    for key in range(10):
        assert cache.get(key, lambda k: made.append(k) or k * 10, key) == key * 10
    assert len(cache._setups) == 4 and sorted(cache._setups) == [6, 7, 8, 9]
    assert cache.get(9, lambda k: made.append(k), 9) == 90 and len(made) == 10
    with pytest.raises(ZeroDivisionError):
        cache.get("bad", lambda: 1 / 0)
    assert "bad" not in cache._setups
    assert cache.get(None, lambda: "uncached") == "uncached" and None not in cache._setups


# ---------------------------------------------------------------- memory cache views


def test_large_results_are_views_on_the_memory_cache():
    """As documented: 4 MiB or more is a view on a cached block, unless the limit is 0."""
    x = np.ones((1, 1, 64, 64, 64), np.float32)   # output 1 x 1 x 64^3 float32: 1 MiB
    w = np.ones((1, 4, 1, 1, 1), np.float32)      # 4 channels: exactly 4 MiB
    before = conv3dt.get_cache_limit()
    try:
        conv3dt.set_cache_limit(64 * 2**20)
        y = F.conv3d_transpose(x, w)
        assert y.nbytes == 4 * 2**20 and y.base is not None and (y == 1).all()
        small = F.conv3d_transpose(x[:, :, :32], w)
        assert small.base is None
        conv3dt.set_cache_limit(0)
        assert F.conv3d_transpose(x, w).base is None
    finally:
        conv3dt.set_cache_limit(before)
        conv3dt.empty_cache()


# ------------------------------------------------------------------------ the layer


@pytest.mark.parametrize("kwargs, text", [
    (dict(num_channels=4, num_filters=8, filter_size=3, stride=2),
     "Conv3DTranspose(4, 8, filter_size=(3, 3, 3), stride=(2, 2, 2))"),
    (dict(num_channels=4, num_filters=8, filter_size=[3, 2, 3], stride=[1, 1, 1],
          padding=[0, 0, 0, 0, 0, 0], groups=None, dilation=(1, 1, 1)),
     "Conv3DTranspose(4, 8, filter_size=(3, 2, 3))"),
    (dict(num_channels=4, num_filters=8, filter_size=3, padding=1, dilation=(1, 2, 1),
          groups=2, act="relu", bias_attr=False, dtype="float64", output_padding=1,
          data_format="NDHWC"),
     "Conv3DTranspose(4, 8, filter_size=(3, 3, 3), padding=(1, 1, 1), dilation=(1, 2, 1), "
     "groups=2, bias_attr=False, act='relu', dtype='float64', output_padding=(1, 1, 1), "
     "data_format='NDHWC')"),
    (dict(num_channels=2, num_filters=3, output_size=5, padding="SAME"),
     "Conv3DTranspose(2, 3, output_size=(5, 5, 5), padding='SAME')"),
    (dict(num_channels=2, num_filters=3, filter_size=2, use_cudnn=False,
          padding=[[0, 0], [0, 0], [1, 1], [0, 0], [0, 0]]),
     "Conv3DTranspose(2, 3, filter_size=(2, 2, 2), "
     "padding=((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)), use_cudnn=False)"),
])
def test_layer_repr_lists_what_differs_from_the_defaults(kwargs, text):
    with guard():
        assert repr(Conv3DTranspose(**kwargs)) == text


def test_layer_repr_of_a_name_scope_layer_shows_its_channels_once_known():
    with guard():
        layer = Conv3DTranspose("up", 3, filter_size=2, stride=2)
        assert repr(layer) == (f"Conv3DTranspose({layer.full_name()!r}, 3, "
                               f"filter_size=(2, 2, 2), stride=(2, 2, 2))")
        layer(np.ones((1, 5, 2, 2, 2), np.float32))
        assert repr(layer) == "Conv3DTranspose(5, 3, filter_size=(2, 2, 2), stride=(2, 2, 2))"
