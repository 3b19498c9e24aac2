"""``conv3dt check``: a self-test of an installed conv3dt.

Three groups of checks, each cheap enough to run after every install (a few seconds):

1. **Reference cases.** ``data/paddle_conv3d_transpose.npz`` (shipped with the package)
   holds 60 cases computed by PaddlePaddle's own CPU kernels: every padding form,
   output_padding, output_size, groups, dilation, NCDHW and NDHWC, float32 and float64,
   with and without bias. For each, the output and the three gradients must match with a
   relative max error (``max|a - b| / max|ref|``) of at most 1e-10 (float64) or 1e-5
   (float32). Paddle's own float32 bias gradient is itself a float32 sum, so for it the
   exact float64 sum of the upstream gradient is accepted too.
2. **Gradient checks.** :func:`conv3dt.gradcheck.gradcheck` (central finite differences,
   float64) on tiny ``Conv3DTranspose`` layers: strides, padding forms, groups, dilation,
   channels-last, activations. These exercise the front end's autograd end to end.
3. **Thread independence.** A forward and backward pass with one thread and with all
   give bit-identical results.

When CuPy and a GPU are present, the reference cases also run on the GPU.

Use :func:`run` from Python; it returns True when everything passed.
"""
import json
import os
import sys
import time

import numpy as np

__all__ = ["run", "golden_path", "load_golden"]

TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def golden_path():
    """Path of the reference cases shipped inside the package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                        "paddle_conv3d_transpose.npz")


def load_golden(path=None):
    """``(cases, arrays)``: the case list (dicts with ``id``, ``cfg``, ``dtype``, ...) and
    a dict ``id -> {"x", "w", "b"?, "y", "gy", "gx", "gw", "gb"?}`` of arrays."""
    with np.load(path or golden_path(), allow_pickle=False) as z:
        cases = json.loads(z["cases.json"].tobytes())
        arrays = {}
        for key in z.files:
            if key == "cases.json":
                continue
            cid, name = key.split("/", 1)
            arrays.setdefault(int(cid), {})[name] = z[key]
    return cases, arrays


def _kwargs(cfg):
    keys = ("stride", "padding", "dilation", "groups", "data_format", "output_padding",
            "output_size")
    return {k: cfg[k] for k in keys if k in cfg}


def _rel_err(got, ref):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    return diff / scale if scale > 0 else diff


def _to_numpy(a):
    return a.get() if hasattr(a, "__cuda_array_interface__") else np.asarray(a)


def _golden_case(case, a, xp=np):
    """Errors of one case: a list of ``(name, relative error)``, or raises."""
    from .functional import conv3d_transpose, conv3d_transpose_backward

    kw = _kwargs(case["cfg"])
    x, w, gy = xp.asarray(a["x"]), xp.asarray(a["w"]), xp.asarray(a["gy"])
    b = xp.asarray(a["b"]) if "b" in a else None
    y = conv3d_transpose(x, w, b, **kw)
    gx, gw, gb = conv3d_transpose_backward(gy, x, w, **kw)
    channel_axis = 1 if case["cfg"]["data_format"] == "NCDHW" else 4
    axes = tuple(i for i in range(5) if i != channel_axis)
    exact_gb = a["gy"].astype(np.float64).sum(axis=axes)
    errors = []
    for name, got, ref in (("y", y, a["y"]), ("gx", gx, a["gx"]), ("gw", gw, a["gw"]),
                           ("gb", gb, a.get("gb", exact_gb))):
        got = _to_numpy(got)
        if got.dtype != np.dtype(case["dtype"]):
            errors.append((f"{name} dtype {got.dtype}", float("inf")))
            continue
        err = _rel_err(got, ref)
        if name == "gb" and case["dtype"] == "float32":
            err = min(err, _rel_err(got, exact_gb))
        errors.append((name, err))
    return errors


def _check_golden(report, xp=np, device="CPU"):
    cases, arrays = load_golden()
    failures = 0
    worst = {"float32": 0.0, "float64": 0.0}
    for case in cases:
        tol = TOLERANCE[case["dtype"]]
        try:
            errors = _golden_case(case, arrays[case["id"]], xp)
        except Exception as exc:  # a crash is a failed case, reported, not a traceback
            errors = [(f"raised {type(exc).__name__}: {exc}", float("inf"))]
        bad = [(n, e) for n, e in errors if not e <= tol]
        worst[case["dtype"]] = max([worst[case["dtype"]]] + [e for _, e in errors])
        if bad:
            failures += 1
            detail = ", ".join(f"{n}: {e:.3g}" for n, e in bad)
            report(f"  FAIL case {case['id']} ({case['dtype']}, {case['cfg']}): {detail}")
        else:
            report(f"  ok   case {case['id']:2d} ({case['dtype']})", detail=True)
    n = len(cases)
    report(f"reference cases ({device}): {n - failures}/{n} passed "
           f"(output, grad_input, grad_weight, grad_bias; worst relative error "
           f"float64 {worst['float64']:.1e} <= 1e-10, float32 {worst['float32']:.1e} <= 1e-5)")
    return n - failures, failures


#: (description, layer arguments, input shape (NCDHW or NDHWC as data_format says))
GRADCHECK_LAYERS = [
    ("stride 2, padding 1, output_padding 1, tanh",
     dict(num_channels=2, num_filters=3, filter_size=3, stride=2, padding=1,
          output_padding=1, act="tanh"), (2, 2, 2, 3, 2)),
    ("groups 2, dilation 2, 6-int padding",
     dict(num_channels=4, num_filters=2, filter_size=(2, 3, 2), groups=2, dilation=2,
          padding=[0, 1, 1, 0, 0, 1]), (1, 4, 2, 2, 3)),
    ("Paddle 'SAME', stride (1, 2, 3), sigmoid",
     dict(num_channels=2, num_filters=2, filter_size=3, stride=(1, 2, 3), padding="SAME",
          act="sigmoid"), (1, 2, 2, 3, 2)),
    ("NDHWC, output_size, no bias",
     dict(num_channels=3, num_filters=2, filter_size=2, stride=2, output_size=(5, 4, 5),
          bias_attr=False, data_format="NDHWC"), (1, 2, 2, 2, 3)),
    ("filter_size=None from output_size, leaky_relu",
     dict(num_channels=2, num_filters=2, filter_size=None, output_size=(6, 5, 4), stride=2,
          act="leaky_relu"), (1, 2, 2, 2, 2)),
]


def _check_gradients(report):
    from . import dygraph
    from .gradcheck import gradcheck

    import conv3dt

    rng = np.random.default_rng(0)
    failures = 0
    threads = conv3dt.get_num_threads()
    for desc, layer_args, shape in GRADCHECK_LAYERS:
        # Hundreds of passes over a few voxels each: one thread is fastest for such sizes.
        conv3dt.set_num_threads(1)
        try:
            with dygraph.guard():
                layer = dygraph.Conv3DTranspose(dtype="float64", **layer_args)
                x = dygraph.to_variable(rng.standard_normal(shape))
                x.stop_gradient = False
                layer(x)  # creates deferred parameters (filter_size=None)
                inputs = [x] + [p for p in (layer.weight, layer.bias) if p is not None]
                gradcheck(lambda x, *params: layer(x), inputs, max_elementwise=64,
                          n_directions=12)
        except Exception as exc:
            failures += 1
            report(f"  FAIL {desc}: {type(exc).__name__}: {exc}")
        else:
            report(f"  ok   {desc}", detail=True)
        finally:
            conv3dt.set_num_threads(threads)
    n = len(GRADCHECK_LAYERS)
    report(f"gradient checks (float64 finite differences through Conv3DTranspose): "
           f"{n - failures}/{n} passed")
    return n - failures, failures


def _check_threads(report):
    import conv3dt
    from .functional import conv3d_transpose, conv3d_transpose_backward

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 6, 7, 5)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1)
    gy = rng.standard_normal(conv3d_transpose(x, w, **kw).shape).astype(np.float32)
    previous = conv3dt.get_num_threads()
    many = max(2, previous)
    results = []
    try:
        for n in (1, many):
            conv3dt.set_num_threads(n)
            results.append((conv3d_transpose(x, w, b, **kw),)
                           + conv3d_transpose_backward(gy, x, w, **kw))
    finally:
        conv3dt.set_num_threads(previous)
    same = all(np.array_equal(a, c) for a, c in zip(*results))
    report(f"thread independence (1 vs {many} threads, forward and backward): "
           + ("bit-identical" if same else "FAIL: results differ"))
    return (1, 0) if same else (0, 1)


def _gpu_status():
    """``(cupy module or None, reason when None)``."""
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed (pip install conv3dt[gpu])"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no GPU found"
    except Exception as exc:
        return None, f"no usable GPU ({type(exc).__name__}: {exc})"
    return cupy, ""


def run(verbose=False, gpu=None, stream=None):
    """Run every check, printing to ``stream`` (default stdout); True when all passed.

    ``gpu``: None runs the reference cases on the GPU too when CuPy finds one; True
    requires it (a missing GPU is then a failure); False skips it.
    """
    import conv3dt
    from ._kernels import OPENMP

    stream = stream or sys.stdout

    def report(line, detail=False):
        if detail and not verbose:
            return
        print(line, file=stream, flush=True)

    t0 = time.perf_counter()
    report(f"conv3dt {conv3dt.__version__} self-check: OpenMP {'on' if OPENMP else 'off'}, "
           f"{conv3dt.get_num_threads()} threads, {conv3dt.get_isa()} kernels")
    passed = failed = 0
    for check in (_check_golden, _check_gradients, _check_threads):
        p, f = check(report)
        passed, failed = passed + p, failed + f
    # The reference cases once more with each other instruction-set variant this CPU runs.
    in_use = conv3dt.get_isa()
    try:
        for isa in conv3dt.available_isas():
            if isa != in_use:
                conv3dt.set_isa(isa)
                p, f = _check_golden(report, device=f"CPU, {isa} kernels")
                passed, failed = passed + p, failed + f
    finally:
        conv3dt.set_isa(in_use)
    if gpu is not False:
        cupy, reason = _gpu_status()
        if cupy is None:
            if gpu:
                failed += 1
                report(f"GPU: FAIL: {reason}")
            else:
                report(f"GPU: skipped, {reason}")
        else:
            p, f = _check_golden(report, xp=cupy, device="GPU, CuPy")
            passed, failed = passed + p, failed + f
    elapsed = time.perf_counter() - t0
    if failed:
        report(f"FAILED: {failed} of {passed + failed} checks failed ({elapsed:.1f} s)")
    else:
        report(f"OK: all {passed} checks passed ({elapsed:.1f} s)")
    return failed == 0
