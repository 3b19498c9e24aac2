"""CPU benchmark of conv3dt, optionally against PyTorch and PaddlePaddle.

    python benchmarks/bench_cpu.py [--compare torch,paddle] [--threads N] [--dtype float64]
                                   [--memory] [--scaling] [--float64] [--json FILE]
                                   [--plot FILE]

Same as `conv3dt bench`; see conv3dt/_bench.py.
"""
import sys

from conv3dt._bench import main

if __name__ == "__main__":
    sys.exit(main())
