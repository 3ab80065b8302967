"""Per-index cost of `mmap_ninja.Order`, two source trees side by side in one process.

    git -C . archive 671356d src | tar -x -C /tmp/order-base     # order version 2
    python benchmarks/bench_order_ab.py --base /tmp/order-base/src [--src src] [--rounds 7]

Each tree's ``mmap_ninja/containers/order.py`` (it needs only NumPy) is loaded as a module of its own, so both run
in one interpreter on the same inputs. Every round runs each workload on both trees in turn (the base first in
even rounds, second in odd ones); the table gives the median over the rounds of the CPU time per index
(``time.process_time``: a shared machine's waits are not counted), the ratio new / base, and the load average
before and after. Workloads:

- ``Order(10**9)[k]`` at random ``k`` (one order, 2,000 positions one by one), and ``Order(10**9).take`` of 1,024
  random positions: the network, which version 3 kept for ``n > 1,024``;
- ``Order(1000)[k]`` and ``take`` of 1,024 positions on an order already read once (version 3 reads its sorted
  table), and a fresh ``Order(1000)`` read once (version 3 sorts its 1,000 hashes then);
- ``OrderFamily.take`` of 1,024 random ``(member, epoch, position)`` over 100 members of 10⁹ (a blend's batches);
  over 100 members of 1,000 in one epoch each (as consecutive batches of a blend of small sources: version 3 keeps
  their tables); and over one member of 1,000 in 1,024 distinct epochs (version 3's worst case: a row of 1,000
  hashes sorted per position, as random reads of a blend cycling a small source).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_order_ab
    from benchmarks._tables import markdown_table

Workload = tuple[str, int, Callable[[ModuleType], Callable[[], Any]]]


def load_order_module(src: Path, name: str) -> ModuleType:
    """``src/mmap_ninja/containers/order.py`` as a module named ``name``."""
    path = src / "mmap_ninja" / "containers" / "order.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"no order module at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workloads() -> list[Workload]:
    """``(name, indices per run, setup)``: ``setup(module)`` returns the function timed."""
    rng = np.random.default_rng(0)
    large_positions = rng.integers(0, 10**9, 2000)
    batch = rng.integers(0, 10**9, 1024)
    small_positions = rng.integers(0, 1000, 2000)
    small_batch = rng.integers(0, 1000, 1024)
    members = rng.integers(0, 100, 1024)
    epochs = rng.integers(0, 1000, 1024)
    distinct_epochs = rng.permutation(10**6)[:1024]

    def scalar(n: int, positions: np.ndarray) -> Callable[[ModuleType], Callable[[], Any]]:
        def setup(module: ModuleType) -> Callable[[], Any]:
            order = module.Order(n, seed=3, epoch=1)
            order[0]  # a small order of version 3 sorts its table here
            points = positions.tolist()
            return lambda: [order[k] for k in points]
        return setup

    def take(n: int, positions: np.ndarray) -> Callable[[ModuleType], Callable[[], Any]]:
        def setup(module: ModuleType) -> Callable[[], Any]:
            order = module.Order(n, seed=3, epoch=1)
            order[0]
            return lambda: order.take(positions)
        return setup

    def fresh_small(module: ModuleType) -> Callable[[], Any]:
        return lambda: [module.Order(1000, seed=3, epoch=e)[7] for e in range(20)]

    def family_large(module: ModuleType) -> Callable[[], Any]:
        family = module.OrderFamily([10**9] * 100, list(range(100)))
        return lambda: family.take(members, epochs, batch)

    def family_small(module: ModuleType) -> Callable[[], Any]:
        family = module.OrderFamily([1000], [5])
        return lambda: family.take(np.zeros(1024, dtype=np.int64), distinct_epochs, small_batch)

    def family_small_kept(module: ModuleType) -> Callable[[], Any]:
        family = module.OrderFamily([1000] * 100, list(range(100)))
        return lambda: family.take(members, np.zeros(1024, dtype=np.int64), small_batch)

    return [("Order(1e9)[k]", 2000, scalar(10**9, large_positions)),
            ("Order(1e9).take(1024)", 1024, take(10**9, batch)),
            ("Order(1000)[k], table kept", 2000, scalar(1000, small_positions)),
            ("Order(1000).take(1024), table kept", 1024, take(1000, small_batch)),
            ("fresh Order(1000), one read", 20, fresh_small),
            ("OrderFamily 100 x 1e9, take(1024)", 1024, family_large),
            ("OrderFamily 100 x 1000, one epoch each", 1024, family_small_kept),
            ("OrderFamily 1 x 1000, 1024 epochs", 1024, family_small)]


def cpu_per_index(function: Callable[[], Any], indices: int) -> float:
    """CPU seconds per index of one call of ``function`` (repeated to last at least 20 ms), in microseconds."""
    repeats, spent = 0, 0.0
    while spent < 0.02:
        start = time.process_time()
        function()
        spent += time.process_time() - start
        repeats += 1
    return spent / repeats / indices * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the base tree's src folder")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    trees = {"base": load_order_module(options.base, "order_base"), "new": load_order_module(options.src, "order_new")}
    load_before = os.getloadavg()
    rows = []
    for name, indices, setup in workloads():
        functions = {tree: setup(module) for tree, module in trees.items()}
        times: dict[str, list[float]] = {"base": [], "new": []}
        for round_number in range(options.rounds):
            for tree in (("base", "new") if round_number % 2 == 0 else ("new", "base")):
                times[tree].append(cpu_per_index(functions[tree], indices))
        base, new = statistics.median(times["base"]), statistics.median(times["new"])
        rows.append((name, [base, new, new / base]))
    print(f"order version: base {trees['base'].ORDER_VERSION}, new {trees['new'].ORDER_VERSION}; "
          f"median of {options.rounds} rounds, CPU µs per index\n")
    print(markdown_table(["base (µs)", "new (µs)", "new / base"], rows))
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {os.getloadavg()}")


if __name__ == "__main__":
    main()
