"""Where an image epoch's CPU goes with 0 and 2 DataLoader workers (issue 21): the main process and each worker.

    PYTHONPATH=src python benchmarks/bench_worker_cpu.py --data DIR [--repeats 3] [--copies 2] [--workers 0 2]
        [--loaders crop folder] [--main-threads 0 1]

The epoch is `bench_epochs.py`'s (shuffled order, ``RandomResizedCropDecode(224, hflip=0.5)`` or the image folder's
Pillow crop, batches of 64, each batch made a float NCHW tensor on the main process), each run in a fresh process,
loaders and worker counts alternating. Wall-clock time moves with the machine's load; CPU time per image much less,
so the table splits the CPU seconds:

- main process: its main thread waiting for and receiving batches (``next``), its main thread converting them to
  float, and its other threads (torch's intra-op threads of the conversion, which spin while they wait for work);
- workers: the CPU of their main thread inside the batched fetch and the collate (the loader's own work per image),
  the rest of their CPU per batch (the worker loop, and the threads that pickle each batch and hand its shared
  memory to the main process), and their CPU before the first batch (fork and the worker's set-up), from
  ``getrusage`` of each worker (written after every batch) and of the reaped children.

``--main-threads N [M ...]`` runs each setting of ``torch.set_num_threads(N)`` on the main process, interleaved (0:
torch's default, one thread per core), to show what the main process's intra-op threads cost while workers fill the
cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_epochs as epochs

LOADERS = {"crop": epochs.OURS_CROP, "images": epochs.OURS_IMAGES, "folder": epochs.FOLDER}


def _cpu(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


class _Probe:
    """Per-worker CPU bookkeeping, written to ``folder/<pid>.json`` after every batch."""

    folder = ""
    start = 0.0
    fetch = 0.0
    images = 0
    batches = 0

    @classmethod
    def init_worker(cls, worker_id: int) -> None:
        epochs._seed_worker(worker_id)
        cls.start = _cpu(resource.getrusage(resource.RUSAGE_SELF))
        cls.fetch, cls.images, cls.batches = 0.0, 0, 0

    @classmethod
    def record(cls, seconds: float, images: int) -> None:
        cls.fetch += seconds
        cls.images += images
        cls.batches += 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        state = {"start": cls.start, "fetch": cls.fetch, "images": cls.images, "batches": cls.batches,
                 "cpu": _cpu(usage), "nivcsw": usage.ru_nivcsw, "nvcsw": usage.ru_nvcsw}
        path = Path(cls.folder) / f"{os.getpid()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(state))
        path.with_suffix(".tmp").replace(path)


class _TimedFetch:
    """Wraps a loader's dataset and collate: the worker's CPU from the batched fetch to the collated batch."""

    def __init__(self, dataset: Any, collate: Any):
        self.dataset, self.collate, self.started = dataset, collate, 0.0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        self.started = time.thread_time()
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(indices)
        return [self.dataset[i] for i in indices]

    def collate_batch(self, batch: Any) -> Any:
        result = self.collate(batch)
        if os.environ.get("_PROBE_IN_WORKER"):
            _Probe.record(time.thread_time() - self.started, len(batch[0]) if isinstance(batch, tuple) else
                          len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch))
        return result


def run(loader_name: str, store: Path, workers: int, probe_folder: str, main_threads: int) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader, default_collate

    if main_threads:
        torch.set_num_threads(main_threads)
    row = LOADERS[loader_name]
    original = epochs.loader(row, store, workers)
    timed = _TimedFetch(original.dataset, original.collate_fn or default_collate)
    _Probe.folder = probe_folder
    os.environ["_PROBE_IN_WORKER"] = "1" if workers else ""
    batches = DataLoader(timed, batch_size=epochs.BATCH, shuffle=True, num_workers=workers,  # type: ignore[arg-type]
                         collate_fn=timed.collate_batch, worker_init_fn=_Probe.init_worker)
    seen = 0
    receive = convert = 0.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
    iterator = iter(batches)
    while True:
        before = time.thread_time()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        middle = time.thread_time()
        images = batch["image"] if isinstance(batch, dict) else batch[0] if isinstance(batch, list) else batch
        tensor = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255)
        assert tensor.shape[1:] == (3, epochs.SIZE, epochs.SIZE)
        seen += len(tensor)
        receive += middle - before
        convert += time.thread_time() - middle
    seconds = time.perf_counter() - start
    main_cpu, main_thread = time.process_time() - cpu, time.thread_time() - thread
    del batches, iterator
    import gc

    gc.collect()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = _cpu(after) - _cpu(children)
    probes = [json.loads(p.read_text()) for p in Path(probe_folder).glob("*.json")]
    return {"images": seen, "batches": -(-seen // epochs.BATCH), "seconds": seconds, "main_cpu": main_cpu,
            "main_thread": main_thread, "receive": receive, "convert": convert, "workers_cpu": workers_cpu,
            "fetch": sum(p["fetch"] for p in probes), "start": sum(p["start"] for p in probes),
            "last": sum(p["cpu"] for p in probes), "nivcsw": sum(p["nivcsw"] for p in probes),
            "main_nivcsw": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw, "load": os.getloadavg()[0]}


def measure(loader_name: str, store: Path, workers: int, main_threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="probe-") as folder:
        command = [sys.executable, __file__, "--child", loader_name, "--store", str(store), "--child-workers",
                   str(workers), "--probe", folder, "--main-threads", str(main_threads)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    raise RuntimeError(done.stderr[-2000:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--loaders", nargs="+", choices=list(LOADERS), default=["crop"])
    parser.add_argument("--sets", nargs="+", choices=["large", "whole"], default=["large", "whole"])
    parser.add_argument("--main-threads", type=int, nargs="+", default=[0],
                        help="torch threads of the main process, each setting a run (0: torch's default)")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(run(args.child, Path(args.store), args.child_workers, args.probe,
                                         args.main_threads[0])), flush=True)
        return 0
    import shutil

    pictures = epochs.load_pictures(args.data, 0)
    large = [(str(p), label) for p, label, h, w in pictures if h >= epochs.LARGE and w >= epochs.LARGE]
    sets = {"large": (f"both sides ≥ {epochs.LARGE} ({len(large)} x {args.copies})", large * args.copies),
            "whole": (f"whole set ({len(pictures)})", [(str(p), label) for p, label, _, _ in pictures])}
    work = Path(tempfile.mkdtemp(prefix="bench_worker_cpu-", dir=args.work))
    kinds = {"crop": "mmap_ninja", "images": "mmap_ninja", "folder": "folder"}
    results: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    loads = [os.getloadavg()[0]]
    try:
        for set_key in args.sets:
            for kind in sorted({kinds[name] for name in args.loaders}):
                epochs.build(kind, sets[set_key][1], work / set_key / kind)
        for repeat in range(args.repeats):
            for set_key in args.sets:
                runs = [(name, count, threads) for name in args.loaders for count in args.workers
                        for threads in args.main_threads]
                for name, count, threads in epochs.rotated(runs, repeat):  # type: ignore[arg-type]
                    result = measure(name, work / set_key / kinds[name], count, threads)
                    results.setdefault((set_key, name, count, threads), []).append(result)
                    loads.append(result["load"])
                    print(f"[{repeat + 1}/{args.repeats}] {set_key} {name} {count} workers, main threads {threads}: "
                          f"{result['images'] / result['seconds']:.0f} images/s, load {result['load']:.1f}",
                          file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(runs: list[dict[str, Any]], value: Any) -> float:
        return statistics.median(value(r) for r in runs)

    print(f"`{' '.join(sys.argv)}`: {os.cpu_count()} cores, load average (1 min) {min(loads):.1f}-{max(loads):.1f}; "
          f"median of {args.repeats} epochs, each in a fresh process, runs alternating. Main threads: torch's "
          f"intra-op threads of the main process (default: {os.cpu_count()} here).\n")
    columns = ["pictures", "loader", "workers", "main threads", "images/s (wall)", "CPU ms / image (all)",
               "main: receive ms / batch",
               "main: convert ms / batch", "main: other threads ms / batch", "workers: fetch + collate ms / image",
               "workers: outside fetch ms / batch", "workers: start-up ms / epoch",
               "involuntary context switches / batch (main + workers)"]
    print("| " + " | ".join(columns) + " |")
    print("|:--|:--|" + "--:|" * (len(columns) - 2))
    nan = float("nan")
    for (set_key, name, count, threads), runs in results.items():
        images, batches = runs[0]["images"], runs[0]["batches"]
        fetch = med(runs, lambda r: r["fetch"]) * 1e3 / images if count else nan
        outside = med(runs, lambda r: r["workers_cpu"] - r["fetch"] - r["start"]) * 1e3 / batches if count else nan
        start = med(runs, lambda r: r["start"]) * 1e3 if count else nan
        cells = [sets[set_key][0], LOADERS[name], str(count), str(threads or "default"),
                 f"{med(runs, lambda r: r['images'] / r['seconds']):.0f}",
                 f"{med(runs, lambda r: (r['main_cpu'] + r['workers_cpu']) / r['images']) * 1e3:.2f}",
                 f"{med(runs, lambda r: r['receive']) * 1e3 / batches:.1f}",
                 f"{med(runs, lambda r: r['convert']) * 1e3 / batches:.1f}",
                 f"{med(runs, lambda r: r['main_cpu'] - r['main_thread']) * 1e3 / batches:.1f}",
                 f"{fetch:.2f}", f"{outside:.1f}", f"{start:.0f}",
                 f"{med(runs, lambda r: r['nivcsw'] + r['main_nivcsw']) / batches:.1f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
