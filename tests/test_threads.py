"""Thread count control, and results that do not depend on the number of threads.

Every result (forward and all three gradients, float32 and float64) must be bitwise
identical with 1, 2 and 3 threads; shapes are large enough to span several tiles.
"""
import os

import numpy as np
import pytest

from child import run_python
from reference import ref_backward, ref_conv3d_transpose, rel_err, resolve


@pytest.fixture
def restore_threads(conv3dt):
    before = conv3dt.get_num_threads()
    yield
    conv3dt.set_num_threads(before)
    assert conv3dt.get_num_threads() == before


CASES = {
    # name: (x shape NCDHW, C_out, kernel, kwargs)
    "dense_s2": ((2, 16, 12, 12, 12), 16, (3, 3, 3), dict(stride=2, padding=1,
                                                         output_padding=1)),
    "grouped_dilated": ((2, 16, 12, 12, 12), 16, (3, 3, 3),
                        dict(stride=[2, 1, 2], padding=[1, 2, 0, 1, 2, 2], groups=4,
                             dilation=[1, 2, 2])),
    "k_eq_s_ndhwc": ((2, 12, 10, 11, 12), 8, (2, 2, 2), dict(stride=2,
                                                            data_format="NDHWC")),
}


def _arrays(name, dtype):
    xshape, cout, ks, kw = CASES[name]
    r = np.random.default_rng(sorted(CASES).index(name))
    groups = kw.get("groups", 1)
    x = r.standard_normal(xshape).astype(dtype)
    if kw.get("data_format") == "NDHWC":
        x = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 4, 1)))
    w = r.standard_normal((xshape[1], cout // groups) + ks).astype(dtype)
    b = r.standard_normal(cout).astype(dtype)
    return r, x, w, b, kw


def _all_results(F, x, w, b, gy, kw):
    y = F.conv3d_transpose(x, w, b, **kw)
    gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, **kw)
    return [y, gx, gw, gb]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(CASES))
def test_results_independent_of_thread_count(conv3dt, F, restore_threads, name, dtype):
    r, x, w, b, kw = _arrays(name, dtype)
    conv3dt.set_num_threads(1)
    y1 = F.conv3d_transpose(x, w, b, **kw)
    gy = r.standard_normal(y1.shape).astype(dtype)
    base = _all_results(F, x, w, b, gy, kw)
    for n in (2, 3, 1):
        conv3dt.set_num_threads(n)
        assert conv3dt.get_num_threads() == n
        for _ in range(2):  # and repeatable with the same count
            got = _all_results(F, x, w, b, gy, kw)
            for label, a, e in zip(("y", "gx", "gw", "gb"), got, base):
                assert a.dtype == e.dtype
                assert np.array_equal(a, e), "%s differs with %d threads" % (label, n)


@pytest.mark.parametrize("name", sorted(CASES))
def test_multithreaded_matches_reference(conv3dt, F, restore_threads, name):
    """The multi-threaded, multi-tile path is also correct (float64)."""
    r, x, w, b, kw = _arrays(name, np.float64)
    conv3dt.set_num_threads(2)
    df = kw.get("data_format", "NCDHW")
    x_ncdhw = x if df == "NCDHW" else np.transpose(x, (0, 4, 1, 2, 3))
    s, lo, hi, d, out = resolve(x_ncdhw.shape[2:], w.shape[2:], kw.get("stride", 1),
                                kw.get("padding", 0), kw.get("output_padding", 0),
                                kw.get("dilation", 1), None, df)
    groups = kw.get("groups", 1)
    ref = ref_conv3d_transpose(x_ncdhw, w, b, s, lo, hi, d, groups, out)
    y = F.conv3d_transpose(x, w, b, **kw)
    y_ncdhw = y if df == "NCDHW" else np.transpose(y, (0, 4, 1, 2, 3))
    assert rel_err(y_ncdhw, ref) <= 1e-10
    gy_ncdhw = r.standard_normal(ref.shape)
    gy = gy_ncdhw if df == "NCDHW" else np.transpose(gy_ncdhw, (0, 2, 3, 4, 1))
    gx, gw, gb = F.conv3d_transpose_backward(gy, x, w, **kw)
    rgx, rgw, rgb = ref_backward(gy_ncdhw, x_ncdhw, w, s, lo, hi, d, groups, out)
    gx_ncdhw = gx if df == "NCDHW" else np.transpose(gx, (0, 4, 1, 2, 3))
    assert rel_err(gx_ncdhw, rgx) <= 1e-10
    assert rel_err(gw, rgw) <= 1e-10
    assert rel_err(gb, rgb) <= 1e-10


def test_set_get_round_trip(conv3dt, restore_threads):
    for n in (1, 2, 3, 7, 1):
        conv3dt.set_num_threads(n)
        assert conv3dt.get_num_threads() == n
    conv3dt.set_num_threads(np.int64(2))
    assert conv3dt.get_num_threads() == 2
    assert isinstance(conv3dt.get_num_threads(), int)


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_bad_thread_count_value(conv3dt, restore_threads, bad):
    conv3dt.set_num_threads(2)
    with pytest.raises(ValueError) as ei:
        conv3dt.set_num_threads(bad)
    assert str(bad) in str(ei.value)
    assert conv3dt.get_num_threads() == 2  # unchanged by the failed call


@pytest.mark.parametrize("bad", ["a", 1.5, None, [2]])
def test_bad_thread_count_type(conv3dt, restore_threads, bad):
    conv3dt.set_num_threads(2)
    with pytest.raises((TypeError, ValueError)):
        conv3dt.set_num_threads(bad)
    assert conv3dt.get_num_threads() == 2


def _threads_in_subprocess(env_value):
    env = {k: v for k, v in os.environ.items() if k != "CONV3DT_NUM_THREADS"}
    if env_value is not None:
        env["CONV3DT_NUM_THREADS"] = env_value
    return run_python("import conv3dt; print(conv3dt.get_num_threads())", env=env)


def test_env_var_sets_default(conv3dt):
    p = _threads_in_subprocess("3")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "3"


def test_default_without_env_var_is_positive(conv3dt):
    p = _threads_in_subprocess(None)
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.strip()) >= 1


def _child(code, **env):
    """Run ``code`` in a fresh interpreter with the environment changed by ``env`` (a value
    of None removes the variable); its stdout, stripped."""
    environ = {k: v for k, v in os.environ.items()
               if k not in ("CONV3DT_NUM_THREADS", "OMP_NUM_THREADS")}
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    out = run_python(code, env=environ)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


PRINT = "import conv3dt, conv3dt._threads as t; print(conv3dt.get_num_threads(), t.thread_source())"


def test_omp_num_threads_is_honoured():
    assert _child(PRINT, OMP_NUM_THREADS="1") == "1 OMP_NUM_THREADS"
    # one count per nesting level: the first is the kernels'
    assert _child(PRINT, OMP_NUM_THREADS="3,1") == "3 OMP_NUM_THREADS"


def test_conv3dt_num_threads_takes_precedence_over_omp():
    assert _child(PRINT, OMP_NUM_THREADS="1", CONV3DT_NUM_THREADS="2") == \
        "2 CONV3DT_NUM_THREADS"


def test_default_is_the_available_cores():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count()
    assert _child(PRINT) == f"{expected} cores"


@pytest.mark.parametrize("value", ["0", "abc", "-2", ""])
def test_invalid_omp_num_threads_is_a_clear_error(conv3dt, monkeypatch, value):
    monkeypatch.setattr(conv3dt._threads, "_num_threads", None)
    monkeypatch.delenv("CONV3DT_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    if value == "":
        assert conv3dt.get_num_threads() >= 1  # unset in effect
        return
    with pytest.raises(ValueError, match=f"OMP_NUM_THREADS must be a positive integer, "
                                         f"got '{value}'"):
        conv3dt.get_num_threads()


def test_threadpoolctl_lists_and_limits_the_kernels(conv3dt, F, restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    conv3dt.set_num_threads(2)
    pools = [p for p in threadpoolctl.threadpool_info() if p["internal_api"] == "conv3dt"]
    assert len(pools) == 1, threadpoolctl.threadpool_info()
    assert pools[0]["num_threads"] == 2 and pools[0]["version"] == conv3dt.__version__
    with threadpoolctl.threadpool_limits(limits=1):
        assert conv3dt.get_num_threads() == 1
    assert conv3dt.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert conv3dt.get_num_threads() == 1
    assert conv3dt.get_num_threads() == 2


def test_threadpoolctl_limit_reaches_the_kernel_call(conv3dt, F, restore_threads,
                                                     monkeypatch):
    """The thread count the kernels are called with, under a threadpoolctl limit."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from conv3dt import _kernels
    from spies import record_calls
    calls = record_calls(monkeypatch, _kernels, "forward")
    conv3dt.set_num_threads(2)
    x = np.ones((1, 16, 16, 16, 16), np.float32)
    w = np.ones((16, 16, 3, 3, 3), np.float32)
    F.conv3d_transpose(x, w)
    with threadpoolctl.threadpool_limits(limits=1):
        F.conv3d_transpose(x, w)
    assert [args[-1] for args, _, _ in calls] == [2, 1]   # n_threads, the last argument
