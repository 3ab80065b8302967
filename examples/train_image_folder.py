"""Train a tiny CNN on an image folder through one RecordsMmap (image, label, path), read by DataLoader workers.

    python examples/train_image_folder.py --root /path/to/root --steps 20 --workers 2

``--root`` is an image folder ``root/<class>/<file>`` (torchvision's ``ImageFolder`` layout). It may instead be a
flat folder with a ``MANIFEST.tsv`` (columns ``file`` and ``--class-column``), such as the real image set
``data/images`` made by ``scripts/get_data.py``: then the example first makes the class-folder layout in a
temporary folder, with one symbolic link per image (no copies) in the folder named by that image's
``--class-column`` value. The default is
the image's file format (column ``format``, or ``orig_format`` in manifests that converted every file to JPEG and
kept the original format there): ``PNG`` for screenshots and diagrams, ``JPEG`` for photographs, a real visual
attribute, so the classes can be learned.

``RecordsMmap.from_image_folder`` stores every file's bytes unchanged (no decoding, no re-encoding) with its label
and path, all committed together. A `RecordsDataset` reads each DataLoader batch's rows with one batched lookup in
the workers; its transform decodes nothing more than the row it gets (images are decoded on read) and resizes it
to ``--size`` (a centre square, nearest neighbour, in NumPy); `RecordsCollate` stacks the fields into tensors.
Needs ``pip install mmap_ninja[torch,images]``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from mmap_ninja import RecordsMmap
from mmap_ninja.adapters.torch import RecordsDataset


def class_folders_from_manifest(images: Path, out: Path, class_column: str | None, limit: int) -> Path:
    """Make ``out/<class>/<file>`` symbolic links to the images a MANIFEST.tsv lists, classed by ``class_column``
    (default: ``orig_format`` or ``format``, whichever the manifest has; ``limit`` images at most, spread evenly
    over the manifest)."""
    with open(images / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f, delimiter="\t"), key=lambda row: row["file"])
    if class_column is None:
        columns = rows[0].keys() if rows else ()
        class_column = next((c for c in ("orig_format", "format") if c in columns), None)
        if class_column is None:
            raise SystemExit(f"{images / 'MANIFEST.tsv'} has no format column: pass --class-column")
    if limit and len(rows) > limit:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, limit).astype(int)]
    for row in rows:
        folder = out / row[class_column].strip().lower().replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink((images / row["file"]).resolve(), folder / row["file"])
    return out


class SquareResize:
    """A row transform: the centre square of the image, resized to ``size`` (nearest neighbour) with 3 channels
    (gray repeated, alpha dropped), as uint8 ``(size, size, 3)``. Picklable, for spawned workers."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, row: dict) -> dict:
        image = row["image"]  # (h, w, c) uint8, decoded from the stored bytes
        h, w, c = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        rows = top + (np.arange(self.size) * side) // self.size
        cols = left + (np.arange(self.size) * side) // self.size
        square = image[rows[:, None], cols[None, :]]
        square = np.repeat(square[:, :, :1], 3, axis=2) if c < 3 else square[:, :, :3]
        return {"image": square, "label": row["label"]}


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
    parser.add_argument("--root", "--data", dest="root", type=Path, required=True,
                        help="an image folder root/<class>/<file>, or a flat folder with a MANIFEST.tsv")
    parser.add_argument("--class-column", default=None,
                        help="the manifest column giving the class (default: orig_format or format)")
    parser.add_argument("--limit", type=int, default=600, help="at most this many images from a manifest")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="side of the squares the model sees")
    parser.add_argument("--start-method", default=None, choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--maps", type=Path, default=None, help="where to build the map (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if (root / "MANIFEST.tsv").exists():
            root = class_folders_from_manifest(root, Path(tmp) / "classes", args.class_column, args.limit)
        out = (args.maps or Path(tmp)) / "records"
        t0 = time.perf_counter()
        rec = RecordsMmap.from_image_folder(out, root, overwrite=True)
        classes = rec.metadata["classes"]
        counts = np.bincount(rec["label"][:], minlength=len(classes)).tolist()
        print(f"built a records map of {len(rec)} images in {time.perf_counter() - t0:.2f} s; "
              f"classes {dict(zip(classes, counts))}")

        dataset = RecordsDataset(rec, fields=["image", "label"], transform=SquareResize(args.size))
        sampler = RandomSampler(dataset, replacement=True, num_samples=args.steps * args.batch_size)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            collate_fn=dataset.collate,
                            multiprocessing_context=args.start_method if args.workers else None)
        model = TinyCNN(len(classes))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        seen, loss_value, t0 = 0, math.nan, time.perf_counter()
        for step, batch in enumerate(loader):
            images = batch["image"].permute(0, 3, 1, 2).float() / 255.0  # (B, 3, size, size)
            loss = nn.functional.cross_entropy(model(images), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(batch["label"])
            loss_value = loss.item()
            if step % 5 == 0 or step == args.steps - 1:
                print(f"step {step:4d}  loss {loss_value:.4f}")
        elapsed = time.perf_counter() - t0
        print(f"samples_seen={seen} final_loss={loss_value:.6f} samples_per_s={seen / elapsed:.0f}")
    return seen, loss_value


if __name__ == "__main__":
    main()
