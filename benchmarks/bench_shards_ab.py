"""Random ``m[i]`` reads of a sharded map, two source trees side by side (e.g. a proposed change against main), on
a machine that other processes load: each round runs one process per tree at the same time, and each process
times its reads in CPU time (``time.thread_time``, best of many passes), which waiting for a core does not count.

    python benchmarks/bench_shards_ab.py --base /tmp/main/src --src src [--rounds 5] [--shards 50]

Rows: a single map holding every sample; the sharded map with every shard open (the hot path); and a sharded map
of ``--many`` shards read uniformly at random, where most reads open a shard (the open-shards and open-files
budgets decide how many stay open). The table gives the median over rounds and the ratio of ``--src`` to
``--base``. Both trees read the same maps (built once, by ``--base``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_shards_ab
    from benchmarks._tables import markdown_table

_BUILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np
    from mmap_ninja import RaggedMmap
    from mmap_ninja.sharded import merge
    root, shards, many = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    def build(name, count, per_shard):
        paths, samples = [], []
        for k in range(count):
            chunk = [rng.integers(0, 50_000, rng.integers(8, 64)).astype(np.int32) for _ in range(per_shard)]
            RaggedMmap.from_lists(root / f"{name}{k:05d}", chunk).close()
            paths.append(root / f"{name}{k:05d}")
            samples += chunk
        merge(root / name, paths).close()
        return samples
    RaggedMmap.from_lists(root / "single", build("open", shards, 20_000 // shards)).close()
    build("many", many, 100)
""")

_READ = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from mmap_ninja import RaggedMmap
    from mmap_ninja.sharded import ShardedMap
    root = Path(sys.argv[1])
    def per_read(m, indices, passes):
        read, best = m.__getitem__, float("inf")
        for _ in range(passes):
            start = time.thread_time()
            for i in indices:
                read(i)
            best = min(best, (time.thread_time() - start) / len(indices) * 1e9)
        return best
    single, sharded = RaggedMmap(root / "single", mode="r"), ShardedMap(root / "open", mode="r")
    indices = np.random.default_rng(1).integers(0, len(single), 20_000).tolist()
    for i in range(len(single)):
        single[i], sharded[i]
    many = ShardedMap(root / "many", mode="r")
    print(json.dumps({"single": per_read(single, indices, 40), "open": per_read(sharded, indices, 40),
                      "many": per_read(many, np.random.default_rng(2).integers(0, len(many), 3000).tolist(), 3)}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the src directory to compare against")
    parser.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shards", type=int, default=50, help="shards of the all-open map")
    parser.add_argument("--many", type=int, default=200, help="shards of the uniformly read map")
    args = parser.parse_args()
    trees = {"base": os.path.abspath(args.base), "src": os.path.abspath(args.src)}
    with tempfile.TemporaryDirectory(prefix="bench_shards_ab_") as tmp:
        env = {**os.environ, "PYTHONPATH": trees["base"]}
        subprocess.run([sys.executable, "-c", _BUILD, tmp, str(args.shards), str(args.many)], env=env, check=True)
        figures: dict[str, list[dict[str, float]]] = {"base": [], "src": []}
        for _ in range(args.rounds):
            running = {name: subprocess.Popen([sys.executable, "-c", _READ, tmp], stdout=subprocess.PIPE, text=True,
                                              env={**os.environ, "PYTHONPATH": tree})
                       for name, tree in trees.items()}
            for name, process in running.items():
                out, _ = process.communicate()
                if process.returncode:
                    raise SystemExit(f"the {name} reader failed")
                figures[name].append(json.loads(out))
    rows = []
    for key, label in (("single", "one map of 20,000 samples"), ("open", f"{args.shards} shards, all open"),
                       ("many", f"{args.many} shards, uniform random")):
        base = statistics.median(f[key] for f in figures["base"])
        ours = statistics.median(f[key] for f in figures["src"])
        rows.append((label, [base, ours, ours / base]))
    print(f"random m[i], CPU ns per read, median of {args.rounds} rounds (each the best of its passes)")
    print(markdown_table(["base", "src", "src / base"], rows))


if __name__ == "__main__":
    main()
