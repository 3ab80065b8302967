"""Training order: `ResumableSampler` against ``DistributedSampler``, `blend` of 100 sources, and what
`BlockShuffleSampler` reads on several ranks.

    PYTHONPATH=src python benchmarks/bench_order.py [--sizes 100000000 1000000000] [--distributed-max 100000000]
                                                    [--plot docs/blend_ratios.png] [--quick] [--only-blocks]
                                                    [--only-reads] [--batch-sizes 256 1024 4096]

The block-shuffle table (``--only-blocks`` prints only it) takes ``--block-samples`` samples (10⁶) of log-normal
sizes (an image-like case, median 60 KB, and a text-like case, median 2 KB), cut into blocks of 4, 8 and 16 MiB as
`mmap_ninja.block_order.block_layout` cuts a map, and runs every rank of 8 for one epoch (window of 8 blocks). The
bytes ratio is the sum over ranks of the bytes of the distinct blocks each rank touches, over the data's bytes:
what ranks on separate nodes (separate block caches) fetch together, padding included. Beside it: the same ratio
when ranks stripe one global block-shuffled stream (rank ``r`` reads positions ``r, r + 8, ...``, the first
`BlockShuffleSampler`) and under a full shuffle (`ResumableSampler`). Padding share: repeated indices over ``n``;
dropped share: the indices ``drop_last`` leaves out, over ``n``.

Each sampler case runs in a fresh interpreter, so its memory is the growth of that process's peak RSS over an
interpreter that has imported torch and mmap_ninja. "Time to first index" is construction, ``set_epoch`` (or
``load_state_dict`` of a state in the middle of the epoch, for the resumable sampler) and the first 1,000 indices of
rank 3 of 8. ``DistributedSampler`` builds a permutation of the whole dataset on every rank: it is run only up to
``--distributed-max`` samples (10⁹ would need 8 GB per rank).

The blend has 100 sources of 10⁹ samples each (sources whose sample ``i`` is ``i``, so a read costs nothing and the
figures are the blend's own), with weights from 10⁻⁴ to 1 (log-uniform, normalized, floored at 10⁻⁴). ``m[i]``
is timed on random positions (median of 5 rounds), with every source open and with the default open-sources budget
(64: the other sources are reopened as they are read); the batched figures are ``sources_of`` over 1,024 and
16,384 random positions, per index.

The read-cost table puts a blend's reads beside its sources' own reads of the same samples, in one run: 100
`NumpyMmap` sources on disk (rows of four int64, the same weights), all open (``max_open_sources`` above the
source count). Each round times ``m[i]`` over random positions and ``source[local]`` for the same
``(source, local)`` pairs (in turns: every other round the other first, the CPU caches flushed before each), and
``m.get_batch(batch)`` (and ``__getitems__``, batches of ``--batch-sizes`` random positions) against one
``get_batch`` (or ``__getitems__``) per source touched on the same rows (``--only-reads``: this table alone); the
table gives the median over the rounds (at least 5) of
each and of the difference, which is what the blend adds. Times are CPU times of the process (a shared machine's
waits are not counted); the load average before and after is printed. The
realized ratios are each source's count over a prefix divided by the prefix length, against its weight: the
worst relative error over sources, and the worst count error in samples. ``--plot`` draws the ratios of a few
sources over positions, across a schedule change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_order
    from benchmarks._tables import markdown_table

_CASE = r"""
import json, resource, sys, time
import torch
import mmap_ninja
from mmap_ninja.adapters.torch import ResumableSampler
from torch.utils.data import DistributedSampler
n, which = int(sys.argv[1]), sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if which == "resumable":
    sampler = ResumableSampler(n, rank=3, world_size=8, seed=1)
    sampler.load_state_dict({**sampler.state_dict(), "epoch": 5, "position": (n // 2) // 8 * 8})
else:
    sampler = DistributedSampler(range(n), num_replicas=8, rank=3, seed=1)
    sampler.set_epoch(5)
iterator = iter(sampler)
first = [next(iterator) for _ in range(1000)]
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "rss_mb": (after - before) / 1024}))
"""


class Virtual:
    """A stand-in source of ``n`` samples whose sample ``i`` is ``i`` (it pickles as its length)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def sampler_case(n: int, which: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", _CASE, str(n), which], capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def sampler_table(sizes: list[int], distributed_max: int) -> str:
    rows = []
    for n in sizes:
        for which, name in (("resumable", "ResumableSampler"), ("distributed", "DistributedSampler")):
            label = f"{name}, n = {n:.0e}".replace("e+0", "e")
            if which == "distributed" and n > distributed_max:
                rows.append((label, ["not run", f"≈ {n * 8 / 2**20:,.0f} (a permutation of n int64)"]))
                continue
            result = sampler_case(n, which)
            if "error" in result:
                rows.append((label, [result["error"], ""]))
            else:
                rows.append((label, [f"{result['seconds'] * 1000:.3g}", f"{result['rss_mb']:.3g}"]))
    return markdown_table(["Time to first 1,000 indices (ms)", "Memory (MB)"], rows)


def weights_of(count: int, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    raw = 10 ** rng.uniform(-4, 0, count)
    return [float(w) for w in np.maximum(raw / raw.sum(), 1e-4)]


def blend_table(sources: int, source_length: int, prefixes: list[int], reads: int) -> str:
    from mmap_ninja import blend
    from mmap_ninja.blend import DEFAULT_MAX_OPEN_SOURCES

    weights = weights_of(sources)
    tracemalloc.start()
    start = time.perf_counter()
    m = blend([Virtual(source_length) for _ in range(sources)], weights, seed=1, max_open_sources=sources + 1)
    build = time.perf_counter() - start
    build_memory = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    budget = blend([Virtual(source_length) for _ in range(sources)], weights, seed=1)  # the default open budget
    rng = np.random.default_rng(0)
    positions = rng.integers(0, len(m), reads).tolist()
    m[positions[0]]

    def reads_of(blended: Any) -> None:
        for i in positions:
            blended[i]

    per_read, per_read_budget = (t / reads * 1e6 for t in _median_rounds(5, [lambda: reads_of(m),
                                                                              lambda: reads_of(budget)]))
    batched = {}
    for size in (1024, 16384):
        batches = [rng.integers(0, len(m), size) for _ in range(max(reads // size, 4))]
        m.sources_of(batches[0])

        def lookups() -> None:
            for batch in batches:  # noqa: B023 - called within this iteration
                m.sources_of(batch)

        batched[size] = _median_rounds(5, [lookups])[0] / (len(batches) * size) * 1e6
    total = sum(weights)
    rows: list[tuple[str, list[Any]]] = [
        (f"build ({sources} sources of {source_length:.0e}, length {len(m):.1e})".replace("e+0", "e"),
         [f"{build * 1000:.3g} ms", f"{build_memory:.3g} MB traced"]),
        ("m[i], random i", [f"{per_read:.3g} µs", "every source open"]),
        (f"m[i], random i, default open budget ({DEFAULT_MAX_OPEN_SOURCES} of {sources} sources open)",
         [f"{per_read_budget:.3g} µs", "sources past the budget are reopened (here: unpickled)"]),
        *[(f"sources_of({size:,} random positions), per index", [f"{cost:.3g} µs", ""])
          for size, cost in batched.items()],
    ]
    for prefix in prefixes:
        counts = np.array(m.counts(prefix), dtype=float)
        expected = np.array(weights) / total * prefix
        relative = np.abs(counts - expected) / expected
        rows.append((f"realized ratios over the first {prefix:.0e} positions".replace("e+0", "e"),
                     [f"worst relative error {relative.max():.2g}",
                      f"worst count error {np.abs(counts - expected).max():.2f} samples"]))
    return markdown_table(["Figure", "Note"], rows)


_FLUSH = np.zeros(8 * 2**20, dtype=np.int64)  # 64 MB, larger than the CPU caches


def _median_rounds(rounds: int, cases: list[Any]) -> list[float]:
    """Each case's median CPU time over ``rounds`` rounds, the cases run one after the other within each round.

    CPU time of this process (``time.process_time``), not wall time: on a machine shared with other work a case
    that waits for a core is not charged for the wait, so the figures and their differences hold."""
    times: list[list[float]] = [[] for _ in cases]
    for number in range(rounds):
        # Every other round in reverse, and the CPU caches flushed before each case: a case that reads the samples
        # another case has just read would find them cached.
        for k in (range(len(cases)) if number % 2 == 0 else reversed(range(len(cases)))):
            _FLUSH[::8] += 1
            start = time.process_time()
            cases[k]()
            times[k].append(time.process_time() - start)
    return [float(np.median(t)) for t in times]


def read_cost_table(sources: int, rows: int, reads: int, batch_sizes: list[int], rounds: int, folder: Path) -> str:
    """``m[i]`` and batched reads of a blend of ``sources`` maps on disk, beside the sources' own reads of the same
    samples, interleaved in rounds (medians)."""
    from mmap_ninja import blend, np_from_ndarray

    maps = [np_from_ndarray(folder / f"source{k}", np.arange(k * rows * 4, (k + 1) * rows * 4,
                                                            dtype=np.int64).reshape(rows, 4), overwrite=True)
            for k in range(sources)]
    m = blend(maps, weights_of(sources), seed=1, max_open_sources=sources + 1)
    rng = np.random.default_rng(2)
    positions = rng.integers(0, len(m), reads).tolist()
    which, local = m.sources_of(positions)
    pairs = list(zip(which.tolist(), local.tolist()))

    def blend_reads() -> None:
        for i in positions:
            m[i]

    def source_reads() -> None:
        for k, j in pairs:
            maps[k][j]

    single = _median_rounds(rounds, [blend_reads, source_reads])
    rows_out: list[tuple[str, list[Any]]] = [
        ("m[i], random i", [f"{single[0] / reads * 1e6:.3g}", f"{single[1] / reads * 1e6:.3g}",
                            f"{(single[0] - single[1]) / reads * 1e6:.3g}"])]
    for size in batch_sizes:
        batch = rng.integers(0, len(m), size)
        groups = list(m._groups(batch))
        for name in ("get_batch", "__getitems__"):
            read_blend = getattr(m, name)

            def blend_batch() -> None:
                read_blend(batch)  # noqa: B023 - called within this iteration

            def source_batches() -> None:
                for k, _, rows_of in groups:  # noqa: B023
                    getattr(maps[k], name)(rows_of)  # noqa: B023

            blended, own = _median_rounds(rounds, [blend_batch, source_batches])
            rows_out.append((f"{name}({size:,} random positions), per index",
                             [f"{blended / size * 1e6:.3g}", f"{own / size * 1e6:.3g}",
                              f"{(blended - own) / size * 1e6:.3g}"]))
    m.close()
    for source in maps:
        source.close()
    return markdown_table(["Blend (µs)", "Sources' own reads (µs)", "Added by the blend (µs)"], rows_out)


def plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmap_ninja import blend

    weights = [0.5, 0.3, 0.15, 0.0499, 0.0001]
    later = [0.1, 0.2, 0.3, 0.3999, 0.0001]
    change = 200_000
    m = blend([Virtual(10**6) for _ in weights], weights, length=400_000, schedule=[(change, later)])
    at_change = m.counts(change)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80, sharey=True)
    for ax, start, stop, phase in ((axes[0], 0, change, weights), (axes[1], change, len(m), later)):
        grid = np.unique(np.geomspace(1, stop - start, 300).astype(np.int64))
        counts = np.array([m.counts(start + int(L)) for L in grid], dtype=float)
        if start:
            counts -= np.array(at_change, dtype=float)
        for k in range(len(weights)):
            line, = ax.plot(grid, counts[:, k] / grid, lw=1.3, label=f"source {k}: weight {phase[k]:g}")
            ax.axhline(phase[k], color=line.get_color(), lw=0.6, linestyle="dotted")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("positions since the start" if not start else f"positions since the change at {change:,}")
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.08, 0.02))
    axes[0].set_ylabel("share of the prefix (log)")
    fig.suptitle("blend: each source's realized share over every prefix (dotted: its weight)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def _layout_of_sizes(sample_bytes: np.ndarray, block_bytes: int) -> tuple[Any, np.ndarray]:
    """The block layout of samples of ``sample_bytes`` stored end to end (as `block_layout` cuts a map), and the
    bytes of each block."""
    from mmap_ninja import BlockLayout

    starts = np.concatenate([[0], np.cumsum(sample_bytes)[:-1]])
    total = int(sample_bytes.sum())
    thresholds = np.arange(0, total + block_bytes, block_bytes, dtype=np.int64)
    bounds = np.unique(np.concatenate([[0], np.minimum(np.searchsorted(starts, thresholds), len(starts)),
                                       [len(starts)]]))
    block_data = np.add.reduceat(sample_bytes, bounds[:-1])
    return BlockLayout(bounds, None, block_bytes), block_data


def block_shuffle_table(n: int, world: int, window: int = 8) -> str:
    from mmap_ninja import BlockOrder
    from mmap_ninja.adapters.torch import BlockShuffleSampler, ResumableSampler

    rng = np.random.default_rng(0)
    rows: list[Any] = []
    for case, median in (("image-like", 60_000), ("text-like", 2_000)):
        sample_bytes = np.maximum(rng.lognormal(np.log(median), 1.0, n).astype(np.int64), 1)
        data = int(sample_bytes.sum())
        for block_mib in (4, 8, 16):
            layout, block_data = _layout_of_sizes(sample_bytes, block_mib * 2**20)

            def fetched(streams: list[np.ndarray], layout: Any = layout, block_data: np.ndarray = block_data,
                        data: int = data) -> float:
                return sum(int(block_data[np.unique(layout.block_of(s))].sum()) for s in streams) / data

            start = time.perf_counter()
            ranks = [BlockShuffleSampler(layout, window_blocks=window, seed=1, rank=r, world_size=world)
                     for r in range(world)]
            streams = [np.fromiter(sampler, dtype=np.int64) for sampler in ranks]
            seconds = time.perf_counter() - start
            dropping = BlockShuffleSampler(layout, window_blocks=window, seed=1, rank=0, world_size=world,
                                           drop_last=True)
            global_stream = BlockOrder(layout, window_blocks=window, seed=1)
            striped = [global_stream.take(np.arange(r, n, world)) for r in range(world)]
            full = [np.fromiter(ResumableSampler(n, rank=r, world_size=world, seed=1), dtype=np.int64)
                    for r in range(world)]
            rows.append((case, [f"{data / 2**30:.1f}", f"{block_mib} MiB", f"{layout.num_blocks:,}",
                         f"{ranks[0].padding / n:.3%}", f"{-dropping.padding / n:.3%}", f"{fetched(streams):.3f}",
                         f"{fetched(striped):.2f}", f"{fetched(full):.2f}", f"{seconds:.1f}"]))
    return markdown_table(["data GiB", "block", "blocks", "padding share", "dropped (drop_last)",
                           "bytes ratio", "striped (before)", "full shuffle", "s (8 ranks' epochs)"], rows)


def read_costs(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        table = read_cost_table(args.sources, args.rows, min(args.reads, 20_000), args.batch_sizes, args.rounds,
                                Path(folder))
    load_after = os.getloadavg()
    print(f"\n## blend of {args.sources} sources on disk: reads beside the sources' own (median of {args.rounds} "
          f"interleaved rounds)\n")
    print(table)
    print(f"\nload average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{', '.join(f'{x:.2f}' for x in load_after)} after, on {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**8, 10**9], help="dataset lengths")
    parser.add_argument("--distributed-max", type=int, default=10**8, help="largest n DistributedSampler runs on")
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--source-length", type=int, default=10**9)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the read-cost table (median)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of each source of the read-cost table")
    parser.add_argument("--plot", type=Path, default=None, help="write the plot of realized ratios here (PNG)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--block-samples", type=int, default=10**6, help="samples of the block-shuffle table")
    parser.add_argument("--only-blocks", action="store_true", help="print only the block-shuffle table")
    parser.add_argument("--only-reads", action="store_true", help="print only the read-cost table of the blend")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024, 4096],
                        help="batch sizes of the read-cost table")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.distributed_max, args.reads, args.rounds, args.rows = [10**5], 10**5, 2000, 5, 200
        args.block_samples = 20_000
    if args.only_reads:
        read_costs(args)
        return
    print(f"## BlockShuffleSampler on 8 ranks: bytes read by all ranks over the data's bytes "
          f"({args.block_samples:,} samples, window 8 blocks)\n")
    load_before = os.getloadavg()
    print(block_shuffle_table(args.block_samples, 8))
    print(f"\nload average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after, on {os.cpu_count()} cores\n")
    if args.only_blocks:
        return
    print("## ResumableSampler against DistributedSampler (rank 3 of 8)\n")
    print(sampler_table(args.sizes, args.distributed_max))
    print(f"\n## blend of {args.sources} sources\n")
    prefixes = [10**4, 10**6, 10**8] if not args.quick else [10**4]
    print(blend_table(args.sources, args.source_length, prefixes, args.reads))
    read_costs(args)
    if args.plot:
        plot(args.plot)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
