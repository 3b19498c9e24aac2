"""Benchmark of conv3dt.dask: the chunked path against one call, and an out-of-core run.

    python benchmarks/bench_dask.py [--size 128] [--chunk 64] [--repeat 3]
                                    [--ooc-size 128] [--ooc-limit 512MiB] [--json FILE]

1. Overhead on a volume that fits: one call of conv3dt.conv3d_transpose on the whole
   volume (all threads) against conv3dt.dask.conv3d_transpose on input chunks of
   CHUNK^3 with the threaded scheduler (one kernel thread per task, one task per core),
   its blocks kept in memory (``persist``) and assembled into one array (``compute``).
   Each result is checked bit for bit against the whole call.
2. Out-of-core: a Zarr input whose output is larger than a worker's memory limit,
   written to Zarr by a distributed.LocalCluster of 2 single-threaded worker processes;
   throughput (output bytes per second) and each worker's peak resident memory (VmHWM).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def _best(fn, repeat):
    times, result = [], None
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def overhead(size, chunk, repeat, threads):
    import dask
    import dask.array as da

    import conv3dt
    import conv3dt.dask as cd

    if threads:
        conv3dt.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, size, size, size)).astype(np.float32)
    w = rng.standard_normal((16, 8, 4, 4, 4)).astype(np.float32) * 0.05
    b = rng.standard_normal(8).astype(np.float32)
    kw = dict(stride=2, padding=1)
    whole_s, want = _best(lambda: conv3dt.conv3d_transpose(x, w, b, **kw), repeat)
    xd = da.from_array(x, chunks=(1, 16, chunk, chunk, chunk))
    y = cd.conv3d_transpose(xd, w, b, **kw, memory_per_task="1GiB")
    n_tasks = len(y.__dask_graph__())
    with dask.config.set(scheduler="threads"):
        persist_s, kept = _best(lambda: y.persist(), repeat)
        compute_s, got = _best(lambda: y.compute(), repeat)
    assert np.array_equal(got.view(np.int32), want.view(np.int32)), "not bitwise equal"
    del kept
    return dict(input=list(x.shape), output=list(want.shape), input_chunks=chunk,
                output_chunks=[c[0] for c in y.chunks], blocks=y.npartitions,
                graph_tasks=n_tasks, threads=conv3dt.get_num_threads(),
                one_call_s=whole_s, chunked_persist_s=persist_s, chunked_compute_s=compute_s,
                persist_ratio=persist_s / whole_s, compute_ratio=compute_s / whole_s)


def _peak_rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def out_of_core(size, limit, memory_per_task):
    import distributed
    import zarr
    from dask.utils import parse_bytes

    import conv3dt.dask as cd

    limit_bytes = parse_bytes(limit)
    folder = tempfile.mkdtemp(prefix="conv3dt-bench-")
    rng = np.random.default_rng(1)
    shape = (1, 8, size, size, size)
    src = cd.create_zarr(os.path.join(folder, "in.zarr"), shape, (1, 8, 64, 64, 64),
                         np.float32, compressed=False)
    for d0 in range(0, size, 64):
        d1 = min(size, d0 + 64)
        src[:, :, d0:d1] = rng.standard_normal((1, 8, d1 - d0, size, size)).astype(np.float32)
    w = (rng.standard_normal((8, 16, 2, 2, 2)) * 0.1).astype(np.float32)
    src = zarr.open_array(os.path.join(folder, "in.zarr"), mode="r")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit=limit, dashboard_address=None,
                                  silence_logs=40) as cluster:
        with distributed.Client(cluster) as client:
            y = cd.conv3d_transpose(src, w, stride=2, memory_per_task=memory_per_task)
            t0 = time.perf_counter()
            cd.to_zarr(y, os.path.join(folder, "out.zarr"), compressed=False)
            elapsed = time.perf_counter() - t0
            peaks = sorted(client.run(_peak_rss).values())
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return dict(input=list(shape), output=list(y.shape), output_bytes=int(y.nbytes),
                worker_memory_limit=limit_bytes, memory_per_task=memory_per_task,
                blocks=y.npartitions, seconds=elapsed,
                throughput_mb_s=y.nbytes / elapsed / 1e6,
                peak_rss_per_worker=peaks,
                peak_under_limit=all(p < limit_bytes for p in peaks))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="input D=H=W (overhead)")
    parser.add_argument("--chunk", type=int, default=64, help="input chunk edge (overhead)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="kernel threads of the one call")
    parser.add_argument("--ooc-size", type=int, default=128, help="input D=H=W (out-of-core)")
    parser.add_argument("--ooc-limit", default="512MiB", help="memory limit per worker")
    parser.add_argument("--ooc-task", default="32MiB", help="memory_per_task (out-of-core)")
    parser.add_argument("--skip-ooc", action="store_true")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    results = {"overhead": overhead(args.size, args.chunk, args.repeat, args.threads)}
    r = results["overhead"]
    print(f"overhead: input {r['input']} -> output {r['output']} float32, {r['threads']} "
          f"threads; input chunks {r['input_chunks']}^3 -> {r['blocks']} blocks, "
          f"{r['graph_tasks']} tasks")
    print(f"  one call          {r['one_call_s'] * 1e3:8.1f} ms")
    print(f"  chunked, persist  {r['chunked_persist_s'] * 1e3:8.1f} ms  "
          f"({r['persist_ratio']:.2f}x)")
    print(f"  chunked, compute  {r['chunked_compute_s'] * 1e3:8.1f} ms  "
          f"({r['compute_ratio']:.2f}x, blocks assembled into one array)")
    if not args.skip_ooc:
        results["out_of_core"] = o = out_of_core(args.ooc_size, args.ooc_limit, args.ooc_task)
        print(f"out-of-core: Zarr {o['input']} -> Zarr {o['output']} "
              f"({o['output_bytes'] / 2**20:.0f} MiB) on 2 workers limited to "
              f"{o['worker_memory_limit'] / 2**20:.0f} MiB, {o['blocks']} blocks")
        print(f"  {o['seconds']:.2f} s, {o['throughput_mb_s']:.0f} MB/s of output; peak "
              f"memory per worker {', '.join(f'{p / 2**20:.0f}' for p in o['peak_rss_per_worker'])}"
              f" MiB (under the limit: {o['peak_under_limit']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
