"""Concurrency: kernels release the GIL, concurrent calls from Python threads are correct,
the thread count may change while another thread computes, and BLAS limits survive."""
import threading
import time

import numpy as np
import pytest

import conv3dt
import conv3dt.functional as F
from conv3dt import _threads


@pytest.fixture
def restore_threads():
    before = conv3dt.get_num_threads()
    yield
    conv3dt.set_num_threads(before)


def _problem(seed, dtype=np.float32):
    r = np.random.default_rng(seed)
    cin, cout = 4 + seed % 3, 3 + seed % 4
    x = r.standard_normal((2, cin, 6 + seed % 3, 7, 5)).astype(dtype)
    w = r.standard_normal((cin, cout, 3, 2, 3)).astype(dtype)
    kw = dict(stride=[2, 1, 2][seed % 3], padding=seed % 2, dilation=1 + seed % 2)
    return x, w, kw


def test_eight_threads_at_once_get_correct_results(restore_threads):
    conv3dt.set_num_threads(2)
    problems = [_problem(s) for s in range(8)]
    expected = [F.conv3d_transpose(x, w, **kw) for x, w, kw in problems]
    expected_grads = [F.conv3d_transpose_backward(y, x, w, **kw)
                      for y, (x, w, kw) in zip(expected, problems)]
    barrier = threading.Barrier(8)
    errors = []

    def work(i):
        x, w, kw = problems[i]
        barrier.wait()
        try:
            for _ in range(15):
                y = F.conv3d_transpose(x, w, **kw)
                assert y.tobytes() == expected[i].tobytes()
                grads = F.conv3d_transpose_backward(y, x, w, **kw)
                assert all(a.tobytes() == b.tobytes() for a, b in zip(grads, expected_grads[i]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append((i, exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_kernels_release_the_gil(restore_threads):
    """A Python thread keeps running while another thread is inside a long kernel call."""
    conv3dt.set_num_threads(1)
    r = np.random.default_rng(0)
    x = r.standard_normal((1, 32, 16, 16, 16)).astype(np.float32)
    w = r.standard_normal((32, 32, 3, 3, 3)).astype(np.float32)
    F.conv3d_transpose(x, w, stride=2)                   # warm caches and plans
    start = time.perf_counter()
    F.conv3d_transpose(x, w, stride=2)
    alone = time.perf_counter() - start
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.01)
    begin = time.perf_counter()
    for _ in range(3):
        F.conv3d_transpose(x, w, stride=2)
    end = time.perf_counter()
    done.set()
    t.join()
    inside = [v for v in ticks if begin < v < end]
    # With the GIL held the ticker could not run at all during the calls; the switch
    # interval (5 ms) bounds how long a GIL-holding call would let it wait.
    assert (end - begin) > 3 * alone * 0.5
    assert len(inside) >= max(3, int((end - begin) / 0.005) // 4), (len(inside), end - begin)


def test_changing_the_thread_count_while_computing_is_safe(restore_threads):
    x, w, kw = _problem(1)
    x = np.repeat(x, 4, axis=0)
    expected = F.conv3d_transpose(x, w, **kw)
    gexp = F.conv3d_transpose_backward(expected, x, w, **kw)
    stop = threading.Event()

    def flip():
        n = 0
        while not stop.is_set():
            conv3dt.set_num_threads(1 + n % 3)
            n += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for _ in range(40):
            y = F.conv3d_transpose(x, w, **kw)
            assert y.tobytes() == expected.tobytes()
            g = F.conv3d_transpose_backward(y, x, w, **kw)
            assert all(a.tobytes() == b.tobytes() for a, b in zip(g, gexp))
    finally:
        stop.set()
        flipper.join()
