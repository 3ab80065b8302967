"""A CPU-bound build on Dask against one process: decode every real image, resize it, store it in a RaggedMmap.

    PYTHONPATH=src python benchmarks/bench_dask.py --data DIR [--size 128] [--limit N] [--partitions 16]

``DIR/images`` holds the images (``MANIFEST.tsv`` lists them when present; otherwise every ``*.jpg``/``*.png``).
Each sample is the image decoded by Pillow, converted to RGB and resized to ``size x size`` (a uint8 array of
shape ``(size, size, 3)``). Timed, one after the other in this process:

1. one process: ``RaggedMmap.from_generator`` over the transformed images;
2. starting a ``distributed.LocalCluster`` of 2 worker processes with one thread each, and importing Pillow and
   mmap_ninja in them (reported on its own);
3. ``RaggedMmap.from_dask`` of a ``dask.bag`` of the paths mapped to the same transform, on that cluster;
4. a check of the machine: the transform alone (nothing stored) in one process, then split over 2 plain
   processes (``multiprocessing``): the speed-up two processes can reach at all while the machine is that busy.

The issue's target: the 2-worker build at least 1.6x faster than one process (cluster start-up excluded). The
files are read once before (so both builds find them in the page cache); with ``--repeats`` the best time of
each build is kept. Both builds are checked to hold the same samples. On a machine shared with other work the
figures move from run to run: the load average before and after is printed with them.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmap_ninja import RaggedMmap

try:
    from _tables import markdown_table
except ImportError:  # run as a module: python -m benchmarks.bench_dask
    from benchmarks._tables import markdown_table

TARGET = 1.6


def image_paths(directory: Path, limit: int | None) -> list[str]:
    """The images of ``directory``: the files ``MANIFEST.tsv`` lists (those present), else every image file."""
    manifest = directory / "MANIFEST.tsv"
    if manifest.exists():
        with open(manifest, newline="") as f:
            names = [row["file"] for row in csv.DictReader(f, delimiter="\t")]
    else:
        names = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = [str(directory / name) for name in names if (directory / name).is_file()]
    return paths[:limit] if limit else paths


def decode_and_resize(path: str, size: int) -> np.ndarray[Any, Any]:
    """The CPU-bound transform: decode, convert to RGB, resize to ``size x size`` (bilinear)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def _warm_up() -> None:
    """Runs on each worker as part of its start-up: the imports a build's first task would otherwise pay for."""
    import PIL.Image  # noqa: F401

    import mmap_ninja.adapters.dask  # noqa: F401


def _transform_all(paths: list[str], size: int = 32) -> int:
    """The transform alone, with nothing kept (the machine check: how much two processes get done)."""
    for path in paths:
        decode_and_resize(path, size)
    return len(paths)


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="a directory holding images/")
    parser.add_argument("--size", type=int, default=128, help="the side of the resized images")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--partitions", type=int, default=16, help="partitions of the bag (= shards)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="time each build this many times, keep the best")
    args = parser.parse_args()

    import dask.bag as db
    from distributed import Client, LocalCluster

    paths = image_paths(args.data / "images", args.limit)
    if not paths:
        raise SystemExit(f"no images under {args.data / 'images'}")
    for path in paths:  # both builds read the files from the page cache
        Path(path).read_bytes()
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
        client.wait_for_workers(2)
        client.run(_warm_up)
        startup_s = time.perf_counter() - start
        serial_s = dask_s = alone_1_s = alone_2_s = float("inf")
        try:
            bag = db.from_sequence(paths, npartitions=args.partitions).map(decode_and_resize, args.size)
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                pool.map(_transform_all, [paths[:2], paths[2:4]])  # started and warm
                for attempt in range(args.repeats):  # interleaved, so that both see the same load
                    start = time.perf_counter()
                    single = RaggedMmap.from_generator(root / "single",
                                                       (decode_and_resize(p, args.size) for p in paths),
                                                       args.batch_size, overwrite=True)
                    serial_s = min(serial_s, time.perf_counter() - start)
                    start = time.perf_counter()  # a new output each time: a re-run would reuse the shards
                    sharded = RaggedMmap.from_dask(root / f"sharded{attempt}", bag, batch_size=args.batch_size)
                    dask_s = min(dask_s, time.perf_counter() - start)
                    start = time.perf_counter()
                    _transform_all(paths, args.size)
                    alone_1_s = min(alone_1_s, time.perf_counter() - start)
                    start = time.perf_counter()
                    pool.starmap(_transform_all, [(paths[0::2], args.size), (paths[1::2], args.size)])
                    alone_2_s = min(alone_2_s, time.perf_counter() - start)
        finally:
            client.close()
            cluster.close()
        same = len(sharded) == len(single) and all(np.array_equal(a, b) for a, b in zip(sharded, single))
        if not same:
            raise SystemExit("the two builds hold different samples")
        shards = len(sharded.shards)
    speedup = serial_s / dask_s
    print(f"{len(paths):,} images from {args.data / 'images'} (page cache warm), decoded and resized to "
          f"{args.size}x{args.size} RGB; {shards} partitions; best of {args.repeats}; load average {load_before} "
          f"before, {_load()} after; both builds equal")
    print()
    print(markdown_table(["wall (s)", "images/s", "speed-up"], [
        ("one process: RaggedMmap.from_generator", [serial_s, len(paths) / serial_s, 1.0]),
        ("2-worker LocalCluster: RaggedMmap.from_dask", [dask_s, len(paths) / dask_s, speedup]),
        ("LocalCluster start-up and worker imports (not in the build time)", [startup_s, None, None]),
        ("machine check: the transform alone, one process", [alone_1_s, len(paths) / alone_1_s, 1.0]),
        ("machine check: the transform alone, 2 plain processes", [alone_2_s, len(paths) / alone_2_s,
                                                                    alone_1_s / alone_2_s]),
    ]))
    print()
    verdict = "met" if speedup >= TARGET else "NOT met"
    print(f"target: the 2-worker build >= {TARGET}x faster than one process: {speedup:.2f}x, {verdict} "
          f"(2 plain processes reached {alone_1_s / alone_2_s:.2f}x on this machine at the same time)")


if __name__ == "__main__":
    main()
