"""Per-sample codecs and checksums on the real text corpus: the targets of the codecs issue, side by side in one run.

    python benchmarks/bench_codecs.py --data data [--repeats 3]

Prints, for no codec, zstd-3 with a dictionary, zstd-3 without and lz4: the compression ratio, the build
throughput (dictionary training timed on its own), the compress-only throughput and the random `str` read time
against the uncompressed map; then the build throughput of 1M int32 token sequences with and without checksum
records (interleaved repeats, so the machine's noise hits both). Every row is measured in this process, one after
the other, best of the repeats.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import mmap_ninja
from mmap_ninja.codecs import Zstd
from mmap_ninja.storage import store as storage


def texts(data: Path) -> list[str]:
    files = sorted((data / "text").rglob("*.txt"))
    return [f.read_bytes().decode("utf-8", "replace") for f in files]


def best(repeats: int, run: Any) -> float:
    return min(run() for _ in range(repeats))


def read_time(m: Any, indices: list[int]) -> float:
    start = time.perf_counter()
    for i in indices:
        m[i]
    return (time.perf_counter() - start) / len(indices) * 1e6


def codec_rows(corpus: list[str], work: Path, repeats: int) -> list[dict[str, Any]]:
    raw_bytes = sum(len(t.encode()) for t in corpus)
    indices = np.random.default_rng(0).integers(0, len(corpus), 100_000).tolist()
    rows = []
    for name, codec in [("none", None), ("zstd-3 + dictionary", Zstd(3)), ("zstd-3", Zstd(3, dictionary_size=0)),
                        ("lz4", "lz4")]:
        def build(name: str = name, codec: Any = codec) -> float:
            shutil.rmtree(work / name, ignore_errors=True)
            start = time.perf_counter()
            mmap_ninja.StringsMmap.from_strings(work / name, corpus, codec=codec).close()
            return time.perf_counter() - start
        seconds = best(repeats, build)
        m = mmap_ninja.StringsMmap(work / name, mode="r")
        read = best(repeats, lambda m=m: read_time(m, indices))
        stored = (work / name / "data.bin").stat().st_size
        rows.append({"codec": name, "ratio": raw_bytes / stored, "build MB/s": raw_bytes / 1e6 / seconds,
                     "read µs": read})
    zstd = Zstd(3)
    encoded = [t.encode() for t in corpus]
    sample = [encoded[i] for i in np.random.default_rng(0).choice(len(encoded), 2000, replace=False)]
    start = time.perf_counter()
    dictionary = zstd.train(sample)
    training = time.perf_counter() - start
    compress = zstd.compressor(dictionary)
    compress_seconds = best(repeats, lambda: _timed(lambda: [compress(b) for b in encoded]))
    for row in rows:
        row["read / none"] = row["read µs"] / rows[0]["read µs"]
    return [*rows, {"training s": training, "compress MB/s": raw_bytes / 1e6 / compress_seconds}]


def _timed(work: Any) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def checksum_rows(work: Path, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 200, 1_000_000)
    values = rng.integers(0, 50_000, int(lengths.sum()), dtype=np.int32)
    samples = np.split(values, np.cumsum(lengths)[:-1])
    megabytes = values.nbytes / 1e6
    default = storage.default_algorithm
    results: dict[str, list[float]] = {"with checksums": [], "without": []}
    try:
        for _ in range(repeats):
            for label, algorithm in (("with checksums", default), ("without", lambda: None)):
                storage.default_algorithm = algorithm  # type: ignore[assignment]
                shutil.rmtree(work / "tokens", ignore_errors=True)
                results[label].append(megabytes / _timed(
                    lambda: mmap_ninja.RaggedMmap.from_lists(work / "tokens", samples).close()))
    finally:
        storage.default_algorithm = default
    return {label: max(v) for label, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_codecs_"))
    try:
        corpus = texts(args.data)
        rows = codec_rows(corpus, work, args.repeats)
        codec_table, extra = rows[:-1], rows[-1]
        print(f"{len(corpus):,} texts, {sum(len(t.encode()) for t in corpus) / 1e6:.1f} MB; best of {args.repeats}\n")
        print("| codec | ratio | build MB/s | random str read (µs) | read / uncompressed |")
        print("|:--|--:|--:|--:|--:|")
        for row in codec_table:
            print(f"| {row['codec']} | {row['ratio']:.2f} | {row['build MB/s']:.0f} | {row['read µs']:.2f} | "
                  f"{row['read / none']:.2f} |")
        print(f"\nzstd-3 dictionary training on 2,000 texts: {extra['training s']:.2f} s; compressing every text "
              f"with it: {extra['compress MB/s']:.0f} MB/s")
        sums = checksum_rows(work, args.repeats)
        loss = 1 - sums["with checksums"] / sums["without"]
        print(f"\nBuild of 1M int32 token sequences: {sums['with checksums']:.0f} MB/s with checksum records "
              f"({storage.default_algorithm()}), {sums['without']:.0f} MB/s without: {100 * loss:.1f} % slower\n")
        zstd, lz4 = codec_table[1], codec_table[3]
        targets = [
            ("zstd-3 + dictionary ratio", ">= 3.0", zstd["ratio"], zstd["ratio"] >= 3.0),
            ("zstd-3 + dictionary random read / uncompressed", "<= 7x", zstd["read / none"], zstd["read / none"] <= 7),
            ("zstd-3 compress throughput (MB/s)", ">= 100", extra["compress MB/s"], extra["compress MB/s"] >= 100),
            ("dictionary training (s)", "<= 1", extra["training s"], extra["training s"] <= 1),
            ("lz4 random read / uncompressed", "<= 3x", lz4["read / none"], lz4["read / none"] <= 3),
            ("build throughput lost to checksums", "<= 8 %", 100 * loss, loss <= 0.08),
        ]
        print("| target | goal | measured | pass? |\n|:--|--:|--:|--:|")
        for name, goal, value, ok in targets:
            print(f"| {name} | {goal} | {value:.2f} | {'PASS' if ok else 'FAIL'} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
