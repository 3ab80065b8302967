"""Train a tiny CNN on real images stored in a RaggedMmap, read by DataLoader workers.

    python examples/train_images.py --data /path/to/images --steps 50 --workers 2

``--data`` is a folder of images (anything Pillow opens). If it holds a ``MANIFEST.tsv`` (columns
``file`` and the ``--label-column``, default ``source``), labels come from it; otherwise an image's label is
the name of the folder it sits in (files are found recursively). Images are decoded once, shrunk to at
most ``--store-size`` pixels a side and stored as uint8 ``(height, width, 3)`` samples of one
``RaggedMmap``. Each worker crops a random square from its zero-copy view of a sample and resizes it to
``--size`` (nearest neighbour, in NumPy); `collate` stacks the batch into one tensor in one copy.
Needs ``pip install mmap_ninja[torch] pillow``.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from mmap_ninja import NumpyMmap, RaggedMmap, np_from_ndarray
from mmap_ninja.adapters.torch import collate

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def find_images(data: Path, label_column: str, limit: int):
    manifest = data / "MANIFEST.tsv"
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        items = [(data / row["file"], row[label_column]) for row in rows]
    else:
        items = [(p, p.parent.name) for p in sorted(data.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if limit and len(items) > limit:
        items = [items[i] for i in np.linspace(0, len(items) - 1, limit).astype(int)]
    return [p for p, _ in items], [label for _, label in items]


def decode(path: Path, store_size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((store_size, store_size))
        return np.asarray(image, dtype=np.uint8)


def build_maps(paths, labels, out: Path, store_size: int):
    classes = sorted(set(labels))
    images = (decode(p, store_size) for p in paths)
    RaggedMmap.from_generator(out / "images", images, batch_size=64, overwrite=True).close()
    np_from_ndarray(out / "labels", np.array([classes.index(x) for x in labels], np.int64), overwrite=True).close()
    return classes


class CroppedImages:
    """(random square crop of image i resized to ``size``, as float32 CHW in [0, 1], label i)."""

    def __init__(self, root: Path, size: int, seed: int = 0):
        self.images = RaggedMmap(root / "images")
        self.labels = NumpyMmap(root / "labels")
        self.size = size
        self.seed = seed

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]  # (h, w, 3) uint8, a read-only view of the map
        h, w, _ = image.shape
        rng = np.random.default_rng((self.seed, i, torch.initial_seed() % 2**32))
        side = min(h, w)
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        rows = top + (np.arange(self.size) * side) // self.size
        cols = left + (np.arange(self.size) * side) // self.size
        crop = image[rows[:, None], cols[None, :]]  # (size, size, 3): the only copy of the pixels
        return crop.transpose(2, 0, 1).astype(np.float32) / 255.0, int(self.labels[i])


class TinyCNN(nn.Module):
    def __init__(self, n_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, n_classes)

    def forward(self, x):
        return self.head(self.body(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of images (optional MANIFEST.tsv)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="side of the crops the model sees")
    parser.add_argument("--store-size", type=int, default=256, help="images are stored at most this large")
    parser.add_argument("--limit", type=int, default=400, help="at most this many images")
    parser.add_argument("--label-column", default="source")
    parser.add_argument("--start-method", default=None, choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--maps", type=Path, default=None, help="where to build the maps (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    paths, labels = find_images(args.data, args.label_column, args.limit)
    if not paths:
        raise SystemExit(f"no images in {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.maps or Path(tmp)
        t0 = time.perf_counter()
        classes = build_maps(paths, labels, root, args.store_size)
        print(f"built maps of {len(paths)} images, {len(classes)} classes in {time.perf_counter() - t0:.2f} s")
        dataset = CroppedImages(root, args.size, args.seed)
        sampler = RandomSampler(dataset, replacement=True, num_samples=args.steps * args.batch_size)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            collate_fn=collate,
                            multiprocessing_context=args.start_method if args.workers else None)
        model = TinyCNN(len(classes))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        seen, loss_value, t0 = 0, math.nan, time.perf_counter()
        for step, (images, targets) in enumerate(loader):
            loss = nn.functional.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(targets)
            loss_value = loss.item()
            if step % 10 == 0 or step == args.steps - 1:
                print(f"step {step:4d}  loss {loss_value:.4f}")
        elapsed = time.perf_counter() - t0
        print(f"samples_seen={seen} final_loss={loss_value:.6f} samples_per_s={seen / elapsed:.0f}")
    return seen, loss_value


if __name__ == "__main__":
    main()
