"""No leaks: resident memory is stable over 10,000 small forward and backward calls."""
import gc

import numpy as np
import pytest

import conv3dt.functional as F

CALLS = 10_000


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="Linux only")
def test_resident_memory_stable_over_10000_calls():
    r = np.random.default_rng(0)
    x = r.standard_normal((1, 3, 4, 4, 4)).astype(np.float32)
    w = r.standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    b = r.standard_normal(2).astype(np.float32)
    kw = dict(stride=2, padding=1)
    winf = w.copy()
    winf[0, 0, 0, 0, 0] = np.inf

    def step(i):
        y = F.conv3d_transpose(x, w if i % 50 else winf, b, **kw)   # exact path too
        F.conv3d_transpose_backward(y, x, w, **kw)
        try:   # error paths allocate nothing that outlives them
            F.conv3d_transpose(x, w, stride=10**6)
        except MemoryError:
            pass

    for i in range(500):
        step(i)
    gc.collect()
    before = _rss_bytes()
    for i in range(CALLS):
        step(i)
    gc.collect()
    grown = _rss_bytes() - before
    assert grown < 4 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB over {CALLS} calls"
