"""LM padded batches against the peers (issue 21): random whole documents padded to the batch's longest, at 0 and 2
DataLoader workers, side by side in one run.

    PYTHONPATH=src /work/peers-venv/bin/python benchmarks/bench_lm_batches.py [--sequences 200000]
        [--batch-sizes 64 256] [--workers 0 2] [--repeats 3] [--rows NAME ...] [--out FILE.md]

The corpus is ``--sequences`` token sequences of int32 tokens (vocabulary 50,000), of lengths drawn uniformly from
1 to ``--max-length`` (512), seeded. An epoch is what a language model's training loop asks of its loader when it
pads instead of packing: every sequence once in a shuffled order, batches of ``--batch-size`` whole sequences, each
batch a ``(batch, longest)`` tensor padded with 0 plus the lengths, widened to int64 on the main process (every row
hands over its stored int32 and ends the same way).

Rows (the store of each is written once, outside the timing):

- ``mmap_ninja RaggedMmap + PadCollate``: ``DataLoader(tokens, shuffle=True, collate_fn=PadCollate(0))`` on the
  `RaggedMmap` itself (its ``__getitems__`` reads a batch at once);
- ``raw memmap floor``: a ``.bin`` of tokens and an ``.npy`` of int64 offsets read through ``np.memmap``, a dataset
  whose ``__getitems__`` pads the batch's slices straight into one array (the least work a loader can do);
- ``HF datasets``: ``Dataset.from_dict`` with a ``Sequence(int32)`` column, ``save_to_disk`` + ``load_from_disk``,
  ``with_format("numpy")`` (one Arrow read per batch through ``__getitems__``);
- ``LitData``: ``optimize`` (one item per sequence, a NumPy array) + ``StreamingDataset(shuffle=True)`` +
  ``StreamingDataLoader``;
- ``MosaicML streaming``: ``MDSWriter`` (an ``ndarray:int32`` column) + ``StreamingDataset(shuffle=True)`` +
  ``StreamingDataLoader``.

The peers' batches are padded by one shared NumPy collate (`pad_collate`): the figures compare the loaders, not
padding code. Each epoch runs in a fresh process; its time runs from the first batch's arrival to the last one
(worker start-up and the peers' shuffle set-up left out: ``sequences/s`` is the steady rate over the rest of the
epoch), wall-clock; beside it, sequences per CPU second of the process and its workers. Rows alternate: every
repetition runs every row once, in a rotated order, and a row's figure is its median over the repetitions.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from _children import medians, rotated, run_child
except ImportError:  # run as a module: python -m benchmarks.<name>
    from benchmarks._children import medians, rotated, run_child

ROOT = Path(__file__).resolve().parents[1]

OURS = "mmap_ninja RaggedMmap + PadCollate"
FLOOR = "raw memmap + int64 offsets (floor)"
HF = "HF datasets (Sequence(int32), numpy format)"
LITDATA = "LitData StreamingDataset"
MOSAIC = "MosaicML streaming StreamingDataset (MDS)"
ROWS = [OURS, FLOOR, HF, LITDATA, MOSAIC]
PEERS = [HF, LITDATA, MOSAIC]
STORE_OF_ROW = {OURS: "mmap_ninja", FLOOR: "raw", HF: "hf", LITDATA: "litdata", MOSAIC: "mosaic"}


def corpus(sequences: int, max_length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, lengths): ``sequences`` int32 sequences of 1 to ``max_length`` tokens, back to back."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_length + 1, sequences).astype(np.int64)
    return rng.integers(0, 50_000, int(lengths.sum()), dtype=np.int32), lengths


def pad_collate(items: Sequence[Any]) -> tuple[Any, Any]:
    """The peers' collate: the items' token arrays (or the ``input_ids`` of dict items) padded with 0 into one int32
    array, as torch tensors ``(padded, lengths)``."""
    import torch

    arrays = [np.asarray(item["input_ids"] if isinstance(item, dict) else item) for item in items]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    padded = np.zeros((len(arrays), int(lengths.max()) if len(arrays) else 0), dtype=np.int32)
    for row, array in zip(padded, arrays):
        row[:len(array)] = array
    return torch.from_numpy(padded), torch.from_numpy(lengths)


def _litdata_items(span: tuple[str, int, int]) -> Any:
    """LitData's ``fn``: the sequences ``[first, stop)`` of the corpus, one ``{"input_ids": array}`` each."""
    folder, first, stop = span
    tokens = np.load(Path(folder) / "tokens.npy", mmap_mode="r")
    offsets = np.load(Path(folder) / "offsets.npy")
    for k in range(first, stop):
        yield {"input_ids": np.array(tokens[offsets[k]:offsets[k + 1]])}


def _mosaic() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers_smoke import import_mosaic_streaming

    return import_mosaic_streaming()


def build(kind: str, source: Path, out: Path) -> None:
    """Write the corpus saved in ``source`` (``tokens.npy``, ``offsets.npy``) as the store of ``kind`` (not timed)."""
    tokens = np.load(source / "tokens.npy", mmap_mode="r")
    offsets = np.load(source / "offsets.npy")
    out.mkdir(parents=True, exist_ok=True)
    if kind == "mmap_ninja":
        from mmap_ninja import RaggedMmap

        RaggedMmap(out / "tokens").extend_flat(np.asarray(tokens), np.diff(offsets))
    elif kind == "raw":
        np.asarray(tokens).tofile(out / "tokens.bin")
        np.save(out / "offsets.npy", offsets)
    elif kind == "hf":
        import datasets

        features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
        columns = {"input_ids": [tokens[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]}
        datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(out / "hf"))
    elif kind == "litdata":
        import litdata

        step = 4096
        spans = [(str(source), first, min(first + step, len(offsets) - 1)) for first in range(0, len(offsets) - 1,
                                                                                              step)]
        litdata.optimize(fn=_litdata_items, inputs=spans, output_dir=str(out / "litdata"), chunk_bytes="64MB",
                         num_workers=1, mode="overwrite")
    elif kind == "mosaic":
        streaming = _mosaic()
        with streaming.MDSWriter(out=str(out / "mds"), columns={"input_ids": "ndarray:int32"},
                                 size_limit=1 << 26) as writer:
            for k in range(len(offsets) - 1):
                writer.write({"input_ids": np.asarray(tokens[offsets[k]:offsets[k + 1]])})
    else:
        raise ValueError(kind)


class RawPadded:
    """The floor: ``np.memmap`` tokens and int64 offsets; a batch's slices padded straight into one array."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets = np.load(folder / "offsets.npy")
        self.tokens = np.memmap(folder / "tokens.bin", dtype=np.int32, mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.tokens[self.offsets[index]:self.offsets[index + 1]])

    def __getitems__(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        picks = np.asarray(indices, dtype=np.int64)
        starts, stops = self.offsets[picks], self.offsets[picks + 1]
        lengths = stops - starts
        padded = np.zeros((len(picks), int(lengths.max())), dtype=np.int32)
        tokens = self.tokens
        for row, start, stop in zip(padded, starts.tolist(), stops.tolist()):
            row[:stop - start] = tokens[start:stop]
        return padded, lengths


def _raw_collate(batch: tuple[np.ndarray, np.ndarray]) -> tuple[Any, Any]:
    import torch

    return torch.from_numpy(batch[0]), torch.from_numpy(batch[1])


def loader(row: str, store: Path, workers: int, batch_size: int) -> Any:
    """The DataLoader of ``row`` over its store."""
    import torch
    from torch.utils.data import DataLoader

    common: dict[str, Any] = {"batch_size": batch_size, "num_workers": workers}
    if row == OURS:
        from mmap_ninja import RaggedMmap
        from mmap_ninja.adapters.torch import PadCollate

        return DataLoader(RaggedMmap(store / "tokens", mode="r"), shuffle=True, collate_fn=PadCollate(0),
                          generator=torch.Generator().manual_seed(0), **common)
    if row == FLOOR:
        return DataLoader(RawPadded(store), shuffle=True, collate_fn=_raw_collate,  # type: ignore[arg-type]
                          generator=torch.Generator().manual_seed(0), **common)
    if row == HF:
        import datasets

        table = datasets.load_from_disk(str(store / "hf")).with_format("numpy")
        return DataLoader(table, shuffle=True, collate_fn=pad_collate, generator=torch.Generator().manual_seed(0),
                          **common)
    if row == LITDATA:
        import litdata

        dataset = litdata.StreamingDataset(str(store / "litdata"), shuffle=True, seed=0)
        return litdata.StreamingDataLoader(dataset, collate_fn=pad_collate, **common)
    if row == MOSAIC:
        streaming = _mosaic()
        streaming.base.util.clean_stale_shared_memory()
        dataset = streaming.StreamingDataset(local=str(store / "mds"), shuffle=True, shuffle_seed=0,
                                             batch_size=batch_size)
        return streaming.StreamingDataLoader(dataset, collate_fn=pad_collate, **common)
    raise ValueError(row)


def run_epoch(row: str, store: Path, workers: int, batch_size: int) -> dict[str, float]:
    """One epoch of ``row``: sequences seen after the first batch, wall-clock seconds from the first batch's arrival
    to the last one, CPU seconds of this process and its workers over the whole epoch (imports left out)."""
    import resource

    import torch  # noqa: F401 - imported before the CPU clock starts, with the row's own module
    modules = {OURS: "mmap_ninja.adapters.torch", HF: "datasets", LITDATA: "litdata"}
    __import__(modules.get(row, "numpy"))
    if row == MOSAIC:
        _mosaic()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time()
    batches = iter(loader(row, store, workers, batch_size))
    padded, lengths = next(batches)
    padded.long()
    start, seen, tokens = time.perf_counter(), 0, 0
    for padded, lengths in batches:
        widened = padded.long()  # on the main process, as a training step would
        assert widened.shape[1] == int(lengths.max()), (row, tuple(widened.shape))
        seen += len(widened)
        tokens += int(lengths.sum())
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    del batches  # the workers exit and are reaped: their CPU time joins RUSAGE_CHILDREN
    gc.collect()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return {"sequences": seen, "tokens": tokens, "seconds": seconds, "cpu": cpu}


def measure(row: str, store: Path, workers: int, batch_size: int, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", row, "--store", str(store), "--child-workers", str(workers),
               "--child-batch", str(batch_size)]
    return run_child(command, ROOT / "src", timeout)


def versions() -> str:
    found = []
    for name, module in [("torch", "torch"), ("numpy", "numpy"), ("datasets", "datasets"), ("litdata", "litdata")]:
        try:
            found.append(f"{name} {__import__(module).__version__}")
        except Exception:
            found.append(f"{name} missing")
    try:
        found.append(f"mosaicml-streaming {_mosaic().__version__}")
    except Exception:
        found.append("mosaicml-streaming missing")
    return ", ".join(found)


def table(results: dict[tuple[int, str, int], list[dict[str, Any]]], batch_sizes: Sequence[int],
          workers: Sequence[int], rows: Sequence[str]) -> tuple[list[str], dict[tuple[int, str, int], float]]:
    speed, per_cpu, errors = medians(results, "sequences")
    lines = ["| batch | workers | loader | sequences/s | ours ÷ this | sequences per CPU second |",
             "|--:|--:|:--|--:|--:|--:|"]
    for batch_size in batch_sizes:
        for count in workers:
            ours = speed.get((batch_size, OURS, count))
            for row in rows:
                key = (batch_size, row, count)
                if key in speed:
                    ratio = f"{ours / speed[key]:.2f}" if ours else ""
                    lines.append(f"| {batch_size} | {count} | {row} | {speed[key]:,.0f} | {ratio} | "
                                 f"{per_cpu[key]:,.0f} |")
                else:
                    lines.append(f"| {batch_size} | {count} | {row} | cannot run: {errors.get(key, '?')} | | |")
    return lines, speed


def workers_note(speed: dict[tuple[int, str, int], float], batch_sizes: Sequence[int], rows: Sequence[str]) -> str:
    """Which rows ran faster at ``num_workers=0`` than at 2, per batch size."""
    notes = []
    for batch_size in batch_sizes:
        faster = [row for row in rows if (batch_size, row, 0) in speed and (batch_size, row, 2) in speed
                  and speed[(batch_size, row, 0)] > speed[(batch_size, row, 2)]]
        measured = [row for row in rows if (batch_size, row, 0) in speed and (batch_size, row, 2) in speed]
        notes.append(f"batch {batch_size}: {len(faster)} of {len(measured)} loaders faster at num_workers=0"
                     + (f" ({', '.join(faster)})" if faster else ""))
    return "; ".join(notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=200_000, help="token sequences in the corpus")
    parser.add_argument("--max-length", type=int, default=512, help="longest sequence (lengths uniform from 1)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers settings")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per row and setting (median reported)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS, metavar="ROW", help=f"rows: {ROWS}")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one epoch may take")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--work", type=Path, help="where the stores are written (default: a temporary folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_epoch(args.child, Path(args.store), args.child_workers, args.child_batch)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench_lm_batches-", dir=args.work))
    build_errors: dict[str, str] = {}
    try:
        tokens, lengths = corpus(args.sequences, args.max_length)
        np.save(work / "tokens.npy", tokens)
        np.save(work / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        del tokens
        for kind in sorted({STORE_OF_ROW[row] for row in args.rows}):
            started = time.perf_counter()
            try:
                build(kind, work, work / kind)
            except Exception as error:
                build_errors[kind] = f"{type(error).__name__}: {error}"[:200]
            print(f"built {kind} in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        load_before = os.getloadavg()
        results: dict[tuple[int, str, int], list[dict[str, Any]]] = {}
        for repeat in range(args.repeats):
            for batch_size in args.batch_sizes:
                for count in args.workers:
                    for row in rotated(args.rows, repeat + count + batch_size):
                        error = build_errors.get(STORE_OF_ROW[row])
                        run = {"error": f"writing failed: {error}"} if error else measure(
                            row, work / STORE_OF_ROW[row], count, batch_size, args.timeout)
                        results.setdefault((batch_size, row, count), []).append(run)
                        shown = run.get("error") or f"{run['sequences'] / run['seconds']:,.0f} sequences/s"
                        print(f"[{repeat + 1}/{args.repeats}] batch {batch_size} | {count} workers | {row}: {shown}",
                              file=sys.stderr, flush=True)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines, speed = table(results, args.batch_sizes, args.workers, args.rows)
    report = [f"# LM padded batches: {args.sequences:,} random whole sequences (1-{args.max_length} int32 tokens) "
              f"padded to the batch's longest", "",
              f"`{' '.join(sys.argv)}` on {platform.node() or 'this machine'}: {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; {versions()}. Load average (1, 5, 15 min) "
              f"{'/'.join(f'{v:.1f}' for v in load_before)} before the epochs, "
              f"{'/'.join(f'{v:.1f}' for v in load_after)} after. Median of {args.repeats} epochs per row, "
              f"rows alternating.", "", *lines, "", workers_note(speed, args.batch_sizes, args.rows)]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
