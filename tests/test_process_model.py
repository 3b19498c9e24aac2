"""Processes: children made by multiprocessing's 'fork', 'spawn' and 'forkserver' after
the parent's kernels ran on several threads compute the same results (a forked child on
one thread: GNU OpenMP's pool does not survive a fork, and a child that started a
parallel region would wait forever). Every wait is bounded, so a hang fails the test."""
import multiprocessing as mp
import sys

import numpy as np
import pytest

import conv3dt


def _work(seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((1, 16, 16, 16, 16)).astype(np.float32)
    w = r.standard_normal((16, 16, 3, 3, 3)).astype(np.float32)
    y = conv3dt.conv3d_transpose(x, w, stride=2, padding=1)
    from conv3dt import _threads
    return y.tobytes(), conv3dt.get_num_threads(), _threads.thread_source()


@pytest.fixture
def two_threads():
    before = conv3dt.get_num_threads()
    conv3dt.set_num_threads(2)
    yield
    conv3dt.set_num_threads(before)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork on Windows")
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_children_after_a_multithreaded_parent(two_threads, method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    expected = [_work(seed)[0] for seed in range(3)]   # the parent runs on 2 threads first
    from conv3dt import _threads
    assert _threads._team_started
    with mp.get_context(method).Pool(2) as pool:
        got = pool.map_async(_work, range(3)).get(timeout=120)
    assert [g[0] for g in got] == expected
    if method == "fork":
        assert all(g[1:] == (1, "fork") for g in got), got
    else:
        assert all(g[2] != "fork" for g in got), got


def test_a_parent_that_never_ran_threads_keeps_its_count_in_forked_children(two_threads,
                                                                           monkeypatch):
    from conv3dt import _threads
    monkeypatch.setattr(_threads, "_team_started", False)
    with mp.get_context("fork").Pool(1) as pool:
        n, source = pool.apply_async(_threads_of_child).get(timeout=120)
    assert (n, source) == (2, "set_num_threads")


def _threads_of_child():
    from conv3dt import _threads
    return conv3dt.get_num_threads(), _threads.thread_source()


_INTERRUPTED_CHILD = r"""
import signal, sys, threading, time
import numpy as np
import conv3dt

conv3dt.set_num_threads(2)
r = np.random.default_rng(0)
x = r.standard_normal((4, 64, 64, 64, 64)).astype(np.float32)
w = r.standard_normal((64, 64, 7, 7, 7)).astype(np.float32)   # 1.5e12 multiply-adds: seconds
fired = []
def interrupt():
    time.sleep(0.5)
    fired.append(time.perf_counter())
    signal.raise_signal(signal.SIGINT)      # Ctrl-C, delivered to the main thread
threading.Thread(target=interrupt, daemon=True).start()
start = time.perf_counter()
try:
    conv3dt.conv3d_transpose(x, w, padding=3)
    print("finished", time.perf_counter() - start)
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - fired[0])
# the process stays usable: a small call right after is exact
xs, ws = x[:1, :4, :5, :5, :5].astype(np.float64), w[:4, :3, :3, :3, :3].astype(np.float64)
y = conv3dt.conv3d_transpose(xs, ws, padding=1)
ref = np.zeros((1, 3, 5, 5, 5))
xp = np.pad(xs, ((0, 0), (0, 0), (2, 2), (2, 2), (2, 2)))
for a in range(3):
    for b in range(3):
        for c in range(3):
            # output o reads input o + 1 - t (padding 1): a correlation with the flipped taps
            ref += np.einsum("ncdhw,co->nodhw",
                             xp[:, :, 2 - a + 1: 2 - a + 6, 2 - b + 1: 2 - b + 6,
                                2 - c + 1: 2 - c + 6], ws[:, :, a, b, c])
print("usable", bool(np.allclose(y, ref, rtol=1e-12, atol=1e-12)))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="signal.raise_signal from a thread")
def test_ctrl_c_interrupts_a_long_call_and_leaves_the_process_usable():
    from child import run_python

    res = run_python(_INTERRUPTED_CHILD, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(" ", 1) for line in res.stdout.strip().splitlines())
    assert "interrupted" in lines, res.stdout      # not "finished": the call was cut short
    # it took effect within the work items already running (well under the call's length)
    assert float(lines["interrupted"]) < 2.0, res.stdout
    assert lines["usable"] == "True", res.stdout
