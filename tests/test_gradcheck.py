"""Finite-difference checks of the library's gradients (float64).

loss(x, w, b) = sum(conv3d_transpose(x, w, b) * gy) with a random gy.  Along random
directions v, <grad, v> must equal the central difference
(loss(p + eps v) - loss(p - eps v)) / (2 eps).  The loss is bilinear in (x, w) plus
linear in b, so the central difference of a joint direction is exact up to rounding:
the tolerance only has to cover floating-point error.

These checks use only the library's own forward pass and finite differences; they do not
depend on tests/reference.py.
"""
import numpy as np
import pytest

EPS = 1e-3

CONFIGS = [
    # (x shape NCDHW, C_out, kernel, kwargs)
    ((2, 3, 3, 4, 2), 2, (3, 2, 2), dict(stride=2, padding=1)),
    ((1, 4, 3, 3, 3), 6, (2, 3, 2), dict(stride=[1, 2, 3], padding=[0, 1, 1, 0, 2, 1],
                                         groups=2, dilation=[2, 1, 1])),
    ((2, 2, 4, 2, 3), 2, (3, 3, 1), dict(stride=3, padding=[1, 0, 0], output_padding=[2, 1, 0],
                                         dilation=[1, 2, 1])),
    ((1, 6, 3, 2, 2), 3, (2, 2, 3), dict(stride=2, padding="SAME", groups=3,
                                         data_format="NDHWC")),
    ((2, 2, 3, 3, 2), 4, (3, 2, 2), dict(stride=[2, 2, 1], padding="VALID", dilation=2,
                                         output_size=[9, 8, 4])),
    ((1, 3, 2, 3, 3), 3, (4, 2, 3), dict(stride=2, padding="SAME_UPPER", output_padding=1,
                                         data_format="NDHWC")),
    ((1, 2, 3, 2, 2), 2, (3, 3, 3), dict(stride=2, padding="SAME_LOWER")),
    ((1, 4, 2, 3, 2), 4, (2, 3, 2), dict(stride=[2, 3, 2], groups=4, output_size=[4, 9, 3],
                                         padding=[[0, 0], [0, 0], [1, 0], [0, 1], [1, 1]])),
]


def _arrays(seed, xshape, cout, ks, kw):
    r = np.random.default_rng(seed)
    groups = kw.get("groups", 1)
    x = r.standard_normal(xshape)
    if kw.get("data_format", "NCDHW") == "NDHWC":
        x = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 4, 1)))
    w = r.standard_normal((xshape[1], cout // groups) + ks)
    b = r.standard_normal(cout)
    return r, x, w, b


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_directional_derivatives(F, i):
    xshape, cout, ks, kw = CONFIGS[i]
    r, x, w, b = _arrays(i, xshape, cout, ks, kw)
    y = F.conv3d_transpose(x, w, b, **kw)
    gy = r.standard_normal(y.shape)

    def loss(xx, ww, bb):
        return float(np.sum(F.conv3d_transpose(xx, ww, bb, **kw) * gy))

    gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, **kw)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape

    for trial in range(3):
        vx = r.standard_normal(x.shape)
        vw = r.standard_normal(w.shape)
        vb = r.standard_normal(b.shape)
        zx, zw, zb = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
        for name, grad, v, dirs in [("gx", gx, vx, (vx, zw, zb)), ("gw", gw, vw, (zx, vw, zb)),
                                    ("gb", gb, vb, (zx, zw, vb))]:
            plus = loss(x + EPS * dirs[0], w + EPS * dirs[1], b + EPS * dirs[2])
            minus = loss(x - EPS * dirs[0], w - EPS * dirs[1], b - EPS * dirs[2])
            fd = (plus - minus) / (2 * EPS)
            an = float(np.vdot(grad, v))
            scale = float(np.abs(grad).ravel() @ np.abs(v).ravel()) + 1.0
            assert abs(fd - an) <= 1e-8 * scale, (name, trial, fd, an)
        # joint direction: exact for the (quadratic) loss
        fd = (loss(x + EPS * vx, w + EPS * vw, b + EPS * vb)
              - loss(x - EPS * vx, w - EPS * vw, b - EPS * vb)) / (2 * EPS)
        an = float(np.vdot(gx, vx) + np.vdot(gw, vw) + np.vdot(gb, vb))
        scale = float(np.abs(gx).ravel() @ np.abs(vx).ravel()
                      + np.abs(gw).ravel() @ np.abs(vw).ravel()
                      + np.abs(gb) @ np.abs(vb)) + 1.0
        assert abs(fd - an) <= 1e-8 * scale, ("joint", trial, fd, an)


@pytest.mark.parametrize("i", [1, 3, 5])
def test_elementwise_finite_differences(F, i):
    """Every element of gx, gw and gb against a central difference along its unit vector."""
    xshape, cout, ks, kw = CONFIGS[i]
    r, x, w, b = _arrays(100 + i, xshape, cout, ks, kw)
    gy = r.standard_normal(F.conv3d_transpose(x, w, b, **kw).shape)

    def loss(xx, ww, bb):
        return float(np.sum(F.conv3d_transpose(xx, ww, bb, **kw) * gy))

    gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, **kw)
    for which, arr, grad in [(0, x, gx), (1, w, gw), (2, b, gb)]:
        fd = np.empty(arr.shape)
        for idx in np.ndindex(*arr.shape):
            args_p = [x, w, b]
            args_m = [x, w, b]
            p = arr.copy()
            p[idx] += EPS
            m = arr.copy()
            m[idx] -= EPS
            args_p[which] = p
            args_m[which] = m
            fd[idx] = (loss(*args_p) - loss(*args_m)) / (2 * EPS)
        scale = np.max(np.abs(fd)) + 1.0
        assert np.max(np.abs(fd - grad)) <= 1e-8 * scale, which


def test_float32_gradients_close_to_float64(F):
    """float32 gradients of a random problem agree with the float64 ones."""
    xshape, cout, ks, kw = CONFIGS[1]
    r, x, w, b = _arrays(7, xshape, cout, ks, kw)
    gy = r.standard_normal(F.conv3d_transpose(x, w, b, **kw).shape)
    g64 = F.conv3d_transpose_backward(gy, x, w, **kw)
    g32 = F.conv3d_transpose_backward(gy.astype(np.float32), x.astype(np.float32),
                                      w.astype(np.float32), **kw)
    for a, b_ in zip(g32, g64):
        assert a.dtype == np.float32
        assert np.max(np.abs(a - b_)) <= 1e-5 * np.max(np.abs(b_))
