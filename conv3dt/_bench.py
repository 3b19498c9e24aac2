"""CPU benchmark: conv3dt against PyTorch, PaddlePaddle and ONNX Runtime, side by side in
one process.

Times the forward pass and forward + backward (all three gradients) per shape: the median
of several calls after a warm-up, taken in rounds that alternate the libraries, so that a
slow spell of a shared machine hits all of them. GFLOP/s counts ``2 * N * C_in *
(C_out / groups) * prod(k) * prod(input DHW)`` per pass (a backward pass does two such
products, so forward + backward counts three). Peers are optional; they are timed when
importable, each on the same number of threads as conv3dt (ONNX Runtime: forward only, a
one-node ``ConvTranspose`` model on its CPU provider). Each peer's forward output is
checked against conv3dt's before it is timed.

Beside the libraries, in the same rounds, a 2048^3 matrix product through NumPy's BLAS
(sgemm for float32) gives the machine's practical rate, and the FMA probe of the kernels'
vector variant (independent multiply-add chains on every thread at once, no memory
traffic) measures its FMA peak at the clock the cores actually run; the nominal peak at
the clock that ``/proc/cpuinfo`` reports is recorded beside it.

Used by ``benchmarks/bench_cpu.py`` and ``conv3dt bench``.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time

import numpy as np

#: name: (N, C_in, C_out, input DHW, k, stride, padding, output_padding, dilation, groups)
SHAPES = {
    "unet_up_k2s2": (1, 64, 32, (32, 32, 32), 2, 2, 0, 0, 1, 1),
    "unet_up_k3s2": (1, 32, 16, (32, 32, 32), 3, 2, 1, 1, 1, 1),
    "gan_k4s2": (4, 128, 64, (8, 8, 8), 4, 2, 1, 0, 1, 1),
    "same_k3s1": (2, 32, 32, (24, 24, 24), 3, 1, 1, 0, 1, 1),
    "seed_k12": (5, 3, 12, (12, 32, 32), 12, 1, 0, 0, 1, 1),
    "dw_k3s2_g64": (1, 64, 64, (32, 32, 32), 3, 2, 1, 1, 1, 64),
    "dil2_k3": (1, 16, 16, (24, 24, 24), 3, 1, 2, 0, 2, 1),
    "video_k133": (2, 32, 32, (8, 56, 56), (1, 3, 3), (1, 2, 2), (0, 1, 1), (0, 1, 1), 1, 1),
    "head_cout1": (1, 32, 1, (32, 32, 32), 3, 1, 1, 0, 1, 1),
    "big_batch": (16, 64, 32, (16, 16, 16), 4, 2, 1, 0, 1, 1),
    "tiny": (1, 4, 4, (4, 4, 4), 3, 2, 1, 0, 1, 1),
}
PEERS = ("torch", "paddle", "onnxruntime")
#: the modules a peer needs (ONNX Runtime's model is built with the onnx package)
PEER_MODULES = {"torch": ("torch",), "paddle": ("paddle",),
                "onnxruntime": ("onnxruntime", "onnx")}
#: peers timed on the forward pass only
FORWARD_ONLY = ("onnxruntime",)
#: short names for the table
SHORT = {"conv3dt": "conv3dt", "torch": "torch", "paddle": "paddle", "onnxruntime": "ort"}
#: how each library's thread count is set
THREADS_SET_WITH = {
    "conv3dt": "conv3dt.set_num_threads",
    "torch": "torch.set_num_threads",
    "paddle": "paddle.base.core.set_num_threads (Paddle's own default: one thread)",
    "onnxruntime": "SessionOptions.intra_op_num_threads (inter_op_num_threads 1, sequential)",
}
_SETTLE_S = 0.5
#: each timed key's calls in a round last at least this long (seconds): a short call is
#: repeated until they do, so that a call of microseconds is timed as a loop runs it, not
#: as the first calls after the settle sleep (cold caches and branch predictors)
_MIN_ROUND_S = 0.02
_MAX_CALLS = 2000  # calls a round times at most for that
_MATMUL_N = 2048


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def shape_arrays(name, dtype="float32", seed=0):
    """Random x, weight, bias and upstream gradient for a benchmark shape, and its args."""
    from .functional import conv3d_transpose

    n, c_in, c_out, size, k, stride, pad, out_pad, dil, groups = SHAPES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in) + tuple(size)).astype(dtype)
    w = rng.standard_normal((c_in, c_out // groups) + _triple(k)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    kwargs = dict(stride=stride, padding=pad, output_padding=out_pad, dilation=dil,
                  groups=groups)
    gy = rng.standard_normal(conv3d_transpose(x[:1], w, **kwargs).shape[1:]).astype(dtype)
    gy = np.broadcast_to(gy, (n,) + gy.shape).copy()
    return x, w, b, gy, kwargs


def flops(name):
    n, c_in, c_out, size, k, _, _, _, _, groups = SHAPES[name]
    return 2.0 * n * c_in * (c_out // groups) * np.prod(_triple(k)) * np.prod(size)


def is_dense(name):
    """Whether a shape is one dense product (no groups): the shapes compared with the
    machine's BLAS rate and FMA peak."""
    return SHAPES[name][9] == 1


# --------------------------------------------------------------------------- libraries
# Each returns (forward, forward + backward or None, threads it runs on); forward returns
# something np.asarray turns into the output.


def _conv3dt_fns(x, w, b, gy, kwargs, threads=None):
    import conv3dt
    from .functional import conv3d_transpose, conv3d_transpose_backward

    def fwd():
        return conv3d_transpose(x, w, b, **kwargs)

    def fwd_bwd():
        conv3d_transpose(x, w, b, **kwargs)
        return conv3d_transpose_backward(gy, x, w, **kwargs)

    return fwd, fwd_bwd, conv3dt.get_num_threads()


def _torch_fns(x, w, b, gy, kwargs, threads):
    import torch

    torch.set_num_threads(threads)
    tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))
    args = dict(stride=_triple(kwargs["stride"]), padding=_triple(kwargs["padding"]),
                output_padding=_triple(kwargs["output_padding"]), groups=kwargs["groups"],
                dilation=_triple(kwargs["dilation"]))

    def fwd():
        with torch.no_grad():
            return torch.nn.functional.conv_transpose3d(tx, tw, tb, **args).numpy()

    gx_, gw_, gb_ = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

    def fwd_bwd():
        for t in (gx_, gw_, gb_):
            t.grad = None
        y = torch.nn.functional.conv_transpose3d(gx_, gw_, gb_, **args)
        y.backward(tgy)

    return fwd, fwd_bwd, torch.get_num_threads()


def _paddle_fns(x, w, b, gy, kwargs, threads):
    import paddle
    from paddle.base import core

    paddle.set_device("cpu")
    # Paddle runs its CPU kernels on FLAGS_paddle_num_threads threads, one by default;
    # this sets its OpenMP and math-library threads (paddle.set_flags does not, once
    # Paddle is initialised).
    core.set_num_threads(threads)
    px, pw, pb, pgy = (paddle.to_tensor(a) for a in (x, w, b, gy))
    args = dict(stride=kwargs["stride"], padding=kwargs["padding"],
                output_padding=kwargs["output_padding"], groups=kwargs["groups"],
                dilation=kwargs["dilation"])
    f = paddle.nn.functional.conv3d_transpose

    def fwd():
        with paddle.no_grad():
            return f(px, pw, pb, **args).numpy()

    vx, vw, vb = (paddle.to_tensor(a, stop_gradient=False) for a in (x, w, b))

    def fwd_bwd():
        for t in (vx, vw, vb):
            t.clear_gradient()
        y = f(vx, vw, vb, **args)
        y.backward(pgy)

    return fwd, fwd_bwd, threads


def onnx_model(x_shape, w, b, kwargs):
    """A one-node ONNX ``ConvTranspose`` model (weight and bias as initializers) for the
    arguments of a benchmark shape, serialized; its weight layout is conv3dt's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pad = _triple(kwargs["padding"])
    elem = TensorProto.FLOAT if w.dtype == np.float32 else TensorProto.DOUBLE
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=list(w.shape[2:]),
        strides=list(_triple(kwargs["stride"])), pads=list(pad) + list(pad),
        output_padding=list(_triple(kwargs["output_padding"])),
        dilations=list(_triple(kwargs["dilation"])), group=kwargs["groups"])
    graph = helper.make_graph(
        [node], "conv3d_transpose", [helper.make_tensor_value_info("x", elem, list(x_shape))],
        [helper.make_tensor_value_info("y", elem, [None] * 5)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime since 1.10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnxruntime_fns(x, w, b, gy, kwargs, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the calling thread included
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx_model(x.shape, w, b, kwargs), options,
                                   providers=["CPUExecutionProvider"])
    feed = {"x": x}

    def fwd():
        return session.run(None, feed)[0]

    return fwd, None, options.intra_op_num_threads


_FNS = {"conv3dt": _conv3dt_fns, "torch": _torch_fns, "paddle": _paddle_fns,
        "onnxruntime": _onnxruntime_fns}


def peer_available(peer):
    """Whether the modules a peer needs import."""
    import warnings

    try:
        with warnings.catch_warnings():  # e.g. Paddle's note on a missing compiler cache
            warnings.simplefilter("ignore")
            for module in PEER_MODULES.get(peer, (peer,)):
                __import__(module)
        return True
    except Exception:
        return False


def _version(module):
    try:
        return __import__(module).__version__
    except Exception:
        return None


# --------------------------------------------------------------------------- the machine


def cpu_facts():
    """Model, flags and clock of the CPU, from /proc/cpuinfo (else ``lscpu``)."""
    facts = {"model": None, "flags": [], "mhz": None, "mhz_source": None,
             "cores_available": _cores()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and facts["model"] is None:
                    facts["model"] = value
                elif key in ("flags", "Features") and not facts["flags"]:
                    facts["flags"] = value.split()
                elif key == "cpu MHz" and facts["mhz"] is None:
                    facts["mhz"], facts["mhz_source"] = float(value), "cpu MHz in /proc/cpuinfo"
    except (OSError, ValueError):
        pass
    if facts["model"] is None or not facts["flags"]:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "Model name" and facts["model"] is None:
                facts["model"] = value
            elif key == "Flags" and not facts["flags"]:
                facts["flags"] = value.split()
            elif key == "CPU max MHz" and facts["mhz"] is None:
                try:
                    facts["mhz"], facts["mhz_source"] = float(value), "CPU max MHz from lscpu"
                except ValueError:
                    pass
    return facts


def _cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def vector_isa(flags):
    """(name, vector bits, whether it has FMA) of the widest x86 vector extension in
    ``flags``; ("unknown", None, False) for other CPUs."""
    flags = set(flags)
    if "avx512f" in flags:
        return "avx512", 512, True
    if "avx2" in flags and "fma" in flags:
        return "avx2", 256, True
    if "avx" in flags:
        return "avx", 256, "fma" in flags
    if "sse2" in flags:
        return "sse2", 128, False
    return "unknown", None, False


def fma_peak(cpu, threads, dtype, isa=None):
    """The FMA peak of the kernels' variant ``isa`` (default: the one in use; its vector
    width) on ``threads`` threads, with its terms: cores, lanes, and the nominal peak,
    cores x lanes x 2 FMA units (assumed) x 2 flop x the clock that /proc/cpuinfo reports
    (``nominal_gflops``; None where the clock is unknown or the variant has no FMA:
    generic multiplies and adds apart). The peak itself is measured on every row
    (``fma_gflops``, :func:`run` times the probe); :func:`metadata` fills in ``gflops``,
    their median, and ``ghz``, the clock it implies at 2 FMA units per core."""
    variant = _variant(isa)
    isa, bits, has_fma = variant.name, 8 * variant.vector_bytes, variant.name != "generic"
    cores = min(threads, cpu["cores_available"])
    lanes = bits // (8 * np.dtype(dtype).itemsize)
    peak = {"isa": isa, "has_fma": has_fma, "lanes": lanes, "fma_units_per_core": 2,
            "cores": cores,
            "threads": threads, "gflops": None, "ghz": None,
            "method": f"FMA probe of the {isa} kernels on {threads} threads at once: "
                      "independent multiply-add chains in registers",
            "nominal_ghz": None if cpu["mhz"] is None else cpu["mhz"] / 1e3,
            "clock_source": cpu["mhz_source"], "nominal_gflops": None}
    if has_fma and cpu["mhz"]:
        peak["nominal_gflops"] = cores * lanes * 2 * 2 * cpu["mhz"] / 1e3
    return peak


def _variant(name=None):
    """The :class:`conv3dt._isa.Isa` record of the variant ``name`` (default: the one in
    use); ValueError where this build or CPU lacks it."""
    from . import _isa

    return _isa.current() if name is None else _isa.lookup(name, "isa")


def fma_probe(dtype, threads, seconds=0.02, isa=None):
    """(a function that runs the FMA probe of the kernels' variant ``isa`` (default: the
    one in use) on ``threads`` threads for about ``seconds``, calibrated here; the flop it
    does per call)."""
    from . import _kernels

    index, double = _variant(isa).index, np.dtype(dtype) == np.float64
    steps = 1 << 14
    while True:
        t0 = time.perf_counter()
        _kernels.fma_probe(index, double, steps, threads)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds / 8 or steps >= 1 << 34:
            break
        steps *= 4
    steps = max(1, int(steps * seconds / max(elapsed, 1e-9)))
    flop = _kernels.fma_probe(index, double, steps, threads)[0]
    return (lambda: _kernels.fma_probe(index, double, steps, threads)), flop


def blas_facts():
    """NumPy's BLAS (threadpoolctl): name, version, threads."""
    try:
        from threadpoolctl import threadpool_info

        for lib in threadpool_info():
            if lib.get("user_api") == "blas":
                return {"internal_api": lib.get("internal_api"), "version": lib.get("version"),
                        "num_threads": lib.get("num_threads")}
    except Exception:
        pass
    return {"internal_api": None, "version": None, "num_threads": None}


def conv3dt_isa():
    """The kernels' instruction-set variant in use ('generic', 'avx2', 'avx512')."""
    import conv3dt

    return conv3dt.get_isa()


def metadata(rows, threads, dtype, peers, repeat, rounds, argv=None):
    """What the JSON records beside the rows: versions, CPU, the kernels' variants
    (``conv3dt_isa``, the first of ``isas``), threads per library, the BLAS rate and the
    FMA peak (measured, and nominal) of each variant (``fma_peaks``; ``fma_peak``: the
    first's), the load of the machine."""
    import conv3dt
    from conv3dt._kernels import OPENMP

    cpu = cpu_facts()
    libs = ["conv3dt"] + list(peers)
    isas = rows[0]["isas"] if rows and "isas" in rows[0] else [conv3dt_isa()]
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": None if argv is None else "conv3dt bench " + " ".join(argv),
        "dtype": dtype, "threads": threads, "repeat": repeat, "rounds": rounds,
        "min_round_s": _MIN_ROUND_S,
        "python": platform.python_version(), "platform": platform.platform(),
        "versions": {"conv3dt": conv3dt.__version__, "numpy": np.__version__},
        "cpu": cpu,
        "conv3dt_isa": isas[0],
        "isas": isas,
        "openmp": bool(OPENMP),
        "threads_per_library": {},
        "blas": blas_facts(),
        "fma_peaks": {v: fma_peak(cpu, threads, dtype, isa=v) for v in isas},
    }
    meta["fma_peak"] = meta["fma_peaks"][isas[0]]
    for peer in peers:
        for module in PEER_MODULES[peer]:
            meta["versions"][module] = _version(module)
    for lib in libs:
        counts = sorted({r[f"{lib}_threads"] for r in rows if f"{lib}_threads" in r})
        util = [r[f"{lib}_cpu_per_wall"] for r in rows if f"{lib}_cpu_per_wall" in r]
        meta["threads_per_library"][lib] = {
            "threads": counts[0] if len(counts) == 1 else counts,
            "set_with": THREADS_SET_WITH[lib],
            "cpu_per_wall_median": statistics.median(util) if util else None}
    gemm = "sgemm" if dtype == "float32" else "dgemm"
    rates = [r["matmul_gflops"] for r in rows]
    meta["blas"].update(gemm=f"{gemm} {_MATMUL_N}^3 through numpy.matmul",
                        threads_used=min(threads, cpu["cores_available"]),
                        gflops=statistics.median(rates) if rates else None)
    for v, peak in meta["fma_peaks"].items():
        key = _fma_key(v, isas) + "_gflops"
        probes = [r[key] for r in rows if key in r]
        if probes:
            peak["gflops"] = statistics.median(probes)
            if peak["has_fma"]:
                peak["ghz"] = peak["gflops"] / (peak["cores"] * peak["lanes"] * 2 * 2)
    try:
        meta["loadavg"] = list(os.getloadavg())
    except OSError:
        meta["loadavg"] = None
    return meta


def workspace_mib(name, dtype, threads, isa=None):
    """Peak extra memory of one forward + backward pass, in MiB, measured in a child process
    (with the kernels' variant ``isa``; default: the one in use).

    The child allocates the inputs first, then resets the kernel's peak resident-set mark
    (Linux: /proc/self/clear_refs) and reports how far the peak rose during the passes,
    less the outputs they return: the workspace beyond inputs and outputs. NaN where the
    peak cannot be reset.
    """
    code = (
        "import numpy as np, conv3dt\n"
        "from conv3dt._bench import shape_arrays\n"
        "from conv3dt.functional import conv3d_transpose, conv3d_transpose_backward\n"
        "def status(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key):\n"
        "            return int(line.split()[1]) * 1024\n"
        f"conv3dt.set_num_threads({threads})\n"
        f"x, w, b, gy, kw = shape_arrays({name!r}, {dtype!r})\n"
        "conv3d_transpose(x, w, b, **kw); conv3d_transpose_backward(gy, x, w, **kw)\n"
        "extra = 0.0\n"
        "for step in ('fwd', 'bwd'):\n"
        "    open('/proc/self/clear_refs', 'w').write('5')\n"
        "    before = status('VmRSS')\n"
        "    out = conv3d_transpose(x, w, b, **kw) if step == 'fwd' else "
        "conv3d_transpose_backward(gy, x, w, **kw)\n"
        "    outs = out.nbytes if step == 'fwd' else sum(o.nbytes for o in out)\n"
        "    extra = max(extra, status('VmHWM') - before - outs)\n"
        "    del out\n"
        "print(max(0.0, extra) / 2**20)\n"
    )
    # A fixed mmap threshold makes glibc return freed blocks to the system, and conv3dt's
    # cache of large blocks is off, so the warm-up call's memory is not still resident when
    # the measured call starts. (Idle blocks that the cache keeps between calls are bounded
    # by its limit, conv3dt.get_cache_limit(), and not counted here.)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072",
               CONV3DT_CACHE_MIB="0", CONV3DT_ISA=_variant(isa).name)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env)
    if res.returncode != 0:
        return float("nan")
    return float(res.stdout.strip().splitlines()[-1])


def _timed(fn, n, min_s=0.0):
    """(wall times in ms, CPU time of the process / wall time) of ``n`` calls, or of more
    (at most ``_MAX_CALLS``) until they have taken ``min_s`` seconds."""
    times = []
    c0, t0 = time.process_time(), time.perf_counter()
    wall = 0.0
    while len(times) < n or (wall < min_s and len(times) < _MAX_CALLS):
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        times.append((t2 - t1) * 1e3)
        wall = t2 - t0
    return times, (time.process_time() - c0) / wall if wall > 0 else float("nan")


def _max_rel_err(y, ref):
    y = np.asarray(y, dtype=np.float64)
    if y.shape != ref.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(ref))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(y - ref))) / scale


def _blas_limit(threads):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def check_isas(isas):
    """The variant names ``isas`` (None or empty: the one in use), checked and normalised:
    "all" for every variant this CPU runs; ValueError naming a variant this build or CPU
    lacks, or one given twice."""
    from . import _isa

    if not isas:
        return [_isa.get_isa()]
    if isinstance(isas, str):
        isas = [isas]
    if any(isinstance(v, str) and v.strip().lower() == "all" for v in isas):
        if len(isas) > 1:
            raise ValueError(f"isa: 'all' names every variant this CPU runs, alone; got "
                             f"{','.join(isas)}")
        return _isa.available_isas()
    names = [_isa.lookup(v, "isa").name for v in isas]
    twice = sorted({v for v in names if names.count(v) > 1})
    if twice:
        raise ValueError(f"isa: each variant once; {', '.join(twice)} is given twice")
    return names


def _fma_key(isa, isas):
    """The row key of the FMA probe of variant ``isa`` (less "_gflops"): the first one's
    is "fma"."""
    return "fma" if isa == isas[0] else f"fma_{isa}"


def _label(lib, isas=None):
    """A library's name in messages: "conv3dt (avx2)" for a variant's key "conv3dt_avx2",
    and for conv3dt itself where several variants are timed."""
    if lib.startswith("conv3dt_"):
        return f"conv3dt ({lib.partition('_')[2]})"
    if lib == "conv3dt" and isas and len(isas) > 1:
        return f"conv3dt ({isas[0]})"
    return lib


def variant_rows(results, isa):
    """The rows of variant ``isa`` as those of the first (``conv3dt_fwd_ms``,
    ``fma_gflops``, ...), for :func:`table` and :func:`figure`; with ``vs_fwd_ms`` and
    ``vs_fwdbwd_ms``, the first variant's times, where ``isa`` is not the first. The first
    variant's rows are returned as they are."""
    isas = results[0].get("isas", []) if results else []
    if not results or isas[:1] == [isa]:
        return results
    if isa not in isas:
        raise ValueError(f"isa: the results have the variants {isas}, not {isa!r}")
    rows = []
    for r in results:
        row = {k: v for k, v in r.items()  # (--scaling, --float64, --memory: the first's)
               if not k.startswith(("t1_", "f64_", "conv3dt_", "fma_", "workspace_"))}
        row.update({"isas": [isa], "vs_isa": r["isas"][0],
                    "conv3dt_threads": r["conv3dt_threads"],
                    "vs_fwd_ms": r["conv3dt_fwd_ms"], "vs_fwdbwd_ms": r["conv3dt_fwdbwd_ms"]})
        for key in ("fwd_ms", "fwdbwd_ms", "cpu_per_wall"):
            row[f"conv3dt_{key}"] = r[f"conv3dt_{isa}_{key}"]
        row["fma_gflops"] = r[f"fma_{isa}_gflops"]
        rows.append(row)
    return rows


def run(shapes=None, dtype="float32", threads=None, repeat=7, compare=(), memory=False,
        progress=None, float64=False, scaling=False, rounds=3, warn=None, isas=None):
    """Benchmark ``shapes`` (default: all); returns a list of result dicts.

    Per shape, each library's forward pass is timed ``repeat`` times and forward + backward
    half as often (at least 3); the calls are spread over ``rounds`` rounds that take the
    libraries in turn, so that a slow spell of a shared machine hits all of them, each
    round after one untimed call, and each time is the median of all calls. A pass whose
    calls in a round take less than ``_MIN_ROUND_S`` is called again until they have taken
    that long (``timed_calls``: the calls timed per key): calls of microseconds are timed
    as a loop runs them. A 2048 x 2048 matrix product (NumPy's BLAS, held to ``threads``
    threads) and the FMA probe
    (:func:`fma_probe`, on ``threads`` threads) are timed in the same rounds:
    ``matmul_gflops`` and ``fma_gflops``.
    Every peer runs on ``threads`` threads; ``<lib>_cpu_per_wall`` is the process's CPU
    time over the wall time of that library's forward calls (about the number of busy
    threads), ``<peer>_max_rel_err`` its forward output's largest difference from
    conv3dt's, relative to the largest output. With conv3dt, in the same rounds:
    ``float64`` times it in float64 too (``f64_fwd_ms``, ``f64_fwdbwd_ms``); ``scaling``
    times its forward pass on one thread (``t1_fwd_ms``). ``warn(message)`` is told of a
    peer whose output differs.

    ``isas``: the kernels' instruction-set variants to time (default: the one in use). The
    first is "conv3dt" above; each other variant ``v`` is timed in the same rounds, under
    ``conv3dt_<v>_fwd_ms``, ``conv3dt_<v>_fwdbwd_ms``, ``conv3dt_<v>_cpu_per_wall``, with
    its own FMA probe (``fma_<v>_gflops``) and its forward output's difference from the
    first variant's (``conv3dt_<v>_max_rel_err``). Every row records ``isas``;
    :func:`variant_rows` gives the rows of one variant as the first's keys.
    """
    import conv3dt

    shapes = list(SHAPES) if not shapes else list(shapes)
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    unknown = [p for p in compare if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; choose from {list(PEERS)}")
    isas = check_isas(isas)
    threads = threads or conv3dt.get_num_threads()
    square = np.random.default_rng(1).standard_normal((_MATMUL_N, _MATMUL_N)).astype(dtype)
    probes = {v: fma_probe(dtype, threads, isa=v) for v in isas}
    previous, previous_isa = conv3dt.get_num_threads(), conv3dt.get_isa()
    torch_previous = None
    conv3dt.set_num_threads(threads)
    peers = [p for p in PEERS if p in compare and peer_available(p)]
    if "torch" in peers:
        import torch

        torch_previous = torch.get_num_threads()
    paddle_previous = None
    if "paddle" in peers:
        import paddle

        paddle_previous = paddle.get_flags(["FLAGS_paddle_num_threads"])
        paddle_previous = int(paddle_previous["FLAGS_paddle_num_threads"])
    tol = 1e-4 if dtype == "float32" else 1e-10
    results = []
    try:
        for i, name in enumerate(shapes):
            if progress:
                progress(i, len(shapes), name)
            x, w, b, gy, kwargs = shape_arrays(name, dtype)
            row = {"shape": name, "dtype": dtype, "threads": threads, "gflop": flops(name) / 1e9,
                   "isas": list(isas)}
            # (name in the keys, forward, forward + backward, conv3dt's variant meanwhile)
            libs = []
            ref = None
            entries = ([("conv3dt", "conv3dt", isas[0])]
                       + [(f"conv3dt_{v}", "conv3dt", v) for v in isas[1:]]
                       + [(p, p, isas[0]) for p in peers])
            for lib, fns, isa in entries:
                conv3dt.set_isa(isa)
                fwd, fwd_bwd, lib_threads = _FNS[fns](x, w, b, gy, kwargs, threads)
                if lib == fns:
                    row[f"{lib}_threads"] = lib_threads
                out = np.asarray(fwd(), dtype=np.float64)
                if ref is None:
                    ref = out
                else:
                    err = row[f"{lib}_max_rel_err"] = _max_rel_err(out, ref)
                    if warn and not err <= tol:
                        warn(f"{_label(lib)}'s forward output on {name} differs from "
                             f"{_label('conv3dt', isas)}'s by {err:.2g} of its largest value")
                libs.append((lib, fwd, fwd_bwd, isa))
            del out, ref
            conv3dt.set_isa(isas[0])
            # (key, function, conv3dt's threads, variant) per library, timed together in
            # each round
            groups = []
            for lib, fwd, fwd_bwd, isa in libs:
                timed = [(f"{lib}_fwd_ms", fwd, threads, isa)]
                if fwd_bwd is not None:
                    timed.append((f"{lib}_fwdbwd_ms", fwd_bwd, threads, isa))
                if lib == "conv3dt" and scaling:
                    timed.append(("t1_fwd_ms", fwd, 1, isa))
                if lib == "conv3dt" and float64:
                    f64, f64_bwd, _ = _conv3dt_fns(*shape_arrays(name, "float64"))
                    timed += [("f64_fwd_ms", f64, threads, isa),
                              ("f64_fwdbwd_ms", f64_bwd, threads, isa)]
                groups.append(timed)

            def matmul():
                with _blas_limit(threads):
                    return square @ square

            # (apart from the product: BLAS threads busy-wait after it, as OpenMP's do)
            groups.append([("matmul_ms", matmul, threads, isas[0])])
            groups += [[(_fma_key(v, isas) + "_ms", probes[v][0], threads, v)] for v in isas]
            calls = {"fwd": -(-repeat // rounds), "fwdbwd": -(-max(3, repeat // 2) // rounds)}
            samples, cpu = {}, {}
            for _ in range(rounds):
                for timed in groups:
                    # Let the previous library's idle threads stop spinning (OpenMP
                    # runtimes busy-wait for up to ~0.2 s after a parallel region) so that
                    # they do not take cores from the library being timed.
                    time.sleep(_SETTLE_S)
                    for key, fn, n_threads, isa in timed:
                        conv3dt.set_num_threads(n_threads)
                        conv3dt.set_isa(isa)
                        fn()  # warm-up: wakes the threads, brings the data into cache
                        n = calls["fwdbwd" if key.endswith("fwdbwd_ms") else "fwd"]
                        times, util = _timed(fn, n, _MIN_ROUND_S)
                        samples.setdefault(key, []).extend(times)
                        cpu.setdefault(key, []).append(util)
                    conv3dt.set_num_threads(threads)
                    conv3dt.set_isa(isas[0])
            row.update({key: statistics.median(v) for key, v in samples.items()})
            row["timed_calls"] = {key: len(v) for key, v in samples.items()}
            for lib, _, _, _ in libs:
                row[f"{lib}_cpu_per_wall"] = statistics.median(cpu[f"{lib}_fwd_ms"])
            row["matmul_gflops"] = 2 * _MATMUL_N**3 / (row.pop("matmul_ms") * 1e6)
            for v in isas:
                key = _fma_key(v, isas)
                row[key + "_gflops"] = probes[v][1] / (row.pop(key + "_ms") * 1e6)
            if memory:
                row["workspace_mib"] = workspace_mib(name, dtype, threads, isas[0])
            results.append(row)
        if progress:
            progress(len(shapes), len(shapes), "")
    finally:
        conv3dt.set_num_threads(previous)
        conv3dt.set_isa(previous_isa)
        if torch_previous is not None:
            import torch

            torch.set_num_threads(torch_previous)
        if paddle_previous is not None:
            from paddle.base import core

            core.set_num_threads(paddle_previous)
    return results


# --------------------------------------------------------------------------- the table


def _libs_in(results):
    return [p for p in PEERS if results and f"{p}_fwd_ms" in results[0]]


def _columns(results, peak):
    """(group, header, priority, cell of a row) per column; the lowest priorities are left
    out first where the terminal is narrow."""
    def gflops(r):
        return r["gflop"] / r["conv3dt_fwd_ms"] * 1e3

    def share(of):
        return lambda r: (f"{gflops(r) / of(r):.0%}" if is_dense(r["shape"]) and of(r)
                          else "-")

    cols = [("", "shape", 100, lambda r: r["shape"]),
            ("conv3dt", "fwd ms", 99, lambda r: f"{r['conv3dt_fwd_ms']:.2f}"),
            ("conv3dt", "GFLOP/s", 60, lambda r: f"{gflops(r):.1f}"),
            ("conv3dt", "of BLAS", 70, share(lambda r: r["matmul_gflops"])),
            ("conv3dt", "f+b ms", 80, lambda r: f"{r['conv3dt_fwdbwd_ms']:.2f}")]
    if peak:
        cols.insert(4, ("conv3dt", "of peak", 55, share(lambda r: r["fma_gflops"])))
    for rank, p in enumerate(_libs_in(results)):
        cols.append((SHORT[p], "fwd", 98 - rank, lambda r, p=p:
                     f"{r[f'{p}_fwd_ms'] / r['conv3dt_fwd_ms']:.2f}x"))
        if f"{p}_fwdbwd_ms" in results[0]:
            cols.append((SHORT[p], "f+b", 90 - rank, lambda r, p=p:
                         f"{r[f'{p}_fwdbwd_ms'] / r['conv3dt_fwdbwd_ms']:.2f}x"))
    if "vs_fwd_ms" in results[0]:
        group = f"{results[0]['vs_isa']}/this"
        cols.append((group, "fwd", 85, lambda r: f"{r['vs_fwd_ms'] / r['conv3dt_fwd_ms']:.2f}x"))
        cols.append((group, "f+b", 84,
                     lambda r: f"{r['vs_fwdbwd_ms'] / r['conv3dt_fwdbwd_ms']:.2f}x"))
    if "t1_fwd_ms" in results[0]:
        cols.append(("1 thread", "speedup", 45,
                     lambda r: f"{r['t1_fwd_ms'] / r['conv3dt_fwd_ms']:.2f}x"))
    if "f64_fwd_ms" in results[0]:
        cols.append(("f64/f32", "fwd", 40, lambda r: f"{r['f64_fwd_ms'] / r['conv3dt_fwd_ms']:.2f}"))
        cols.append(("f64/f32", "f+b", 35,
                     lambda r: f"{r['f64_fwdbwd_ms'] / r['conv3dt_fwdbwd_ms']:.2f}"))
    if "workspace_mib" in results[0]:
        cols.append(("", "MiB", 50, lambda r: f"{r['workspace_mib']:.1f}"))
    return cols


def _render(cols, results):
    """Lines of a table with a group header above the column headers."""
    cells = [[c[3](r) for c in cols] for r in results]
    widths = [max([len(c[1])] + [len(row[j]) for row in cells]) for j, c in enumerate(cols)]
    # widen a group's last column until the group's name fits over its columns
    j = 0
    while j < len(cols):
        k = j
        while k + 1 < len(cols) and cols[k + 1][0] == cols[j][0]:
            k += 1
        span = sum(widths[j:k + 1]) + 2 * (k - j)
        if cols[j][0] and len(cols[j][0]) > span:
            widths[k] += len(cols[j][0]) - span
        j = k + 1
    group_line, j = [], 0
    while j < len(cols):
        k = j
        while k + 1 < len(cols) and cols[k + 1][0] == cols[j][0]:
            k += 1
        span = sum(widths[j:k + 1]) + 2 * (k - j)
        group_line.append(cols[j][0].center(span) if cols[j][0] else " " * span)
        j = k + 1

    def line(values):
        return "  ".join(v.ljust(wd) if j == 0 else v.rjust(wd)
                         for j, (v, wd) in enumerate(zip(values, widths)))

    lines = ["  ".join(group_line).rstrip(), line([c[1] for c in cols])]
    lines.append("-" * len(lines[1]))
    lines += [line(row) for row in cells]
    return lines


def table(results, meta=None, width=None, isa=None):
    """The results as a text table no wider than ``width`` (default: the terminal's):
    conv3dt's times, its forward GFLOP/s as a share of the BLAS rate and of the FMA peak,
    and each peer's time over conv3dt's; columns of low priority are left out (and named
    below the table) where they do not fit; the raw times are in the JSON.

    ``isa``: the table of that variant (:func:`variant_rows`; default: the first), with
    its own FMA peak; a later variant's table has a column of the first variant's time
    over its own, and leaves out the notes on the machine that the first one gives."""
    if not results:
        return "no results"
    if isa is not None:
        results = variant_rows(results, isa)
    brief = "vs_fwd_ms" in results[0]  # a later variant's rows
    if brief and meta:
        meta = dict(meta, conv3dt_isa=isa, fma_peak=meta["fma_peaks"][isa])
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    width = max(width, 40)
    cols = _columns(results, "fma_gflops" in results[0])
    left_out = []
    lines = _render(cols, results)
    while len(lines[1]) > width and len(cols) > 2:
        drop = min(range(1, len(cols)), key=lambda j: cols[j][2])
        left_out.append(f"{cols[drop][0]} {cols[drop][1]}".strip())
        del cols[drop]
        lines = _render(cols, results)
    notes = []
    peers = _libs_in(results)
    if peers:
        notes.append("Peer columns: peer time / conv3dt time (above 1: conv3dt is faster); "
                     "f+b: forward + backward (all three gradients).")
    for p in peers:
        means = []
        for kind, label in (("fwd", "forward"), ("fwdbwd", "forward+backward")):
            if f"{p}_{kind}_ms" in results[0]:
                ratios = [r[f"{p}_{kind}_ms"] / r[f"conv3dt_{kind}_ms"] for r in results]
                means.append(f"{label} {float(np.exp(np.mean(np.log(ratios)))):.2f}x")
        notes.append(f"geometric mean {p}/conv3dt: {', '.join(means)}")
    dtype = results[0]["dtype"]
    mm = statistics.median(r["matmul_gflops"] for r in results)
    gemm = "sgemm" if dtype == "float32" else "dgemm"
    blas = (meta or {}).get("blas") or {}
    which = " ".join(str(v) for v in (blas.get("internal_api"), blas.get("version")) if v)
    if brief:
        notes.append(f"{results[0]['vs_isa']}/this: the {results[0]['vs_isa']} kernels' "
                     "time over these kernels' (above 1: these are faster).")
    else:
        notes.append(f"BLAS rate (measured): {gemm} {_MATMUL_N}^3 through numpy.matmul"
                     f"{' (' + which + ')' if which else ''} on {results[0]['threads']} "
                     f"threads, median over the shapes' rounds: {mm:.1f} GFLOP/s. 'of BLAS' "
                     "is conv3dt's forward GFLOP/s as a share of it, for the dense shapes "
                     "(no groups).")
    if meta:
        p = meta["fma_peak"]
        if p["gflops"]:
            nominal = (f"; the nominal peak at the {p['nominal_ghz']:.2f} GHz of "
                       f"{p['clock_source']} would be {p['nominal_gflops']:.1f}"
                       if p["nominal_gflops"] else "")
            notes.append(f"FMA peak (measured): the {p['isa']} kernels' probe, independent "
                         f"multiply-add chains on {p['threads']} threads at once, median over "
                         f"the shapes' rounds: {p['gflops']:.1f} GFLOP/s"
                         + (f" ({p['cores']} cores x {p['lanes']} {dtype} lanes x 2 FMA units x "
                            f"2 flop x {p['ghz']:.2f} GHz)" if p["ghz"] else
                            " (separate multiplies and adds: no FMA)")
                         + f"{nominal}. 'of peak' is each shape's share of the peak measured "
                         f"in its rounds; the BLAS rate is {mm / p['gflops']:.0%} of it.")
    if meta and not brief:
        libs = meta["threads_per_library"]
        notes.append("threads: " + ", ".join(
            f"{lib} {v['threads']}" + (f" (CPU/wall {v['cpu_per_wall_median']:.2f})"
                                        if v["cpu_per_wall_median"] is not None else "")
            for lib, v in libs.items())
            + "; CPU/wall: the process's CPU time over the wall time of the forward calls, "
              "median over the shapes (conv3dt runs passes under about 2^20 multiply-adds on "
              "one thread).")
        cpu = meta["cpu"]
        later = meta.get("isas", [])[1:]
        kernels = meta["conv3dt_isa"] + (f" (this table; {', '.join(later)} below)"
                                         if later else "")
        notes.append(f"CPU: {cpu['model'] or 'unknown'}, {cpu['cores_available']} cores "
                     f"available, widest vector ISA {vector_isa(cpu['flags'])[0]}; conv3dt's "
                     f"kernels: {kernels}.")
        if meta.get("loadavg"):
            load = meta["loadavg"][0]
            busy = load > 1.5 * (os.cpu_count() or 1)
            notes.append(f"Machine load at the end: {load:.1f} (load average over a minute) "
                         f"on {os.cpu_count()} CPUs" + ("; other work competed for the "
                                                        "cores, so the times are noisy."
                                                        if busy else "."))
    if left_out:
        notes.append(f"Left out to fit {width} columns: {', '.join(left_out)} (see --json, "
                     "or widen the terminal).")
    wrapped = []
    for note in notes:
        wrapped += textwrap.wrap(note, width=width, subsequent_indent="  ")
    return "\n".join(lines + wrapped)


# --------------------------------------------------------------------------- the plot


def _pyplot():
    """matplotlib.pyplot on the Agg backend; ImportError where matplotlib is missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(results, path):
    """GFLOP/s per shape per library, forward and forward + backward, on a log scale (so
    that the depthwise and tiny shapes' bars show beside the dense ones), as an image whose
    format follows the file's suffix (needs matplotlib)."""
    fig = figure(results)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def figure(results):
    """The matplotlib figure that :func:`plot` saves: two log-scale axes (forward,
    forward + backward), one bar per shape and library (and kernel variant)."""
    try:
        plt = _pyplot()
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    isas = results[0].get("isas", [])
    libs = ["conv3dt"] + [f"conv3dt_{v}" for v in isas[1:]] + _libs_in(results)
    names = [r["shape"] for r in results]
    xs = np.arange(len(names))
    width = 0.8 / len(libs)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(names) + 2), 7), sharex=True)
    for ax, (kind, label, passes) in zip(axes, (("fwd", "forward", 1),
                                                ("fwdbwd", "forward + backward", 3))):
        for i, lib in enumerate(libs):
            key = f"{lib}_{kind}_ms"
            if key not in results[0]:
                continue
            ax.bar(xs + i * width, [passes * r["gflop"] / r[key] * 1e3 for r in results],
                   width, label=_label(lib, isas), color=f"C{i}")
        ax.set_yscale("log")
        ax.set_ylabel(f"{label}\nGFLOP/s (log)")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small", ncol=len(libs))
    axes[-1].set_xticks(xs + width * (len(libs) - 1) / 2, names, rotation=30, ha="right")
    axes[0].set_title(f"3D transposed convolution, CPU, {results[0]['dtype']}, "
                      f"{results[0]['threads']} threads per library")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- command line


class BenchUsageError(Exception):
    """An option that cannot work (an unwritable path, a missing package), found before
    anything is timed."""


def _check_writable(option, path):
    """Raise BenchUsageError unless ``path`` can be written (without leaving a file)."""
    if os.path.isdir(path):
        raise BenchUsageError(f"{option}: {path} is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is not a folder" if os.path.exists(parent) else "does not exist"
        raise BenchUsageError(f"{option}: cannot write {path}: the folder {parent} {what}")
    existed = os.path.exists(path)
    try:
        with open(path, "a" if existed else "x"):
            pass
    except OSError as exc:
        raise BenchUsageError(f"{option}: cannot write {path}: "
                              f"{exc.strerror or exc}") from None
    if not existed:
        os.remove(path)


def _check_plot(path):
    """Raise BenchUsageError unless matplotlib imports and can write ``path``'s format."""
    try:
        plt = _pyplot()
    except ImportError as exc:
        raise BenchUsageError(f"--plot needs matplotlib, which does not import ({exc}): "
                              "pip install matplotlib") from None
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    formats = plt.gcf().canvas.get_supported_filetypes()
    plt.close("all")
    if suffix and suffix not in formats:
        raise BenchUsageError(f"--plot: matplotlib cannot write .{suffix} files; use one of "
                              f"{', '.join('.' + f for f in sorted(formats))}")


def build_parser():
    shape_help = ", ".join(SHAPES)
    parser = argparse.ArgumentParser(
        prog="conv3dt bench",
        description="CPU benchmark of conv3dt's forward and forward + backward passes, "
                    "optionally side by side with PyTorch, PaddlePaddle and ONNX Runtime "
                    "(forward only) in the same process, every library on the same number "
                    "of threads.",
        epilog="Exit codes: 0 success, 2 wrong arguments or unusable output paths (found "
               "before anything is timed).")
    parser.add_argument("--shapes", nargs="+", metavar="NAME",
                        help=f"shapes to time (default: all): {shape_help}")
    parser.add_argument("--compare", default="", metavar="PEERS",
                        help=f"comma-separated peers to time beside conv3dt: "
                             f"{','.join(PEERS)} (each left out, with a note, when it does "
                             "not import)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="threads for conv3dt, every peer and the BLAS product "
                             "(default: conv3dt's thread count)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="dtype of the data (default float32)")
    parser.add_argument("--repeat", type=int, default=7, metavar="N",
                        help="timed forward passes per library and shape; forward + "
                             "backward half as many, at least 3 (default 7); more where "
                             "a round's calls would take under "
                             f"{_MIN_ROUND_S * 1e3:.0f} ms")
    parser.add_argument("--rounds", type=int, default=3, metavar="R",
                        help="rounds the timed calls are spread over, the libraries in "
                             "turn (default 3)")
    parser.add_argument("--memory", action="store_true",
                        help="measure conv3dt's workspace per shape (in a child process)")
    parser.add_argument("--scaling", action="store_true",
                        help="also time conv3dt's forward pass on one thread: the speed-up")
    parser.add_argument("--float64", action="store_true",
                        help="also time conv3dt in float64: the ratio float64 / float32")
    parser.add_argument("--isa", default="", metavar="VARIANTS",
                        help="comma-separated instruction-set variants of the kernels to "
                             "time in the same rounds, a table each (peers against every "
                             "one), or 'all' for every variant this CPU runs (default: the "
                             "one in use; see conv3dt info)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the results and the machine's facts (versions, CPU "
                             "model and flags, ISA, threads per library) as JSON")
    parser.add_argument("--plot", metavar="FILE",
                        help="draw GFLOP/s per shape and library, both passes, on a log "
                             "scale (needs matplotlib; .png, .svg, .pdf, ...)")
    return parser


def main(argv=None):
    """``conv3dt bench``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    compare = [p.strip() for p in args.compare.split(",") if p.strip()]
    for p in compare:
        if p not in PEERS:
            parser.error(f"--compare: unknown peer {p!r}; choose from {','.join(PEERS)}")
    for opt in ("threads", "repeat", "rounds"):
        value = getattr(args, opt)
        if value is not None and value < 1:
            parser.error(f"--{opt} must be at least 1, got {value}")
    try:
        isas = check_isas([v.strip() for v in args.isa.split(",") if v.strip()])
    except (TypeError, ValueError) as exc:
        parser.error(f"--{exc}")
    if args.float64 and args.dtype != "float32":
        parser.error("--float64 compares with float32; leave out --dtype float64")
    if args.shapes:
        for s in args.shapes:
            if s not in SHAPES:
                parser.error(f"--shapes: unknown shape {s!r}; choose from {list(SHAPES)}")
    try:  # before minutes of timing: the outputs can be written
        if args.json:
            _check_writable("--json", args.json)
        if args.plot:
            _check_writable("--plot", args.plot)
            _check_plot(args.plot)
    except BenchUsageError as exc:
        print(f"conv3dt bench: error: {exc}", file=sys.stderr)
        return 2
    for p in compare:
        if not peer_available(p):
            needs = " and ".join(PEER_MODULES[p])
            print(f"note: {p} is left out: it needs {needs}, which do not import",
                  file=sys.stderr)

    def progress(i, total, name):
        bar = "#" * i + "." * (total - i)
        print(f"\r[{bar}] {i}/{total} {name:<16}", end="" if i < total else "\n",
              file=sys.stderr, flush=True)

    def warn(message):
        print(f"\nwarning: {message}", file=sys.stderr, flush=True)

    results = run(args.shapes, args.dtype, args.threads, args.repeat, compare, args.memory,
                  progress, float64=args.float64, scaling=args.scaling, rounds=args.rounds,
                  warn=warn, isas=isas)
    threads = results[0]["threads"]
    peers = [p for p in PEERS if f"{p}_fwd_ms" in results[0]]
    meta = metadata(results, threads, args.dtype, peers, args.repeat, args.rounds, argv)
    for i, isa in enumerate(isas):
        if i > 0:
            print()
        if len(isas) > 1:
            print(f"conv3dt's {isa} kernels")
        print(table(results, meta, isa=isa))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": results}, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0
