"""Whole-file against ranged block fetching of one map on a real S3 server on loopback (moto_server, started and
stopped here); bytes are counted from the server's request log (each GET's Range, or the whole object).

    PYTHONPATH=src python benchmarks/bench_remote.py --fetch-mb 256 [--block-mb 1] [--sample-kb 32] \
        [--shuffle-reads 512] [--first-only]

A ragged map of random bytes (``--fetch-mb`` MB in samples of about ``--sample-kb`` KB) is uploaded, then read from
cold caches:

- first sample: the bytes and the time to ``m[n // 2]`` (opening excluded: one request), whole against blocks,
  beside the time of one ranged GET of a block (s3fs ``cat_ranges``);
- an epoch with a cache limit of a quarter of the map, by blocks: bytes fetched per sample read, in the stored order,
  in the order of `BlockShuffleSampler` (two ranks sharing the cache, padding included) and in a full shuffle (its
  first ``--shuffle-reads`` reads: a full shuffle refetches blocks, the counter-example a block shuffle avoids);
- a cold sequential pass by blocks against s3fs ``cat_ranges`` of the same byte ranges, one block at a time.

The upload gives the server a long read timeout: moto_server joins the parts of a multipart upload in memory, and
for a 1 GiB column that takes longer than botocore's default 60 s read timeout on a loaded machine (the client
then retries ``CompleteMultipartUpload``, which fails with a 500 while the first one is still joining).

moto_server answers a ranged GET by reading the whole object and slicing it, so each request of a large object
costs the server the object's size: at 1 GiB an epoch of ranged reads takes hours under load. ``--first-only``
measures the first sample only (whole against blocks against one ranged GET, all paying that cost once per GET).

Loopback has no network latency: the times are the client's and the server's costs, not a network's.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmap_ninja import RaggedMmap, open_existing, upload
from mmap_ninja.storage import _granularity
from mmap_ninja.testing.s3 import moto_server

try:
    from _tables import markdown_table
except ImportError:  # run as a module
    from benchmarks._tables import markdown_table


class _Log:
    """Bytes the server sent since the last call, from its request log (read from where the last call stopped)."""

    def __init__(self, path: Path, sizes: dict[str, int]):
        self.path = path
        self.sizes = sizes
        self.offset = 0
        self.take()

    def take(self) -> tuple[int, int]:
        """(GET requests, bytes) since the last call."""
        requests = sent = 0
        if not self.path.exists():
            return 0, 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for line in f:
                self.offset += len(line)
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry.get("method") != "GET":
                    continue
                key = entry["url"].rsplit("/", 1)[-1]
                if key not in self.sizes:  # (requests with a query string are not object reads)
                    continue
                requests += 1
                wanted = (entry.get("headers") or {}).get("Range")
                if wanted:
                    a, b = wanted.split("=", 1)[1].split("-")
                    sent += min(int(b) + 1, self.sizes[key]) - int(a)
                else:
                    sent += self.sizes[key]
        return requests, sent


def run(fetch_mb: int, block_mb: float, sample_kb: int, shuffle_reads: int, first_only: bool = False) -> None:
    block = int(block_mb * (1 << 20))
    _granularity.DEFAULT_GRANULARITY = max(block // 4, 4096)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_remote_blocks_") as tmp:
        root = Path(tmp)
        total = fetch_mb << 20
        sizes_of_samples = rng.integers(sample_kb << 9, sample_kb << 11, size=total // (sample_kb << 10))

        def samples() -> Any:
            for size in sizes_of_samples:
                yield rng.integers(0, 256, size=int(size), dtype=np.uint8)

        RaggedMmap.from_generator(root / "local", samples(), batch_size=256).close()
        sizes = {p.name: p.stat().st_size for p in (root / "local").iterdir() if p.is_file()}
        n = len(sizes_of_samples)
        with moto_server(root / "requests.jsonl") as server:
            options = server.options()
            bucket = server.bucket()
            url = f"s3://{bucket}/map"
            patient = server.options(config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 5,
                                                    "read_timeout": 3600})
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            upload(root / "local", url, storage_options=patient)
            print(f"upload of {sum(sizes.values()) / 1e6:.0f} MB: {time.perf_counter() - start:.0f} s", flush=True)
            import s3fs

            fs = s3fs.S3FileSystem(**options)
            # The uploaded objects are named after the map's id and commit (data.<id>-<commit>.bin).
            objects = [path.rsplit("/", 1)[-1] for path in fs.ls(f"{bucket}/map", detail=False)]
            remote_sizes = {name: sizes[name.split(".")[0] + ".bin"] for name in objects if name.endswith(".bin")}
            data_object = f"{bucket}/map/" + next(name for name in objects if name.startswith("data."))
            log = _Log(root / "requests.jsonl", remote_sizes)
            rows = []
            for fetch in ("whole", "blocks"):
                m = open_existing(url, cache_dir=root / f"first-{fetch}", storage_options=options, fetch=fetch,
                                  block_size=block)
                log.take()
                start = time.perf_counter()
                m[n // 2]
                took = time.perf_counter() - start
                requests, sent = log.take()
                rows.append((f"first sample, fetch={fetch!r}", [sent / 1e6, requests, took * 1e3]))
                m.close()
            offsets = np.fromfile(root / "local" / "offsets.bin", dtype="<i8")
            first = int(np.searchsorted(offsets, offsets[n // 2] // block * block))
            start = time.perf_counter()
            fs.cat_ranges([data_object], [int(offsets[first])], [int(offsets[first]) + block])
            one_get = time.perf_counter() - start
            log.take()
            rows.append(("one ranged GET of a block (s3fs cat_ranges)", [block / 1e6, 1, one_get * 1e3]))
            print(f"ragged map of {n:,} samples, {sizes['data.bin'] / 1e6:.0f} MB of data, blocks of {block_mb} MiB "
                  f"(checksum records every {_granularity.DEFAULT_GRANULARITY >> 10} KiB), moto_server on loopback, "
                  f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} now")
            print(markdown_table(["MB fetched", "GETs", "ms"], rows), flush=True)
            if first_only:
                return

            limit = sizes["data.bin"] // 4
            order_rows = []
            shuffled = rng.permutation(n)[:shuffle_reads].tolist()
            from mmap_ninja.adapters.torch import BlockShuffleSampler

            probe = open_existing(url, cache_dir=root / "probe", storage_options=options, fetch="blocks",
                                  block_size=block)
            ranks = 2
            sampled = [list(BlockShuffleSampler(probe, window_blocks=4, seed=0, rank=r, world_size=ranks))
                       for r in range(ranks)]
            probe.close()
            orders: list[tuple[str, list[Any]]] = [
                ("stored order, every sample", [range(n)]),
                (f"BlockShuffleSampler, {ranks} ranks, window 4 blocks, padding included", sampled),
                (f"full shuffle, first {len(shuffled)} reads", [shuffled])]
            for name, parts in orders:
                cache = root / f"epoch-{len(order_rows)}"
                log.take()
                read = 0
                for part in parts:  # each rank opens the map on the node's one cache
                    m = open_existing(url, cache_dir=cache, storage_options=options, fetch="blocks",
                                      block_size=block, cache_size_limit=limit, max_open_shards=2)
                    for i in part:
                        read += len(m[i])
                    m.close()
                requests, sent = log.take()
                order_rows.append((f"fetch='blocks', {name}", [sent / 1e6, sent / sizes["data.bin"], sent / read,
                                                              requests]))
            print()
            print(f"cache_size_limit = a quarter of the data ({limit / 1e6:.0f} MB); load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
            print(markdown_table(["MB fetched", "x data bytes", "bytes fetched / bytes read", "GETs"], order_rows))

            m = open_existing(url, cache_dir=root / "sequential", storage_options=options, fetch="blocks",
                              block_size=block)
            start = time.perf_counter()
            read = sum(len(s) for s in m)
            ours = time.perf_counter() - start
            _, sent = log.take()
            plan = m._plan
            ranges = [r for _, a, b in m._blocks for r in plan.ranges(a, b) if r.column == "data"]
            m.close()
            start = time.perf_counter()
            for r in ranges:
                fs.cat_ranges([data_object], [r.start], [r.stop])
            theirs = time.perf_counter() - start
            got = sum(r.stop - r.start for r in ranges)
            print()
            print(markdown_table(["s", "MB/s", "x cat_ranges"], [
                ("cold sequential pass, fetch='blocks' (fetch, check, write, read)", [ours, sent / 1e6 / ours,
                                                                                     (sent / ours) / (got / theirs)]),
                ("s3fs cat_ranges of the same data ranges, one block at a time", [theirs, got / 1e6 / theirs, 1.0]),
            ]))
            print(f"load average {os.getloadavg()[0]:.1f}")
            assert read == int(offsets[-1])
