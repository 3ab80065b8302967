"""Batches and DataLoader workers (issue 21), measured side by side in one run.

    python benchmarks/bench_loader.py [--repeats 5] [--batches 200]

Rows (every figure the median of ``--repeats`` runs, the variants of a row interleaved in each repetition):

1. one batch of 256 packed blocks of 512 int32 tokens from a `NumpyMmap` through the torch adapter's `collate`:
   ``collate(m.__getitems__(indices))`` (one ``np.take`` into the batch tensor) against ``collate([m[i] for i in
   indices])`` (the views restacked, what ``__getitems__`` gave before);
2. a DataLoader epoch of those batches at ``num_workers=0`` and ``2``, the batch handed over in its stored dtype
   (int32) and widened to int64 on the main process, against widening inside the worker (a second batch tensor
   in shared memory);
3. a DataLoader epoch of padded batches of 256 token sequences (1-512 tokens, `PadCollate`) at ``num_workers=0``
   and ``2``.

The time of an epoch starts when its first batch arrives (worker start-up is left out).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _median_interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(runs[name]())
    return {name: statistics.median(values) for name, values in times.items()}


def _epoch(loader: Any, widen_here: bool) -> float:
    batches = iter(loader)
    first = next(batches)
    if widen_here:
        first = first.long()
    start = time.perf_counter()
    for batch in batches:
        if widen_here:
            batch = batch[0].long() if isinstance(batch, tuple) else batch.long()
    return time.perf_counter() - start


def _widen_in_worker(batch: Any) -> Any:
    from mmap_ninja.adapters.torch import collate

    return collate(batch).long()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=200, help="batches per DataLoader epoch")
    args = parser.parse_args()

    import torch
    from torch.utils.data import DataLoader

    import mmap_ninja
    from mmap_ninja.adapters.torch import PadCollate, collate
    from mmap_ninja.kinds import numpy as numpy_maps

    batch_size = 256
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_loader-") as tmp:
        work = Path(tmp)
        blocks = rng.integers(0, 50_000, size=(batch_size * args.batches, 512), dtype=np.int32)
        packed = numpy_maps.from_ndarray(work / "blocks", blocks)
        lengths = rng.integers(1, 513, size=batch_size * args.batches)
        flat = rng.integers(0, 50_000, size=int(lengths.sum()), dtype=np.int32)
        tokens = mmap_ninja.RaggedMmap.from_lists(work / "tokens", np.split(flat, np.cumsum(lengths)[:-1]))
        print(f"# bench_loader: median of {args.repeats} interleaved runs, load average {os.getloadavg()[0]:.1f}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}\n")

        indices = [rng.integers(0, len(packed), size=batch_size).tolist() for _ in range(50)]

        def gathered() -> float:
            start = time.perf_counter()
            for picks in indices:
                collate(packed.__getitems__(picks))
            return (time.perf_counter() - start) / len(indices)

        def restacked() -> float:
            start = time.perf_counter()
            for picks in indices:
                collate([packed[i] for i in picks])
            return (time.perf_counter() - start) / len(indices)

        one = _median_interleaved({"gather": gathered, "restack": restacked}, args.repeats)
        print("| row | ours | reference | speed ratio |")
        print("|:--|--:|--:|--:|")
        print(f"| batch of 256 x 512 int32 blocks: one gather vs restacked views | {one['gather'] * 1e6:.0f} µs | "
              f"{one['restack'] * 1e6:.0f} µs | {one['restack'] / one['gather']:.2f} |", flush=True)

        def packed_epoch(workers: int, in_worker: bool) -> Callable[[], float]:
            def run() -> float:
                loader = DataLoader(packed, batch_size=batch_size, shuffle=True, num_workers=workers,
                                    collate_fn=_widen_in_worker if in_worker else collate)
                return _epoch(loader, widen_here=not in_worker)
            return run

        epochs = _median_interleaved({
            "0 workers, stored dtype": packed_epoch(0, False),
            "2 workers, stored dtype": packed_epoch(2, False),
            "2 workers, widened in worker": packed_epoch(2, True),
        }, args.repeats)
        rate = {name: (args.batches - 1) * batch_size / seconds for name, seconds in epochs.items()}
        print(f"| packed blocks/s, 2 workers: int32 handed over, widened on the main process vs widened in the "
              f"worker | {rate['2 workers, stored dtype']:,.0f} | {rate['2 workers, widened in worker']:,.0f} | "
              f"{rate['2 workers, stored dtype'] / rate['2 workers, widened in worker']:.2f} |")
        print(f"| packed blocks/s: 2 workers vs num_workers=0 | {rate['2 workers, stored dtype']:,.0f} | "
              f"{rate['0 workers, stored dtype']:,.0f} | "
              f"{rate['2 workers, stored dtype'] / rate['0 workers, stored dtype']:.2f} |", flush=True)

        def padded_epoch(workers: int) -> Callable[[], float]:
            def run() -> float:
                loader = DataLoader(tokens, batch_size=batch_size, shuffle=True, num_workers=workers,
                                    collate_fn=PadCollate(0))
                return _epoch(loader, widen_here=False)
            return run

        padded = _median_interleaved({"0": padded_epoch(0), "2": padded_epoch(2)}, args.repeats)
        rates = {name: (args.batches - 1) * batch_size / seconds for name, seconds in padded.items()}
        print(f"| padded token sequences/s: 2 workers vs num_workers=0 | {rates['2']:,.0f} | {rates['0']:,.0f} | "
              f"{rates['2'] / rates['0']:.2f} |")
        packed.close()
        tokens.close()


if __name__ == "__main__":
    main()
