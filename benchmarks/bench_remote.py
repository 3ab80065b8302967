"""Maps in object storage: a sharded map of the real text files uploaded to a real S3 server on loopback
(moto_server, started and stopped here) and read back through the cache.

    PYTHONPATH=src python benchmarks/bench_remote.py [--data data] [--shards 8] [--reads 100000] [--processes 2]
    PYTHONPATH=src python benchmarks/bench_remote.py --fetch-mb 256  # whole-file against block fetching


Reports the upload, opening (the header only), the first full read (every shard downloaded, checked with its
checksums and mapped), reopening from a warm cache, random reads against the same local sharded map, and
``--processes`` processes reading the map at once from a cold cache (the GETs the server answered per file).
Loopback has no network latency: download figures are the client's and the server's cost, not a network's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

from mmap_ninja import StringsMmap, merge, open_existing, upload
from mmap_ninja.testing.s3 import moto_server

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_remote
    from benchmarks._tables import markdown_table


def _read_all(url: str, cache: str, options: dict, barrier: object, results: object) -> None:
    m = open_existing(url, cache_dir=cache, storage_options=options)
    barrier.wait()  # type: ignore[attr-defined]
    results.put(sum(len(s) for s in m))  # type: ignore[attr-defined]
    m.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="folder holding text/*.txt (default ./data)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--fetch-mb", type=int, default=0,
                        help="instead: whole-file against block fetching of a map of this many MB "
                             "(benchmarks/bench_remote_blocks.py)")
    parser.add_argument("--block-mb", type=float, default=1.0)
    parser.add_argument("--sample-kb", type=int, default=32)
    parser.add_argument("--shuffle-reads", type=int, default=512)
    parser.add_argument("--first-only", action="store_true", help="with --fetch-mb: the first-sample table only")
    args = parser.parse_args()
    if args.fetch_mb:
        try:
            from bench_remote_blocks import run
        except ImportError:  # run as a module
            from benchmarks.bench_remote_blocks import run
        run(args.fetch_mb, args.block_mb, args.sample_kb, args.shuffle_reads, args.first_only)
        return
    texts = [p.read_text(errors="replace") for p in sorted((Path(args.data) / "text").glob("*.txt"))]
    if not texts:
        parser.error(f"no .txt files in {Path(args.data) / 'text'} (python scripts/get_data.py {args.data} makes them)")
    with tempfile.TemporaryDirectory(prefix="bench_remote_") as tmp:
        root = Path(tmp)
        with moto_server(root / "requests.jsonl") as server:
            options = server.options()
            bucket = server.bucket()
            per = -(-len(texts) // args.shards)
            parts = []
            for k in range(args.shards):
                StringsMmap.from_strings(root / f"p{k}", texts[k * per:(k + 1) * per]).close()
                parts.append(root / f"p{k}")
            local = merge(root / "local", parts)
            size = sum(f.stat().st_size for f in (root / "local").rglob("*.bin"))
            url = f"s3://{bucket}/text"

            start = time.perf_counter()
            upload(root / "local", url, storage_options=options)
            upload_s = time.perf_counter() - start
            start = time.perf_counter()
            m = open_existing(url, cache_dir=root / "cache", storage_options=options)
            open_ms = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            total = sum(len(s) for s in m)
            first_s = time.perf_counter() - start
            assert total == sum(len(t) for t in texts)
            m.close()
            start = time.perf_counter()
            warm = open_existing(url, cache_dir=root / "cache", storage_options=options)
            for k in range(args.shards):
                warm.shard(k)
            reopen_ms = (time.perf_counter() - start) * 1e3
            print(f"{len(texts):,} real text files ({size / 1e6:.1f} MB of columns) in {args.shards} shards, "
                  f"moto_server on loopback")
            print(markdown_table(["seconds / ms", "MB/s"], [
                ("upload (s)", [upload_s, size / 1e6 / upload_s]),
                ("open: the header only (ms)", [open_ms, None]),
                ("first full read: download, check, map (s)", [first_s, size / 1e6 / first_s]),
                ("reopen + every shard from a warm cache (ms)", [reopen_ms, None]),
            ]))

            rng = np.random.default_rng(0)
            indices = rng.integers(0, len(texts), args.reads).tolist()
            timings = []
            for name, reader in (("local sharded map", local), ("remote map, cached", warm)):
                read = reader.__getitem__
                best = float("inf")
                for _ in range(3):
                    start = time.perf_counter()
                    for i in indices:
                        read(i)
                    best = min(best, (time.perf_counter() - start) / len(indices) * 1e9)
                timings.append((name, best))
            print()
            print(markdown_table(["random m[i] (ns, best of 3)", "x local"],
                                 [(name, [ns, ns / timings[0][1]]) for name, ns in timings]))
            warm.close()

            context = multiprocessing.get_context("spawn")
            barrier, results = context.Barrier(args.processes), context.Queue()
            before = server.gets(bucket)
            readers = [context.Process(target=_read_all, args=(url, str(root / "cold"), options, barrier, results))
                       for _ in range(args.processes)]
            start = time.perf_counter()
            for reader in readers:
                reader.start()
            sums = [results.get(timeout=300) for _ in readers]
            for reader in readers:
                reader.join()
            took = time.perf_counter() - start
            after = server.gets(bucket)
            fetched = {k: after[k] - before.get(k, 0) for k in after if k.endswith(".bin")}
            assert sums == [total] * args.processes
            print()
            print(markdown_table(["seconds", "column files", "GETs per file (min..max)"], [
                (f"{args.processes} processes, cold cache", [took, len(fetched),
                                                            f"{min(fetched.values())}..{max(fetched.values())}"]),
            ]))


if __name__ == "__main__":
    main()
