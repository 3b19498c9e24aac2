"""The instruction-set variants side by side: forward and forward+backward time of every
benchmark shape with each variant this CPU runs, in one process, interleaved rounds (all
variants each round), medians. Prints the CPU model, its SIMD flags and the ratios.

    python benchmarks/bench_isa.py [--repeat 5] [--rounds 3] [--threads 2] [--shapes ...]
"""
import argparse
import platform
import statistics
import time

import conv3dt
from conv3dt import _bench
from conv3dt.functional import conv3d_transpose, conv3d_transpose_backward


def _cpu():
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = " ".join(sorted(f for f in line.split(":", 1)[1].split()
                                            if f.startswith(("avx", "fma", "sse4"))))
                    break
    except OSError:
        pass
    return model, flags


def _time(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="calls per round and variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=2, help="kernel threads")
    parser.add_argument("--shapes", nargs="+", default=list(_bench.SHAPES),
                        help="benchmark shapes (default: all)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    conv3dt.set_num_threads(args.threads)
    variants = conv3dt.available_isas()
    model, flags = _cpu()
    print(f"CPU: {model}\nflags: {flags}\nthreads: {args.threads}, {args.dtype}, "
          f"medians of {args.repeat} x {args.rounds} calls\n")
    print(f"{'shape':<14}" + "".join(f"{v + ' fwd':>13}{v + ' f+b':>13}" for v in variants)
          + "".join(f"{'fwd ' + v + '/' + variants[0]:>18}" for v in variants[1:]))
    before = conv3dt.get_isa()
    for name in args.shapes:
        x, w, b, gy, kw = _bench.shape_arrays(name, args.dtype)
        times = {v: ([], []) for v in variants}
        for _ in range(args.rounds):
            for v in variants:
                conv3dt.set_isa(v)
                conv3d_transpose(x, w, b, **kw)  # warm the plan
                times[v][0].extend(_time(lambda: conv3d_transpose(x, w, b, **kw), args.repeat))
                times[v][1].extend(_time(lambda: (conv3d_transpose(x, w, b, **kw),
                                                  conv3d_transpose_backward(gy, x, w, **kw)),
                                         args.repeat))
        med = {v: (statistics.median(f) * 1e3, statistics.median(fb) * 1e3)
               for v, (f, fb) in times.items()}
        row = f"{name:<14}" + "".join(f"{med[v][0]:>13.2f}{med[v][1]:>13.2f}" for v in variants)
        row += "".join(f"{med[v][0] / med[variants[0]][0]:>18.2f}" for v in variants[1:])
        print(row, flush=True)
    conv3dt.set_isa(before)


if __name__ == "__main__":
    main()
