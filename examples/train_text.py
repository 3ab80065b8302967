"""Train a tiny byte-level CNN classifier on real text read from a StringsMmap by DataLoader workers.

    python examples/train_text.py --data /path/to/texts --steps 50 --workers 2

``--data`` is a folder of text files. If it holds a ``MANIFEST.tsv`` (columns ``file`` and the
``--label-column``, default ``source``), the labels come from it; otherwise a file's label is the name of
the folder it sits in (files are found recursively). The texts go into a ``StringsMmap`` and the labels
into a ``NumpyMmap``; the dataset below hands the workers each text's UTF-8 bytes as a zero-copy view of
the map, and `PadCollate` pads a batch into one uint8 tensor plus lengths in one copy.
Needs ``pip install mmap_ninja[torch]``.
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
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from mmap_ninja import NumpyMmap, StringsMmap, np_from_ndarray
from mmap_ninja.adapters.torch import PadCollate


def find_texts(data: Path, label_column: str, limit: int):
    """(paths, label names) of up to ``limit`` files, spread evenly over the listing."""
    manifest = data / "MANIFEST.tsv"
    if manifest.exists():
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        items = [(data / row["file"], row[label_column]) for row in rows]
    else:
        items = [(p, p.parent.name) for p in sorted(data.rglob("*")) if p.is_file()]
    if limit and len(items) > limit:
        items = [items[i] for i in np.linspace(0, len(items) - 1, limit).astype(int)]
    return [p for p, _ in items], [label for _, label in items]


def build_maps(paths, labels, out: Path):
    classes = sorted(set(labels))
    texts = (p.read_text(encoding="utf-8", errors="replace") for p in paths)
    StringsMmap.from_generator(out / "texts", texts, batch_size=1000, overwrite=True).close()
    targets = np.array([classes.index(label) for label in labels], dtype=np.int64)
    np_from_ndarray(out / "labels", targets, overwrite=True).close()
    return classes


class ByteTexts:
    """(first ``max_len`` UTF-8 bytes of text i, label i): the bytes are a read-only view of the map."""

    def __init__(self, root: Path, max_len: int):
        self.texts = StringsMmap(root / "texts")
        self.labels = NumpyMmap(root / "labels")
        self.max_len = max_len

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        offsets, utf8 = self.texts.offsets, self.texts.values
        starts = offsets[indices]
        stops = np.minimum(offsets[np.asarray(indices) + 1], starts + self.max_len)
        labels = self.labels.get_batch(indices)
        return [(utf8[a:b], y) for a, b, y in zip(starts.tolist(), stops.tolist(), labels.tolist())]


class ByteCNN(nn.Module):
    def __init__(self, n_classes: int, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(256, 32, padding_idx=0)
        self.conv = nn.Conv1d(32, width, kernel_size=5, padding=2)
        self.head = nn.Linear(width, n_classes)

    def forward(self, tokens, lengths):
        x = self.conv(self.embed(tokens).transpose(1, 2)).relu()  # (batch, width, time)
        valid = torch.arange(tokens.shape[1])[None, :] < lengths[:, None]
        x = x.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=2)
        return self.head(torch.nan_to_num(x, neginf=0.0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of text files (optional MANIFEST.tsv)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=512, help="bytes read per text")
    parser.add_argument("--limit", type=int, default=3000, help="at most this many files")
    parser.add_argument("--label-column", default="source")
    parser.add_argument("--start-method", default=None, choices=["fork", "spawn", "forkserver"])
    parser.add_argument("--maps", type=Path, default=None, help="where to build the maps (default: a temp dir)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    paths, labels = find_texts(args.data, args.label_column, args.limit)
    if not paths:
        raise SystemExit(f"no text files in {args.data}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.maps or Path(tmp)
        t0 = time.perf_counter()
        classes = build_maps(paths, labels, root)
        print(f"built maps of {len(paths)} texts, {len(classes)} classes in {time.perf_counter() - t0:.2f} s")
        dataset = ByteTexts(root, args.max_len)
        sampler = RandomSampler(dataset, replacement=True, num_samples=args.steps * args.batch_size)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                            collate_fn=PadCollate(pad_value=0, dtype=np.int64),
                            multiprocessing_context=args.start_method if args.workers else None)
        model = ByteCNN(len(classes))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        seen, loss_value, t0 = 0, math.nan, time.perf_counter()
        for step, (tokens, lengths, targets) in enumerate(loader):
            loss = nn.functional.cross_entropy(model(tokens, lengths), targets)
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
