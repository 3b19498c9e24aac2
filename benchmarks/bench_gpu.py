"""GPU benchmark: conv3dt's CuPy backend against PyTorch's CUDA conv_transpose3d (cuDNN).

    python benchmarks/bench_gpu.py [--dtype float32] [--repeat 20] [--warmup 3]
                                   [--only NAME ...] [--no-torch] [--tf32] [--json FILE]

Shapes are the CPU benchmark's (U-Net up-sampling, GAN generator, 'same' convolution,
a large-kernel seed layer, depthwise, dilated, video), each also with a 4x larger batch.
Times are medians over ``--repeat`` runs measured with CUDA events after ``--warmup``
runs, for the forward pass and for forward + backward (grad_x, grad_weight, grad_bias).
``ratio`` is conv3dt's time over PyTorch's (below 1: conv3dt is faster). ``err`` is the
relative max difference between the two forward outputs.

TF32 is off on both sides by default (CuPy uses it only with CUPY_TF32=1; PyTorch's
cuDNN convolutions allow it unless told otherwise), so float32 means float32;
``--tf32`` turns it on for both.

Needs CuPy and a CUDA device; exits with a message otherwise. PyTorch is optional.
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conv3dt._bench import SHAPES  # noqa: E402  (the CPU benchmark's shapes: one list)


def _shape_list():
    """(name, N, C_in, C_out, in_size, kernel, keyword arguments) per benchmark shape."""
    rows = []
    for name, (n, c_in, c_out, size, k, stride, pad, out_pad, dil, groups) in SHAPES.items():
        kw = dict(stride=stride, padding=pad, output_padding=out_pad, dilation=dil,
                  groups=groups)
        rows.append((name, n, c_in, c_out, size, k, kw))
    return rows


def _fail(message):
    sys.exit(f"bench_gpu: {message}")


def _import_cupy():
    try:
        import cupy as cp
    except ImportError:
        _fail("CuPy is not installed; install it to benchmark the GPU backend, e.g. "
              "`pip install conv3dt[gpu]` (CUDA 12: cupy-cuda12x, CUDA 13: cupy-cuda13x)")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no runtime
        _fail(f"CuPy cannot reach a CUDA device ({type(exc).__name__}: {exc})")
    if count < 1:
        _fail("no CUDA device is visible")
    return cp


def _import_torch(tf32):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return torch


def _median_ms(fn, sync_events, warmup, repeat):
    """Median of ``repeat`` timings (ms, CUDA events) of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end, elapsed = sync_events()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end))
    return statistics.median(times)


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3


def _flops(n, c_in, c_out, groups, in_size, kernel):
    k = 1
    for v in _triple(kernel):
        k *= v
    vol = in_size[0] * in_size[1] * in_size[2]
    return 2.0 * n * c_in * (c_out // groups) * k * vol


def bench_one(cp, torch, F, name, n, c_in, c_out, in_size, kernel, kw, dtype, warmup, repeat):
    import numpy as np

    cp.get_default_memory_pool().free_all_blocks()  # the previous shape's arrays
    groups = kw.get("groups", 1)
    rng = np.random.default_rng(0)
    x_h = rng.standard_normal((n, c_in) + tuple(in_size)).astype(dtype)
    w_h = (rng.standard_normal((c_in, c_out // groups) + _triple(kernel)) * 0.1).astype(dtype)
    b_h = rng.standard_normal(c_out).astype(dtype)
    x, w, b = cp.asarray(x_h), cp.asarray(w_h), cp.asarray(b_h)
    y = F.conv3d_transpose(x, w, b, **kw)
    gy = cp.asarray(rng.standard_normal(y.shape).astype(dtype))

    def cupy_events():
        return (cp.cuda.Event(), cp.cuda.Event(), cp.cuda.get_elapsed_time)

    def ours_fwd():
        F.conv3d_transpose(x, w, b, **kw)

    def ours_fwd_bwd():
        F.conv3d_transpose(x, w, b, **kw)
        F.conv3d_transpose_backward(gy, x, w, **kw)

    row = dict(name=name, n=n, c_in=c_in, c_out=c_out, in_size=list(in_size),
               kernel=list(_triple(kernel)), kwargs={k: v for k, v in kw.items()},
               out_size=list(y.shape[2:]), dtype=dtype,
               gflop=_flops(n, c_in, c_out, groups, in_size, kernel) / 1e9)
    row["ours_fwd_ms"] = _median_ms(ours_fwd, cupy_events, warmup, repeat)
    row["ours_fwd_bwd_ms"] = _median_ms(ours_fwd_bwd, cupy_events, warmup, repeat)
    if torch is not None:
        tdt = getattr(torch, dtype)
        tx = torch.as_tensor(x_h, device="cuda", dtype=tdt).requires_grad_()
        tw = torch.as_tensor(w_h, device="cuda", dtype=tdt).requires_grad_()
        tb = torch.as_tensor(b_h, device="cuda", dtype=tdt).requires_grad_()
        tgy = torch.as_tensor(cp.asnumpy(gy), device="cuda", dtype=tdt)
        targs = dict(stride=kw.get("stride", 1), padding=kw.get("padding", 0),
                     output_padding=kw.get("output_padding", 0), groups=groups,
                     dilation=kw.get("dilation", 1))
        conv = torch.nn.functional.conv_transpose3d

        def torch_events():
            return (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
                    lambda s, e: s.elapsed_time(e))

        def torch_fwd():
            with torch.no_grad():
                conv(tx, tw, tb, **targs)

        def torch_fwd_bwd():
            tx.grad = tw.grad = tb.grad = None
            conv(tx, tw, tb, **targs).backward(tgy)

        with torch.no_grad():
            ty = conv(tx, tw, tb, **targs).cpu().numpy()
        y_h = cp.asnumpy(y)
        row["err_vs_torch"] = float(np.abs(y_h - ty).max() / max(np.abs(ty).max(), 1e-30))
        cp.cuda.Device().synchronize()
        row["torch_fwd_ms"] = _median_ms(torch_fwd, torch_events, warmup, repeat)
        row["torch_fwd_bwd_ms"] = _median_ms(torch_fwd_bwd, torch_events, warmup, repeat)
        row["ratio_fwd"] = row["ours_fwd_ms"] / row["torch_fwd_ms"]
        row["ratio_fwd_bwd"] = row["ours_fwd_bwd_ms"] / row["torch_fwd_bwd_ms"]
    return row


def _fmt(v, spec):
    """``v`` formatted with ``spec`` (e.g. ``">10.3f"``), or a right-aligned dash."""
    if v is not None:
        return format(v, spec)
    width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
    return "-".rjust(width)


def print_table(rows, device):
    print(f"device: {device}")
    head = (f"{'shape':<22}{'N':>4}{'GFLOP':>8}{'fwd ms':>10}{'torch':>10}{'ratio':>7}"
            f"{'f+b ms':>10}{'torch':>10}{'ratio':>7}{'GFLOP/s':>9}{'err':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:<22}{r['n']:>4}{r['gflop']:>8.2f}"
              f"{_fmt(r['ours_fwd_ms'], '>10.3f')}{_fmt(r.get('torch_fwd_ms'), '>10.3f')}"
              f"{_fmt(r.get('ratio_fwd'), '>7.2f')}"
              f"{_fmt(r['ours_fwd_bwd_ms'], '>10.3f')}"
              f"{_fmt(r.get('torch_fwd_bwd_ms'), '>10.3f')}"
              f"{_fmt(r.get('ratio_fwd_bwd'), '>7.2f')}"
              f"{r['gflop'] * 1e3 / r['ours_fwd_ms']:>9.0f}"
              f"{_fmt(r.get('err_vs_torch'), '>9.1e')}")
    print("ratio = conv3dt time / PyTorch time (< 1: conv3dt faster); GFLOP/s: conv3dt "
          "forward; err: relative max difference of the forward outputs")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", nargs="*",
                        help="shapes to run (default: all); a base name selects both batch "
                             "sizes, NAME_x4 only the larger one")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 on both sides")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    if args.tf32:
        os.environ["CUPY_TF32"] = "1"  # read by CuPy at import
    cp = _import_cupy()
    from conv3dt import functional as F

    torch = None if args.no_torch else _import_torch(args.tf32)
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    if torch is None and not args.no_torch:
        print("PyTorch with CUDA is not importable: timing conv3dt alone", file=sys.stderr)

    rows = []
    for name, n, c_in, c_out, in_size, kernel, kw in _shape_list():
        for scale in (1, 4):
            label = name if scale == 1 else f"{name}_x4"
            if args.only and name not in args.only and label not in args.only:
                continue
            rows.append(bench_one(cp, torch, F, label, n * scale, c_in, c_out, in_size,
                                  kernel, kw, args.dtype, args.warmup, args.repeat))
            print(f"  {label}: fwd {rows[-1]['ours_fwd_ms']:.3f} ms", file=sys.stderr,
                  flush=True)
    print_table(rows, device)
    if args.json:
        meta = dict(device=device, dtype=args.dtype, warmup=args.warmup, repeat=args.repeat,
                    tf32=args.tf32, cupy=cp.__version__,
                    torch=None if torch is None else torch.__version__,
                    cudnn=None if torch is None else torch.backends.cudnn.version())
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
