"""Reading (image, label) rows: a RecordsMmap vs a Hugging Face Dataset with an Image() feature vs two maps.

Standalone: ``PYTHONPATH=src python benchmarks/bench_records_images.py [--images DIR] [--limit 500]``.

``DIR`` is a flat folder of image files with a ``MANIFEST.tsv`` (columns ``file`` and ``--class-column``,
default ``orig_format`` or ``format``), such as ``data/images``; the first ``--limit`` files (in name
order) are used.
The same files' bytes (no re-encoding anywhere) are stored three ways:

- ``records``: `RecordsMmap.from_image_folder` over a class-folder layout of symbolic links (fields image, label,
  path);
- ``hf``: a ``datasets.Dataset`` built locally with ``Features({"image": Image(), "label": ClassLabel})`` holding the
  bytes, saved with ``save_to_disk`` and reopened with ``load_from_disk`` (memory-mapped Arrow, its usual form);
- ``two maps``: an `ImagesMmap` (``from_files``) and a `NumpyMmap` of the labels side by side.

Measured, best of ``--repeats`` passes over the same random indices (the three containers taking turns in every
pass), per row:

- decoded rows: ``rec[i]`` (a dict: decoded image, label), ``np.asarray(ds[i]["image"])`` with ``ds[i]["label"]``
  (Hugging Face gives a PIL image; ``np.asarray`` decodes it), ``(images[i], labels[i])``;
- raw rows (the encoded bytes, no decoding): ``rec["image"].raw(i)`` + label, ``ds_raw[i]`` with
  ``Image(decode=False)``, ``images.raw(i)`` + ``labels[i]``; this isolates each container's own overhead;
- batches of ``--batch`` random rows decoded: ``rec[idx]``, ``ds[idx]`` (dict of lists, images ``np.asarray``-ed),
  ``images[idx]`` + ``labels[idx]``.

JPEGs are decoded by simplejpeg in the maps when it is installed (libjpeg-turbo) and by Pillow in Hugging Face; the
"raw" rows compare the containers without the decoder.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mmap_ninja import ImagesMmap, NumpyMmap, RecordsMmap, np_from_ndarray


def best_per_call(read: Callable[[Any], Any], items: list[Any], repeats: int) -> float:
    """The best of ``repeats`` passes over ``items``, in µs per call."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            read(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def interleaved_best(fns: dict[str, Callable[[Any], Any]], items: list[Any], repeats: int) -> dict[str, float]:
    """`best_per_call` of each function, the functions taking turns within every repeat (so that a change in the
    machine's load during the run weighs on all of them alike)."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], best_per_call(fn, items, 1))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("data/images"))
    parser.add_argument("--class-column", default=None, help="default: orig_format or format, whichever exists")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", default=None, help="scratch directory (default: a temporary one, removed)")
    args = parser.parse_args()

    import datasets

    datasets.disable_progress_bars()
    with open(args.images / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        manifest = sorted(csv.DictReader(f, delimiter="\t"), key=lambda row: row["file"])[:args.limit]
    if args.class_column is None:
        args.class_column = "orig_format" if manifest and "orig_format" in manifest[0] else "format"
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_records_images_"))
    results: list[tuple[str, str, str, str]] = []
    try:
        folder = work / "classes"
        for row in manifest:
            target = folder / row[args.class_column].lower()
            target.mkdir(parents=True, exist_ok=True)
            os.symlink((args.images / row["file"]).resolve(), target / row["file"])

        start = time.perf_counter()
        rec = RecordsMmap.from_image_folder(work / "rec", folder)
        t_build_rec = time.perf_counter() - start
        classes = rec.metadata["classes"]
        paths = [folder / p for p in rec["path"]]
        labels = rec["label"][:].copy()

        start = time.perf_counter()
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
        built = datasets.Dataset.from_dict(
            {"image": [{"bytes": p.read_bytes(), "path": None} for p in paths], "label": labels.tolist()},
            features=features)
        built.save_to_disk(str(work / "hf"))
        del built
        ds = datasets.load_from_disk(str(work / "hf"))
        t_build_hf = time.perf_counter() - start
        ds_raw = ds.cast_column("image", datasets.Image(decode=False))

        start = time.perf_counter()
        ImagesMmap.from_files(work / "images", paths).close()
        np_from_ndarray(work / "labels", labels).close()
        t_build_two = time.perf_counter() - start
        images, label_map = ImagesMmap(work / "images", mode="r"), NumpyMmap(work / "labels", mode="r")
        size_mb = {name: sum(f.stat().st_size for f in (work / name).rglob("*") if f.is_file()) / 1e6
                   for name in ("rec", "hf", "images", "labels")}
        results.append(("build from the files", f"{t_build_rec:.2f} s", f"{t_build_hf:.2f} s",
                        f"{t_build_two:.2f} s"))
        results.append(("size on disk", f"{size_mb['rec']:.1f} MB", f"{size_mb['hf']:.1f} MB",
                        f"{size_mb['images'] + size_mb['labels']:.1f} MB"))

        n = len(rec)
        rng = random.Random(1)
        indices = [rng.randrange(n) for _ in range(args.reads)]
        for i in indices[:50]:  # the same rows, same pixels and labels
            row, hf_row = rec[i], ds[i]
            assert np.array_equal(row["image"], images[i]) and row["label"] == label_map[i] == hf_row["label"]
            assert bytes(rec["image"].raw(i)) == ds_raw[i]["image"]["bytes"] == bytes(images.raw(i))
            hf_image = np.asarray(hf_row["image"])
            assert hf_image.shape[:2] == row["image"].shape[:2]

        rec_image, rec_label = rec["image"], rec["label"]  # the fields' containers, fetched once
        readers: list[tuple[str, dict[str, Callable[[Any], Any]]]] = [
            ("decoded row (µs)", {
                "records": lambda i: rec[i],
                "hf": lambda i: (lambda r: (np.asarray(r["image"]), r["label"]))(ds[i]),
                "two": lambda i: (images[i], label_map[i]),
            }),
            ("raw row, no decoding (µs)", {
                "records": lambda i: (rec_image.raw(i), rec_label[i]),
                "hf": lambda i: ds_raw[i],
                "two": lambda i: (images.raw(i), label_map[i]),
            }),
        ]
        for name, fns in readers:
            for fn in fns.values():
                best_per_call(fn, indices[:100], 1)  # warm up
            times = interleaved_best(fns, indices, args.repeats)
            results.append((name, *(f"{times[k]:.1f}" for k in ("records", "hf", "two"))))

        batches = [indices[k:k + args.batch] for k in range(0, len(indices) - args.batch + 1, args.batch)]
        batch_fns = {
            "records": lambda idx: rec[idx],
            "hf": lambda idx: (lambda b: ([np.asarray(im) for im in b["image"]], b["label"]))(ds[idx]),
            "two": lambda idx: (images[idx], label_map[idx]),
        }
        times = interleaved_best(batch_fns, batches, args.repeats)
        results.append((f"decoded batch of {args.batch} (ms)",
                        *(f"{times[k] / 1e3:.2f}" for k in ("records", "hf", "two"))))
        decoders = ", ".join(f"{k}: {v}" for k, v in images.decoders.items())
        pillow = ImagesMmap(work / "images", mode="r", decoder="pillow")  # the decoder Hugging Face uses
        best_per_call(pillow.__getitem__, indices[:100], 1)
        t_pillow = best_per_call(lambda i: (pillow[i], label_map[i]), indices, args.repeats)
        pillow.close()
        rec.close()
        images.close()
        label_map.close()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    header = ("measure", "RecordsMmap", "HF Dataset + Image()", "ImagesMmap + NumpyMmap")
    widths = [max(len(row[c]) for row in [header, *results]) for c in range(4)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|:" + "-" * (widths[0] + 1) + "|" + "|".join("-" * (w + 1) + ":" for w in widths[1:]) + "|")
    for row in results:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
    print(f"\n{n} images ({', '.join(f'{c}: {k}' for c, k in zip(classes, np.bincount(labels).tolist()))}), "
          f"{args.reads} random reads, best of {args.repeats}; map decoders: {decoders}; HF decodes with Pillow "
          f"(the two maps with decoder='pillow': {t_pillow:.1f} µs per decoded row); classes by {args.class_column}; "
          f"datasets {datasets.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
