"""What a commit and an open cost with ``commit="slots"`` against the rename protocol (issue 26).

    python benchmarks/bench_commit_slots.py [--commits 300] [--opens 300] [--rounds 5] [--work DIR]

Per protocol, one map of 1,000 short strings; a round times ``--commits`` single-string ``append`` calls (each a
whole transaction: lock, catch-up, write, publish) and ``--opens`` ``StringsMmap(path, mode="r")`` + ``m[0]`` +
``close()``. Rounds alternate the two protocols (rename first in even rounds, slots first in odd ones), so the
machine's load hits both alike; every figure is the median over rounds of the per-call mean, in microseconds, with
the ratio slots / rename (> 1: slots is slower). ``--durable`` times ``durable=True`` commits instead. Only ratios
measured in one run mean anything; the load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mmap_ninja import StringsMmap

PROTOCOLS = ("rename", "slots")


def _commits(path: Path, count: int, durable: bool) -> float:
    with StringsMmap(path, durable=durable) as m:
        start = time.perf_counter()
        for i in range(count):
            m.append(f"sample {i}")
        return (time.perf_counter() - start) / count * 1e6


def _opens(path: Path, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        m = StringsMmap(path, mode="r")
        m[0]
        m.close()
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--opens", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--durable", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_slots_", dir=args.work))
    try:
        paths = {}
        for protocol in PROTOCOLS:
            paths[protocol] = work / protocol
            StringsMmap.from_generator(paths[protocol], (f"s{i}" for i in range(1000)), 256,
                                       commit=protocol).close()
        commit_us: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
        open_us: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
        for r in range(args.rounds):
            for protocol in PROTOCOLS if r % 2 == 0 else PROTOCOLS[::-1]:
                commit_us[protocol].append(_commits(paths[protocol], args.commits, args.durable))
                open_us[protocol].append(_opens(paths[protocol], args.opens))
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.rounds} rounds, "
              f"{'durable' if args.durable else 'not durable'}")
        print(f"| {'µs per call (median of rounds)':<34} | {'rename':>8} | {'slots':>8} | {'slots / rename':>14} |")
        print(f"|:{'-' * 34}-|-{'-' * 7}:|-{'-' * 7}:|-{'-' * 13}:|")
        for what, figures in (("append (one commit)", commit_us), ("open + m[0] + close", open_us)):
            rename, slots = statistics.median(figures["rename"]), statistics.median(figures["slots"])
            print(f"| {what:<34} | {rename:8.1f} | {slots:8.1f} | {slots / rename:14.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
