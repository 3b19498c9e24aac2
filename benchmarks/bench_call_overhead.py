"""Per-call overhead on a tiny problem: conv3dt's functional API against PyTorch.

    python benchmarks/bench_call_overhead.py [--dtype float64] [--rounds 31] [--calls 200]
                                             [--threads N] [--json FILE]

The problem is so small (N=1, 4 -> 4 channels, 4^3 input, kernel 3, stride 2, padding 1)
that a call's time is almost all the Python around the kernels: argument checks, the
geometry, allocation, the finiteness check of the weight. Rows:

- ``conv3dt forward`` / ``conv3dt backward``: ``conv3dt.functional.conv3d_transpose`` and
  ``conv3d_transpose_backward`` (all three gradients), as a user calls them;
- ``conv3dt forward, out=``: the forward pass writing into a preallocated output;
- ``backend forward`` / ``backend backward``: the CPU backend's entry points
  (``conv3dt._cpu.forward`` / ``backward``) on a resolved plan and preallocated outputs,
  i.e. what is left once the functional layer costs nothing;
- ``torch forward``: ``torch.nn.functional.conv_transpose3d`` under ``torch.no_grad()``;
  ``torch backward``: ``torch.ops.aten.convolution_backward`` (the three gradients, no
  autograd graph), when torch is installed.

Candidates run in interleaved rounds (each round times ``--calls`` calls of every candidate
in turn), so a load change on the machine hits them all alike; the table shows the median
per-call time over the rounds, the range of the middle half and the best round.
"""
import argparse
import inspect
import json
import statistics
import sys
import time

import numpy as np

import conv3dt
from conv3dt import _cpu
from conv3dt import functional as F
from conv3dt._geometry import resolve

SHAPE_X = (1, 4, 4, 4, 4)
SHAPE_W = (4, 4, 3, 3, 3)
CONV = dict(stride=2, padding=1)


def _candidates(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE_X).astype(dtype)
    w = rng.standard_normal(SHAPE_W).astype(dtype)
    b = rng.standard_normal(SHAPE_W[1]).astype(dtype)
    y = F.conv3d_transpose(x, w, b, **CONV)
    gy = rng.standard_normal(y.shape).astype(dtype)
    out = np.empty_like(y)
    plan = resolve(x.shape, w.shape, **CONV)
    gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    cands = {
        "conv3dt forward": lambda: F.conv3d_transpose(x, w, b, **CONV),
        "backend forward": lambda: _cpu.forward(plan, x, w, b, out),
        "conv3dt backward": lambda: F.conv3d_transpose_backward(gy, x, w, **CONV),
        "backend backward": lambda: _cpu.backward(plan, gy, x, w, gx, gw, gb),
    }
    for name in ("backend forward", "backend backward"):
        try:  # internal entry points: rows left out where their signature has changed
            cands[name]()
        except (TypeError, AttributeError) as exc:
            print(f"({name} left out: {exc})")
            del cands[name]
    if "out" in inspect.signature(F.conv3d_transpose).parameters:
        cands["conv3dt forward, out="] = lambda: F.conv3d_transpose(x, w, b, out=out, **CONV)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))
        tconv = torch.nn.functional.conv_transpose3d
        conv_backward = torch.ops.aten.convolution_backward

        def torch_forward():
            with torch.no_grad():
                return tconv(tx, tw, tb, stride=2, padding=1)

        def torch_backward():
            return conv_backward(tgy, tx, tw, [SHAPE_W[1]], [2, 2, 2], [1, 1, 1], [1, 1, 1],
                                 True, [0, 0, 0], 1, [True, True, True])

        # Both compute what conv3dt computes.
        ref = torch_forward().numpy()
        tol = 1e-4 if dtype == np.float32 else 1e-10
        assert np.allclose(y, ref, rtol=tol, atol=tol), "torch forward differs"
        for got, want in zip(F.conv3d_transpose_backward(gy, x, w, **CONV), torch_backward()):
            assert np.allclose(got, want.numpy(), rtol=tol, atol=tol), "torch backward differs"
        cands["torch forward"] = torch_forward
        cands["torch backward"] = torch_backward
    return cands, torch


def run(dtype, rounds, calls):
    cands, torch = _candidates(dtype)
    for f in cands.values():  # warm up: caches, thread pools, first-touch pages
        for _ in range(calls):
            f()
    times = {name: [] for name in cands}
    clock = time.perf_counter
    for _ in range(rounds):
        for name, f in cands.items():
            t0 = clock()
            for _ in range(calls):
                f()
            times[name].append((clock() - t0) / calls)
    return times, torch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads of conv3dt and torch (default: their own defaults)")
    parser.add_argument("--json", metavar="FILE", help="write the per-round times here")
    args = parser.parse_args(argv)
    if args.threads:
        conv3dt.set_num_threads(args.threads)
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(args.threads)
    times, torch = run(np.dtype(args.dtype).type, args.rounds, args.calls)
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"{cpu}; conv3dt {conv3dt.__version__} ({conv3dt.get_num_threads()} threads)"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch
             else ", torch not installed")
          + f"; {args.dtype}, x {SHAPE_X}, weight {SHAPE_W}, stride 2, padding 1; "
          f"median of {args.rounds} rounds of {args.calls} calls")
    med = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    print(f"{'':24s} {'us/call':>9s} {'middle half':>15s} {'best round':>10s}")
    for name, t in times.items():
        q = statistics.quantiles([v * 1e6 for v in t], n=4)
        print(f"{name:24s} {med[name]:9.1f} {q[0]:7.1f}-{q[2]:<7.1f} {min(t) * 1e6:10.1f}")
    if torch is not None:
        print(f"forward / torch:  {med['conv3dt forward'] / med['torch forward']:.2f}x   "
              f"backward / torch: {med['conv3dt backward'] / med['torch backward']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "dtype": args.dtype, "seconds_per_call": times}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
