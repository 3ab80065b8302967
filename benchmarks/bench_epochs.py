"""Image-classification epochs against the peers (issues 21 and 24), side by side in one run.

    bash benchmarks/make_peers_venv.sh            # once: benchmarks/.venv-peers with the peers, CPU torch
    PYTHONPATH=src benchmarks/.venv-peers/bin/python benchmarks/bench_epochs.py --data DIR [--repeats 2]
        [--workers 0 2] [--rows NAME ...] [--limit N] [--out FILE.md]

``DIR/images`` holds the pictures (``bash get_real_data.sh DIR``; ``MANIFEST.tsv`` there gives each file's source,
used as its class). An epoch is what a ResNet's training loop asks of its loader: every picture once in a shuffled
order, a random resized crop to 224 x 224 (torchvision's sampling rule: area 8-100 %, ratio 3/4-4/3), a horizontal
flip with probability 1/2, batches of 64 (images and labels), and each batch as a float tensor in [0, 1], NCHW, on
the main process. Every row ends the same way: the loader hands over uint8 batches, the main process converts them.

Rows (each system with its own default decoder, storing the pictures' encoded bytes as they are: no pre-resizing):

- ``mmap_ninja RecordsDataset + RandomResizedCropDecode``: a `RecordsMmap` (image, label) read through
  ``RecordsDataset(rec, decode=RandomResizedCropDecode(224, hflip=0.5))``: each crop chosen before decoding, JPEGs
  decoded at the smallest DCT scale that keeps the crop at least 224 (simplejpeg), resized with torch;
- ``mmap_ninja ImagesDataset + RandomResizedCropDecode``: the same over an `ImagesMmap` (no labels);
- ``mmap_ninja ImagesDataset, full decode + Pillow crop``: the same map, every pixel decoded (``m[i]``), then
  the same crop and flip with Pillow (``crop`` + ``resize(BILINEAR)``, what torchvision does on Pillow images);
- ``image folder + RandomResizedCrop (Pillow)``: torchvision's ``ImageFolder`` pattern: a list of (file, class),
  ``Image.open(path).convert("RGB")``, then ``RandomResizedCrop(224)`` and ``RandomHorizontalFlip`` on the Pillow
  image (torchvision's rule reimplemented below: its PyPI wheels need CUDA torch);
- ``HF datasets``: a ``Dataset`` with an ``Image()`` feature holding the bytes, ``save_to_disk`` + ``load_from_disk``,
  ``with_transform`` applying the crop per batch (``__getitems__``: one Arrow read per batch), Pillow decoding;
- ``LitData``: ``optimize`` into chunks, ``StreamingDataset(shuffle=True)`` + ``StreamingDataLoader``. Its JPEG
  serializer decodes with ``torchvision.io`` only, so the bytes are stored as ``bytes`` and decoded with Pillow;
- ``MosaicML streaming``: ``MDSWriter`` (``jpeg`` column: the file's bytes) + ``StreamingDataset(shuffle=True)`` +
  ``StreamingDataLoader``; its ``jpeg`` decoder gives Pillow images;
- ``webdataset``: tar shards (``TarWriter``), ``WebDataset(shardshuffle=True).shuffle(1000).decode("pil")``.

Writing each store is outside the timing. Each epoch runs in a fresh process (so shared memory, caches and threads of
one system never meet another's); its time runs from creating the DataLoader's iterator (worker start-up included)
to the last batch converted, wall-clock. Rows alternate: every repetition runs every row once, in a rotated order,
and a row's figure is its median over the repetitions. The pictures are judged on two sets: those whose both sides
are at least 448 pixels (COCO- and ImageNet-sized, where DCT scaling acts), each stored ``--copies`` times (4) so
that an epoch is long next to the workers' start-up, and the whole set. Beside images/s (wall-clock), images per
CPU second (this process and its workers) shows the cost independently of the machine's load.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SIZE = 224
BATCH = 64
LARGE = 2 * SIZE  # both sides at least this: the "large pictures" set
try:
    from _children import medians, rotated, run_child
except ImportError:  # run as a module: python -m benchmarks.<name>
    from benchmarks._children import medians, rotated, run_child

ROOT = Path(__file__).resolve().parents[1]

OURS_CROP = "mmap_ninja RecordsDataset + RandomResizedCropDecode"
OURS_IMAGES = "mmap_ninja ImagesDataset + RandomResizedCropDecode"
OURS_FULL = "mmap_ninja ImagesDataset, full decode + Pillow crop"
FOLDER = "image folder + RandomResizedCrop (Pillow)"
HF = "HF datasets (Image feature)"
LITDATA = "LitData (bytes + Pillow)"
MOSAIC = "MosaicML streaming (jpeg column)"
WDS = "webdataset (tar shards, .decode(\"pil\"))"
ROWS = [OURS_CROP, OURS_IMAGES, OURS_FULL, FOLDER, HF, LITDATA, MOSAIC, WDS]
PEERS = [HF, LITDATA, MOSAIC, WDS]


# ------------------------------------------------------------------------------------------ the crop (Pillow side)

def crop_box(rng: random.Random, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``, reimplemented: ``(top, left, height, width)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def pillow_crop_flip(image: Any, rng: random.Random) -> np.ndarray:
    """``RandomResizedCrop(224)`` + ``RandomHorizontalFlip()`` on a Pillow image, as torchvision does them (crop,
    ``resize(BILINEAR)``, ``transpose``), as an (H, W, 3) uint8 array."""
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    top, left, h, w = crop_box(rng, image.height, image.width)
    image = image.crop((left, top, left + w, top + h)).resize((SIZE, SIZE), Image.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(image)


_RNG = random.Random()


def _seed_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: each worker its own crop stream (torch seeds ``random`` itself too)."""
    _RNG.seed(int.from_bytes(os.urandom(8), "little") + worker_id)


# ------------------------------------------------------------------------------------------ building the stores

def load_pictures(data: Path, limit: int) -> list[tuple[Path, int, int, int]]:
    """``(path, label, height, width)`` of every picture of ``data/images``, sorted by name."""
    from PIL import Image

    folder = data / "images"
    sources: dict[str, str] = {}
    manifest = folder / "MANIFEST.tsv"
    if manifest.exists():
        with open(manifest, newline="") as handle:
            sources = {row["file"]: row["source"] for row in csv.DictReader(handle, delimiter="\t")}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if limit:
        files = files[:limit]
    classes = {name: k for k, name in enumerate(sorted(set(sources.values())))}
    pictures = []
    for path in files:
        with Image.open(path) as image:
            width, height = image.size
        pictures.append((path, classes.get(sources.get(path.name, ""), 0), height, width))
    return pictures


def _litdata_sample(item: tuple[str, int]) -> dict[str, Any]:
    return {"image": Path(item[0]).read_bytes(), "label": item[1]}


def build(kind: str, items: list[tuple[str, int]], out: Path) -> None:
    """Write ``items`` (file, label) as the store of ``kind`` under ``out`` (not timed)."""
    from PIL import Image

    if kind == "mmap_ninja":
        from mmap_ninja import RecordsMmap
        from mmap_ninja.images import ImagesMmap

        ImagesMmap.from_files(out / "images", [path for path, _ in items]).close()
        rows = ({"image": Path(path).read_bytes(), "label": label} for path, label in items)
        RecordsMmap.from_generator(out / "records", rows, batch_size=256,
                                   schema={"image": "images", "label": int}).close()
    elif kind == "folder":
        out.mkdir(parents=True, exist_ok=True)
        (out / "files.json").write_text(json.dumps(items))
    elif kind == "hf":
        import datasets

        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
        table = {"image": [{"bytes": Path(path).read_bytes(), "path": None} for path, _ in items],
                 "label": [label for _, label in items]}
        datasets.Dataset.from_dict(table, features=features).save_to_disk(str(out / "hf"))
    elif kind == "litdata":
        import litdata

        litdata.optimize(fn=_litdata_sample, inputs=items, output_dir=str(out / "litdata"), chunk_bytes="64MB",
                         num_workers=1, mode="overwrite")
    elif kind == "mosaic":
        streaming = _mosaic()
        with streaming.MDSWriter(out=str(out / "mds"), columns={"image": "jpeg", "label": "int"}) as writer:
            for path, label in items:
                with Image.open(path) as image:  # a JpegImageFile with its filename: MDS stores the file's bytes
                    writer.write({"image": image, "label": label})
    elif kind == "wds":
        import webdataset

        (out / "wds").mkdir(parents=True, exist_ok=True)
        per_shard = max(1, -(-len(items) // 8))  # 8 shards: both workers get some
        with webdataset.ShardWriter(str(out / "wds" / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as writer:
            for k, (path, label) in enumerate(items):
                writer.write({"__key__": f"{k:08d}", "jpg": Path(path).read_bytes(), "cls": label})
    else:
        raise ValueError(kind)


STORE_OF_ROW = {OURS_CROP: "mmap_ninja", OURS_IMAGES: "mmap_ninja", OURS_FULL: "mmap_ninja", FOLDER: "folder",
                HF: "hf", LITDATA: "litdata", MOSAIC: "mosaic", WDS: "wds"}


def _mosaic() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers_smoke import import_mosaic_streaming

    return import_mosaic_streaming()


# ------------------------------------------------------------------------------------------ one epoch per row

class FullDecodePillowCrop:
    """``decode`` for `ImagesDataset`: ``m[i]`` (every pixel), then the Pillow crop and flip of the peers."""

    def __call__(self, images: Any, indices: Sequence[int]) -> np.ndarray:
        from PIL import Image

        batch = np.empty((len(indices), SIZE, SIZE, 3), np.uint8)
        for k, i in enumerate(indices):
            batch[k] = pillow_crop_flip(Image.fromarray(images[i]), _RNG)
        return batch


class FolderDataset:
    """torchvision's ``ImageFolder`` pattern: Pillow opens the file, converts to RGB, crops and flips."""

    def __init__(self, items: list[tuple[str, int]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        path, label = self.items[index]
        with open(path, "rb") as handle:
            image = Image.open(handle).convert("RGB")
        return pillow_crop_flip(image, _RNG), label


def _hf_transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {"image": [pillow_crop_flip(image, _RNG) for image in batch["image"]], "label": batch["label"]}


def loader(row: str, store: Path, workers: int) -> Any:
    """The DataLoader of ``row`` over its store."""
    from torch.utils.data import DataLoader

    common: dict[str, Any] = {"batch_size": BATCH, "num_workers": workers, "worker_init_fn": _seed_worker}
    if row in (OURS_CROP, OURS_IMAGES, OURS_FULL):
        from mmap_ninja import RecordsMmap
        from mmap_ninja.adapters.torch import ImagesDataset, RandomResizedCropDecode, RecordsDataset
        from mmap_ninja.images import ImagesMmap

        crops = RandomResizedCropDecode(SIZE, hflip=0.5)
        if row == OURS_CROP:
            records = RecordsDataset(RecordsMmap(store / "records"), decode=crops)
            return DataLoader(records, shuffle=True, collate_fn=records.collate, **common)
        images = ImagesMmap(store / "images", channels=3)
        dataset = ImagesDataset(images, decode=crops if row == OURS_IMAGES else FullDecodePillowCrop())
        return DataLoader(dataset, shuffle=True, collate_fn=dataset.collate, **common)
    if row == FOLDER:
        items = [tuple(item) for item in json.loads((store / "files.json").read_text())]
        return DataLoader(FolderDataset(items), shuffle=True, **common)  # type: ignore[arg-type]
    if row == HF:
        import datasets

        table = datasets.load_from_disk(str(store / "hf")).with_transform(_hf_transform)
        return DataLoader(table, shuffle=True, **common)
    if row == LITDATA:
        import litdata

        class LitImages(litdata.StreamingDataset):  # type: ignore[misc]
            def __getitem__(self, index: Any) -> tuple[np.ndarray, int]:
                from PIL import Image

                sample = super().__getitem__(index)
                return pillow_crop_flip(Image.open(io.BytesIO(sample["image"])), _RNG), sample["label"]

        return litdata.StreamingDataLoader(LitImages(str(store / "litdata"), shuffle=True), **common)
    if row == MOSAIC:
        streaming = _mosaic()

        class MosaicImages(streaming.StreamingDataset):  # type: ignore[misc,name-defined]
            def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
                sample = super().__getitem__(index)
                return pillow_crop_flip(sample["image"], _RNG), sample["label"]

        streaming.base.util.clean_stale_shared_memory()
        dataset = MosaicImages(local=str(store / "mds"), shuffle=True, batch_size=BATCH)
        return streaming.StreamingDataLoader(dataset, **common)
    if row == WDS:
        import webdataset

        shards = sorted(str(p) for p in (store / "wds").glob("shard-*.tar"))
        pipeline = (webdataset.WebDataset(shards, shardshuffle=len(shards), empty_check=False).shuffle(1000)
                    .decode("pil").to_tuple("jpg", "cls").map_tuple(lambda image: pillow_crop_flip(image, _RNG)))
        return DataLoader(pipeline, **common)
    raise ValueError(row)


def run_epoch(row: str, store: Path, workers: int) -> dict[str, float]:
    """One epoch of ``row``: images seen, wall-clock seconds, and CPU seconds of this process and its DataLoader
    workers (whose CPU time counts once they have exited)."""
    import torch

    batches = loader(row, store, workers)
    seen = 0
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        if isinstance(batch, dict):
            images, labels = batch["image"], batch.get("label")
        elif isinstance(batch, (list, tuple)):
            images, labels = batch[0], batch[1]
        else:
            images, labels = batch, None
        tensor = torch.as_tensor(images).permute(0, 3, 1, 2).float().div_(255)  # uint8 NHWC -> float NCHW
        assert tensor.shape[1:] == (3, SIZE, SIZE), (row, tuple(tensor.shape))
        assert labels is None or len(labels) == len(tensor)
        seen += len(tensor)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    del batches  # the workers exit and are reaped: their CPU time joins RUSAGE_CHILDREN
    gc.collect()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return {"images": seen, "seconds": seconds, "cpu": cpu}


# ------------------------------------------------------------------------------------------ the parent

def child(args: argparse.Namespace) -> None:
    result = run_epoch(args.child, Path(args.store), args.child_workers)
    print("RESULT " + json.dumps(result), flush=True)


def measure(row: str, store: Path, workers: int, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", row, "--store", str(store), "--child-workers", str(workers)]
    return run_child(command, ROOT / "src", timeout)


def versions() -> str:
    found = []
    for name, module in [("torch", "torch"), ("numpy", "numpy"), ("Pillow", "PIL"), ("simplejpeg", "simplejpeg"),
                         ("datasets", "datasets"), ("litdata", "litdata"), ("webdataset", "webdataset")]:
        try:
            found.append(f"{name} {__import__(module).__version__}")
        except Exception:
            found.append(f"{name} missing")
    try:
        found.append(f"mosaicml-streaming {_mosaic().__version__}")
    except Exception:
        found.append("mosaicml-streaming missing")
    return ", ".join(found)


def table(results: dict[tuple[str, str, int], list[dict[str, Any]]], sets: dict[str, int], workers: Sequence[int],
          rows: Sequence[str]) -> tuple[list[str], dict[tuple[str, str, int], float]]:
    speed, per_cpu, errors = medians(results, "images")
    lines = ["| pictures | workers | loader | images/s | ours (crop decode) ÷ this | images per CPU second |",
             "|:--|--:|:--|--:|--:|--:|"]
    for set_name in sets:
        for count in workers:
            ours = speed.get((set_name, OURS_CROP, count))
            for row in rows:
                key = (set_name, row, count)
                if key in speed:
                    ratio = f"{ours / speed[key]:.2f}" if ours else ""
                    lines.append(f"| {set_name} | {count} | {row} | {speed[key]:.0f} | {ratio} | {per_cpu[key]:.0f} |")
                else:
                    lines.append(f"| {set_name} | {count} | {row} | cannot run: {errors.get(key, '?')} | | |")
    return lines, speed


def targets(speed: dict[tuple[str, str, int], float], sets: dict[str, int], workers: Sequence[int]) -> list[str]:
    lines = ["| pictures | target | measured | verdict |", "|:--|:--|--:|:--|"]
    for set_name in sets:
        for count in workers:
            ours = speed.get((set_name, OURS_CROP, count))
            if ours is None:
                continue
            folder = speed.get((set_name, FOLDER, count))
            if folder:
                ratio = ours / folder
                lines.append(f"| {set_name} | {count} workers: crop decode ≥ 1.5x image folder | {ratio:.2f}x | "
                             f"{'PASS' if ratio >= 1.5 else 'FAIL'} |")
            peers = {row: speed[(set_name, row, count)] for row in PEERS if (set_name, row, count) in speed}
            if peers:
                best = max(peers, key=lambda row: peers[row])
                ratio = ours / peers[best]
                lines.append(f"| {set_name} | {count} workers: crop decode ≥ 1.3x the best peer ({best}) | "
                             f"{ratio:.2f}x | {'PASS' if ratio >= 1.3 else 'FAIL'} |")
        if 0 in workers and 2 in workers and (set_name, OURS_CROP, 0) in speed and (set_name, OURS_CROP, 2) in speed:
            ratio = speed[(set_name, OURS_CROP, 2)] / speed[(set_name, OURS_CROP, 0)]
            lines.append(f"| {set_name} | crop decode: 2 workers ≥ 1.7x 0 workers | {ratio:.2f}x | "
                         f"{'PASS' if ratio >= 1.7 else 'FAIL'} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder with images/")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per row and setting (median reported)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers settings")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS, metavar="ROW", help=f"rows: {ROWS}")
    parser.add_argument("--copies", type=int, default=4, help="times each large picture is stored in its set")
    parser.add_argument("--limit", type=int, default=0, help="use the first N pictures only (0: all)")
    parser.add_argument("--sets", nargs="+", choices=["large", "whole"], default=["large", "whole"],
                        help="picture sets: both sides at least 448 (large), every picture (whole)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one epoch may take")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    parser.add_argument("--work", type=Path, help="where the stores are written (default: a temporary folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    pictures = load_pictures(args.data, args.limit)
    large = [(str(p), label) for p, label, h, w in pictures if h >= LARGE and w >= LARGE]
    chosen = {"large": (f"both sides ≥ {LARGE} ({len(large)} x {args.copies})", large * args.copies),
              "whole": (f"whole set ({len(pictures)})", [(str(p), label) for p, label, _, _ in pictures])}
    sets = {chosen[key][0]: chosen[key][1] for key in ("large", "whole") if key in args.sets and chosen[key][1]}
    work = Path(tempfile.mkdtemp(prefix="bench_epochs-", dir=args.work))
    build_errors: dict[tuple[str, str], str] = {}
    try:
        kinds = sorted({STORE_OF_ROW[row] for row in args.rows})
        for k, (set_name, items) in enumerate(sets.items()):
            for kind in kinds:
                started = time.perf_counter()
                try:
                    build(kind, items, work / f"set{k}" / kind)
                except Exception as error:
                    build_errors[(set_name, kind)] = f"{type(error).__name__}: {error}"[:200]
                print(f"built {kind} for {set_name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        load_before = os.getloadavg()
        results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for repeat in range(args.repeats):
            for k, set_name in enumerate(sets):
                for count in args.workers:
                    for row in rotated(args.rows, repeat + k + count):
                        key = (set_name, row, count)
                        error = build_errors.get((set_name, STORE_OF_ROW[row]))
                        run = {"error": f"writing failed: {error}"} if error else measure(
                            row, work / f"set{k}" / STORE_OF_ROW[row], count, args.timeout)
                        results.setdefault(key, []).append(run)
                        shown = run.get("error") or f"{run['images'] / run['seconds']:.0f} images/s"
                        print(f"[{repeat + 1}/{args.repeats}] {set_name} | {count} workers | {row}: {shown}",
                              file=sys.stderr, flush=True)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines, speed = table(results, sets, args.workers, args.rows)
    report = [f"# Image epochs: decode + random resized crop {SIZE} + flip + float tensor, batch {BATCH}", "",
              f"`{' '.join(sys.argv)}` on {platform.node() or 'this machine'}: {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; {versions()}. Load average (1, 5, 15 min) "
              f"{'/'.join(f'{v:.1f}' for v in load_before)} before the epochs, "
              f"{'/'.join(f'{v:.1f}' for v in load_after)} after. Median of {args.repeats} epochs per row, "
              f"rows alternating.", "", *lines, "", *targets(speed, sets, args.workers)]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
