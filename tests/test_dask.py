"""The Dask backend (conv3dt.dask): chunked results against the whole call, bit for bit.

The range arithmetic is checked against a brute-force NumPy listing of which inputs each
output reads (and a float64 1-D transposed convolution); the chunked forward pass and
grad_x against one call of the functional API on the whole volume, bit for bit, over
random configurations; grad_weight and grad_bias against a fixed-order sum of per-chunk
partial sums (and the float64 NumPy reference within rounding), identical on every
scheduler. A 2-process distributed.LocalCluster run and an out-of-core run (Zarr in and
out, the output larger than a worker's memory limit) close the file.
"""
import os
import resource
import textwrap

import numpy as np
import pytest

import conv3dt
from conv3dt import _geometry, functional

import reference

da = pytest.importorskip("dask.array", reason="conv3dt.dask needs dask (pip install conv3dt[dask])")
dask = pytest.importorskip("dask")
cd = pytest.importorskip("conv3dt.dask")


@pytest.fixture(autouse=True)
def one_kernel_thread():
    """Small volumes: one kernel thread is fastest (and results do not depend on it)."""
    before = conv3dt.get_num_threads()
    conv3dt.set_num_threads(1)
    yield
    conv3dt.set_num_threads(before)


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


def assert_bitwise(got, want, what=""):
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape)
    if not np.array_equal(bits(got), bits(want)):
        diff = np.argwhere(bits(got) != bits(want))
        raise AssertionError(f"{what}: {len(diff)} elements differ, first at {diff[0]}: "
                             f"{got[tuple(diff[0])]!r} != {want[tuple(diff[0])]!r}")


# --------------------------------------------------------------------------- 1-D ranges


def _reads(in_size, k, s, d, lo, o):
    """Inputs that output o reads (brute force over every input and tap)."""
    return {i for i in range(in_size) for t in range(k) if i * s + t * d == o + lo}


def _conv1d_t(x, w, s, d, lo, out_size):
    """float64 1-D transposed convolution: y[o] = sum x[i] w[t] over i*s + t*d = o + lo."""
    y = np.zeros(out_size)
    for i in range(len(x)):
        for t in range(len(w)):
            o = i * s + t * d - lo
            if 0 <= o < out_size:
                y[o] += x[i] * w[t]
    return y


def _random_1d(rng):
    while True:
        in_size, k = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        s, d = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        lo, hi = int(rng.integers(0, 5)), int(rng.integers(0, 5))
        op = int(rng.integers(0, max(s, d)))
        out = (in_size - 1) * s - lo - hi + d * (k - 1) + 1 + op
        if out >= 1:
            return in_size, k, s, d, lo, out


def test_chunk_input_range_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(400):
        in_size, k, s, d, lo, out = _random_1d(rng)
        o0 = int(rng.integers(0, out))
        o1 = int(rng.integers(o0 + 1, out + 1))
        i0, i1, lo_c, hi_c = _geometry.chunk_input_range(in_size, k, s, d, lo, o0, o1)
        read = set().union(*(_reads(in_size, k, s, d, lo, o) for o in range(o0, o1)))
        case = (in_size, k, s, d, lo, out, o0, o1)
        if read:
            assert i0 <= min(read) and max(read) < i1, case
        if i1 > i0:
            assert 0 <= lo_c, case
            assert hi_c >= 0 or -hi_c < max(s, d), case  # a valid output_padding
            # the call on x[i0:i1] with padding (lo_c, hi_c) produces exactly the chunk
            x = rng.standard_normal(in_size)
            w = rng.standard_normal(k)
            n_c = (i1 - i0 - 1) * s - lo_c - hi_c + d * (k - 1) + 1
            assert n_c == o1 - o0, case
            whole = _conv1d_t(x, w, s, d, lo, out)
            part = _conv1d_t(x[i0:i1], w, s, d, lo_c, o1 - o0)
            np.testing.assert_allclose(part, whole[o0:o1], rtol=1e-12, atol=1e-12)
        else:
            assert not read, case


def test_grad_input_output_range_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(400):
        in_size, k, s, d, lo, out = _random_1d(rng)
        i0 = int(rng.integers(0, in_size))
        i1 = int(rng.integers(i0 + 1, in_size + 1))
        o0, o1 = _geometry.grad_input_output_range(out, k, s, d, lo, i0, i1)
        reached = {i * s + t * d - lo for i in range(i0, i1) for t in range(k)}
        reached = {o for o in reached if 0 <= o < out}
        case = (in_size, k, s, d, lo, out, i0, i1)
        assert o0 % s == 0, case
        if not reached:
            continue
        assert o0 <= min(reached) and max(reached) < o1, case
        j0, j1, _, _ = _geometry.chunk_input_range(in_size, k, s, d, lo, o0, o1)
        for i in range(i0, i1):
            if any(0 <= i * s + t * d - lo < out for t in range(k)):
                assert j0 <= i < j1, (case, i)


# --------------------------------------------------------------------------- forward


PADDINGS = [0, 1, [1, 0, 2], [0, 1, 2, 0, 1, 1], [[0, 0], [0, 0], [1, 0], [0, 2], [1, 1]],
            "SAME", "valid", "SAME_UPPER", "SAME_LOWER"]


def _config(rng, dtype=np.float32):
    """A random valid configuration: (kwargs, x, weight, bias)."""
    while True:
        stride = [int(v) for v in rng.integers(1, 4, 3)]
        dilation = [int(v) for v in rng.integers(1, 3, 3)]
        kernel = [int(v) for v in rng.integers(1, 5, 3)]
        groups = int(rng.choice([1, 2, 3]))
        cig, cog = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        fmt = str(rng.choice(["NCDHW", "NDHWC"]))
        size = [int(v) for v in rng.integers(2, 10, 3)]
        n = int(rng.integers(1, 3))
        padding = PADDINGS[int(rng.integers(len(PADDINGS)))]
        if fmt == "NDHWC" and isinstance(padding, list) and len(padding) == 5:
            padding = [padding[0], padding[2], padding[3], padding[4], padding[1]]
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  data_format=fmt)
        extra = int(rng.integers(3))
        if extra == 1 and not (isinstance(padding, str) and padding.upper().startswith("SAME_")):
            kw["output_padding"] = [int(rng.integers(0, max(s, d)))
                                    for s, d in zip(stride, dilation)]
        x_shape = (n, cig * groups, *size) if fmt == "NCDHW" else (n, *size, cig * groups)
        w_shape = (cig * groups, cog, *kernel)
        try:
            plan = _geometry.resolve(x_shape, w_shape, **kw)
        except ValueError:
            continue
        if extra == 2:
            kw["output_size"] = [o + int(rng.integers(0, s)) for o, s in
                                 zip(plan.out_size, plan.stride)]
            try:
                _geometry.resolve(x_shape, w_shape, **kw)
            except ValueError:
                del kw["output_size"]
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(cog * groups).astype(dtype) if rng.random() < 0.7 else None
        return kw, x, w, b


def _random_chunks(rng, shape):
    """Uneven chunks: 1 to 3 of them per dimension (sizes need not divide the shape)."""
    return tuple(int(rng.integers(max(1, -(-s // 3)), s + 1)) for s in shape)


@pytest.mark.parametrize("seed", range(6))
def test_forward_bitwise_random_configurations(seed):
    rng = np.random.default_rng(100 + seed)
    for case in range(12):
        dtype = np.float64 if case % 4 == 3 else np.float32
        kw, x, w, b = _config(rng, dtype)
        want = functional.conv3d_transpose(x, w, b, **kw)
        xd = da.from_array(x, chunks=_random_chunks(rng, x.shape))
        out_chunks = _random_chunks(rng, want.shape) if case % 3 else None
        y = cd.conv3d_transpose(xd, w, b, chunks=out_chunks, **kw)
        assert y.shape == want.shape and y.dtype == want.dtype
        got = y.compute(scheduler="sync")
        assert_bitwise(got, want, f"seed {seed} case {case}: {kw} chunks {out_chunks}")
        if case < 3 and not str(kw["padding"]).upper().startswith("SAME_"):
            # and against the float64 reference (not only the whole call)
            fmt = kw["data_format"]
            xs = reference.to_ncdhw(x, fmt)
            s, lo, hi, dil, out = reference.resolve(
                xs.shape[2:], w.shape[2:], kw["stride"], kw["padding"],
                kw.get("output_padding", 0), kw["dilation"], kw.get("output_size"), fmt)
            ref = reference.ref_conv3d_transpose(xs, w, b, s, lo, hi, dil, kw["groups"], out)
            np.testing.assert_allclose(reference.to_ncdhw(got, fmt), ref, rtol=1e-4, atol=1e-4)


def test_forward_chunk_boundaries_are_stride_multiples_and_regular():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 21, 13, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 4, 2)).astype(np.float32)
    kw = dict(stride=(3, 2, 1), padding=1)
    y = cd.conv3d_transpose(da.from_array(x, chunks=(1, 4, 7, 13, 9)), w, chunks=(1, 3, 10, 7, 4),
                            **kw)
    for a, s in zip((2, 3, 4), kw["stride"]):
        sizes = y.chunks[a]
        assert all(c % s == 0 for c in sizes[:-1]), (a, sizes)
        assert len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0], (a, sizes)
    assert_bitwise(y.compute(scheduler="threads"), functional.conv3d_transpose(x, w, **kw))
    # default: the stride times the input's chunks (blocks under 64 merged), whole output
    # channels, regular
    y = cd.conv3d_transpose(da.from_array(x, chunks=(1, 4, 7, 13, 9)), w, **kw)
    assert y.chunks[:2] == ((1, 1), (3,)) and y.chunks[2:] == tuple((n,) for n in y.shape[2:])
    x = rng.standard_normal((1, 2, 150, 3, 70)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 1, 4)).astype(np.float32)
    y = cd.conv3d_transpose(da.from_array(x, chunks=(1, 2, 64, 3, 64)), w, **kw)
    assert y.chunks[2] == (192, 192, 64) and y.chunks[4] == (64, 7)
    assert_bitwise(y.compute(scheduler="threads"), functional.conv3d_transpose(x, w, **kw))


def test_default_chunks_respect_the_memory_budget():
    x = da.zeros((1, 8, 128, 128, 128), chunks=(1, 8, 128, 128, 128), dtype=np.float32)
    w = np.zeros((8, 8, 4, 4, 4), np.float32)
    budget = 16 * 2**20
    y = cd.conv3d_transpose(x, w, stride=2, padding=1, memory_per_task=budget)
    block = 4 * 8 * np.prod([c[0] for c in y.chunks[2:]])
    assert block <= budget and all(c[0] % 2 == 0 for c in y.chunks[2:])
    assert y.numblocks[2:] != (1, 1, 1)
    assert cd.conv3d_transpose(x, w, stride=2, padding=1, memory_per_task="16MiB").chunks == \
        y.chunks
    with pytest.raises(ValueError, match="memory_per_task"):
        cd.conv3d_transpose(x, w, memory_per_task="lots")
    with pytest.raises(ValueError, match="memory_per_task"):
        cd.conv3d_transpose(x, w, memory_per_task=0)


def test_tiny_input_blocks_are_merged():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 80, 40, 16)).astype(np.float32)
    w = rng.standard_normal((2, 2, 2, 2, 2)).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 2, 16, 16, 16))
    y = cd.conv3d_transpose(xd, w, stride=2)
    # input blocks of 64 (or the whole dimension): output chunks of 2 x that
    assert y.chunks[2][0] == 128 and y.chunks[3] == (80,) and y.chunks[4] == (32,)
    assert_bitwise(y.compute(scheduler="sync"), functional.conv3d_transpose(x, w, stride=2))


def test_outputs_that_no_input_reaches_hold_the_bias():
    # dilation 3 > stride 1 with output_padding 2: the last two outputs get no tap
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 4, 3, 3)).astype(np.float32)
    w = rng.standard_normal((2, 2, 2, 2, 2)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    kw = dict(stride=1, dilation=(3, 1, 1), output_padding=(2, 0, 0))
    want = functional.conv3d_transpose(x, w, b, **kw)
    y = cd.conv3d_transpose(da.from_array(x, chunks=2), w, b, chunks=(1, 2, 1, 4, 4), **kw)
    assert_bitwise(y.compute(scheduler="sync"), want)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_weight_bitwise():
    """A non-finite weight takes functional's tap-by-tap path: its sums too run channel by
    channel in a fixed order, so chunks are bitwise equal to the whole result."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 13, 9, 7, 5)).astype(np.float32)
    w = rng.standard_normal((13, 11, 3, 3, 3)).astype(np.float32)
    w[0, 1, 1, 1, 1] = np.inf
    kw = dict(stride=2, padding=1)
    want = functional.conv3d_transpose(x, w, **kw)
    assert_bitwise(cd.conv3d_transpose(da.from_array(x, chunks=(1, 13, 3, 3, 3)), w,
                                       chunks=4, **kw).compute(scheduler="sync"), want)
    gy = rng.standard_normal(want.shape).astype(np.float32)
    gx = functional.conv3d_transpose_backward(gy, x, w, **kw, needs=(True, False, False))[0]
    dgx = cd.conv3d_transpose_backward(gy, x, w, **kw, needs=(True, False, False),
                                       chunks=(1, 13, 4, 3, 2))[0]
    assert_bitwise(dgx.compute(scheduler="sync"), gx)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_weight_propagates():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 9, 7, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3, 3)).astype(np.float32)
    w[0, 1, 1, 1, 1] = np.inf
    kw = dict(stride=2, padding=1)
    want = functional.conv3d_transpose(x, w, **kw)
    got = cd.conv3d_transpose(da.from_array(x, chunks=3), w, chunks=4, **kw).compute()
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_input_types(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 9, 7, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1)
    # a NumPy array, read in blocks
    want = functional.conv3d_transpose(x, w, **kw)
    assert_bitwise(cd.conv3d_transpose(x, w, chunks=4, **kw).compute(), want)
    # a zarr array
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, chunks=(1, 2, 4, 4, 4),
                        dtype=x.dtype)
    z[...] = x
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="r")
    y = cd.conv3d_transpose(z, w, **kw)
    assert_bitwise(y.compute(scheduler="threads"), want)


def test_h5py_dataset(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 10, 6, 6))
    w = rng.standard_normal((3, 2, 2, 3, 2))
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(1, 3, 5, 6, 6))
    with h5py.File(tmp_path / "x.h5", "r") as f:
        y = cd.conv3d_transpose(f["x"], w, stride=(2, 1, 3), chunks=4).compute(scheduler="threads")
    assert_bitwise(y, functional.conv3d_transpose(x, w, stride=(2, 1, 3)))


def test_argument_errors():
    x = da.zeros((1, 2, 4, 4, 4), dtype=np.float32, chunks=2)
    w = np.zeros((2, 2, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match="same dtype"):
        cd.conv3d_transpose(x, w.astype(np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        cd.conv3d_transpose(x.astype(np.int32), w)
    with pytest.raises(ValueError, match="stride"):
        cd.conv3d_transpose(x, w, stride=0)
    with pytest.raises(ValueError, match="bias"):
        cd.conv3d_transpose(x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="chunks"):
        cd.conv3d_transpose(x, w, chunks=(1, 2, 3))
    with pytest.raises(ValueError, match="grad_output"):
        cd.conv3d_transpose_backward(x, x, w)


# --------------------------------------------------------------------------- backward


def _fixed_order_partials(gy, x, w, kw, part_chunks):
    """The reference of grad_weight and grad_bias: one call per output chunk, on the input
    range chunk_input_range gives, summed SPLIT_EVERY at a time in the chunks' order."""
    plan = _geometry.resolve(x.shape, w.shape, **kw)
    n_axis, c_axis, spatial = cd._axes(plan.data_format)
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in part_chunks]
    parts = []
    for index in np.ndindex(*[len(c) for c in part_chunks]):
        rng = [(int(starts[a][j]), int(starts[a][j + 1])) for a, j in enumerate(index)]
        gsl = tuple(slice(*r) for r in rng)
        xsl, padding, out_pad, empty = [slice(None)] * 5, [], [], False
        xsl[n_axis] = slice(*rng[n_axis])
        call = list(gsl)  # the outputs some input reaches
        for k, a in enumerate(spatial):
            i0, i1, lo_c, hi_c = _geometry.chunk_input_range(
                plan.in_size[k], plan.kernel[k], plan.stride[k], plan.dilation[k],
                plan.pad_lo[k], *rng[a])
            empty |= i1 <= i0
            if -hi_c >= max(plan.stride[k], plan.dilation[k]):  # beyond any output_padding
                call[a] = slice(rng[a][0], rng[a][1] + hi_c)
                hi_c = 0
            xsl[a] = slice(i0, i1)
            padding += [lo_c, max(hi_c, 0)]
            out_pad.append(max(-hi_c, 0))
        axes = tuple(a for a in range(5) if a != c_axis)
        if empty:
            parts.append((np.zeros_like(w), gy[gsl].sum(axis=axes, dtype=gy.dtype)))
            continue
        _, gw, gb = functional.conv3d_transpose_backward(
            gy[tuple(call)], x[tuple(xsl)], w, stride=plan.stride, padding=padding,
            output_padding=out_pad, dilation=plan.dilation, groups=plan.groups,
            data_format=plan.data_format)
        if call != list(gsl):
            gb = gy[gsl].sum(axis=axes, dtype=gy.dtype)
        parts.append((gw, gb))
    while len(parts) > 1:
        nxt = []
        for i in range(0, len(parts), cd.SPLIT_EVERY):
            group = parts[i: i + cd.SPLIT_EVERY]
            gw, gb = group[0][0].copy(), group[0][1].copy()
            for pw, pb in group[1:]:
                gw += pw
                gb += pb
            nxt.append((gw, gb))
        parts = nxt
    return parts[0]


@pytest.mark.parametrize("seed", range(4))
def test_backward_random_configurations(seed):
    rng = np.random.default_rng(200 + seed)
    for case in range(8):
        dtype = np.float64 if case % 4 == 1 else np.float32
        kw, x, w, _ = _config(rng, dtype)
        y = functional.conv3d_transpose(x, w, **kw)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gw, gb = functional.conv3d_transpose_backward(gy, x, w, **kw)
        xd = da.from_array(x, chunks=_random_chunks(rng, x.shape))
        gyd = da.from_array(gy, chunks=_random_chunks(rng, gy.shape))
        gx_chunks = _random_chunks(rng, x.shape) if case % 2 else None
        dgx, dgw, dgb = cd.conv3d_transpose_backward(gyd, xd, w, chunks=gx_chunks, **kw)
        got_x, got_w, got_b = dask.compute(dgx, dgw, dgb, scheduler="sync")
        what = f"seed {seed} case {case}: {kw}"
        assert_bitwise(got_x, gx, "grad_x " + what)
        ref_w, ref_b = _fixed_order_partials(gy, x, w, kw,
                                             _part_chunks(gyd, kw, x.shape, w.shape))
        assert_bitwise(got_w, ref_w, "grad_weight " + what)
        assert_bitwise(got_b, ref_b, "grad_bias " + what)
        tol = 1e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got_w, gw, rtol=tol, atol=tol * np.abs(gw).max())
        np.testing.assert_allclose(got_b, gb, rtol=tol, atol=tol * np.abs(gb).max())


def _part_chunks(gyd, kw, x_shape, w_shape):
    """grad_output's chunks with whole channels and boundaries at stride multiples."""
    plan = _geometry.resolve(x_shape, w_shape, **kw)
    _, c_axis, spatial = cd._axes(plan.data_format)
    chunks = list(gyd.chunks)
    chunks[c_axis] = (plan.c_out,)
    for k, a in enumerate(spatial):
        chunks[a] = cd._aligned(gyd.chunks[a], plan.out_size[k], plan.stride[k])
    return chunks


def test_backward_needs_and_schedulers_agree():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 4, 12, 10, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    y = functional.conv3d_transpose(x, w, **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 4, 5, 10, 4))
    gyd = da.from_array(gy, chunks=(1, 6, 8, 7, 16))
    results = {}
    for scheduler in ("sync", "threads", "processes"):
        results[scheduler] = dask.compute(*cd.conv3d_transpose_backward(gyd, xd, w, **kw),
                                          scheduler=scheduler)
    for scheduler, res in results.items():
        for got, want in zip(res, results["sync"]):
            assert_bitwise(got, want, scheduler)
    gx, gw, gb = cd.conv3d_transpose_backward(gyd, xd, w, needs=(False, True, False), **kw)
    assert gx is None and gb is None
    assert_bitwise(gw.compute(), results["sync"][1], "grad_weight alone")
    _, _, gb = cd.conv3d_transpose_backward(gy, x, w, needs=(False, False, True), **kw)
    exact = gy.astype(np.float64).sum(axis=(0, 2, 3, 4))
    np.testing.assert_allclose(gb.compute(), exact, rtol=0,
                               atol=1e-5 * np.abs(gy).sum(axis=(0, 2, 3, 4)).max())


# --------------------------------------------------------------------------- layers


def test_layer_with_a_dask_array_in_no_grad():
    from conv3dt import dygraph

    rng = np.random.default_rng(9)
    data = rng.standard_normal((1, 3, 10, 8, 6)).astype(np.float32)
    with dygraph.guard():
        layer = dygraph.Conv3DTranspose(3, 4, filter_size=3, stride=2, padding=1,
                                        act="leaky_relu")
        want = layer(dygraph.to_variable(data)).numpy()
        xd = da.from_array(data, chunks=(1, 3, 5, 4, 6))
        with pytest.raises(RuntimeError, match="no_grad"):
            layer(xd)
        with conv3dt.no_grad():
            y = layer(xd)
        assert isinstance(y, da.Array)
        assert_bitwise(y.compute(scheduler="threads"), want, "layer")
        # a layer that creates its parameters at the first call, in NDHWC
        lazy = dygraph.nn.Conv3DTranspose("scope", num_filters=2, filter_size=2,
                                          data_format="NDHWC", bias_attr=False)
        nd = np.ascontiguousarray(data.transpose(0, 2, 3, 4, 1))
        with conv3dt.no_grad():
            y = lazy(da.from_array(nd, chunks=(1, 4, 4, 4, 3)))
        want = functional.conv3d_transpose(nd, lazy.weight.numpy(), data_format="NDHWC")
        assert_bitwise(y.compute(), want, "lazy layer")


def test_2x_layer_with_a_dask_array_in_no_grad():
    rng = np.random.default_rng(10)
    data = rng.standard_normal((1, 2, 8, 7, 6)).astype(np.float32)
    layer = conv3dt.nn.Conv3DTranspose(2, 3, 3, stride=2, padding=1, output_padding=1)
    want = layer(conv3dt.to_tensor(data)).numpy()
    xd = da.from_array(data, chunks=(1, 2, 4, 4, 3))
    with pytest.raises(RuntimeError, match="no_grad"):
        layer(xd)
    with conv3dt.no_grad():
        y = layer(xd)
    assert isinstance(y, da.Array)
    assert_bitwise(y.compute(scheduler="threads"), want, "2.x layer")


def test_task_threads_policy(monkeypatch):
    from conv3dt import _threads

    monkeypatch.delenv(_threads.ENV_VAR, raising=False)
    monkeypatch.setattr(_threads, "_num_threads", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cd._task_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cd._task_threads() is None  # the main thread: the synchronous scheduler
    import threading

    seen = []
    cores = _threads._available_cores()
    t = threading.Thread(target=lambda: seen.extend([cd._task_threads(), cd._task_threads(1),
                                                     cd._task_threads(10 * cores)]))
    t.start()
    t.join()
    # a thread pool's thread: the cores shared among the tasks running at once
    assert seen == [1, cores, 1]
    monkeypatch.setenv(_threads.ENV_VAR, "2")
    assert cd._task_threads() is None  # the user's setting stands
    monkeypatch.delenv(_threads.ENV_VAR)
    # A task's count holds for its own thread only: another thread's calls, and the
    # process's setting, are untouched.
    before = conv3dt.get_num_threads()
    other = []
    inside, release = threading.Event(), threading.Event()

    def task():
        with _threads.thread_threads(1):
            other.append((conv3dt.get_num_threads(), _threads.thread_source()))
            inside.set()
            release.wait(10)
        other.append(conv3dt.get_num_threads())

    with _threads.thread_threads(3):
        t = threading.Thread(target=task)
        t.start()
        assert inside.wait(10)
        assert conv3dt.get_num_threads() == 3 and _threads.thread_source() == "thread"
        with _threads.thread_threads(2):
            assert conv3dt.get_num_threads() == 2
        assert conv3dt.get_num_threads() == 3
        release.set()
        t.join()
    assert other == [(1, "thread"), before]
    assert conv3dt.get_num_threads() == before and _threads._num_threads is None
    with pytest.raises(ValueError, match="num_threads"):
        with _threads.thread_threads(0):
            pass


# --------------------------------------------------------------------------- distributed


def _peak_rss_bytes():
    """This process's peak resident memory: VmHWM on Linux (getrusage's ru_maxrss would
    include the memory of the process it was forked from), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="256MiB", dashboard_address=None,
                                  silence_logs=40) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def test_distributed_cluster_of_two_processes(cluster_client):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2, 4, 20, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 2, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    kw = dict(stride=(2, 1, 2), padding="SAME", data_format="NCDHW")
    xd = da.from_array(x, chunks=(1, 4, 7, 12, 6))
    y = cd.conv3d_transpose(xd, w, b, **kw)
    assert_bitwise(cluster_client.compute(y).result(), functional.conv3d_transpose(x, w, b, **kw))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gyd = da.from_array(gy, chunks=y.chunks)
    grads = cluster_client.compute(list(cd.conv3d_transpose_backward(gyd, xd, w, **kw)))
    local = dask.compute(*cd.conv3d_transpose_backward(gyd, xd, w, **kw), scheduler="sync")
    for got, want in zip(grads, local):
        assert_bitwise(got.result(), want, "distributed gradient")
    workers = cluster_client.run(os.getpid)
    assert len(set(workers.values())) == 2


def test_out_of_core_zarr_to_zarr_under_the_worker_memory_limit(cluster_client, tmp_path):
    zarr = pytest.importorskip("zarr")
    limit = 256 * 2**20
    rng = np.random.default_rng(11)
    shape = (1, 4, 84, 84, 84)
    src = cd.create_zarr(tmp_path / "in.zarr", shape, (1, 4, 28, 84, 84), np.float32)
    for d0 in range(0, 84, 28):
        src[:, :, d0:d0 + 28] = rng.standard_normal((1, 4, 28, 84, 84)).astype(np.float32)
    w = rng.standard_normal((4, 16, 2, 2, 2)).astype(np.float32)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="r")
    y = cd.conv3d_transpose(src, w, stride=2, memory_per_task="16MiB")
    assert y.nbytes > limit  # 303 MB of output, more than a worker may hold
    # the cluster's workers have a memory limit of 256 MiB each
    cd.to_zarr(y, tmp_path / "out.zarr", compressed=False)
    peaks = cluster_client.run(_peak_rss_bytes)
    assert max(peaks.values()) < limit, {k: v / 2**20 for k, v in peaks.items()}
    print("peak memory per worker (MiB):", sorted(round(v / 2**20) for v in peaks.values()))
    # spot checks of the written volume against the whole call on slabs of the input
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="r")
    for d0 in (0, 40, 76):
        whole = functional.conv3d_transpose(src[:, :, d0:d0 + 8], w, stride=2)
        assert_bitwise(np.asarray(out[:, :, 2 * d0:2 * d0 + 16]), whole, "zarr output")


# --------------------------------------------------------------------------- docs


def test_the_docs_examples_run(tmp_path, monkeypatch):
    """The ``pycon`` examples of docs/dask.rst, run as doctests in one namespace."""
    import doctest
    import re

    pytest.importorskip("zarr")
    monkeypatch.chdir(tmp_path)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                        "dask.rst")
    with open(path) as f:
        text = f.read()
    blocks = re.findall(r"^\.\. code-block:: pycon\n\n((?:   .*\n|\n)+)", text, re.M)
    assert len(blocks) >= 3
    source = "\n".join(textwrap.dedent(b) for b in blocks)
    test = doctest.DocTestParser().get_doctest(source, {}, "docs/dask.rst", path, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    with dask.config.set(scheduler="threads"):  # not a cluster another test left running
        result = runner.run(test)
    assert result.failed == 0 and result.attempted > 10, result


def test_chunks_below_the_stride_when_the_budget_demands_it():
    # a stride-8 upsampling whose stride-sized chunks exceed a tiny budget: the chunks
    # are cut below the stride, and stay exact
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 2, 5, 4, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3, 9, 8, 8)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    kw = dict(stride=8, padding=(1, 0, 2))
    y = cd.conv3d_transpose(da.from_array(x, chunks=2), w, b, memory_per_task=4000, **kw)
    assert max(y.chunks[2]) < 8 or max(y.chunks[3]) < 8 or max(y.chunks[4]) < 8
    assert_bitwise(y.compute(scheduler="sync"), functional.conv3d_transpose(x, w, b, **kw))
    with pytest.raises(ValueError, match="chunks"):
        cd.conv3d_transpose(da.from_array(x, chunks=2), w, memory_per_task=1, stride=1000)


def test_arrays_read_in_blocks_keep_whole_channels():
    x = np.zeros((2, 40, 40, 40, 6), np.float32)
    d = cd.as_dask_array(x, memory_per_task=200_000, data_format="NDHWC")
    assert d.chunks[0] == (1, 1) and d.chunks[4] == (6,) and d.numblocks[1:4] != (1, 1, 1)
    d = cd.as_dask_array(x.transpose(0, 4, 1, 2, 3), memory_per_task=200_000)
    assert d.chunks[1] == (6,)
    assert 4 * 6 * np.prod([c[0] for c in d.chunks[2:]]) <= 200_000
