"""CPU benchmark: conv3dt against PyTorch and PaddlePaddle, side by side in one process.

Times the forward pass and forward + backward (all three gradients) per shape: the median
of several calls after a warm-up, taken in rounds that alternate the libraries. GFLOP/s counts ``2 * N * C_in * (C_out / groups) *
prod(k) * prod(input DHW)`` per pass (a backward pass does two such products, so
forward + backward counts three). Peers are optional; they are timed when importable.

Used by ``benchmarks/bench_cpu.py`` and ``conv3dt bench``.
"""

import json
import os
import statistics
import subprocess
import sys
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
}
PEERS = ("torch", "paddle")
_SETTLE_S = 0.5


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


def _conv3dt_fns(x, w, b, gy, kwargs):
    from .functional import conv3d_transpose, conv3d_transpose_backward

    def fwd():
        return conv3d_transpose(x, w, b, **kwargs)

    def fwd_bwd():
        conv3d_transpose(x, w, b, **kwargs)
        return conv3d_transpose_backward(gy, x, w, **kwargs)

    return fwd, fwd_bwd


def _torch_fns(x, w, b, gy, kwargs, threads):
    import torch

    torch.set_num_threads(threads)
    tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))
    args = dict(stride=_triple(kwargs["stride"]), padding=_triple(kwargs["padding"]),
                output_padding=_triple(kwargs["output_padding"]), groups=kwargs["groups"],
                dilation=_triple(kwargs["dilation"]))

    def fwd():
        with torch.no_grad():
            return torch.nn.functional.conv_transpose3d(tx, tw, tb, **args)

    gx_, gw_, gb_ = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

    def fwd_bwd():
        for t in (gx_, gw_, gb_):
            t.grad = None
        y = torch.nn.functional.conv_transpose3d(gx_, gw_, gb_, **args)
        y.backward(tgy)

    return fwd, fwd_bwd


def _paddle_fns(x, w, b, gy, kwargs, threads):
    import paddle

    paddle.set_device("cpu")
    px, pw, pb, pgy = (paddle.to_tensor(a) for a in (x, w, b, gy))
    args = dict(stride=kwargs["stride"], padding=kwargs["padding"],
                output_padding=kwargs["output_padding"], groups=kwargs["groups"],
                dilation=kwargs["dilation"])
    f = paddle.nn.functional.conv3d_transpose

    def fwd():
        with paddle.no_grad():
            return f(px, pw, pb, **args)

    vx, vw, vb = (paddle.to_tensor(a, stop_gradient=False) for a in (x, w, b))

    def fwd_bwd():
        for t in (vx, vw, vb):
            t.clear_gradient()
        y = f(vx, vw, vb, **args)
        y.backward(pgy)

    return fwd, fwd_bwd


def peer_available(peer):
    try:
        __import__(peer)
        return True
    except Exception:
        return False


def workspace_mib(name, dtype, threads):
    """Peak extra memory of one forward + backward pass, in MiB, measured in a child process.

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
               CONV3DT_CACHE_MIB="0")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env)
    if res.returncode != 0:
        return float("nan")
    return float(res.stdout.strip().splitlines()[-1])


def _times_ms(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def run(shapes=None, dtype="float32", threads=None, repeat=7, compare=(), memory=False,
        progress=None, float64=False, scaling=False, rounds=3):
    """Benchmark ``shapes`` (default: all); returns a list of result dicts.

    Per shape, each library's forward pass is timed ``repeat`` times and forward + backward
    half as often (at least 3); the calls are spread over ``rounds``
    rounds that take the libraries in turn, so that a slow spell of a shared machine hits
    all of them, each round after one untimed call, and each time is the median of all
    calls. A 2048 x 2048 matrix product is timed in the same rounds. With conv3dt, in the same
    rounds: ``float64`` times it in float64 too (``f64_fwd_ms``, ``f64_fwdbwd_ms``);
    ``scaling`` times its forward pass on one thread (``t1_fwd_ms``).
    """
    import conv3dt

    shapes = list(SHAPES) if not shapes else list(shapes)
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; choose from {list(SHAPES)}")
    unknown = [p for p in compare if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; choose from {list(PEERS)}")
    threads = threads or conv3dt.get_num_threads()
    # A 2048 x 2048 matrix product (NumPy's BLAS): the practical ceiling of the machine,
    # timed in the same rounds as the libraries.
    square = np.random.default_rng(1).standard_normal((2048, 2048)).astype(dtype)
    previous = conv3dt.get_num_threads()
    conv3dt.set_num_threads(threads)
    peers = [p for p in compare if peer_available(p)]
    results = []
    try:
        for i, name in enumerate(shapes):
            if progress:
                progress(i, len(shapes), name)
            x, w, b, gy, kwargs = shape_arrays(name, dtype)
            row = {"shape": name, "dtype": dtype, "threads": threads, "gflop": flops(name) / 1e9}
            libs = [("conv3dt", _conv3dt_fns(x, w, b, gy, kwargs))]
            if "torch" in peers:
                libs.append(("torch", _torch_fns(x, w, b, gy, kwargs, threads)))
            if "paddle" in peers:
                libs.append(("paddle", _paddle_fns(x, w, b, gy, kwargs, threads)))
            # (key, function, threads) per library, timed together in each round
            groups = []
            for lib, (fwd, fwd_bwd) in libs:
                timed = [(f"{lib}_fwd_ms", fwd, threads), (f"{lib}_fwdbwd_ms", fwd_bwd, threads)]
                if lib == "conv3dt" and scaling:
                    timed.append(("t1_fwd_ms", fwd, 1))
                if lib == "conv3dt" and float64:
                    f64, f64_bwd = _conv3dt_fns(*shape_arrays(name, "float64"))
                    timed += [("f64_fwd_ms", f64, threads), ("f64_fwdbwd_ms", f64_bwd, threads)]
                groups.append(timed)
            groups.append([("matmul_ms", lambda: square @ square, threads)])
            calls = {"fwd": -(-repeat // rounds), "fwdbwd": -(-max(3, repeat // 2) // rounds)}
            samples = {}
            for _ in range(rounds):
                for timed in groups:
                    # Let the previous library's idle threads stop spinning (OpenMP
                    # runtimes busy-wait for up to ~0.2 s after a parallel region) so that
                    # they do not take cores from the library being timed.
                    time.sleep(_SETTLE_S)
                    for key, fn, n_threads in timed:
                        conv3dt.set_num_threads(n_threads)
                        fn()  # warm-up: wakes the threads, brings the data into cache
                        n = calls["fwdbwd" if key.endswith("fwdbwd_ms") else "fwd"]
                        samples.setdefault(key, []).extend(_times_ms(fn, n))
                    conv3dt.set_num_threads(threads)
            row.update({key: statistics.median(v) for key, v in samples.items()})
            row["matmul_gflops"] = 2 * 2048**3 / (row.pop("matmul_ms") * 1e6)
            if memory:
                row["workspace_mib"] = workspace_mib(name, dtype, threads)
            results.append(row)
        if progress:
            progress(len(shapes), len(shapes), "")
    finally:
        conv3dt.set_num_threads(previous)
    return results


def table(results):
    """The results as a text table, with ratios peer-time / conv3dt-time and conv3dt's
    forward GFLOP/s as a share of the matrix product's in the same rounds."""
    peers = [p for p in PEERS if results and f"{p}_fwd_ms" in results[0]]
    head = ["shape", "fwd ms", "GFLOP/s", "of matmul", "fwd+bwd ms"]
    for p in peers:
        head += [f"{p} fwd ms", f"{p}/conv3dt fwd", f"{p} f+b ms", f"{p}/conv3dt f+b"]
    extra = [("t1_fwd_ms", ["1-thread fwd ms", "speedup"]),
             ("f64_fwd_ms", ["f64 fwd ms", "f64/f32 fwd", "f64/f32 f+b"])]
    for key, names in extra:
        if results and key in results[0]:
            head += names
    if results and "workspace_mib" in results[0]:
        head.append("workspace MiB")
    rows = [head]
    for r in results:
        gflops = r["gflop"] / r["conv3dt_fwd_ms"] * 1e3
        row = [r["shape"], f"{r['conv3dt_fwd_ms']:.2f}", f"{gflops:.1f}",
               f"{gflops / r['matmul_gflops']:.0%}", f"{r['conv3dt_fwdbwd_ms']:.2f}"]
        for p in peers:
            row += [f"{r[f'{p}_fwd_ms']:.2f}", f"{r[f'{p}_fwd_ms'] / r['conv3dt_fwd_ms']:.2f}x",
                    f"{r[f'{p}_fwdbwd_ms']:.2f}",
                    f"{r[f'{p}_fwdbwd_ms'] / r['conv3dt_fwdbwd_ms']:.2f}x"]
        if "t1_fwd_ms" in r:
            row += [f"{r['t1_fwd_ms']:.2f}", f"{r['t1_fwd_ms'] / r['conv3dt_fwd_ms']:.2f}x"]
        if "f64_fwd_ms" in r:
            row += [f"{r['f64_fwd_ms']:.2f}", f"{r['f64_fwd_ms'] / r['conv3dt_fwd_ms']:.2f}x",
                    f"{r['f64_fwdbwd_ms'] / r['conv3dt_fwdbwd_ms']:.2f}x"]
        if "workspace_mib" in r:
            row.append(f"{r['workspace_mib']:.1f}")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(wd) if j else c.ljust(wd) for j, (c, wd) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    for p in peers:
        for kind in ("fwd", "fwdbwd"):
            ratios = [r[f"{p}_{kind}_ms"] / r[f"conv3dt_{kind}_ms"] for r in results]
            gm = float(np.exp(np.mean(np.log(ratios))))
            lines.append(f"geometric mean {p}/conv3dt ({kind}): {gm:.2f}x")
    if results:
        mm = statistics.median(r["matmul_gflops"] for r in results)
        lines.append(f"matrix product 2048^3 ({results[0]['dtype']}), median over the shapes' "
                     f"rounds: {mm:.1f} GFLOP/s")
    return "\n".join(lines)


def plot(results, path):
    """GFLOP/s per shape per library as a PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    libs = ["conv3dt"] + [p for p in PEERS if results and f"{p}_fwd_ms" in results[0]]
    names = [r["shape"] for r in results]
    xs = np.arange(len(names))
    width = 0.8 / len(libs)
    fig, ax = plt.subplots(figsize=(10, 4))
    for i, lib in enumerate(libs):
        ax.bar(xs + i * width, [r["gflop"] / r[f"{lib}_fwd_ms"] * 1e3 for r in results],
               width, label=lib)
    ax.set_xticks(xs + width * (len(libs) - 1) / 2, names, rotation=30, ha="right")
    ax.set_ylabel("forward GFLOP/s")
    ax.set_title(f"3D transposed convolution, {results[0]['dtype']}, "
                 f"{results[0]['threads']} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="conv3dt bench", description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", metavar="NAME", help=f"of {list(SHAPES)}")
    parser.add_argument("--compare", default="", help="comma-separated peers: torch,paddle")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeat", type=int, default=7,
                        help="timed forward passes per library and shape (default 7)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds the timed calls are spread over, the libraries in "
                             "turn (default 3)")
    parser.add_argument("--memory", action="store_true", help="measure workspace per shape")
    parser.add_argument("--scaling", action="store_true",
                        help="also time the forward pass on one thread")
    parser.add_argument("--float64", action="store_true",
                        help="also time float64: the ratio float64 / float32")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--plot", metavar="FILE")
    args = parser.parse_args(argv)
    compare = [p for p in args.compare.split(",") if p]
    for p in compare:
        if p not in PEERS:
            parser.error(f"--compare: unknown peer {p!r}; choose from {','.join(PEERS)}")
        if not peer_available(p):
            print(f"note: {p} is not importable; it is left out", file=sys.stderr)
    for opt in ("threads", "repeat", "rounds"):
        value = getattr(args, opt)
        if value is not None and value < 1:
            parser.error(f"--{opt} must be at least 1, got {value}")
    if args.float64 and args.dtype != "float32":
        parser.error("--float64 compares with float32; leave out --dtype float64")
    if args.shapes:
        for s in args.shapes:
            if s not in SHAPES:
                parser.error(f"--shapes: unknown shape {s!r}; choose from {list(SHAPES)}")

    def progress(i, total, name):
        bar = "#" * i + "." * (total - i)
        print(f"\r[{bar}] {i}/{total} {name:<16}", end="" if i < total else "\n",
              file=sys.stderr, flush=True)

    results = run(args.shapes, args.dtype, args.threads, args.repeat, compare, args.memory,
                  progress, float64=args.float64, scaling=args.scaling, rounds=args.rounds)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.plot:
        plot(results, args.plot)
    return 0
