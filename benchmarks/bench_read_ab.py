"""Read speed of every kind, two source trees side by side: is the proposed tree within 5 % of the base?

    git -C . archive e09a795 src | tar -x -C /tmp/base-e09a795
    python benchmarks/bench_read_ab.py --base /tmp/base-e09a795/src [--src src] [--rounds 5] [--quick]

For each kind (strings, ragged tokens, numpy, images, records of a strings, a ragged and an images field, and a
sharded map of ragged shards) three workloads: random ``m[i]``, batched reads (``get_batch`` where the kind has
it, else ``m[list]``, 256 random indices) and the per-item pass (``for x in m``). Each tree builds its own maps once,
in its own folder, before anything is timed.

Two measures, in one table with the ratio new / base and PASS or FAIL against 1.05:

1. **wall time**: every measurement in a fresh process, base and new alternating, the median of ``--rounds``.
   On a shared machine whose load swings, these swing by tens of percent, so a FAIL here alone decides nothing.
2. **instructions** under ``valgrind --tool=callgrind`` (one process per tree per kind, smaller counts): the
   instructions executed by each workload alone (the process marks where a workload starts and ends by calling
   ``os.getppid()``, and callgrind dumps its counters there: ``--dump-before=getppid``), with a fixed hash seed
   and the objects alive before the workloads frozen out of the garbage collector (``gc.freeze()``: else a
   collection that happens to fall in a short workload walks every module the tree imported).
   They do not depend on the load, so **the instruction ratio is the deciding figure on a loaded machine.**
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
import textwrap
from pathlib import Path

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_read_ab
    from benchmarks._tables import markdown_table

KINDS = ("strings", "ragged", "numpy", "images", "records", "sharded")
WORKLOADS = ("random", "batch", "pass")
LIMIT = 1.05

_BUILD = textwrap.dedent("""
    import io, sys
    from pathlib import Path
    import numpy as np
    from PIL import Image
    from mmap_ninja import ImagesMmap, RaggedMmap, RecordsMmap, StringsMmap, np_from_ndarray, merge
    from mmap_ninja.records import Field
    root, n, n_images = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    strings = [" ".join(rng.choice(words, rng.integers(3, 30))) for _ in range(n)]
    tokens = [rng.integers(0, 50_000, rng.integers(8, 64)).astype(np.int32) for _ in range(n)]
    StringsMmap.from_strings(root / "strings", strings).close()
    RaggedMmap.from_lists(root / "ragged", tokens).close()
    np_from_ndarray(root / "numpy", rng.random((n, 64), dtype=np.float32)).close()
    def png(k):
        pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        return out.getvalue()
    pictures = [png(k) for k in range(n_images)]
    folder = root / "png"
    folder.mkdir()
    for k, data in enumerate(pictures):
        (folder / f"{k:05d}.png").write_bytes(data)
    ImagesMmap.from_files(root / "images", sorted(folder.iterdir())).close()
    RecordsMmap.from_dict(root / "records", {"text": strings[:n_images], "tokens": tokens[:n_images],
                                            "image": pictures},
                          schema={"text": Field.strings(), "tokens": Field.ragged(np.int32),
                                  "image": Field.images()}).close()
    shards = []
    per_shard = n // 10
    for k in range(10):
        RaggedMmap.from_lists(root / f"shard{k}", tokens[k * per_shard:(k + 1) * per_shard]).close()
        shards.append(root / f"shard{k}")
    merge(root / "sharded", shards).close()
""")

_READ = textwrap.dedent("""
    import gc, json, os, sys, time
    from pathlib import Path
    import numpy as np
    from mmap_ninja import ImagesMmap, NumpyMmap, RaggedMmap, RecordsMmap, ShardedMap, StringsMmap
    root, kind, counts, timed = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "time"
    opener = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap, "images": ImagesMmap,
              "records": RecordsMmap, "sharded": ShardedMap}[kind]
    m = opener(root / kind, mode="r")
    rng = np.random.default_rng(1)
    indices = rng.integers(0, len(m), counts["random"]).tolist()
    batches = [rng.integers(0, len(m), 256).tolist() for _ in range(counts["batch"])]
    padded = {"pad_value": 0} if kind in ("ragged", "records", "sharded") else {}
    get_batch = getattr(m, "get_batch", None)
    def batch(b):
        return get_batch(b, **padded) if get_batch is not None else m[b]
    read = m.__getitem__
    def random():
        for i in indices:
            read(i)
    def batched():
        for b in batches:
            batch(b)
    def passed():
        for _ in range(counts["pass"]):
            for _x in m:
                pass
    random(); batched()  # warm: pages mapped, lazy state built, in both trees alike
    gc.collect()
    gc.freeze()  # what is alive now (modules, the map) is not walked by collections during the workloads
    out = {}
    for name, work in (("random", random), ("batch", batched), ("pass", passed)):
        os.getppid()  # callgrind dumps its counters here (--dump-before=getppid)
        start = time.perf_counter()
        work()
        out[name] = time.perf_counter() - start
    os.getppid()
    print(json.dumps(out))
""")

_WALL_COUNTS = {"random": 20_000, "batch": 40, "pass": 1}
_CALLGRIND_COUNTS = {"random": 2_000, "batch": 4, "pass": 1}
_QUICK_COUNTS = {"random": 50, "batch": 1, "pass": 1}


def _env(tree: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": tree, "PYTHONHASHSEED": "0"}


def _wall(tree: str, root: Path, kind: str, counts: dict[str, int]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", _READ, str(root), kind, json.dumps(counts), "time"],
                          env=_env(tree), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"reading {kind} with {tree} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout))


def _instructions(tree: str, root: Path, kind: str, counts: dict[str, int], scratch: Path) -> dict[str, int]:
    """Instructions of each workload: callgrind dumps at each ``os.getppid()``; dump k+2 covers workload k."""
    out = scratch / f"cg-{kind}-{abs(hash(tree))}"
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--dump-before=getppid", "--dump-instr=no",
                           f"--callgrind-out-file={out}", sys.executable, "-c", _READ, str(root), kind,
                           json.dumps(counts), "count"], env=_env(tree), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"callgrind of {kind} with {tree} failed:\n{proc.stderr[-2000:]}")
    totals = {}
    for k, name in enumerate(WORKLOADS):
        dump = Path(f"{out}.{k + 2}")
        line = next(x for x in dump.read_text().splitlines() if x.startswith(("summary:", "totals:")))
        totals[name] = int(line.split()[1])
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the src directory to compare against (e.g. e09a795's)")
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"), help="the new tree")
    parser.add_argument("--rounds", type=int, default=5, help="wall-time rounds per workload (median)")
    parser.add_argument("--samples", type=int, default=20_000, help="samples of the strings/ragged/numpy maps")
    parser.add_argument("--images", type=int, default=1_000, help="samples of the images and records maps")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    parser.add_argument("--no-callgrind", action="store_true", help="wall time only")
    parser.add_argument("--quick", action="store_true", help="tiny maps and counts (a smoke test, no verdict)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.images, args.rounds = 200, 20, 1
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    trees = {"base": os.path.abspath(args.base), "new": os.path.abspath(args.src)}
    callgrind = not args.no_callgrind and shutil.which("valgrind") is not None
    wall_counts = _QUICK_COUNTS if args.quick else _WALL_COUNTS
    cg_counts = _QUICK_COUNTS if args.quick else _CALLGRIND_COUNTS
    with tempfile.TemporaryDirectory(prefix="bench_read_ab_") as tmp:
        scratch = Path(tmp)
        roots = {name: scratch / name for name in trees}
        for name, tree in trees.items():  # each tree builds its own maps, outside any timing
            roots[name].mkdir()
            subprocess.run([sys.executable, "-c", _BUILD, str(roots[name]), str(args.samples), str(args.images)],
                           env=_env(tree), check=True)
        wall: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):  # base and new alternate, every measurement in a fresh process
            for kind in kinds:
                for name in trees:
                    wall.setdefault((name, kind), []).append(_wall(trees[name], roots[name], kind, wall_counts))
        counted = {(name, kind): _instructions(trees[name], roots[name], kind, cg_counts, scratch)
                   for kind in kinds for name in trees} if callgrind else {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for kind in kinds:
        for work in WORKLOADS:
            base = statistics.median(r[work] for r in wall[("base", kind)])
            new = statistics.median(r[work] for r in wall[("new", kind)])
            cells: list[object] = [base * 1e3, new * 1e3, new / base, "PASS" if new / base <= LIMIT else "FAIL"]
            if counted:
                ib, inew = counted[("base", kind)][work], counted[("new", kind)][work]
                cells += [ib / 1e6, inew / 1e6, inew / ib, "PASS" if inew / ib <= LIMIT else "FAIL"]
            rows.append((f"{kind} {work}", cells))
    columns = ["base ms", "new ms", "wall new/base", "wall ≤1.05"]
    if counted:
        columns += ["base Minstr", "new Minstr", "instr new/base", "instr ≤1.05"]
    print(f"## Reads, new ({trees['new']}) against base ({trees['base']})")
    print(f"wall: median of {args.rounds} fresh processes each, base and new alternating; counts {wall_counts}; "
          f"load average at the end {load:.1f}")
    if counted:
        print(f"instructions: callgrind, one process per tree per kind, counts {cg_counts}. On a loaded machine "
              f"the instruction ratio is the deciding figure (wall times swing with the load).")
    else:
        print("instructions: not measured (valgrind not found or --no-callgrind)")
    print()
    print(markdown_table(columns, rows))
    verdict = [r for r in rows if r[1][-1] == "FAIL"]
    print()
    print("verdict (" + ("instructions" if counted else "wall time") + "): "
          + ("all within 5 %" if not verdict else "over 5 %: " + ", ".join(r[0] for r in verdict)))


if __name__ == "__main__":
    main()
