"""Sharded maps: how long merging N tiny maps takes, how long opening the result takes, and the cost of a
random read from a sharded map against the same samples in one map (the issue's targets: 1,000 shards merge
in under a second; a random read costs at most 1.5x a single map's).

    PYTHONPATH=src python benchmarks/bench_shards.py [--shards 1000] [--samples-per-shard 100] [--reads 200000]

Building the tiny maps is not timed (it is what a worker of a distributed build would do). Reads are timed in
one run of the same process, one after the other, on warm page caches, with ``m[i]`` for random ``i``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mmap_ninja import RaggedMmap
from mmap_ninja.sharded import ShardedMap, merge

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_shards
    from benchmarks._tables import markdown_table


def _build(root: Path, shards: int, per_shard: int) -> tuple[list[Path], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    paths, samples = [], []
    for k in range(shards):
        chunk = [rng.integers(0, 50_000, rng.integers(8, 64)).astype(np.int32) for _ in range(per_shard)]
        RaggedMmap.from_lists(root / f"m{k:05d}", chunk).close()
        paths.append(root / f"m{k:05d}")
        samples.extend(chunk)
    return paths, samples


def _read_ns(m: object, indices: list[int]) -> float:
    read = m.__getitem__  # type: ignore[attr-defined]
    start = time.perf_counter()
    for i in indices:
        read(i)
    return (time.perf_counter() - start) / len(indices) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=1000, help="tiny maps to merge")
    parser.add_argument("--samples-per-shard", type=int, default=100)
    parser.add_argument("--read-shards", type=int, default=50, help="shards of the read comparison (<= 64: all open)")
    parser.add_argument("--reads", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        root = Path(tmp)
        paths, samples = _build(root / "many", args.shards, args.samples_per_shard)
        start = time.perf_counter()
        merge(root / "merged", paths).close()
        merge_s = time.perf_counter() - start
        start = time.perf_counter()
        merged = ShardedMap(root / "merged")
        open_ms = (time.perf_counter() - start) * 1e3
        print(f"{args.shards} maps of {args.samples_per_shard} ragged int32 samples each")
        print(markdown_table(["merge (s)", "open (ms)"], [("merge by rename; open", [merge_s, open_ms])]))

        per_shard = max(1, len(samples) // args.read_shards)
        read_paths, read_samples = _build(root / "few", args.read_shards, per_shard)
        single = RaggedMmap.from_lists(root / "single", read_samples)
        sharded = merge(root / "sharded", read_paths)
        rng = np.random.default_rng(1)
        indices = rng.integers(0, len(read_samples), args.reads).tolist()
        _read_ns(single, indices[:10_000])  # warm both: the page cache, every shard open
        for i in range(len(sharded)):
            sharded[i]
        single_ns = min(_read_ns(single, indices) for _ in range(3))
        sharded_ns = min(_read_ns(sharded, indices) for _ in range(3))
        # More shards than max_open_shards and uniformly random reads: most reads reopen a shard.
        thrash_ns = _read_ns(merged, rng.integers(0, len(merged), 5_000).tolist())
        print()
        print(markdown_table(["random m[i] (ns)", "x one map"], [
            (f"one map of {len(read_samples):,} samples (best of 3)", [single_ns, 1.0]),
            (f"{args.read_shards} shards, all open (best of 3)", [sharded_ns, sharded_ns / single_ns]),
            (f"{args.shards} shards, 64 open, uniform random", [thrash_ns, thrash_ns / single_ns]),
        ]))


if __name__ == "__main__":
    main()
