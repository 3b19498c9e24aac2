"""The GPU backend (conv3dt._cuda), exercised on every CI run with NumPy as the array module.

conv3dt._cuda writes all its array logic against an array module ``xp`` (CuPy by default),
so calling ``forward``/``backward`` with ``xp=numpy`` runs the very code the GPU runs,
minus cuBLAS. These tests compare it with

- every PaddlePaddle reference case in tests/data/paddle_conv3d_transpose.npz (output and
  the three gradients; relative max error 1e-10 float64, 1e-5 float32),
- the CPU kernels (conv3dt.functional on NumPy arrays) on random configurations drawn by
  hypothesis (every padding form, groups, dilation, output_size, output_padding, NDHWC as
  transposed views, strided inputs, both dtypes, bias or not),
- itself with a tiny workspace, which forces batch and depth chunking.

Tests named ``test_gpu_*`` run the public API on CuPy arrays; they are skipped unless CuPy and a
CUDA device are available. Without CuPy, a GPU array must raise a RuntimeError that says
what to install.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from reference import load_golden
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conv3dt import _cuda
from conv3dt import functional as F
from conv3dt._geometry import resolve
from gpu_shim import NumpyGpuArray, numpy_as_cupy
from spies import record_calls

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def rel_err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    scale = np.abs(ref).max() if ref.size else 0.0
    return float(np.abs(a - ref).max() / scale) if scale > 0 else float(np.abs(a).max())


def ncdhw(a, data_format):
    return a if data_format == "NCDHW" else a.transpose(0, 4, 1, 2, 3)


def run_backend(plan, x, w, b, gy, needs=(True, True, True), xp=np):
    """(y, gx, gw, gb) from conv3dt._cuda with array module ``xp``, in plan's layout."""
    df = plan.data_format
    y = xp.empty(plan.y_shape, dtype=x.dtype)
    _cuda.forward(plan, ncdhw(x, df), xp.ascontiguousarray(w), b, ncdhw(y, df), xp=xp)
    gx = xp.empty(plan.x_shape, dtype=x.dtype) if needs[0] else None
    gw = xp.empty(plan.w_shape, dtype=x.dtype) if needs[1] else None
    gb = xp.empty((plan.c_out,), dtype=x.dtype) if needs[2] else None
    _cuda.backward(plan, ncdhw(gy, df), ncdhw(x, df), xp.ascontiguousarray(w),
                   None if gx is None else ncdhw(gx, df), gw, gb, xp=xp)
    return y, gx, gw, gb


# --------------------------------------------------------------------------------------
# golden cases (PaddlePaddle)
# --------------------------------------------------------------------------------------

CASES, ARRAYS = load_golden()


def _kwargs(cfg):
    kw = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
              groups=cfg["groups"], data_format=cfg["data_format"])
    for key in ("output_padding", "output_size"):
        if key in cfg:
            kw[key] = cfg[key]
    return kw


def test_golden_file_has_every_case():
    assert sorted(c["id"] for c in CASES) == list(range(60))


@pytest.mark.parametrize("case", CASES, ids=[f"case{c['id']}" for c in CASES])
def test_golden_case(case):
    cid = case["id"]
    a = {name: ARRAYS[f"{cid}/{name}"] for name in ("x", "w", "b", "y", "gy", "gx", "gw", "gb")
         if f"{cid}/{name}" in ARRAYS}
    plan = resolve(a["x"].shape, a["w"].shape, **_kwargs(case["cfg"]))
    y, gx, gw, gb = run_backend(plan, a["x"], a["w"], a.get("b"), a["gy"])
    tol = TOL[a["x"].dtype]
    for got, name in ((y, "y"), (gx, "gx"), (gw, "gw")):
        assert got.dtype == a["x"].dtype
        assert rel_err(got, a[name]) <= tol, (cid, name, rel_err(got, a[name]))
    if "gb" in a:
        # Paddle's float32 grad_bias of case 44 is itself 1.9e-5 from the exact sum (see
        # tests/test_golden.py): accept Paddle's value or the exact float64 sum.
        exact = a["gy"].astype(np.float64).sum(
            axis=(0, 2, 3, 4) if plan.data_format == "NCDHW" else (0, 1, 2, 3))
        assert min(rel_err(gb, a["gb"]), rel_err(gb, exact)) <= tol, (cid, "gb")


# --------------------------------------------------------------------------------------
# random configurations against the CPU kernels
# --------------------------------------------------------------------------------------

def _padding(draw, data_format):
    form = draw(st.sampled_from(["int", "3", "6", "pairs", "SAME", "VALID", "same",
                                 "SAME_UPPER", "SAME_LOWER"]))
    p = st.integers(0, 2)
    if form == "int":
        return draw(p)
    if form == "3":
        return [draw(p) for _ in range(3)]
    if form == "6":
        return [draw(p) for _ in range(6)]
    if form == "pairs":
        spatial = [[draw(p), draw(p)] for _ in range(3)]
        return ([[0, 0], [0, 0]] + spatial if data_format == "NCDHW"
                else [[0, 0]] + spatial + [[0, 0]])
    return form


@st.composite
def configs(draw):
    data_format = draw(st.sampled_from(["NCDHW", "NDHWC"]))
    groups = draw(st.integers(1, 3))
    cig, cog = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(1, 3))
    in_size = tuple(draw(st.integers(1, 4)) for _ in range(3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(3))
    stride = draw(st.one_of(st.integers(1, 3), st.tuples(*[st.integers(1, 3)] * 3)))
    dilation = draw(st.one_of(st.integers(1, 2), st.tuples(*[st.integers(1, 2)] * 3)))
    padding = _padding(draw, data_format)
    extra = draw(st.sampled_from(["none", "output_padding", "output_size"]))
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              data_format=data_format)
    c_in = cig * groups
    x_shape = ((n, c_in) + in_size if data_format == "NCDHW" else (n,) + in_size + (c_in,))
    w_shape = (c_in, cog) + kernel
    try:
        base = resolve(x_shape, w_shape, **kw)
    except ValueError:
        assume(False)
    if extra == "output_padding":
        limit = [max(s, d) for s, d in zip(base.stride, base.dilation)]
        kw["output_padding"] = [draw(st.integers(0, m - 1)) for m in limit]
    elif extra == "output_size":
        kw["output_size"] = [o + draw(st.integers(0, s - 1))
                             for o, s in zip(base.out_size, base.stride)]
    try:
        plan = resolve(x_shape, w_shape, **kw)
    except ValueError:
        assume(False)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    bias = draw(st.booleans())
    strided = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return plan, kw, dtype, bias, strided, seed


def _inputs(plan, dtype, bias, strided, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal(plan.x_shape).astype(dtype)
    w = r.standard_normal(plan.w_shape).astype(dtype)
    b = r.standard_normal(plan.c_out).astype(dtype) if bias else None
    gy = r.standard_normal(plan.y_shape).astype(dtype)
    if strided:
        # every other element of a bigger buffer: a non-contiguous view
        def spread(a):
            big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
            big[::2, ::2, ::2, ::2, ::2] = a
            return big[::2, ::2, ::2, ::2, ::2]
        x, gy = spread(x), spread(gy)
    return x, w, b, gy


def _check_against_cpu(plan, kw, dtype, bias, strided, seed):
    x, w, b, gy = _inputs(plan, dtype, bias, strided, seed)
    tol = TOL[np.dtype(dtype)]
    y, gx, gw, gb = run_backend(plan, x, w, b, gy)
    y_cpu = F.conv3d_transpose(x, w, b, **kw)
    gx_cpu, gw_cpu, gb_cpu = F.conv3d_transpose_backward(gy, x, w, **kw)
    for got, ref, name in ((y, y_cpu, "y"), (gx, gx_cpu, "gx"), (gw, gw_cpu, "gw"),
                           (gb, gb_cpu, "gb")):
        assert got.dtype == ref.dtype == np.dtype(dtype)
        assert rel_err(got, ref) <= tol, (name, rel_err(got, ref), plan)


@settings(max_examples=250)
@given(configs())
def test_random_against_cpu(cfg):
    _check_against_cpu(*cfg)


@settings(max_examples=60)
@given(configs())
def test_random_chunked_matches_unchunked(cfg):
    """A workspace of one byte forces one sample and one depth plane per chunk."""
    plan, kw, dtype, bias, strided, seed = cfg
    x, w, b, gy = _inputs(plan, dtype, bias, strided, seed)
    whole = run_backend(plan, x, w, b, gy)
    saved = _cuda.WORKSPACE_BYTES
    _cuda.WORKSPACE_BYTES = 1
    try:
        chunked = run_backend(plan, x, w, b, gy)
    finally:
        _cuda.WORKSPACE_BYTES = saved
    tol = TOL[np.dtype(dtype)]
    for got, ref in zip(chunked, whole):
        assert rel_err(got, ref) <= tol


@pytest.mark.parametrize("workspace", [1, 3000, 40000])
def test_chunking_partial_batches(workspace, monkeypatch):
    """Chunks of several samples (with a short last chunk) and of several depth planes."""
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, data_format="NCDHW")
    plan = resolve((5, 4, 5, 3, 4), (4, 3, 3, 3, 3), **kw)
    x, w, b, gy = _inputs(plan, np.float64, True, False, 7)
    monkeypatch.setattr(_cuda, "WORKSPACE_BYTES", workspace)
    got = run_backend(plan, x, w, b, gy)
    ref = (F.conv3d_transpose(x, w, b, **kw),) + F.conv3d_transpose_backward(gy, x, w, **kw)
    for g, r in zip(got, ref):
        assert rel_err(g, r) <= 1e-12


def test_chunks_respect_budget():
    budget = _cuda.WORKSPACE_BYTES // 8
    assert _cuda._chunks(4, 10, 100, 8) == (4, 10)
    nb, pb = _cuda._chunks(10**6, 10, 100, 8)
    assert pb == 10 and nb * 10 * 100 <= budget
    nb, pb = _cuda._chunks(3, 10**6, 10**3, 8)
    assert nb == 1 and pb * 10**3 <= budget
    assert _cuda._chunks(3, 10, 10**12, 8) == (1, 1)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False),
                                   (False, False, True), (True, True, False)])
def test_partial_gradients(needs):
    kw = dict(stride=(2, 1, 3), padding=[1, 0, 2, 1, 0, 1], dilation=(1, 2, 1))
    plan = resolve((2, 3, 3, 4, 2), (3, 2, 3, 2, 2), **kw)
    x, w, b, gy = _inputs(plan, np.float64, False, False, 3)
    _, gx, gw, gb = run_backend(plan, x, w, b, gy, needs=needs)
    ref = F.conv3d_transpose_backward(gy, x, w, **kw)
    for got, r, need in zip((gx, gw, gb), ref, needs):
        if need:
            assert rel_err(got, r) <= 1e-12
        else:
            assert got is None


def test_uncovered_outputs_hold_bias():
    """Stride larger than the kernel's reach: some outputs receive no tap at all."""
    kw = dict(stride=4, output_padding=3)
    plan = resolve((1, 2, 2, 2, 2), (2, 3, 2, 1, 2), **kw)
    x, w, b, gy = _inputs(plan, np.float32, True, False, 11)
    y = run_backend(plan, x, w, b, gy)[0]
    assert rel_err(y, F.conv3d_transpose(x, w, b, **kw)) <= 1e-6
    assert np.array_equal(y[0, :, 3, 3, 3], b)


def test_shared_gather_k_equals_s():
    """k == s, no padding: every phase combination reads the input unshifted, so they are
    one group (one gather, one GEMM)."""
    plan = resolve((1, 4, 3, 3, 3), (4, 2, 2, 2, 2), stride=2)
    groups, covers_all = _cuda._forward_schedule(plan)
    assert covers_all and len(groups) == 1 and len(groups[0].o0) == 8


def test_empty_batch():
    plan = resolve((0, 2, 3, 3, 3), (2, 2, 3, 3, 3), stride=2, padding=1)
    x = np.zeros(plan.x_shape)
    w = np.ones(plan.w_shape)
    gy = np.zeros(plan.y_shape)
    y, gx, gw, gb = run_backend(plan, x, w, np.ones(plan.c_out), gy)
    assert y.shape == plan.y_shape and gx.shape == plan.x_shape
    assert np.array_equal(gw, np.zeros(plan.w_shape)) and np.array_equal(gb, np.zeros(2))


def test_inputs_untouched():
    kw = dict(stride=2, padding="SAME", data_format="NDHWC", groups=2)
    plan = resolve((2, 3, 4, 3, 4), (4, 1, 3, 3, 2), **kw)
    x, w, b, gy = _inputs(plan, np.float64, True, False, 5)
    copies = [a.copy() for a in (x, w, b, gy)]
    run_backend(plan, x, w, b, gy)
    for a, c in zip((x, w, b, gy), copies):
        assert np.array_equal(a, c)


# --------------------------------------------------------------------------------------
# without CuPy
# --------------------------------------------------------------------------------------

class _FakeGpuArray:
    """Looks like a GPU array to the dispatcher (it has __cuda_array_interface__)."""

    shape = (1, 1, 2, 2, 2)
    dtype = np.dtype(np.float32)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": "<f4", "data": (0, False), "version": 3}


def test_gpu_array_without_cupy_raises_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError
    fake = _FakeGpuArray()
    with pytest.raises(RuntimeError, match=r"(?i)cupy.*install|install.*cupy") as info:
        F.conv3d_transpose(fake, fake)
    assert "pip install" in str(info.value)
    with pytest.raises(RuntimeError, match="CuPy"):
        F.conv3d_transpose_backward(fake, fake, fake)
    with pytest.raises(RuntimeError, match="CuPy"):
        plan = resolve(fake.shape, (1, 1, 1, 1, 1))
        _cuda.forward(plan, fake, fake, None, fake)


@pytest.mark.parametrize("data_format", ["NCDHW", "NDHWC"])
def test_functional_dispatches_gpu_arrays_to_cuda_backend(monkeypatch, data_format):
    """conv3dt.functional hands GPU-like arrays to conv3dt._cuda (with xp=None, so the
    backend imports 'cupy' itself) and allocates its results with 'cupy'."""
    monkeypatch.setitem(sys.modules, "cupy", numpy_as_cupy())
    calls = []
    records = [record_calls(monkeypatch, _cuda, name, order=calls)
               for name in ("forward", "backward")]
    kw = dict(stride=(2, 1, 2), padding=[1, 0, 0, 1, 2, 1], output_padding=(1, 0, 0),
              groups=2, data_format=data_format)
    plan = resolve((2, 4, 3, 4, 3) if data_format == "NCDHW" else (2, 3, 4, 3, 4),
                   (4, 3, 3, 2, 3), **kw)
    x, w, b, gy = _inputs(plan, np.float64, True, False, 9)
    gpu = [a.view(NumpyGpuArray) for a in (x, w, b, gy)]
    y = F.conv3d_transpose(gpu[0], gpu[1], gpu[2], **kw)
    grads = F.conv3d_transpose_backward(gpu[3], gpu[0], gpu[1], **kw)
    assert calls == ["forward", "backward"]
    assert all(kwargs.get("xp") is None for rec in records for _, kwargs, _ in rec)
    ref = (F.conv3d_transpose(x, w, b, **kw),) + F.conv3d_transpose_backward(gy, x, w, **kw)
    for got, r in zip((y,) + tuple(grads), ref):
        assert isinstance(got, NumpyGpuArray)
        assert rel_err(np.asarray(got), r) <= 1e-12


def test_import_never_needs_cupy():
    code = ("import sys; sys.modules['cupy'] = None; "
            "import conv3dt, conv3dt._cuda, conv3dt.functional; "
            "import numpy as np; "
            "print(conv3dt.functional.conv3d_transpose(np.ones((1,1,2,2,2)), "
            "np.ones((1,1,2,2,2)), stride=2).shape)")
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(_cuda.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=root, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "(1, 1, 4, 4, 4)" in out.stdout


# --------------------------------------------------------------------------------------
# on a GPU (skipped without CuPy and a CUDA device)
# --------------------------------------------------------------------------------------

def _cupy_or_skip():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # CUDA driver or runtime missing
        pytest.skip(f"no usable CUDA device: {exc}")
    return cp


GPU_CONFIGS = [
    dict(x=(2, 4, 3, 4, 5), w=(4, 3, 2, 2, 2), kw=dict(stride=2)),
    dict(x=(1, 4, 4, 4, 4), w=(4, 2, 3, 3, 3),
         kw=dict(stride=2, padding=1, output_padding=1)),
    dict(x=(3, 6, 3, 3, 3), w=(6, 2, 4, 4, 4), kw=dict(stride=2, padding=1, groups=3)),
    dict(x=(2, 3, 4, 5, 3, ), w=(3, 2, 3, 3, 3),
         kw=dict(stride=1, padding="SAME", data_format="NCDHW")),
    dict(x=(2, 4, 5, 3, 4), w=(4, 2, 3, 3, 3),
         kw=dict(stride=(1, 2, 2), padding=[1, 2, 0, 1, 1, 0], dilation=(2, 1, 2),
                 output_size=[5, 11, 9], data_format="NDHWC")),
    dict(x=(1, 2, 3, 4, 4), w=(2, 2, 1, 3, 3),
         kw=dict(stride=(1, 2, 2), padding=[[0, 0], [0, 0], [0, 0], [1, 1], [1, 1]],
                 output_padding=(0, 1, 1))),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", GPU_CONFIGS)
def test_gpu_functional_matches_cpu(cfg, dtype):
    cp = _cupy_or_skip()
    r = np.random.default_rng(0)
    x = r.standard_normal(cfg["x"]).astype(dtype)
    w = r.standard_normal(cfg["w"]).astype(dtype)
    kw = cfg["kw"]
    plan = resolve(x.shape, w.shape, **kw)
    b = r.standard_normal(plan.c_out).astype(dtype)
    gy = r.standard_normal(plan.y_shape).astype(dtype)
    y = F.conv3d_transpose(cp.asarray(x), cp.asarray(w), cp.asarray(b), **kw)
    assert isinstance(y, cp.ndarray) and y.dtype == dtype
    grads = F.conv3d_transpose_backward(cp.asarray(gy), cp.asarray(x), cp.asarray(w), **kw)
    ref = (F.conv3d_transpose(x, w, b, **kw),) + F.conv3d_transpose_backward(gy, x, w, **kw)
    tol = TOL[np.dtype(dtype)]
    for got, r_ in zip((y,) + tuple(grads), ref):
        assert isinstance(got, cp.ndarray)
        assert rel_err(cp.asnumpy(got), r_) <= tol


@pytest.mark.parametrize("case", CASES[::7], ids=[f"case{c['id']}" for c in CASES[::7]])
def test_gpu_golden(case):
    cp = _cupy_or_skip()
    cid = case["id"]
    a = {name: ARRAYS[f"{cid}/{name}"] for name in ("x", "w", "b", "y", "gy", "gx", "gw")
         if f"{cid}/{name}" in ARRAYS}
    plan = resolve(a["x"].shape, a["w"].shape, **_kwargs(case["cfg"]))
    dev = {k: cp.asarray(v) for k, v in a.items()}
    got = run_backend(plan, dev["x"], dev["w"], dev.get("b"), dev["gy"], xp=cp)
    tol = TOL[a["x"].dtype]
    for g, name in zip(got[:3], ("y", "gx", "gw")):
        assert rel_err(cp.asnumpy(g), a[name]) <= tol, (cid, name)


def test_gpu_deterministic_and_chunked(monkeypatch):
    cp = _cupy_or_skip()
    kw = dict(stride=2, padding=1, output_padding=1)
    r = np.random.default_rng(1)
    x = cp.asarray(r.standard_normal((3, 8, 6, 6, 6)).astype(np.float32))
    w = cp.asarray(r.standard_normal((8, 4, 3, 3, 3)).astype(np.float32))
    plan = resolve(x.shape, w.shape, **kw)
    gy = cp.asarray(r.standard_normal(plan.y_shape).astype(np.float32))
    first = [F.conv3d_transpose(x, w, **kw)] + list(F.conv3d_transpose_backward(gy, x, w, **kw))
    again = [F.conv3d_transpose(x, w, **kw)] + list(F.conv3d_transpose_backward(gy, x, w, **kw))
    for a, b in zip(first, again):
        assert bool(cp.array_equal(a, b))
    monkeypatch.setattr(_cuda, "WORKSPACE_BYTES", 1)
    chunked = [F.conv3d_transpose(x, w, **kw)] + list(F.conv3d_transpose_backward(gy, x, w,
                                                                                  **kw))
    for a, b in zip(first, chunked):
        assert rel_err(cp.asnumpy(a), cp.asnumpy(b)) <= 1e-5
