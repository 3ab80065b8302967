"""The per-item pass (``for x in m``) of two source trees beside pyarrow, interleaved: issue 21's iteration rows.

    python -m benchmarks --only iteration --data DATA --no-upstream --work WORK --keep   # builds WORK's maps once
    python benchmarks/bench_iteration_ab.py --work WORK --src /tmp/base/src --src src [--rounds 5]

Reads the maps and Arrow files ``python -m benchmarks --only iteration`` left in ``WORK`` (``--keep``). Every
figure is the task `_peers.task_iterate` runs for that table (a fresh process: both sides' files dropped from the
page cache and read back by an untimed pass, then the best of 5 timed passes), here run ``--rounds`` times per
variant, the variants (each tree's ``for x in m``, and pyarrow) in a rotating order in every round so that the
machine's load hits them alike. Printed: the median µs per item of each variant, and the speed ratio of each tree
against pyarrow (pyarrow's time / ours: > 1 means ours is faster; target >= 1.0).

``--short-strings``: also time ``for text in m`` over maps of 200,000 random ASCII strings of mean length 8, 32,
128 and 512 bytes, and of random strings of mean length 32 bytes with characters of one to four UTF-8 bytes (built in
WORK once, by the last tree), for each tree (same interleaving; the median of the best of 5 passes, ns per string).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
KINDS = ("tokens", "images", "strings")
MAPS = {"strings": "text_ours", "images": "images_ours", "tokens": "tokens_ours"}


def _run(spec: dict[str, Any], src: Optional[str]) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    out = subprocess.run([sys.executable, str(HERE / "_worker.py"), json.dumps(spec)], env=env, check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


_SHORT_PASS = """
import sys, time
from mmap_ninja import StringsMmap
m = StringsMmap(sys.argv[1], mode="r")
best = float("inf")
for _ in range(6):  # the first pass reads the pages in
    start = time.perf_counter()
    chars = 0
    for text in m:
        chars += len(text)
    best = min(best, time.perf_counter() - start)
print(best / len(m) * 1e9)
"""

_SHORT_BUILD = """
import sys
import numpy as np
from mmap_ninja import StringsMmap
mean, path, utf8 = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "utf8"
rng = np.random.default_rng(mean)
if utf8:  # mostly ASCII, a few 2-, 3- and 4-byte characters: about 1.3 bytes a character
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789éüñçå日本語€😀"))
    lengths = rng.integers(0, round(2 * mean / 1.3) + 1, size=200_000)
    text = "".join(alphabet[rng.integers(0, len(alphabet), size=int(lengths.sum()))].tolist())
else:
    lengths = rng.integers(0, 2 * mean + 1, size=200_000)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
    text = alphabet[rng.integers(0, len(alphabet), size=int(lengths.sum()))].tobytes().decode()
cuts = np.concatenate([[0], np.cumsum(lengths)]).tolist()
StringsMmap.from_strings(path, [text[a:b] for a, b in zip(cuts, cuts[1:])], overwrite=True).close()
"""


def _python(code: str, src: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], env={**os.environ, "PYTHONPATH": src}, check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def short_strings(work: Path, srcs: list[str], rounds: int) -> None:
    print("\n`for text in m` over 200,000 random strings, ns per string (median of "
          f"{rounds} processes, each the best of 5 passes):\n")
    trees = " | ".join(f"tree {i}" for i in range(len(srcs)))
    print(f"| mean bytes | characters | {trees} | tree 0 / last tree |")
    print("|--:|:--|" + "--:|" * (len(srcs) + 1))
    for mean, alphabet in ((8, "ascii"), (32, "ascii"), (128, "ascii"), (512, "ascii"), (32, "utf8")):
        path = work / (f"short_strings_{mean}" if alphabet == "ascii" else f"short_{alphabet}_{mean}")
        if not (path / "header.json").exists():
            _python(_SHORT_BUILD, srcs[-1], str(mean), str(path), alphabet)
        times: list[list[float]] = [[] for _ in srcs]
        for round_ in range(rounds):
            for i in [(round_ + k) % len(srcs) for k in range(len(srcs))]:
                times[i].append(float(_python(_SHORT_PASS, srcs[i], str(path))))
        med = [statistics.median(t) for t in times]
        characters = "ASCII" if alphabet == "ascii" else "1-4 UTF-8 bytes"
        print(f"| {mean} | {characters} | " + " | ".join(f"{m:.0f}" for m in med) + f" | {med[0] / med[-1]:.2f} |",
              flush=True)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the --work folder of a kept benchmarks run")
    parser.add_argument("--src", action="append", help="a tree holding mmap_ninja (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--short-strings", action="store_true", help="also time short ASCII strings per tree")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from benchmarks.peers import map_facts

    srcs = args.src or [str(HERE.parent / "src")]
    print(f"# bench_iteration_ab: median of {args.rounds} interleaved processes (each the best of 5 passes), "
          f"load average {os.getloadavg()[0]:.1f} at the start, {os.cpu_count()} CPUs")
    for i, src in enumerate(srcs):
        print(f"- tree {i}: {src}")
    header = " | ".join(f"tree {i}" for i in range(len(srcs)))
    print("\nµs per item; wall: elapsed time of the best pass, cpu: the process's CPU time of its best pass (blind to "
          "waits for a core on a loaded machine)")
    print(f"\n| kind | clock | {header} | pyarrow | "
          + " | ".join(f"tree {i} speed ratio" for i in range(len(srcs))) + " |")
    print("|:--|:--|" + "--:|" * (2 * len(srcs) + 1))
    for kind in [k for k in args.kinds.split(",") if k]:
        ours_map = args.work / MAPS[kind]
        dtype, largest, _ = map_facts(ours_map)
        common = {"task": "iterate", "kind": kind, "passes": 5, "dtype": dtype, "max_sample_items": largest}
        variants: list[tuple[str, Optional[str]]] = [("ours", src) for src in srcs] + [("arrow", None)]
        times: dict[int, list[float]] = {v: [] for v in range(len(variants))}
        cpu: dict[int, list[float]] = {v: [] for v in range(len(variants))}
        counts: set[tuple[int, int]] = set()
        for round_ in range(args.rounds):
            order = list(range(len(variants)))
            order = order[round_ % len(order):] + order[:round_ % len(order)]
            for v in order:
                impl, src = variants[v]
                path = ours_map if impl == "ours" else args.work / f"peer_{kind}.arrow"
                result = _run({**common, "impl": impl, "path": str(path)}, src or srcs[-1])
                times[v].append(float(result["us_per_item"]))
                cpu[v].append(float(result["cpu_us_per_item"]))
                counts.add((int(result["items"]), int(result["elements"])))
        if len(counts) != 1:
            raise SystemExit(f"{kind}: the variants read different items: {sorted(counts)}")
        for clock, figures in (("wall", times), ("cpu", cpu)):
            med = [statistics.median(figures[v]) for v in range(len(variants))]
            arrow = med[-1]
            print(f"| {kind} | {clock} | " + " | ".join(f"{m:.3g}" for m in med) + " | "
                  + " | ".join(f"{arrow / m:.2f}" for m in med[:-1]) + " |", flush=True)
    if args.short_strings:
        short_strings(args.work, srcs, args.rounds)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
