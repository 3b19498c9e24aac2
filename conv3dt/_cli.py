"""The ``conv3dt`` command line (``python -m conv3dt`` or the ``conv3dt`` script).

Subcommands::

    conv3dt demo    Paddle's Conv3DTranspose example, a forward and backward pass, a gradient check
    conv3dt bench   CPU benchmark, optionally against PyTorch, PaddlePaddle, ONNX Runtime
    conv3dt check   self-test of this installation (reference cases, gradient checks)
    conv3dt info    version, OpenMP, threads, memory cache, NumPy's BLAS, CuPy/GPU
    conv3dt run     inference of one transposed-convolution layer on a .npy volume

Exit codes: 0 success, 1 a failed check (or an unexpected error), 2 wrong arguments or
unusable input files, 130 interrupted (Ctrl-C). Every failure is reported in one line on
stderr, ``conv3dt COMMAND: error: ...``; with ``CONV3DT_DEBUG_CLI=1`` in the environment,
errors other than wrong arguments raise instead, with their traceback.
"""
import argparse
import os
import sys
import time

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "CONV3DT_DEBUG_CLI"
PADDING_WORDS = ("SAME", "VALID", "SAME_UPPER", "SAME_LOWER")


class UsageError(Exception):
    """A problem with the user's arguments or files: reported in one line, exit code 2."""


# --------------------------------------------------------------------------- argument types


def _ints(text, counts, label):
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{label} must be integers, got {text!r}") from None
    if len(values) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise argparse.ArgumentTypeError(f"{label} takes {want} integers, got {text!r}")
    return values[0] if len(values) == 1 else values


def _triple_arg(label):
    def parse(text):
        return _ints(text, (1, 3), label)
    parse.__name__ = label  # argparse names the type in its messages
    return parse


def _padding_arg(text):
    if text.strip().upper() in PADDING_WORDS:
        return text.strip().upper()
    return _ints(text, (1, 3, 6), "padding")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


# --------------------------------------------------------------------------- demo


def _ms(seconds):
    return f"{seconds * 1e3:.1f} ms"


def cmd_demo(args):
    import conv3dt
    import conv3dt as fluid  # the name Paddle code uses
    import conv3dt.dygraph
    import conv3dt.layers
    from conv3dt.gradcheck import gradcheck

    if args.threads:
        conv3dt.set_num_threads(args.threads)
    # One seed for the data and the layers' initial weights (Xavier, drawn from conv3dt's
    # global generator): every run prints the same numbers.
    conv3dt.seed(args.seed)
    print(f"conv3dt {conv3dt.__version__}, {conv3dt.get_num_threads()} threads, "
          f"seed {args.seed}\n")

    print("1. PaddlePaddle's Conv3DTranspose example, with `import conv3dt as fluid`")
    numpy = np
    numpy.random.seed(args.seed)
    with fluid.dygraph.guard():
        data = numpy.random.random((args.batch, 3, 12, 32, 32)).astype('float32')
        conv3dTranspose = fluid.dygraph.nn.Conv3DTranspose(
            'Conv3DTranspose', num_filters=12, filter_size=12, use_cudnn=False)
        t0 = time.perf_counter()
        ret = conv3dTranspose(fluid.dygraph.base.to_variable(data))
        elapsed = time.perf_counter() - t0
    print(f"   input {list(data.shape)} float32, filter_size 12 -> output {list(ret.shape)} "
          f"in {_ms(elapsed)} (first call, creates the parameters)")
    print(f"   weight {list(conv3dTranspose.weight.shape)}, "
          f"bias {list(conv3dTranspose.bias.shape)}; output mean "
          f"{float(np.mean(ret.numpy(), dtype=np.float64)):.6f}\n")

    print("2. Forward and backward pass: a 2x upsampling layer on a 3D volume")
    rng = np.random.default_rng(args.seed)
    with fluid.dygraph.guard():
        up = fluid.dygraph.Conv3DTranspose(16, 8, filter_size=4, stride=2, padding=1,
                                           act="relu")
        volume = rng.standard_normal((1, 16, 24, 24, 24)).astype("float32")
        x = fluid.dygraph.to_variable(volume)
        t0 = time.perf_counter()
        y = up(x)
        t_fwd = time.perf_counter() - t0
        loss = fluid.layers.reduce_mean(fluid.layers.square(y))
        t0 = time.perf_counter()
        loss.backward()
        t_bwd = time.perf_counter() - t0
        gw, gb = up.weight.gradient(), up.bias.gradient()
    print("   Conv3DTranspose(16, 8, filter_size=4, stride=2, padding=1, act='relu')")
    print(f"   input {list(x.shape)} -> output {list(y.shape)}: forward {_ms(t_fwd)}, "
          f"backward {_ms(t_bwd)}")
    print(f"   loss = mean(y^2) = {float(loss.numpy()[0]):.6f}; gradients: weight "
          f"{list(gw.shape)} (|g| = {np.linalg.norm(gw):.3e}), bias {list(gb.shape)}\n")

    print("3. Gradient check: conv3dt.gradcheck on a tiny float64 layer")
    with fluid.dygraph.guard():
        tiny = fluid.dygraph.Conv3DTranspose(2, 3, filter_size=3, stride=2, padding=1,
                                             output_padding=1, act="tanh", dtype="float64")
        x = fluid.dygraph.to_variable(rng.standard_normal((1, 2, 3, 3, 3)))
        x.stop_gradient = False
        # Hundreds of passes over a few voxels each: one thread is fastest for such sizes.
        threads = conv3dt.get_num_threads()
        conv3dt.set_num_threads(1)
        t0 = time.perf_counter()
        try:
            ok = gradcheck(lambda x, w, b: tiny(x), [x, tiny.weight, tiny.bias])
        except AssertionError as exc:
            ok, message = False, str(exc)
        finally:
            conv3dt.set_num_threads(threads)
        elapsed = time.perf_counter() - t0
    print("   Conv3DTranspose(2, 3, filter_size=3, stride=2, padding=1, output_padding=1, "
          "act='tanh', dtype='float64')")
    print(f"   d(output)/d(input, weight, bias) against central differences: "
          f"{'passed' if ok else 'FAILED: ' + message} in {_ms(elapsed)} (1 thread)")
    return EXIT_OK if ok else EXIT_FAILED


# --------------------------------------------------------------------------- check / info


def cmd_check(args):
    from conv3dt import _selfcheck

    if args.threads:
        import conv3dt

        conv3dt.set_num_threads(args.threads)
    gpu = {"auto": None, "yes": True, "no": False}[args.gpu]
    return EXIT_OK if _selfcheck.run(verbose=args.verbose, gpu=gpu) else EXIT_FAILED


def _thread_facts():
    """The kernels' thread count and where it comes from, as ``conv3dt info`` states it."""
    import conv3dt
    from conv3dt import _threads

    threads = conv3dt.get_num_threads()
    cores = _threads._available_cores()
    env = os.environ.get(_threads.ENV_VAR, "").strip()
    omp = os.environ.get(_threads.OMP_ENV_VAR, "").strip()
    source = {
        "set_num_threads": "conv3dt.set_num_threads()",
        _threads.ENV_VAR: f"{_threads.ENV_VAR}={env}",
        _threads.OMP_ENV_VAR: f"{_threads.OMP_ENV_VAR}={omp}",
        "cores": f"default: the {cores} cores available to this process",
        "fork": "one thread: a process forked after its parent's kernels ran on several",
    }[_threads.thread_source()]
    return {"threads": threads, "threads_source": source, "cores_available": cores,
            _threads.ENV_VAR: env or None, "OMP_NUM_THREADS": omp or None,
            "omp_num_threads_used": _threads.thread_source() == _threads.OMP_ENV_VAR}


def _cache_facts():
    import conv3dt
    from conv3dt import _memory

    facts = dict(conv3dt.cache_info())
    env = os.environ.get(_memory.ENV_VAR, "").strip()
    if getattr(_memory._cache, "_limit", None) is not None:
        facts["limit_source"] = "conv3dt.set_cache_limit()"
    else:
        facts["limit_source"] = f"{_memory.ENV_VAR}={env}" if env else "default"
    return facts


def info():
    """Facts about this installation, as a dict (what ``conv3dt info`` prints)."""
    import platform

    import scipy

    import conv3dt
    from conv3dt._kernels import OPENMP

    facts = {
        "conv3dt": conv3dt.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "openmp": bool(OPENMP),
    }
    facts.update(_thread_facts())
    facts["isa"] = conv3dt.get_isa()
    facts["isa_available"] = conv3dt.available_isas()
    facts["cache"] = _cache_facts()
    try:
        from threadpoolctl import threadpool_info

        facts["blas"] = []
        for lib in threadpool_info():
            if lib.get("user_api") != "blas":
                continue
            entry = {k: lib.get(k) for k in ("internal_api", "version", "num_threads",
                                             "prefix", "threading_layer", "architecture")}
            # Wheels bundle their BLAS in <package>.libs: name the package, not the path.
            folder = os.path.basename(os.path.dirname(lib.get("filepath") or ""))
            entry["bundled_with"] = folder[:-5] if folder.endswith(".libs") else None
            facts["blas"].append(entry)
    except Exception as exc:  # threadpoolctl is a dependency; be robust all the same
        facts["blas"] = f"unknown ({exc})"
    try:
        import cupy

        facts["cupy"] = cupy.__version__
        try:
            count = cupy.cuda.runtime.getDeviceCount()
            facts["gpus"] = [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode()
                             for i in range(count)]
        except Exception as exc:
            facts["gpus"] = []
            facts["gpu_error"] = f"{type(exc).__name__}: {exc}"
    except ImportError:
        facts["cupy"] = None
        facts["gpus"] = []
    return facts


def _field(name, text):
    """One ``conv3dt info`` entry: the name in 10 columns, the text wrapped to 79."""
    import textwrap

    print(textwrap.fill(text, width=79, initial_indent=f"{name:<10}",
                        subsequent_indent=" " * 10))


def _mib(nbytes):
    return f"{nbytes / 2**20:.0f} MiB" if nbytes >= 2**20 or nbytes == 0 else f"{nbytes} bytes"


def cmd_info(args):
    facts = info()
    if args.json:
        import json

        print(json.dumps(facts, indent=2))
        return EXIT_OK
    from conv3dt._threads import ENV_VAR

    print(f"conv3dt   {facts['conv3dt']}")
    print(f"python    {facts['python']}, numpy {facts['numpy']}, scipy {facts['scipy']}")
    print(f"platform  {facts['platform']}")
    print(f"OpenMP    {'on' if facts['openmp'] else 'off (built without it: one thread)'}")
    if facts["openmp"]:
        _field("threads", f"{facts['threads']} ({facts['threads_source']}); change with "
               f"conv3dt.set_num_threads(n) or {ENV_VAR}; passes under about a million "
               "multiply-adds run on one thread")
    else:
        _field("threads", f"1 (no OpenMP; the configured count, {facts['threads']}, from "
               f"{facts['threads_source']}, has no effect)")
    if facts["OMP_NUM_THREADS"] and not facts["omp_num_threads_used"]:
        _field("", f"OMP_NUM_THREADS={facts['OMP_NUM_THREADS']} is set; conv3dt's kernels "
               f"do not take their count from it")
    _field("ISA", f"{facts['isa']} kernels (this CPU runs {', '.join(facts['isa_available'])};"
           f" force a lower one with CONV3DT_ISA or conv3dt.set_isa(name))")
    cache = facts["cache"]
    _field("cache", f"limit {_mib(cache['limit_bytes'])} ({cache['limit_source']}; change "
           f"with conv3dt.set_cache_limit(nbytes) or CONV3DT_CACHE_MIB); idle now "
           f"{_mib(cache['idle_bytes'])} in {cache['idle_blocks']} blocks (each process has "
           "its own cache; conv3dt.empty_cache() frees the idle memory)")
    if isinstance(facts["blas"], str) or not facts["blas"]:
        print(f"BLAS      {facts['blas'] or 'none found'}")
    else:
        for i, lib in enumerate(facts["blas"]):
            n = lib["num_threads"]
            details = [f"{n} thread{'' if n == 1 else 's'}"]
            if lib.get("architecture"):
                details.append(lib["architecture"])
            if lib.get("bundled_with"):
                details.append(f"bundled with {lib['bundled_with']}")
            print(f"{'BLAS' if i == 0 else '':<10}{lib['internal_api']} {lib['version']} "
                  f"({', '.join(details)})")
        _field("", "(loaded in this process, for NumPy; conv3dt's kernels run their own "
               "products and do not call BLAS)")
    if facts["cupy"] is None:
        print("CuPy      not installed (GPU support: pip install conv3dt[gpu])")
    else:
        print(f"CuPy      {facts['cupy']}")
    if facts["gpus"]:
        for i, name in enumerate(facts["gpus"]):
            print(f"{'GPU' if i == 0 else '':<10}{i}: {name}")
    elif facts["cupy"] is not None:
        print(f"GPU       none usable{': ' + facts['gpu_error'] if 'gpu_error' in facts else ''}")
    return EXIT_OK


# --------------------------------------------------------------------------- run


def _is_zarr(path):
    """A path naming a zarr array: ``*.zarr``, or a folder holding zarr metadata."""
    if path.rstrip("/\\").endswith(".zarr"):
        return True
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, name))
                                       for name in (".zarray", "zarr.json"))


class _NpyVolume:
    """A .npy file read in pieces through a memory map (light to send to other
    processes: it holds the path, not the data)."""

    def __init__(self, path):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(arr, np.ndarray):
            raise UsageError(f"--input: {path} is an .npz archive; save one array with "
                             "numpy.save")
        self.path, self.shape, self.dtype, self.ndim = path, arr.shape, arr.dtype, arr.ndim

    def __getitem__(self, index):
        return np.array(np.load(self.path, mmap_mode="r", allow_pickle=False)[index])


class _NpyTarget:
    """A .npy file (already created with its final shape) written piece by piece."""

    def __init__(self, path, shape, dtype):
        self.path, self.shape, self.dtype, self.ndim = path, shape, np.dtype(dtype), len(shape)

    def __setitem__(self, index, value):
        out = np.load(self.path, mmap_mode="r+", allow_pickle=False)
        out[index] = value
        out.flush()


def _load_input(path, chunked=False):
    """The input volume: an array, or with ``chunked`` an array read piece by piece (a
    zarr array, a memory-mapped .npy)."""
    if not os.path.exists(path):
        raise UsageError(f"--input: no such file: {path}")
    if _is_zarr(path):
        try:
            import zarr

            return zarr.open_array(path, mode="r")
        except Exception as exc:
            raise UsageError(f"--input: cannot read {path} as a zarr array: {exc}") from None
    try:
        if chunked:
            return _NpyVolume(path)
        x = np.load(path, allow_pickle=False)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"--input: cannot read {path} as a .npy array: {exc}") from None
    if not isinstance(x, np.ndarray):
        raise UsageError(f"--input: {path} is an .npz archive; save one array with numpy.save")
    return x


def load_weights(path):
    """``(weight, bias or None)`` from a weights file: ``save_dygraph``'s .npz, Paddle's
    .pdparams, PyTorch's .pt/.pth, .safetensors (a state dict with 'weight' and optionally
    'bias', or a single ``<prefix>weight``: a torch ``ConvTranspose3d`` state dict works)."""
    from conv3dt import _weights
    from conv3dt.dygraph import load_dygraph

    try:
        if os.path.isfile(path):
            # .npz, Paddle's .pdparams (a restricted unpickler), PyTorch's .pt (with torch,
            # weights_only) or .safetensors, told by extension and content
            arrays = _weights.load_state(path)
        else:
            arrays, _ = load_dygraph(path)  # a save_dygraph path without its suffix
            if arrays is None:
                raise UsageError(f"--weights: {path} has optimizer state, not parameters")
    except UsageError:
        raise
    except FileNotFoundError:
        raise UsageError(f"--weights: no such file: {path}") from None
    except _weights.WeightsFileError as exc:  # it names the file and the format
        raise UsageError(f"--weights: {exc}") from None
    except Exception as exc:
        raise UsageError(f"--weights: cannot read {path}: {exc}") from None
    if "weight" in arrays:
        prefix = ""
    else:
        weights = [k for k in arrays if k.endswith(".weight") and np.ndim(arrays[k]) == 5]
        if len(weights) != 1:
            raise UsageError(f"--weights: {path} has no 'weight' entry (entries: "
                             f"{sorted(arrays)}); expected a file written by "
                             "conv3dt.dygraph.save_dygraph(layer.state_dict(), ...)")
        prefix = weights[0][: -len("weight")]
    weight = arrays[prefix + "weight"]
    bias = arrays.get(prefix + "bias")
    if weight.ndim != 5:
        raise UsageError(f"--weights: 'weight' must be 5-D [C_in, C_out/groups, kD, kH, kW], "
                         f"got shape {list(weight.shape)}")
    if weight.dtype.name not in ("float32", "float64"):
        raise UsageError(f"--weights: 'weight' must be float32 or float64, got {weight.dtype}")
    if bias is not None and (bias.ndim != 1 or bias.dtype != weight.dtype):
        raise UsageError(f"--weights: 'bias' must be 1-D with the weight's dtype "
                         f"({weight.dtype}), got shape {list(bias.shape)} {bias.dtype}")
    return weight, bias


def _wants_chunks(args):
    """Whether `run` streams the volume through Dask: Zarr in or out, --memory or
    --scheduler."""
    return bool(_is_zarr(args.input) or (args.output and _is_zarr(args.output))
                or args.memory or args.scheduler)


def cmd_run(args):
    import conv3dt
    from conv3dt import _activations
    from conv3dt.functional import conv3d_transpose

    if args.threads:
        conv3dt.set_num_threads(args.threads)
    chunked = _wants_chunks(args)
    if chunked:
        try:
            import conv3dt.dask  # noqa: F401
            if _is_zarr(args.input) or (args.output and _is_zarr(args.output)):
                import zarr  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"Zarr volumes, --memory and --scheduler need dask and zarr: "
                             f"pip install \"conv3dt[dask]\" ({exc})") from None
    x = _load_input(args.input, chunked)
    weight, bias = load_weights(args.weights)
    if args.bias == "none":
        bias = None
    elif args.bias == "required" and bias is None:
        raise UsageError(f"--weights: {args.weights} has no 'bias' entry")
    if chunked:
        x = conv3dt.dask.as_dask_array(x, memory_per_task=args.memory,
                                       data_format=args.data_format)
    if args.dtype:
        x, weight = x.astype(args.dtype), weight.astype(args.dtype)
        bias = None if bias is None else bias.astype(args.dtype)
    if x.dtype.name not in ("float32", "float64"):
        raise UsageError(f"--input: the volume must be float32 or float64, got {x.dtype} "
                         "(convert with --dtype float32)")
    if x.dtype != weight.dtype:
        raise UsageError(f"dtype mismatch: the input is {x.dtype} but the weights are "
                         f"{weight.dtype}; pass --dtype {weight.dtype} to convert")
    channels_last = args.data_format == "NDHWC"
    in_shape, ndim = x.shape, x.ndim
    if ndim == 3:  # one single-channel volume
        x = x[None, ..., None] if channels_last else x[None, None]
    elif ndim == 4:  # one sample
        x = x[None]
    elif ndim != 5:
        layout = "[N, D, H, W, C]" if channels_last else "[N, C, D, H, W]"
        raise UsageError(f"--input: expected a 5-D {layout} volume (or 4-D without N, or "
                         f"3-D with one channel), got shape {list(x.shape)}")
    channels = x.shape[-1] if channels_last else x.shape[1]
    if channels != weight.shape[0]:
        raise UsageError(f"shape mismatch: the input has {channels} channels "
                         f"(shape {list(x.shape)}, {args.data_format}) but the weights expect "
                         f"C_in = {weight.shape[0]} (weight shape {list(weight.shape)})")
    c_out = weight.shape[1] * args.groups
    if bias is not None and bias.shape[0] != c_out:
        raise UsageError(f"shape mismatch: bias has {bias.shape[0]} entries but the layer has "
                         f"C_out = {c_out} (weight shape {list(weight.shape)}, "
                         f"groups {args.groups})")
    kwargs = dict(stride=args.stride, padding=args.padding, output_padding=args.output_padding,
                  dilation=args.dilation, groups=args.groups, output_size=args.output_size,
                  data_format=args.data_format)
    if chunked:
        return _run_chunked(args, x, weight, bias, kwargs, in_shape, ndim)
    t0 = time.perf_counter()
    try:
        y = conv3d_transpose(x, weight, bias, **kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    except MemoryError as exc:
        raise UsageError(f"{exc}; stream it through Dask with --memory (and --output "
                         "OUT.zarr)") from None
    if args.act:
        y = _activations.apply(args.act, np, y).astype(y.dtype, copy=False)
    elapsed = time.perf_counter() - t0
    y = _output_rank(y, ndim, channels_last)
    if args.output:
        try:
            with open(args.output, "wb") as f:  # the name given, no suffix added
                np.save(f, y)
        except OSError as exc:
            raise UsageError(f"--output: cannot write {args.output}: {exc}") from None
    where = f", saved to {args.output}" if args.output else " (not saved: no --output)"
    print(f"input {list(in_shape)} {x.dtype} -> output "
          f"{list(y.shape)} {y.dtype} in {_ms(elapsed)}{where}")
    if not args.output or args.stats:
        print(f"output min {float(y.min()):.6g}, mean {float(y.mean()):.6g}, "
              f"max {float(y.max()):.6g}")
    return EXIT_OK


def _output_rank(y, ndim, channels_last):
    """5-D output for a 5-D input; without N for a 4-D one; for a 3-D input without N,
    and without C too when the layer has one output channel."""
    if ndim < 5:
        y = y[0]
        if ndim == 3 and y.shape[-1 if channels_last else 0] == 1:
            y = y[..., 0] if channels_last else y[0]
    return y


def _run_chunked(args, x, weight, bias, kwargs, in_shape, ndim):
    """`run` through Dask: the output computed chunk by chunk and written as it comes."""
    import dask

    import conv3dt.dask as cdask
    from conv3dt import _activations

    import conv3dt

    # conv3dt keeps idle memory for reuse (256 MiB by default): within a memory budget
    # per task, two tasks' worth is what pays.
    budget = cdask._budget(args.memory)
    if conv3dt.get_cache_limit() > 2 * budget:
        conv3dt.set_cache_limit(2 * budget)
    t0 = time.perf_counter()
    if args.output and not _is_zarr(args.output):
        _check_disk_space(args.output, x, weight, kwargs)
    try:
        y = cdask.conv3d_transpose(x, weight, bias, **kwargs, memory_per_task=args.memory)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if args.act:
        y = y.map_blocks(cdask._activate, args.act, _activations.attrs_for(args.act),
                         dtype=y.dtype, meta=y._meta)
    n_tasks = y.npartitions
    y = _output_rank(y, ndim, args.data_format == "NDHWC")
    work = []
    if args.output:
        try:
            if _is_zarr(args.output):
                work.append(cdask.to_zarr(y, args.output, compute=False))
            else:
                np.lib.format.open_memmap(args.output, mode="w+", dtype=y.dtype,
                                          shape=y.shape).flush()
                work.append(dask.array.store(y, _NpyTarget(args.output, y.shape, y.dtype),
                                             lock=False, compute=False))
        except UsageError:
            raise
        except Exception as exc:  # zarr 2 reports some unwritable paths as a KeyError
            raise UsageError(f"--output: cannot write {args.output}: "
                             f"{type(exc).__name__}: {exc}") from None
    stats = not args.output or args.stats
    if stats:
        work += [y.min(), y.mean(), y.max()]
    try:
        results = _compute(work, args.scheduler)
    except MemoryError as exc:
        raise UsageError(f"out of memory in a task ({exc}): lower --memory") from None
    except OSError as exc:
        raise UsageError(f"--output: cannot write {args.output}: {exc}") from None
    elapsed = time.perf_counter() - t0
    where = f", saved to {args.output}" if args.output else " (not saved: no --output)"
    print(f"input {list(in_shape)} {x.dtype} -> output {list(y.shape)} {y.dtype} in "
          f"{_ms(elapsed)}{where} ({n_tasks} chunks, {args.scheduler or 'threads'} scheduler)")
    if stats:
        low, mean, high = (float(v) for v in results[-3:])
        print(f"output min {low:.6g}, mean {mean:.6g}, max {high:.6g}")
    return EXIT_OK


def _check_disk_space(path, x, weight, kwargs):
    """A .npy output larger than the free space where it goes is refused at once."""
    import math
    import shutil

    from conv3dt._geometry import resolve

    try:
        plan = resolve(x.shape, weight.shape, **kwargs)
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"--output: cannot write {path}: {exc}") from None
    nbytes = math.prod(plan.y_shape) * x.dtype.itemsize
    if nbytes > free:
        raise UsageError(f"--output: the output of shape {plan.y_shape} needs {nbytes} bytes, "
                         f"only {free} are free where {path} would go")


def _compute(work, scheduler):
    """Compute the dask collections in ``work`` with a progress bar on stderr: on a local
    scheduler (threads, processes, synchronous) or a distributed cluster (its address)."""
    import dask

    if scheduler in (None, "threads", "processes", "synchronous"):
        if not sys.stderr.isatty():  # a log file: no bar redrawn ten times a second
            return dask.compute(*work, scheduler=scheduler or "threads")
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return dask.compute(*work, scheduler=scheduler or "threads")
    try:
        from distributed import Client, progress
    except ImportError:
        raise UsageError("--scheduler: a cluster address needs distributed: pip install "
                         "\"conv3dt[dask]\"") from None
    try:
        client = Client(scheduler, timeout="5s")
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--scheduler: cannot reach a Dask scheduler at {scheduler}: "
                         f"{exc}") from None
    with client:
        futures = client.compute(work)
        if sys.stderr.isatty():
            progress(futures)
        return client.gather(futures)


def _memory_arg(text):
    """A size in bytes: an integer, or a number with a unit (KB, MB, GB, KiB, MiB, GiB)."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?i?b?)\s*", text, re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"must be a size such as 512MiB or 2GB, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower().rstrip("b")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
             "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}.get(unit)
    if scale is None or number * scale < 1:
        raise argparse.ArgumentTypeError(f"must be a size such as 512MiB or 2GB, got {text!r}")
    return int(number * scale)


def _scheduler_arg(text):
    if text in ("threads", "processes", "synchronous"):
        return text
    if "://" in text or ":" in text:
        return text if "://" in text else f"tcp://{text}"
    raise argparse.ArgumentTypeError(f"must be threads, processes, synchronous or a "
                                     f"scheduler address (tcp://HOST:PORT), got {text!r}")


# --------------------------------------------------------------------------- parser

DEMO_HELP = """\
Runs PaddlePaddle's documented Conv3DTranspose example unchanged but for `import conv3dt
as fluid`, a forward and backward pass of an upsampling layer on a 3D volume, and a
finite-difference gradient check of a tiny float64 layer; prints shapes, timings and the
check's result.
"""

CHECK_HELP = """\
Checks this installation: the 60 reference cases computed by PaddlePaddle's CPU kernels
(output and all three gradients), finite-difference gradient checks through
Conv3DTranspose, and thread-count independence; on a machine with CuPy and a GPU the
reference cases run on the GPU too. Exit code 0 when all pass, else 1.
"""

INFO_HELP = """\
Prints conv3dt's version, whether the kernels were built with OpenMP, the thread count and
where it comes from, the memory cache (limit, idle bytes), the BLAS libraries loaded in the
process (NumPy's; conv3dt's kernels do not call BLAS) and whether CuPy and a GPU are
available.
"""

RUN_HELP = """\
Inference without writing Python: applies a Conv3DTranspose layer whose parameters were
saved with conv3dt.dygraph.save_dygraph (an .npz with 'weight' [C_in, C_out/groups, kD,
kH, kW] and optionally 'bias' [C_out]) to a volume saved with numpy.save (.npy) or as a
Zarr array (a .zarr folder). The volume is 5-D [N, C, D, H, W] (NDHWC: [N, D, H, W, C]),
4-D without N, or 3-D with one channel; the output is 5-D for a 5-D input, without N for
a 4-D one, and for a 3-D one without N and, when the layer has one output channel,
without C. Layer options are those the layer was built with; integers may be given as
one value or as comma-separated lists. A Zarr input or output, --memory or --scheduler
stream the volume through Dask chunk by chunk (pip install "conv3dt[dask]"), with a
progress bar: volumes larger than memory, results equal to one call bit for bit.
"""


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def _para(text):
    """A description wrapped for the terminal (the formatter keeps line breaks as given)."""
    import textwrap

    return textwrap.fill(" ".join(text.split()), width=79)


def build_parser():
    import conv3dt
    from conv3dt import _activations

    parser = argparse.ArgumentParser(
        prog="conv3dt", formatter_class=_formatter,
        description="conv3dt: fast, exact 3D transposed convolution with PaddlePaddle's "
                    "semantics.",
        epilog="Run `conv3dt COMMAND --help` for a command's options. Exit codes: 0 success, "
               "1 a failed check, 2 wrong arguments or unusable input files.")
    parser.add_argument("--version", action="version", version=f"conv3dt {conv3dt.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo", formatter_class=_formatter, help="run the main example: Paddle's "
        "Conv3DTranspose, a forward/backward pass and a gradient check",
        description=_para(DEMO_HELP))
    p.add_argument("--batch", type=_positive_int, default=5,
                   help="batch size of Paddle's example (default 5, as in its docs)")
    p.add_argument("--threads", type=_positive_int, help="kernel threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data and the initial weights (default 0): the same seed "
                        "prints the same numbers")
    p.set_defaults(func=cmd_demo)

    # Parsed by conv3dt._bench.main; listed here for `conv3dt --help`.
    sub.add_parser("bench", add_help=False,
                   help="CPU benchmark (--shapes, --compare torch,paddle,onnxruntime, "
                        "--threads, --json, --plot; see `conv3dt bench --help`)")

    p = sub.add_parser(
        "check", formatter_class=_formatter, help="self-test this installation (exit 0 or 1)",
        description=_para(CHECK_HELP))
    p.add_argument("-v", "--verbose", action="store_true", help="list every case")
    p.add_argument("--gpu", choices=("auto", "yes", "no"), default="auto",
                   help="check the GPU backend: auto (when a GPU is found), yes (require "
                        "it), no")
    p.add_argument("--threads", type=_positive_int, help="kernel threads (default: all cores)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "info", formatter_class=_formatter,
        help="version, OpenMP, threads, memory cache, BLAS, CuPy/GPU availability",
        description=_para(INFO_HELP))
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(func=cmd_info)

    acts = sorted(_activations.ACTIVATIONS)
    p = sub.add_parser(
        "run", formatter_class=_formatter,
        help="apply one transposed-convolution layer to a .npy or Zarr volume",
        description=_para(RUN_HELP),
        epilog="examples:\n  conv3dt run --input vol.npy --weights up.pdparams.npz "
               "--stride 2 --padding 1 --output up.npy\n  conv3dt run --input vol.zarr "
               "--weights up.pdparams.npz --stride 2 --output up.zarr --memory 512MiB")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="input volume (.npy, or a .zarr folder)")
    p.add_argument("--weights", required=True, metavar="FILE.npz",
                   help="layer parameters written by save_dygraph (.pdparams.npz or .npz)")
    p.add_argument("--output", metavar="FILE",
                   help="where to save the output: a .zarr folder (Zarr), else a .npy file "
                        "of exactly this name")
    g = p.add_argument_group("layer options (as in Conv3DTranspose)")
    g.add_argument("--stride", type=_triple_arg("stride"), default=1, metavar="S",
                   help="1 or 3 ints (default 1)")
    g.add_argument("--padding", type=_padding_arg, default=0, metavar="P",
                   help="1, 3 or 6 ints [d_lo,d_hi,h_lo,h_hi,w_lo,w_hi], or SAME, VALID, "
                        "SAME_UPPER, SAME_LOWER (default 0)")
    g.add_argument("--output-padding", type=_triple_arg("output-padding"), default=0,
                   metavar="P", help="1 or 3 ints (default 0)")
    g.add_argument("--output-size", type=_triple_arg("output-size"), default=None,
                   metavar="D,H,W", help="pick the output size in [D', D' + stride)")
    g.add_argument("--dilation", type=_triple_arg("dilation"), default=1, metavar="D",
                   help="1 or 3 ints (default 1)")
    g.add_argument("--groups", type=_positive_int, default=1, metavar="G", help="(default 1)")
    g.add_argument("--data-format", choices=("NCDHW", "NDHWC"), default="NCDHW",
                   help="layout of the input and output (default NCDHW)")
    g.add_argument("--act", choices=acts, metavar="NAME",
                   help="activation after the bias: " + ", ".join(acts))
    g.add_argument("--bias", choices=("auto", "none", "required"), default="auto",
                   help="auto: add the bias when the file has one (default); none: ignore "
                        "it (Paddle 1.8's numbers); required: error without one")
    o = p.add_argument_group("other options")
    o.add_argument("--dtype", choices=("float32", "float64"),
                   help="convert the input and the weights to this dtype first")
    o.add_argument("--threads", type=_positive_int,
                   help="kernel threads (default: all cores; with Dask: per task, default 1 "
                        "per task and one task per core)")
    o.add_argument("--stats", action="store_true",
                   help="also print the output's min/mean/max when saving")
    c = p.add_argument_group("chunked runs through Dask (volumes larger than memory)")
    c.add_argument("--memory", type=_memory_arg, metavar="SIZE",
                   help="memory per task, such as 512MiB (default: dask's array.chunk-size, "
                        "128 MiB): sets the chunks' size")
    c.add_argument("--scheduler", type=_scheduler_arg, metavar="NAME",
                   help="threads (default), processes, synchronous, or the address of a "
                        "distributed scheduler (tcp://HOST:PORT)")
    p.set_defaults(func=cmd_run)
    return parser


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv=None):
    """Entry point of ``conv3dt`` and ``python -m conv3dt``; returns the exit code.

    Every failure is one line on stderr, ``conv3dt COMMAND: error: ...``: wrong arguments
    and unusable files, ValueError, TypeError and OSError exit 2; MemoryError and
    unexpected errors (bugs) exit 1; Ctrl-C exits 130. With ``CONV3DT_DEBUG_CLI=1`` every
    error but wrong arguments raises instead, with its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("demo", "bench", "check", "info", "run") else ""
    prefix = f"conv3dt {command}: error:" if command else "conv3dt: error:"
    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    try:
        if command == "bench":
            from conv3dt import _bench

            return _bench.main(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_usage(sys.stderr)
            print("conv3dt: error: a command is required: demo, bench, check, info or run",
                  file=sys.stderr)
            return EXIT_USAGE
        return args.func(args)
    except UsageError as exc:
        print(f"{prefix} {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `conv3dt info | head -1`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix} interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError) as exc:
        if debug:
            raise
        print(f"{prefix} {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as exc:
        if debug:
            raise
        print(f"{prefix} out of memory: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if debug:
            raise
        print(f"{prefix} internal error, {type(exc).__name__}: {_one_line(exc)} (set "
              f"{DEBUG_ENV}=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_FAILED
