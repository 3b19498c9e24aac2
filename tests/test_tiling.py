"""The CPU kernels' tiling paths, forced on small problems by shrinking the tile sizes.

With the library's own sizes, small problems fit one tile, one block of channels and one
slab, so the code that splits work (row tiles, tiles of several planes, blocks of input
or output channels accumulated into the output, row blocks of the product, many slabs
and grad_weight chunks) only runs on large volumes. Here the sizes are made tiny and
the results compared with the float64 reference.
"""
import numpy as np
import pytest

from conv3dt import _cpu
from conv3dt.functional import conv3d_transpose, conv3d_transpose_backward
from reference import from_ncdhw, ref_backward, ref_conv3d_transpose, rel_err, resolve, \
    tol_for

# name: tile sizes (columns per tile, W rows per product call, window bytes, slab bytes,
# grad_weight chunk bytes); the direct path for few output channels forced on in one and
# off in the other, whatever the variant's own crossover
TILINGS = {
    # row tiles of one or two rows, one channel per window block, slabs of one depth
    # stride, product calls of a few rows, many grad_weight chunks
    "rows": _cpu.Tuning(ncol=12, kblock=5, window_bytes=1, slab_bytes=1, chunk_bytes=1,
                        direct_cout=2),
    # tiles of several whole (small) planes, two channels per window block
    "planes": _cpu.Tuning(ncol=80, kblock=7, window_bytes=3000, slab_bytes=600,
                          chunk_bytes=1 << 30, direct_cout=0),
}

# (N, C_in, C_out, input DHW, kernel, stride, padding, output_padding, dilation, groups)
CASES = [
    (2, 3, 8, (4, 5, 6), 3, 2, 1, 1, 1, 1),         # two w-phases, odd one first
    (1, 10, 7, (3, 4, 5), 2, 2, 0, 0, 1, 1),        # two w-phases, even one first
    (2, 9, 13, (3, 3, 4), 4, 2, 1, 0, 1, 1),        # 2 taps per phase, two panels of C_out
    (1, 4, 6, (4, 4, 4), 3, 1, 1, 0, 1, 1),         # one phase
    (1, 5, 4, (3, 4, 7), (1, 3, 3), (1, 2, 2), (0, 1, 1), (0, 1, 1), 1, 1),
    (1, 3, 5, (3, 5, 4), 3, 3, 2, 1, 1, 1),         # stride 3: outputs with no tap
    (1, 6, 6, (4, 4, 5), 3, 1, 2, 0, 2, 2),         # dilation, groups
    (1, 4, 4, (3, 4, 5), 3, 2, 1, 1, 1, 4),         # depthwise
    (1, 12, 2, (3, 4, 4), 2, 1, 0, 0, 1, 1),        # few output channels (direct path)
    (1, 3, 5, (3, 4, 20), 3, 1, 1, 0, 1, 1),        # rows of 3 vectors: boundary rows alone
    (1, 3, 4, (3, 3, 18), 4, 2, 1, 0, 1, 1),        # the same with two phases per axis
]


@pytest.fixture(params=sorted(TILINGS))
def tiling(request):
    with _cpu.tuned(TILINGS[request.param]):
        yield request.param


def _arrays(case, dtype, seed):
    n, c_in, c_out, size, k, stride, pad, out_pad, dil, groups = case
    k3 = k if isinstance(k, tuple) else (k,) * 3
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c_in) + size)
    w = r.standard_normal((c_in, c_out // groups) + k3)
    b = r.standard_normal(c_out)
    kwargs = dict(stride=stride, padding=pad, output_padding=out_pad, dilation=dil,
                  groups=groups)
    geometry = resolve(size, k3, stride, pad, out_pad, dil)
    return r, x, w, b, kwargs, geometry


@pytest.mark.parametrize("data_format", ["NCDHW", "NDHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[3])) + f"k{c[4]}s{c[5]}")
def test_tiled_forward_and_gradients_match_reference(tiling, case, dtype, data_format):
    groups = case[-1]
    r, x, w, b, kwargs, (s, lo, hi, d, out) = _arrays(case, dtype, seed=len(tiling))
    y_ref = ref_conv3d_transpose(x, w, b, s, lo, hi, d, groups, out)
    gy = r.standard_normal(y_ref.shape)
    refs = ref_backward(gy, x, w, s, lo, hi, d, groups, out)

    xf = from_ncdhw(x, data_format).astype(dtype)
    y = conv3d_transpose(xf, w.astype(dtype), b.astype(dtype), data_format=data_format,
                         **kwargs)
    assert rel_err(y, from_ncdhw(y_ref, data_format)) <= tol_for(dtype)

    got = conv3d_transpose_backward(from_ncdhw(gy, data_format).astype(dtype), xf,
                                    w.astype(dtype), data_format=data_format, **kwargs)
    for name, g, ref in zip(("grad_x", "grad_weight", "grad_bias"), got,
                            (from_ncdhw(refs[0], data_format), refs[1], refs[2])):
        assert rel_err(g, ref) <= tol_for(dtype), name
