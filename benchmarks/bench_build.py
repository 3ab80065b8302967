"""Build from RAM against a raw writer, and open + first read against a raw memmap: issue 21's rows.

    python benchmarks/bench_build.py [--src DIR ...] [--repeats 5] [--scale 1.0] [--work DIR] [--text DIR]

Each ``--src`` is a tree holding the ``mmap_ninja`` package (default: this checkout's ``src``); give two (the old
tree and this one) to print before/after side by side. Every figure is the median of ``--repeats`` runs, and the
runs are interleaved: each repetition runs every variant once, in a rotating order, each in a fresh process
(``--worker``), so the machine's load hits every variant alike. Only ratios measured in one run mean anything.

Build rows, per kind (strings: UTF-8 documents of 50-4,000 characters, or with ``--text DIR`` the ``*.txt``
files of DIR, such as the real corpus ``scripts/get_data.py`` fetches; tokens: 1M int32 sequences of 1-64
tokens; images: 600 uint8 arrays of 200-500 x 200-500 x 3, ~220 MB), from samples already in RAM, with the
library's default batch size:

- ``raw``: per batch, the samples' own buffers to ``os.writev`` (1,024 at a time and at most 256 KiB a call, the
  library's bound: on Linux 6.18 ext4 new page-cache pages cost 3x the system time written 1 MiB or more per call;
  a larger sample alone, in 256 KiB slices), their offsets with NumPy
  (``np.fromiter`` of the lengths, ``np.cumsum``) in one write; for N-D samples their shapes too. No checks.
- ``raw+xxh3``: the same, also hashing each column's bytes of each batch with xxh3-64 (buffer by buffer).
- ``ours``: ``StringsMmap.from_strings`` / ``RaggedMmap.from_lists`` (checksum records on, the default);
  ``ours, no checksums``: the same with the checksum algorithm patched to none (not a user option).

Ratios are speed ratios (time of the reference / time of ours: > 1 means ours is faster). Targets (issue 21):
``ours, no checksums`` >= 0.9x ``raw`` and ``ours`` >= 0.9x ``raw+xxh3``.

Open row: ``RaggedMmap(path)`` + ``m[i]`` (+ ``close()``) of a 1M-sequence token map against ``np.memmap`` of
``data.bin`` and ``offsets.bin`` + ``data[offsets[i]:offsets[i + 1]]``, alternating within one process, median of
2,000 each (target: >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

KINDS = ("strings", "tokens", "images")
RAW_VARIANTS = ("raw", "raw+xxh3")
OURS_VARIANTS = ("ours", "ours, no checksums")
_IOV = 1024
_MAX_CALL = 256 << 10  # bytes per write call: the library's bound (storage/_fsio.py), so neither side gains by it


# ---------------------------------------------------------------------------------------------- data


def samples(kind: str, scale: float, text_dir: Optional[Path] = None) -> list[Any]:
    """Deterministic samples of ``kind`` (the same in every process); ``text_dir``: strings are its ``*.txt``
    files (the first ``scale`` share of them by name, read as UTF-8 with bad bytes replaced)."""
    rng = np.random.default_rng(21)
    if kind == "strings" and text_dir is not None:
        files = sorted(text_dir.glob("*.txt"))
        if not files:
            raise SystemExit(f"no .txt files in {text_dir}")
        return [f.read_text(encoding="utf-8", errors="replace") for f in files[:max(1, int(len(files) * scale))]]
    if kind == "strings":
        n = int(40_000 * scale)
        lengths = rng.integers(50, 4_001, size=n)
        letters = rng.integers(97, 123, size=int(lengths.sum()), dtype=np.uint8).tobytes().decode("ascii")
        ends = np.cumsum(lengths).tolist()
        return [letters[a:b] for a, b in zip([0, *ends[:-1]], ends)]
    if kind == "tokens":
        n = int(1_000_000 * scale)
        lengths = rng.integers(1, 65, size=n)
        flat = rng.integers(0, 50_000, size=int(lengths.sum()), dtype=np.int32)
        return list(np.split(flat, np.cumsum(lengths)[:-1]))
    n = max(2, int(600 * scale))
    shapes = rng.integers(200, 501, size=(n, 2))
    return [rng.integers(0, 256, size=(int(h), int(w), 3), dtype=np.uint8) for h, w in shapes]


# ---------------------------------------------------------------------------------------------- raw writers


def _writev_all(fd: int, buffers: Sequence[Any], nbytes: np.ndarray[Any, Any], hashed: Optional[Any]) -> None:
    """``buffers`` (``nbytes`` bytes each) to ``os.writev``, at most ``_IOV`` of them and ``_MAX_CALL`` bytes a call
    (a larger buffer alone, in slices of ``_MAX_CALL``); ``hashed``: an xxh3 state updated buffer by buffer."""
    ends = np.cumsum(nbytes)
    start, done, count = 0, 0, len(buffers)
    while start < count:
        stop = min(count, start + _IOV, int(np.searchsorted(ends, done + _MAX_CALL, side="right")))
        if stop <= start:  # one buffer larger than a call
            view = memoryview(buffers[start]).cast("B")
            for offset in range(0, len(view), _MAX_CALL):
                os.write(fd, view[offset:offset + _MAX_CALL])
            stop = start + 1
        else:
            os.writev(fd, buffers[start:stop])
        if hashed is not None:
            deque(map(hashed.update, buffers[start:stop]), maxlen=0)  # buffer by buffer, the loop in C
        done, start = int(ends[stop - 1]), stop


def raw_build(folder: Path, kind: str, items: list[Any], batch_size: int, hash_bytes: bool) -> None:
    """The raw writer (``hash_bytes``: also xxh3-64 of each column's bytes of each batch)."""
    import xxhash

    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    folder.mkdir(parents=True, exist_ok=True)
    data_fd = os.open(folder / "data.bin", flags, 0o644)
    offsets_fd = os.open(folder / "offsets.bin", flags, 0o644)
    shapes_fd = os.open(folder / "shapes.bin", flags, 0o644) if kind == "images" else None
    digests = []
    try:
        end = np.zeros(1, dtype=np.int64)
        os.write(offsets_fd, end.data)
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            if kind == "strings":
                buffers: Sequence[Any] = [text.encode("utf-8") for text in batch]
                lengths = np.fromiter(map(len, buffers), dtype=np.int64, count=len(buffers))
            elif kind == "tokens":
                buffers = batch
                lengths = np.fromiter(map(len, buffers), dtype=np.int64, count=len(buffers))
            else:
                buffers = batch
                lengths = np.fromiter((a.size for a in buffers), dtype=np.int64, count=len(buffers))
            state = xxhash.xxh3_64() if hash_bytes else None
            _writev_all(data_fd, buffers, lengths * (4 if kind == "tokens" else 1), state)
            offsets = np.cumsum(lengths)
            offsets += end
            os.write(offsets_fd, offsets.data)
            columns = [offsets]
            end = offsets[-1:]
            if shapes_fd is not None:
                shapes = np.array([a.shape for a in batch], dtype=np.int64)
                os.write(shapes_fd, shapes.data)
                columns.append(shapes)
            if state is not None:
                digests.append(state.intdigest())
                digests.extend(xxhash.xxh3_64_intdigest(c) for c in columns)
    finally:
        for fd in (data_fd, offsets_fd, shapes_fd):
            if fd is not None:
                os.close(fd)


# ---------------------------------------------------------------------------------------------- workers


def _build_ours(folder: Path, kind: str, items: list[Any], checksums: bool) -> Callable[[], None]:
    import importlib

    import mmap_ninja

    if not checksums:
        try:  # the module that creates maps: storage/store.py, or (before the layer folders) storage.py
            storage: Any = importlib.import_module("mmap_ninja.storage.store")
        except ImportError:
            storage = importlib.import_module("mmap_ninja.storage")
        storage.default_algorithm = lambda: None

    def build() -> None:
        if kind == "strings":
            m: Any = mmap_ninja.StringsMmap.from_strings(folder, items)
        else:
            m = mmap_ninja.RaggedMmap.from_lists(folder, items)
        m.close()
    return build


def worker_build(kind: str, variant: str, scale: float, work: Path,
                 text_dir: Optional[Path] = None) -> dict[str, float]:
    """Seconds of one build of ``kind`` by ``variant`` into a fresh folder (removed afterwards): ``wall`` (elapsed)
    and ``cpu`` (this process's user + system time: the work itself, without the time spent waiting for a core or
    for the disk, which is what a loaded machine changes most)."""
    items = samples(kind, scale, text_dir)
    folder = work / f"{kind}-{variant}".replace(" ", "").replace(",", "").replace("+", "")
    shutil.rmtree(folder, ignore_errors=True)
    batch_size = 10_000 if kind == "strings" else 16_384  # the library's defaults
    if variant in RAW_VARIANTS:
        def run() -> None:
            raw_build(folder, kind, items, batch_size, variant == "raw+xxh3")
    else:
        run = _build_ours(folder, kind, items, variant == "ours")
    start, cpu = time.perf_counter(), time.process_time()
    run()
    seconds = {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu}
    shutil.rmtree(folder, ignore_errors=True)
    return seconds


def worker_open(scale: float, work: Path, rounds: int = 2_000) -> dict[str, float]:
    """Median seconds of open + first read of one sample: ours vs ``np.memmap``, alternating."""
    import mmap_ninja

    folder = work / "open-tokens"
    shutil.rmtree(folder, ignore_errors=True)
    items = samples("tokens", scale)
    mmap_ninja.RaggedMmap.from_lists(folder, items).close()
    n = len(items)
    picks = np.random.default_rng(0).integers(0, n, size=rounds).tolist()
    ours_s, raw_s = [], []
    for i in picks:
        start = time.perf_counter()
        m = mmap_ninja.RaggedMmap(folder)
        sample = m[i]
        ours_s.append(time.perf_counter() - start)
        assert len(sample) == len(items[i])
        m.close()
        start = time.perf_counter()
        data = np.memmap(folder / "data.bin", dtype=np.int32, mode="r")
        offsets = np.memmap(folder / "offsets.bin", dtype=np.int64, mode="r", shape=(n + 1,))
        sample = data[offsets[i]:offsets[i + 1]]
        raw_s.append(time.perf_counter() - start)
        del data, offsets, sample
    shutil.rmtree(folder, ignore_errors=True)
    return {"ours": statistics.median(ours_s), "raw": statistics.median(raw_s)}


# ---------------------------------------------------------------------------------------------- driver


def _run_worker(src: Optional[str], args: list[str]) -> Any:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    out = subprocess.run([sys.executable, __file__, "--worker", *args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _commit_of(src: str) -> str:
    try:
        return subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip() or "?"
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", action="append", help="a tree holding mmap_ninja (repeatable)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the number of samples")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    parser.add_argument("--no-open", action="store_true", help="skip the open + first read row")
    parser.add_argument("--text", type=Path, default=None, help="strings: the *.txt files of this folder")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        task, *rest = args.worker
        work = Path(rest[-1])
        if task == "build":
            text_dir = Path(rest[3]) if len(rest) > 4 else None
            print(json.dumps(worker_build(rest[0], rest[1], float(rest[2]), work, text_dir)))
        else:
            print(json.dumps(worker_open(float(rest[0]), work)))
        return
    srcs = args.src or [str(Path(__file__).resolve().parent.parent / "src")]
    kinds = [k for k in args.kinds.split(",") if k]
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_build-")
        args.work = Path(tmp.name)
    try:
        _report(srcs, kinds, args)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _report(srcs: list[str], kinds: list[str], args: Any) -> None:
    work: Path = args.work
    labels = {src: f"{src} ({_commit_of(src)})" for src in srcs}
    print(f"# bench_build: median of {args.repeats} interleaved runs, scale {args.scale}, "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs"
          + (f", strings from {args.text}" if args.text is not None else ""))
    for i, src in enumerate(srcs):
        print(f"- tree {i}: {labels[src]}")
    print("\nBuild from RAM, seconds (speed ratio = reference time / ours; targets >= 0.9). Wall: elapsed time; "
          "cpu: the process's user + system time (robust to a loaded machine, blind to waits):\n")
    print("| kind | tree | clock | ours, no checksums | raw | ratio | ours | raw+xxh3 | ratio |")
    print("|:--|:--|:--|--:|--:|--:|--:|--:|--:|")
    for kind in kinds:
        variants: list[tuple[Optional[str], str]] = [(None, v) for v in RAW_VARIANTS]
        variants += [(src, v) for src in srcs for v in OURS_VARIANTS]
        times: dict[tuple[Optional[str], str], list[dict[str, float]]] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            shift = repeat % len(variants)
            for src, variant in variants[shift:] + variants[:shift]:
                text = [str(args.text)] if args.text is not None and kind == "strings" else []
                times[(src, variant)].append(_run_worker(src or srcs[-1], ["build", kind, variant, str(args.scale),
                                                                          *text, str(work)]))
        for clock in ("wall", "cpu"):
            med = {v: statistics.median(t[clock] for t in runs) for v, runs in times.items()}
            for i, src in enumerate(srcs):
                off, on = med[(src, "ours, no checksums")], med[(src, "ours")]
                raw, hashed = med[(None, "raw")], med[(None, "raw+xxh3")]
                print(f"| {kind} | {i} | {clock} | {off:.3f} | {raw:.3f} | {raw / off:.2f} | {on:.3f} | "
                      f"{hashed:.3f} | {hashed / on:.2f} |", flush=True)
    if args.no_open:
        return
    print("\nOpen + first read of one sample of a 1M-sequence token map, µs (ratio = raw / ours; target >= 0.8):\n")
    print("| tree | ours | np.memmap | ratio |")
    print("|:--|--:|--:|--:|")
    rows: dict[str, list[dict[str, float]]] = {src: [] for src in srcs}
    for _ in range(max(1, args.repeats // 2)):
        for src in srcs:
            rows[src].append(_run_worker(src, ["open", str(args.scale), str(work)]))
    for i, src in enumerate(srcs):
        ours = statistics.median(r["ours"] for r in rows[src]) * 1e6
        raw = statistics.median(r["raw"] for r in rows[src]) * 1e6
        print(f"| {i} | {ours:.0f} | {raw:.0f} | {raw / ours:.2f} |", flush=True)


if __name__ == "__main__":
    main()
