"""CPU benchmark of conv3dt, optionally against PyTorch, PaddlePaddle and ONNX Runtime.

    python benchmarks/bench_cpu.py [--shapes NAME ...] [--compare torch,paddle,onnxruntime]
                                   [--threads N] [--dtype float64] [--repeat N] [--rounds R]
                                   [--memory] [--scaling] [--float64] [--json FILE]
                                   [--plot FILE]

Same as `conv3dt bench` (see `conv3dt bench --help` and docs/cli.rst); the code is in
conv3dt/_bench.py.
"""
import sys

from conv3dt._bench import main

if __name__ == "__main__":
    sys.exit(main())
