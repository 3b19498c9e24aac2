"""Processes: children made by multiprocessing's 'fork', 'spawn' and 'forkserver' after
the parent's kernels ran on several threads compute the same results (a forked child on
one thread: GNU OpenMP's pool does not survive a fork, and a child that started a
parallel region would wait forever); Ctrl-C (SIGINT sent by the parent) stops a long pass
of a child's main thread within seconds and leaves the child usable, without cutting
short the passes of its other threads or taking the place of a handler of its own. Every
wait is bounded, so a hang fails the test."""
import json
import multiprocessing as mp
import os
import signal
import sys
import time

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


TESTS = os.path.dirname(os.path.abspath(__file__))

# A long forward pass, then a long backward pass, in the main thread, each stopped by a
# SIGINT from the parent, while another thread runs short passes all along; then a small
# call checked against the reference, and Ctrl-C once more, outside any pass.
_INTERRUPTED_CHILD = r"""
import json, signal, sys, threading, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import conv3dt
from reference import ref_conv3d_transpose, rel_err, resolve

r = np.random.default_rng(0)
x = r.standard_normal((1, 64, 64, 64, 64)).astype(np.float32)
w = r.standard_normal((64, 64, 7, 7, 7)).astype(np.float32)   # about 10 s on 2 threads
xs = r.standard_normal((1, 32, 32, 32, 32)).astype(np.float32)
ws = r.standard_normal((32, 32, 5, 5, 5)).astype(np.float32)  # a few tenths of a second
expected = conv3dt.conv3d_transpose(xs, ws, padding=2).tobytes()
stop = threading.Event()
side = []                                 # (start, end, outcome) of the other thread's calls

def other_thread():
    while not stop.is_set():
        start = time.monotonic()
        try:
            same = conv3dt.conv3d_transpose(xs, ws, padding=2).tobytes() == expected
            outcome = "same" if same else "different"
        except BaseException as exc:       # reported to the parent
            outcome = repr(exc)
        side.append((start, time.monotonic(), outcome))

thread = threading.Thread(target=other_thread)
thread.start()

def long_call(what, call):
    print("ready", what, flush=True)
    start = time.monotonic()
    try:
        call()
        print("finished", time.monotonic() - start, flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)

long_call("forward", lambda: conv3dt.conv3d_transpose(x, w, padding=3))
long_call("backward", lambda: conv3dt.conv3d_transpose_backward(x, x, w, padding=3))
stop.set()
thread.join()
print(json.dumps(side), flush=True)

# the process stays usable: a small call right after is exact
xt = r.standard_normal((2, 4, 5, 4, 6))
wt = r.standard_normal((4, 3, 3, 2, 3))
bt = r.standard_normal(3)
y = conv3dt.conv3d_transpose(xt, wt, bt, stride=2, padding=1)
stride, pad_lo, pad_hi, dilation, out_size = resolve(xt.shape[2:], wt.shape[2:], 2, 1)
ref = ref_conv3d_transpose(xt, wt, bt, stride, pad_lo, pad_hi, dilation, 1, out_size)
print("usable", rel_err(y, ref) < 1e-12, flush=True)
# Python's own handler is back: Ctrl-C outside a pass raises KeyboardInterrupt
try:
    signal.raise_signal(signal.SIGINT)
    time.sleep(0.5)
    print("restored False", flush=True)
except KeyboardInterrupt:
    print("restored True", flush=True)
"""


def _send_sigint(child, what):
    """Wait until the child starts its long `what` pass, let it run a second, then send
    SIGINT; the time it was sent."""
    assert child.line(120) == f"ready {what}"
    time.sleep(1.0)
    sent = time.monotonic()
    os.kill(child.proc.pid, signal.SIGINT)
    return sent


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT from another process")
def test_ctrl_c_stops_a_long_pass_of_the_main_thread_and_leaves_the_process_usable():
    from child import started_python

    env = dict(os.environ, CONV3DT_NUM_THREADS="2")
    with started_python(_INTERRUPTED_CHILD, TESTS, env=env) as child:
        sent = {}
        for what in ("forward", "backward"):
            sent[what] = _send_sigint(child, what)
            outcome, at = child.line(120).split()
            # not "finished": the pass was cut short, within 3 s of the signal
            assert outcome == "interrupted", (what, outcome, at)
            assert float(at) - sent[what] < 3.0, (what, float(at) - sent[what])
        side = json.loads(child.line(60))
        assert side and all(outcome == "same" for _, _, outcome in side), side
        # the other thread had a pass in flight at each signal, and it was not cut short
        for what, t in sent.items():
            assert any(start < t < end for start, end, _ in side), (what, t, side)
        assert child.line(60) == "usable True"
        assert child.line(60) == "restored True"
        code, err = child.finish(60)
    assert code == 0, err


# A handler of the user's for SIGINT: passes leave it alone (they run to the end, and the
# handler runs once the pass in flight returned).
_OWN_HANDLER_CHILD = r"""
import json, signal, time
import numpy as np
import conv3dt

calls = []
signal.signal(signal.SIGINT, lambda signum, frame: calls.append(time.monotonic()))
r = np.random.default_rng(0)
x = r.standard_normal((1, 32, 40, 40, 40)).astype(np.float32)
w = r.standard_normal((32, 32, 5, 5, 5)).astype(np.float32)   # a few tenths of a second
expected = conv3dt.conv3d_transpose(x, w, padding=2).tobytes()
print("ready", flush=True)
spans = []
while not calls and len(spans) < 100:
    start = time.monotonic()
    same = conv3dt.conv3d_transpose(x, w, padding=2).tobytes() == expected
    spans.append((start, time.monotonic(), same))
time.sleep(0.2)
print(json.dumps({"calls": calls, "spans": spans,
                  "handler": signal.getsignal(signal.SIGINT) is not signal.default_int_handler}),
      flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT from another process")
def test_a_sigint_handler_of_the_users_is_called_and_the_pass_runs_to_the_end():
    from child import started_python

    env = dict(os.environ, CONV3DT_NUM_THREADS="2")
    with started_python(_OWN_HANDLER_CHILD, env=env) as child:
        assert child.line(120) == "ready"
        time.sleep(0.5)
        sent = time.monotonic()
        os.kill(child.proc.pid, signal.SIGINT)
        report = json.loads(child.line(120))
        code, err = child.finish(60)
    assert code == 0, err
    assert len(report["calls"]) == 1, report      # the user's handler ran, once
    assert report["handler"], report              # and it is still the one installed
    spans = report["spans"]
    assert all(same for _, _, same in spans), spans  # no pass was cut short ...
    # ... in particular not the one in flight when the signal came
    assert any(start < sent < end for start, end, _ in spans), (sent, spans)
