"""Sizes: empty batches, outputs below 1, allocations that cannot succeed, huge arguments,
and (slow) a volume of more than 2**31 elements."""
import time

import numpy as np
import pytest

import conv3dt.functional as F
from conv3dt.dygraph import Conv3DTranspose, guard, to_variable
from conv3dt.layers import reduce_sum


@pytest.mark.parametrize("fmt", ["NCDHW", "NDHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_batch_gives_empty_output_and_zero_gradients(fmt, dtype):
    x = np.zeros((0, 4, 3, 4, 5) if fmt == "NCDHW" else (0, 3, 4, 5, 4), dtype)
    w = np.ones((4, 3, 2, 3, 2), dtype)
    y = F.conv3d_transpose(x, w, np.ones(6, dtype), stride=2, groups=2, padding=1,
                           data_format=fmt)
    assert y.shape == ((0, 6, 4, 7, 8) if fmt == "NCDHW" else (0, 4, 7, 8, 6))
    assert y.dtype == dtype
    gx, gw, gb = F.conv3d_transpose_backward(y, x, w, stride=2, groups=2, padding=1,
                                             data_format=fmt)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (6,)
    assert not gw.any() and not gb.any()


def test_empty_batch_through_the_layer():
    with guard():
        conv = Conv3DTranspose(2, 3, filter_size=2, stride=2)
        x = to_variable(np.zeros((0, 2, 3, 3, 3), np.float32))
        y = conv(x)
        assert y.shape == (0, 3, 6, 6, 6)
        reduce_sum(y).backward()
        assert not conv.weight.gradient().any() and not conv.bias.gradient().any()


def test_output_below_one_is_a_value_error_before_any_allocation(monkeypatch):
    calls = []
    monkeypatch.setattr(F, "_empty", lambda *a: calls.append(a))
    with pytest.raises(ValueError, match="output size"):
        F.conv3d_transpose(np.ones((1, 1, 2, 2, 2)), np.ones((1, 1, 2, 2, 2)), padding=3)
    with pytest.raises(ValueError, match="output size"):
        F.conv3d_transpose_backward(np.ones((1, 1, 1, 1, 1)), np.ones((1, 1, 2, 2, 2)),
                                    np.ones((1, 1, 2, 2, 2)), padding=[3, 0, 0])
    assert calls == []


@pytest.mark.parametrize("kwargs", [dict(stride=10**5), dict(dilation=10**5),
                                    dict(stride=[2**31 - 1, 2**20, 3])])
def test_unallocatable_output_is_a_quick_memory_error_stating_bytes(kwargs):
    x = np.ones((1, 1, 2, 2, 2), np.float32)
    w = np.ones((1, 1, 2, 2, 2), np.float32)
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"output of shape .* needs \d+ bytes"):
        F.conv3d_transpose(x, w, **kwargs)
    assert time.perf_counter() - start < 1.0


def test_output_of_1e15_elements_states_its_size():
    x = np.ones((1, 1, 2, 2, 2), np.float32)
    w = np.ones((1, 1, 2, 2, 2), np.float32)
    with pytest.raises(MemoryError) as info:
        F.conv3d_transpose(x, w, stride=99_999)       # out = 100_001 per dim: 1.0e15 elements
    assert f"{100_001 ** 3 * 4} bytes" in str(info.value)


def test_allocation_failure_is_a_memory_error_naming_the_size(monkeypatch):
    """Below the machine's memory, a failing allocation still names what and how much."""
    real_empty = np.empty

    def failing_empty(shape, dtype=float, *a, **k):
        if int(np.prod(shape)) > 1000:
            raise MemoryError("simulated")
        return real_empty(shape, dtype, *a, **k)

    monkeypatch.setattr(np, "empty", failing_empty)
    with pytest.raises(MemoryError, match=r"the output of shape \(1, 1, 20, 20, 20\) "
                                          r"\(float64\) needs 64000 bytes"):
        F.conv3d_transpose(np.ones((1, 1, 19, 19, 19)), np.ones((1, 1, 2, 2, 2)))
    with pytest.raises(MemoryError, match=r"grad_x of shape .* needs \d+ bytes"):
        F.conv3d_transpose_backward(real_empty((1, 1, 20, 20, 20)), np.ones((1, 1, 19, 19, 19)),
                                    np.ones((1, 1, 2, 2, 2)))


@pytest.mark.parametrize("name", ["stride", "dilation", "padding", "output_padding",
                                  "output_size"])
@pytest.mark.parametrize("value", [2**31, 2**63, 10**30])
def test_arguments_beyond_32_bits_are_value_errors_naming_them(name, value):
    # A one-element input would make the output small whatever the stride: the kernels
    # must never see a value that overflows their 64-bit index arithmetic.
    x = np.ones((1, 1, 1, 1, 1), np.float32)
    w = np.ones((1, 1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match=name):
        F.conv3d_transpose(x, w, **{name: value})
    with pytest.raises(ValueError, match=name):
        F.conv3d_transpose_backward(np.ones((1, 1, 2, 2, 2), np.float32), x, w,
                                    **{name: [1, 1, value]})


def test_largest_stride_still_works():
    x = np.full((1, 1, 1, 2, 1), 2.0)
    w = np.ones((1, 1, 2, 1, 2))
    y = F.conv3d_transpose(x, w, stride=[2**31 - 1, 3, 2**31 - 1])
    assert y.shape == (1, 1, 2, 4, 2) and (y[0, 0, :, [0, 3]] == 2).all()
    assert (y[0, 0, :, 1:3] == 0).all()


def test_none_x_or_weight_is_a_type_error():
    with pytest.raises(TypeError, match="x must be"):
        F.conv3d_transpose(None, np.ones((1, 1, 2, 2, 2)))
    with pytest.raises(TypeError, match="weight must be"):
        F.conv3d_transpose(np.ones((1, 1, 2, 2, 2)), None)
    with pytest.raises(TypeError, match="grad_output must be"):
        F.conv3d_transpose_backward(None, np.ones((1, 1, 2, 2, 2)), np.ones((1, 1, 2, 2, 2)))


@pytest.mark.slow
def test_volume_over_2_31_elements():
    """Output (1, 1, 1292, 1293, 1293) float32: 2.16e9 elements (8.0 GiB), stride 2."""
    n = 646
    # x[i] = (i_d + 2 i_h + 3 i_w) mod 7, built plane by plane (no float64 temporary).
    i = np.arange(n, dtype=np.int64)
    x = np.empty((1, 1, n, n, n), np.float32)
    for d in range(n):
        x[0, 0, d] = ((d + 2 * i[:, None] + 3 * i[None, :]) % 7).astype(np.float32)
    w = np.array([1.0, 10.0, 100.0], np.float32)
    w3 = (w[:, None, None] + 2 * w[None, :, None] + 4 * w[None, None, :]).reshape(1, 1, 3, 3, 3)
    y = F.conv3d_transpose(x, w3, stride=2, padding=[1, 0, 0, 0, 0, 0])
    out = y.shape[2:]
    assert out == (2 * n, 2 * n + 1, 2 * n + 1) and y.size > 2**31, y.shape
    rng = np.random.default_rng(0)
    # Sampled positions, the far corner and the last elements included.
    positions = [tuple(int(v) for v in p) for p in rng.integers(0, min(out), (300, 3))]
    positions += [tuple(o - 1 for o in out), (out[0] - 1, 0, out[2] - 1), (0, 0, 0)]
    for o in positions:
        expected = 0.0
        for t in np.ndindex(3, 3, 3):
            src = []
            for a in range(3):
                lo = 1 if a == 0 else 0
                num = o[a] + lo - t[a]
                if num % 2 or not 0 <= num // 2 < n:
                    break
                src.append(num // 2)
            else:
                expected += float(x[(0, 0) + tuple(src)]) * float(w3[(0, 0) + t])
        assert y[(0, 0) + o] == pytest.approx(expected, rel=1e-6), o
    del y


def test_layer_with_an_impossible_kernel_is_a_memory_error():
    import conv3dt

    with conv3dt.dygraph.guard():
        with pytest.raises(MemoryError, match="parameter .* bytes"):
            conv3dt.dygraph.Conv3DTranspose(4, 4, filter_size=10**6)
