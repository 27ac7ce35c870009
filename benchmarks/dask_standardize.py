"""Per-channel standardization of a large float32 Dask array, fastnorm.dask against dask's own.

The array, (N, 64, 256, 256) float32 of --gib GiB (4 by default), is generated chunk by chunk
with ``dask.array.random`` (uniform; never materialized whole), and the standardized result is
streamed into a sink that keeps nothing (``dask.array.store``), so only chunks are ever in
memory, on the same scheduler for both:

* fastnorm: ``fastnorm.dask.batch_norm(x, None, None, training=True, eps=1e-12)`` (dask's
  formula has no eps): the per-channel statistics are computed at the call (one pass:
  generation + fastnorm's moments kernel, merged with Chan's formula), the output when stored
  (generation again + fastnorm's normalization kernel);
* dask: ``(x - x.mean(axis, keepdims=True)) / x.std(axis, keepdims=True)`` with
  axis=(0, 2, 3): one graph (each generated chunk is kept until the statistics are done).

Also timed: generating the chunks alone (stored to the sink), and a NumPy copy of 256 MiB for
the machine's memory bandwidth. The "bandwidth fraction" counts the bytes fastnorm's kernels
move (statistics: one read of x; normalization: one read and one write) over the elapsed time,
against a copy's (one read and one write); generation is not counted as traffic, so it is a
lower bound on how busy memory was.

    python benchmarks/dask_standardize.py                  # 4 GiB, 64 MiB chunks, threads
    python benchmarks/dask_standardize.py --gib 1          # smaller machines
    python benchmarks/dask_standardize.py --scheduler distributed --workers 2
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import fastnorm  # noqa: E402
import fastnorm.dask as fd  # noqa: E402

C, H, W = 64, 256, 256
AXES = (0, 2, 3)


class Sink:
    """A dask.array.store target that keeps nothing."""

    def __setitem__(self, key, value):
        pass


def copy_bandwidth(nbytes=256 << 20, repeat=5):
    """Bytes per second of np.copyto (read + write), the fastest of `repeat`."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gib", type=float, default=4.0, help="array size in GiB (default 4)")
    p.add_argument("--chunk-mib", type=int, default=64, help="chunk size in MiB (default 64)")
    p.add_argument("--scheduler", choices=["threads", "distributed"], default="threads")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    args = p.parse_args(argv)

    per_sample = C * H * W * 4
    n = max(1, int(args.gib * 2**30) // per_sample)
    per_chunk = max(1, (args.chunk_mib << 20) // per_sample)
    rng = da.random.default_rng(0)

    def make():
        return rng.random((n, C, H, W), dtype=np.float32, chunks=(per_chunk, C, H, W))

    x = make()
    nbytes = x.nbytes
    print(f"x: {x.shape} float32, {nbytes / 2**30:.2f} GiB in {x.npartitions} chunks of "
          f"{per_chunk * per_sample / 2**20:.0f} MiB; scheduler {args.scheduler}; "
          f"{os.cpu_count()} CPUs; fastnorm threads {fastnorm.get_num_threads()}")

    cluster = client = None
    if args.scheduler == "distributed":
        from distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
        scheduler = client.get
    else:
        scheduler = "threads"

    try:
        with dask.config.set(scheduler=scheduler):
            # correctness first, on the first chunk of samples (outside the timings)
            y1 = fd.batch_norm(x, None, None, training=True, eps=1e-12)[:per_chunk].compute()
            y2 = ((x - x.mean(axis=AXES, keepdims=True))
                  / x.std(axis=AXES, keepdims=True))[:per_chunk].compute()
            diff = float(np.max(np.abs(y1 - y2)))
            assert diff < 1e-3, f"fastnorm.dask and dask disagree by {diff}"

            t_gen = timed(lambda: da.store(make(), Sink(), lock=False))

            def ours():
                da.store(fd.batch_norm(make(), None, None, training=True, eps=1e-12), Sink(),
                         lock=False)

            def theirs():
                xx = make()
                y = (xx - xx.mean(axis=AXES, keepdims=True)) / xx.std(axis=AXES, keepdims=True)
                da.store(y, Sink(), lock=False)

            t_ours = timed(ours)
            t_theirs = timed(theirs)
    finally:
        if client is not None:
            client.close()
            cluster.close()

    bw = copy_bandwidth()
    moved = 3 * nbytes  # statistics: read x; normalization: read x, write y
    frac = moved / t_ours / bw
    print(f"generation alone:             {t_gen:7.2f} s")
    print(f"fastnorm.dask.batch_norm:     {t_ours:7.2f} s")
    print(f"dask (x - mean) / std:        {t_theirs:7.2f} s")
    print(f"ratio dask / fastnorm:        {t_theirs / t_ours:7.2f}x   (max |diff| on the first "
          f"chunk {diff:.1e})")
    print(f"copy bandwidth {bw / 1e9:.1f} GB/s; fastnorm's kernel traffic {moved / 2**30:.1f} GiB "
          f"in {t_ours:.2f} s = {moved / t_ours / 1e9:.2f} GB/s, {frac:.1%} of a copy's "
          f"(generation of x twice included in the time)")


if __name__ == "__main__":
    main()
