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
