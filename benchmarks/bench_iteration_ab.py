"""The per-item pass (``for x in m``) of two source trees beside pyarrow, interleaved: issue 21's iteration rows.

    python -m benchmarks --only iteration --data DATA --no-upstream --work WORK --keep   # builds WORK's maps once
    python benchmarks/bench_iteration_ab.py --work WORK --src /tmp/base/src --src src [--rounds 5]

Reads the maps and Arrow files ``python -m benchmarks --only iteration`` left in ``WORK`` (``--keep``). Every
figure is the task `_peers.task_iterate` runs for that table (a fresh process: both sides' files dropped from the
page cache and read back by an untimed pass, then the best of 5 timed passes), here run ``--rounds`` times per
variant, the variants (each tree's ``for x in m``, and pyarrow) in a rotating order in every round so that the
machine's load hits them alike. Printed: the median µs per item of each variant, and the speed ratio of each tree
against pyarrow (pyarrow's time / ours: > 1 means ours is faster; target >= 1.0).
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


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the --work folder of a kept benchmarks run")
    parser.add_argument("--src", action="append", help="a tree holding mmap_ninja (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from benchmarks.peers import map_facts

    srcs = args.src or [str(HERE.parent / "src")]
    print(f"# bench_iteration_ab: median of {args.rounds} interleaved processes (each the best of 5 passes), "
          f"load average {os.getloadavg()[0]:.1f} at the start, {os.cpu_count()} CPUs")
    for i, src in enumerate(srcs):
        print(f"- tree {i}: {src}")
    header = " | ".join(f"tree {i}" for i in range(len(srcs)))
    print(f"\n| kind | {header} | pyarrow | " + " | ".join(f"tree {i} speed ratio" for i in range(len(srcs)))
          + " |")
    print("|:--|" + "--:|" * (2 * len(srcs) + 1))
    for kind in [k for k in args.kinds.split(",") if k]:
        ours_map = args.work / MAPS[kind]
        dtype, largest, _ = map_facts(ours_map)
        common = {"task": "iterate", "kind": kind, "passes": 5, "dtype": dtype, "max_sample_items": largest}
        variants: list[tuple[str, Optional[str]]] = [("ours", src) for src in srcs] + [("arrow", None)]
        times: dict[int, list[float]] = {v: [] for v in range(len(variants))}
        counts: set[tuple[int, int]] = set()
        for round_ in range(args.rounds):
            order = list(range(len(variants)))
            order = order[round_ % len(order):] + order[:round_ % len(order)]
            for v in order:
                impl, src = variants[v]
                path = ours_map if impl == "ours" else args.work / f"peer_{kind}.arrow"
                result = _run({**common, "impl": impl, "path": str(path)}, src or srcs[-1])
                times[v].append(float(result["us_per_item"]))
                counts.add((int(result["items"]), int(result["elements"])))
        if len(counts) != 1:
            raise SystemExit(f"{kind}: the variants read different items: {sorted(counts)}")
        med = [statistics.median(times[v]) for v in range(len(variants))]
        arrow = med[-1]
        print(f"| {kind} | " + " | ".join(f"{m:.3g}" for m in med) + " | "
              + " | ".join(f"{arrow / m:.2f}" for m in med[:-1]) + " |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
