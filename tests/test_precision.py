"""Accuracy of the bias gradient on a large sum whose terms cancel: float32 within a few
ulps of the exact sum (the sum is accumulated in double), compared with math.fsum of the
same float32 terms."""
import math

import numpy as np
import pytest

from conv3dt.functional import conv3d_transpose_backward


def _cancelling(shape, seed):
    r = np.random.default_rng(seed)
    terms = r.standard_normal(shape) * 0.625
    terms += (15.8 - terms.sum()) / terms.size     # they sum to about 15.8
    return terms.astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_float32_bias_gradient_of_a_cancelling_sum_is_within_a_few_ulps(seed):
    gy = _cancelling((3, 24, 27, 27, 1), seed)              # NDHWC, 52,488 terms
    x = np.ones((3, 24, 27, 27, 1), np.float32)
    w = np.ones((1, 1, 1, 1, 1), np.float32)
    gb = conv3d_transpose_backward(gy, x, w, data_format="NDHWC",
                                   needs=(False, False, True))[2]
    exact = math.fsum(gy.astype(np.float64).ravel())
    magnitude = float(np.abs(gy.astype(np.float64)).sum())
    assert magnitude > 100 * abs(exact)                      # the terms cancel
    ulp = np.spacing(np.float32(abs(exact)))
    assert abs(float(gb[0]) - exact) <= 2 * ulp, (float(gb[0]), exact, ulp)


def test_bias_gradient_per_channel_across_batch_and_layout():
    r = np.random.default_rng(5)
    gy = r.standard_normal((2, 7, 9, 10, 11)).astype(np.float32) * 100
    x = np.ones((2, 3, 9, 10, 11), np.float32)
    w = np.ones((3, 7, 1, 1, 1), np.float32)
    gb = conv3d_transpose_backward(gy, x, w, needs=(False, False, True))[2]
    exact = [math.fsum(gy[:, c].astype(np.float64).ravel()) for c in range(7)]
    for c in range(7):
        assert abs(float(gb[c]) - exact[c]) <= 2 * np.spacing(np.float32(abs(exact[c])))
