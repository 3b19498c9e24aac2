"""The cache of large CPU arrays: memory is reused only once no array can reach it.

Large outputs and workspace come from blocks that conv3dt keeps after their arrays are
gone. A block given to a new array while an old array (or any view of it) still used it
would be a silently modified user array: the tests keep results alive across later
calls and check them against the float64 reference, and hold views, sub-views and
buffers of cached arrays while new ones are made.
"""
import gc
import os
import threading
import time

import numpy as np
import pytest

from child import run_python
from reference import ref_conv3d_transpose, rel_err, resolve

BIG = 2**20   # float32 elements: 4 MiB, the smallest array the cache serves


@pytest.fixture
def cache():
    """A cache of its own, so that the test sees only its arrays."""
    from conv3dt import _memory

    return _memory._Cache()


def _address(a):
    return a.__array_interface__["data"][0]


def test_large_arrays_are_aligned_contiguous_writable_views(cache):
    for dtype in (np.float32, np.float64):
        a = cache.empty((2, 3, BIG // 6 + 5), dtype)
        assert a.shape == (2, 3, BIG // 6 + 5) and a.dtype == dtype
        assert a.flags.c_contiguous and a.flags.writeable and not a.flags.owndata
        assert _address(a) % 64 == 0
        a[...] = 7
        assert float(a.sum()) == 7 * a.size


def test_small_arrays_are_plain_numpy_arrays(cache):
    a = cache.empty((BIG // 2,), np.float32)
    assert a.flags.owndata and a.base is None
    assert cache.info()["leased_bytes"] == 0


def test_a_block_is_reused_once_its_array_is_gone(cache):
    a = cache.empty((BIG,), np.float32)
    where, leased = _address(a), cache.info()["leased_bytes"]
    assert leased >= a.nbytes
    del a
    info = cache.info()
    assert info["idle_bytes"] == leased and info["leased_bytes"] == 0
    b = cache.empty((BIG + 100,), np.float32)       # about the same size: same block
    assert _address(b) == where
    assert cache.info()["idle_bytes"] == 0


def test_sizes_far_apart_do_not_share_a_block(cache):
    a = cache.empty((BIG,), np.float32)
    del a
    b = cache.empty((4 * BIG,), np.float32)        # too large for the idle block
    c = cache.empty((BIG // 2 + BIG // 4,), np.float64)  # 6 MiB: would waste > 1/8
    assert b.nbytes == 16 * 2**20
    info = cache.info()
    assert info["idle_blocks"] == 1 and info["leased_bytes"] >= b.nbytes + c.nbytes


@pytest.mark.parametrize("keep", ["view", "subview", "memoryview", "transpose", "reshape"])
def test_no_block_is_reused_while_a_view_lives(cache, keep):
    a = cache.empty((4, BIG // 4), np.float32)
    a[...] = 1.5
    held = {"view": lambda: a[1:],
            "subview": lambda: a[1:][::2, 3:],
            "memoryview": lambda: memoryview(a[2]),
            "transpose": lambda: a.T[3:, ::2],
            "reshape": lambda: a.reshape(-1)[::7]}[keep]()
    del a
    gc.collect()
    assert cache.info()["idle_bytes"] == 0
    b = cache.empty((4, BIG // 4), np.float32)
    b[...] = -3.0
    assert np.all(np.asarray(held) == 1.5)
    del held
    assert cache.info()["idle_bytes"] > 0


def test_limit_frees_the_oldest_idle_blocks(cache):
    arrays = [cache.empty((BIG,), np.float32) for _ in range(3)]
    block = cache.info()["leased_bytes"] // 3
    cache.set_limit(2 * block)
    first = _address(arrays[0])
    while arrays:
        arrays.pop(0)               # given back in this order: arrays[0] is the oldest
    info = cache.info()
    assert info["idle_bytes"] == 2 * block and info["idle_blocks"] == 2
    again = [cache.empty((BIG,), np.float32) for _ in range(2)]
    assert first not in {_address(a) for a in again}   # the oldest was freed
    cache.set_limit(0)
    del again
    assert cache.info()["idle_bytes"] == 0


def test_limit_zero_turns_the_cache_off(cache):
    cache.set_limit(0)
    a = cache.empty((BIG,), np.float32)
    assert a.flags.owndata
    cache.set_limit(10 * 2**20)
    b = cache.empty((BIG,), np.float32)
    del b
    assert cache.info()["idle_bytes"] > 0
    cache.clear()
    assert cache.info()["idle_bytes"] == 0 and cache.info()["idle_blocks"] == 0


def test_arrays_given_back_while_the_cache_is_busy_are_kept_for_later(cache):
    """An array may go while the cache's lock is held (a garbage collection started
    inside it): the block is given back without waiting for the lock."""
    a = cache.empty((BIG,), np.float32)
    with cache._lock:
        del a                       # would deadlock if giving back waited for the lock
    assert cache.info()["idle_blocks"] == 1


def test_threads_never_share_a_block(cache):
    errors = []

    def work(k):
        for i in range(40):
            arrs = [cache.empty((BIG + 1000 * j,), np.float32) for j in range(2)]
            for j, a in enumerate(arrs):
                a[...] = k * 1000 + i * 10 + j
            for j, a in enumerate(arrs):
                if not np.all(a == k * 1000 + i * 10 + j):
                    errors.append((k, i, j))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    info = cache.info()
    assert info["leased_bytes"] == 0 and info["idle_bytes"] > 0


def test_results_kept_across_calls_stay_intact(F, conv3dt):
    """Outputs and gradients large enough to come from the cache, kept while later calls
    on other inputs run, still equal the float64 reference of their own inputs."""
    r = np.random.default_rng(3)
    kw = dict(stride=2, padding=1, output_padding=1)
    w = r.standard_normal((8, 8, 3, 3, 3)).astype(np.float32)
    xs = [r.standard_normal((1, 8, 26, 26, 26)).astype(np.float32) for _ in range(3)]
    stride, lo, hi, dil, out = resolve(xs[0].shape[2:], w.shape[2:], **kw)
    kept = []
    for x in xs:
        y = F.conv3d_transpose(x, w, **kw)
        assert y.nbytes >= 4 * 2**20 and not y.flags.owndata
        kept.append((x, y[:, 2:]))      # a view only: the array itself is gone
        F.conv3d_transpose(x * 2, w, **kw)       # a result dropped at once
        F.conv3d_transpose_backward(y, x, w, **kw)
    for x, y in kept:
        ref = ref_conv3d_transpose(x, w, None, stride, lo, hi, dil, 1, out)[:, 2:]
        assert rel_err(y, ref) < 1e-5


def test_public_functions(conv3dt):
    before = conv3dt.get_cache_limit()
    try:
        conv3dt.set_cache_limit(3 * 2**20)
        assert conv3dt.get_cache_limit() == 3 * 2**20
        assert conv3dt.cache_info()["limit_bytes"] == 3 * 2**20
        conv3dt.empty_cache()
        assert conv3dt.cache_info()["idle_bytes"] == 0
        for bad, exc in ((-1, ValueError), (1.5, TypeError), (True, TypeError),
                         ("8", TypeError)):
            with pytest.raises(exc, match="nbytes"):
                conv3dt.set_cache_limit(bad)
        assert conv3dt.get_cache_limit() == 3 * 2**20
    finally:
        conv3dt.set_cache_limit(before)


@pytest.mark.parametrize("value, ok", [("0", True), ("64", True), ("0.5", True),
                                       ("-1", False), ("lots", False), ("nan", False)])
def test_environment_variable(conv3dt, value, ok):
    code = ("import numpy as np, conv3dt.functional as F, conv3dt\n"
            "y = F.conv3d_transpose(np.ones((1, 8, 40, 40, 40), np.float32),"
            " np.ones((8, 8, 2, 2, 2), np.float32), stride=2)\n"
            "print(conv3dt.get_cache_limit())\n")
    res = run_python(code, env=dict(os.environ, CONV3DT_CACHE_MIB=value))
    if ok:
        assert res.returncode == 0, res.stderr
        assert int(res.stdout.split()[-1]) == int(float(value) * 2**20)
    else:
        assert res.returncode != 0
        assert "CONV3DT_CACHE_MIB" in res.stderr and repr(value) in res.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_cache_is_busy_can_allocate():
    from conv3dt import _memory

    a = _memory.empty((BIG,), np.float32)
    with _memory._cache._lock:               # another thread inside the cache at the fork
        pid = os.fork()
        if pid == 0:                         # the child: must not wait for that thread
            try:
                b = _memory.empty((BIG,), np.float32)
                b[...] = 2
                os._exit(0 if float(b.sum()) == 2 * BIG else 1)
            except BaseException:
                os._exit(2)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if not done:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done, "the child hung on the cache's lock"
    assert os.waitstatus_to_exitcode(status) == 0
    del a
