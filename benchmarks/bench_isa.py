"""The instruction-set variants side by side: every benchmark shape with each variant this
CPU runs, in one process, interleaved rounds (all variants each round), medians, a table
per variant with its own FMA peak and the first variant's time over its own.

    python benchmarks/bench_isa.py [--compare torch,paddle,onnxruntime] [--threads 2]
                                   [--repeat N] [--rounds R] [--shapes NAME ...]

Same as `conv3dt bench --isa all` (see `conv3dt bench --help` and docs/cli.rst); the code
is in conv3dt/_bench.py.
"""
import sys

from conv3dt._bench import main

if __name__ == "__main__":
    sys.exit(main(["--isa", "all"] + sys.argv[1:]))
