"""The order of every sum depends only on channels, kernel and dtype, never on tiles or on
where a volume is cut: a crop of the output computed from the matching crop of the input
equals that region of the whole result bit for bit (forward pass and grad_x), for every
padding form, stride, dilation, groups and layout, with the library's tile sizes and with
tiny ones that split every sum into many blocks of channels and rows.

The crops are computed here from the resolved geometry of the whole call: per dimension,
an output range [o0, o1) needs the inputs [i0, i1) that some tap maps onto it, and is one
ordinary call on them with the padding that puts o0 first; grad_x of an input range reads
the grad_output range its taps reach.
"""
import numpy as np
import pytest

import conv3dt
from conv3dt import _cpu
from conv3dt._geometry import resolve
from conv3dt.functional import conv3d_transpose, conv3d_transpose_backward

TINY = _cpu.Tuning(ncol=12, kblock=5, window_bytes=1, slab_bytes=1, chunk_bytes=1)
# The direct path (few output channels accumulated straight from x) on, whatever the
# variant's own crossover.
DIRECT = _cpu.Tuning(direct_cout=2)


def _out_crop_call(plan, o_rng):
    """(input slices, padding [6], output_padding [3]) of the call that computes the
    output ranges o_rng, or None where a crop cannot be one call."""
    sl, pad, opad = [], [], []
    for a in range(3):
        s, lo, k, d = plan.stride[a], plan.pad_lo[a], plan.kernel[a], plan.dilation[a]
        ext, size = (k - 1) * d, plan.in_size[a]
        o0, o1 = o_rng[a]
        i0 = max(0, min(-(-(o0 + lo - ext) // s), (o0 + lo) // s))
        i1 = min(size, (o1 - 1 + lo) // s + 1)
        if i1 <= i0:
            return None
        lo_c = o0 + lo - i0 * s
        hi_c = (i1 - 1) * s - lo + ext + 1 - o1
        sl.append(slice(i0, i1))
        pad += [lo_c, max(hi_c, 0)]
        opad.append(max(-hi_c, 0))
    if max(opad) >= max(max(plan.stride), max(plan.dilation)):
        return None
    return sl, pad, opad


def _gx_crop_call(plan, i_rng):
    """(input slices, grad_output slices, padding, output_padding) for grad_x of i_rng."""
    sl, gsl, pad, opad = [], [], [], []
    for a in range(3):
        s, lo, k, d = plan.stride[a], plan.pad_lo[a], plan.kernel[a], plan.dilation[a]
        ext = (k - 1) * d
        i0, i1 = i_rng[a]
        g0 = max(0, i0 * s - lo)
        g1 = min(plan.out_size[a], (i1 - 1) * s - lo + ext + 1)
        if g1 <= g0:
            return None
        lo_c = g0 + lo - i0 * s
        hi_c = (i1 - i0 - 1) * s - lo_c + ext + 1 - (g1 - g0)
        sl.append(slice(i0, i1))
        gsl.append(slice(g0, g1))
        pad += [lo_c, max(hi_c, 0)]
        opad.append(max(-hi_c, 0))
    if max(opad) >= max(max(plan.stride), max(plan.dilation)):
        return None
    return sl, gsl, pad, opad


def _spatial(arr, slices, data_format):
    index = (slice(None), slice(None), *slices) if data_format == "NCDHW" else \
        (slice(None), *slices, slice(None))
    return arr[index]


def _same_bits(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _random_case(r):
    dtype = np.float32 if r.random() < 0.6 else np.float64
    groups = int(r.choice([1, 1, 2, 3]))
    stride = [int(v) for v in r.integers(1, 4, 3)]
    kernel = [int(v) for v in r.integers(1, 5, 3)]
    dilation = [int(v) for v in r.integers(1, 3, 3)]
    form = r.integers(0, 5)
    if form == 0:
        padding = [int(r.integers(0, kernel[a] * dilation[a])) for a in range(3)
                   for _ in range(2)]
    elif form == 1:
        padding = int(r.integers(0, 3))
    elif form == 2:
        padding = "SAME"
    elif form == 3:
        padding = "VALID"
    else:
        padding = [[0, 0], [0, 0]] + [[int(r.integers(0, 3)), int(r.integers(0, 3))]
                                      for _ in range(3)]
    c_in = groups * int(r.choice([1, 3, 8, 13]))
    c_out = groups * int(r.integers(1, 7))
    size = [int(v) for v in r.integers(2, 10, 3)]
    data_format = "NDHWC" if r.random() < 0.25 else "NCDHW"
    n = int(r.integers(1, 3))
    shape = (n, c_in, *size) if data_format == "NCDHW" else (n, *size, c_in)
    x = r.standard_normal(shape).astype(dtype)
    w = r.standard_normal((c_in, c_out // groups, *kernel)).astype(dtype)
    b = r.standard_normal(c_out).astype(dtype) if r.random() < 0.7 else None
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              data_format=data_format)
    return x, w, b, kw


def _check(seed):
    r = np.random.default_rng(seed)
    x, w, b, kw = _random_case(r)
    try:
        plan = resolve(x.shape, w.shape, kw["stride"], kw["padding"], 0, kw["groups"],
                       kw["dilation"], None, kw["data_format"])
    except ValueError:
        return 0
    y = conv3d_transpose(x, w, b, **kw)
    gy = r.standard_normal(y.shape).astype(x.dtype)
    gx = conv3d_transpose_backward(gy, x, w, **kw, needs=(True, False, False))[0]
    fixed = dict(dilation=plan.dilation, groups=kw["groups"], stride=plan.stride,
                 data_format=kw["data_format"])
    checked = 0
    for _ in range(3):
        o_rng = []
        for a in range(3):
            o0 = int(r.integers(0, plan.out_size[a]))
            o_rng.append((o0, int(r.integers(o0 + 1, plan.out_size[a] + 1))))
        call = _out_crop_call(plan, o_rng)
        if call is not None:
            sl, pad, opad = call
            part = conv3d_transpose(_spatial(x, sl, kw["data_format"]), w, b, padding=pad,
                                    output_padding=opad, **fixed)
            whole = _spatial(y, [slice(*o) for o in o_rng], kw["data_format"])
            assert _same_bits(part, whole), ("forward", seed, o_rng, kw)
            checked += 1
        i_rng = []
        for a in range(3):
            i0 = int(r.integers(0, plan.in_size[a]))
            i_rng.append((i0, int(r.integers(i0 + 1, plan.in_size[a] + 1))))
        call = _gx_crop_call(plan, i_rng)
        if call is not None:
            sl, gsl, pad, opad = call
            part = conv3d_transpose_backward(
                _spatial(gy, gsl, kw["data_format"]), _spatial(x, sl, kw["data_format"]), w,
                padding=pad, output_padding=opad, needs=(True, False, False), **fixed)[0]
            whole = _spatial(gx, [slice(*i) for i in i_rng], kw["data_format"])
            assert _same_bits(part, whole), ("grad_x", seed, i_rng, kw)
            checked += 1
    return checked


@pytest.mark.parametrize("block", range(4))
def test_crops_are_bitwise_equal_to_the_whole(block):
    assert sum(_check(seed) for seed in range(block * 40, block * 40 + 40)) > 100


@pytest.mark.parametrize("block", range(2))
def test_crops_are_bitwise_equal_with_sums_split_into_blocks(block):
    """Tiny tiles: one channel per window, product calls of 5 rows, rows tiled one by one,
    so the sums of the whole call and of a crop are split at different places."""
    with _cpu.tuned(TINY):
        assert sum(_check(seed) for seed in range(1000 + block * 30,
                                                   1000 + block * 30 + 30)) > 60


def test_crops_are_bitwise_equal_on_the_direct_path():
    with _cpu.tuned(DIRECT):
        assert sum(_check(seed) for seed in range(2000, 2040)) > 100


def test_many_channels_blocked_by_the_window_size():
    """Channel blocks from the library's own window size (a wide plane, many channels):
    the whole call blocks its channels, a thin crop takes them all in one block."""
    r = np.random.default_rng(7)
    x = r.standard_normal((1, 96, 3, 130, 130)).astype(np.float32)
    w = r.standard_normal((96, 4, 3, 3, 3)).astype(np.float32)
    y = conv3d_transpose(x, w, None, stride=2, padding=1)
    plan = resolve(x.shape, w.shape, 2, 1)
    sched = _cpu._forward_schedule(plan, 4, conv3dt._isa.current(), _cpu.DEFAULT_TUNING)
    assert sched.window.channels < 96          # the whole call blocks its channels
    sl, pad, opad = _out_crop_call(plan, [(0, 5), (10, 21), (0, 259)])
    part = conv3d_transpose(x[:, :, sl[0], sl[1], sl[2]], w, None, stride=2, padding=pad,
                            output_padding=opad)
    assert _same_bits(part, y[:, :, 0:5, 10:21, 0:259])
