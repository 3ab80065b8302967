"""Per-worker memory and throughput of a PyTorch DataLoader over mmap_ninja maps, an in-memory Python
list, and a Hugging Face ``datasets`` dataset (memory-mapped Arrow; pyarrow directly if ``datasets`` is
missing), on the same real text and images.

    python benchmarks/bench_training.py --text data/text --images data/images

For every (data, backend, start method) it runs a DataLoader with ``--workers`` persistent workers for
``--epochs`` epochs over every sample (batch size 64, a shuffled order), reports samples/s of the last
epoch (the steady state, workers already started), then the USS (memory only that process holds) and
PSS (its proportional share of shared pages, such as the page cache of a map) of each worker, averaged
over workers. Text samples are the strings; image samples are a 64x64 centre crop of the stored image.
Needs torch, psutil, pillow, and optionally datasets / pyarrow.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, RandomSampler

from mmap_ninja import RaggedMmap, StringsMmap

MiB = 1 << 20
CROP = 64


# ------------------------------------------------------------------------------------------ data


def read_texts(folder: Path, limit: int):
    files = sorted(p for p in folder.glob("*.txt"))[:limit or None]
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


def read_images(folder: Path, limit: int, store_size: int):
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, min(limit, len(files))).astype(int)]
    images = []
    for p in files:
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((store_size, store_size))
            a = np.asarray(im, dtype=np.uint8)
            if a.shape[0] >= CROP and a.shape[1] >= CROP:
                images.append(a)
    return images


def centre_crop(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - CROP) // 2, (w - CROP) // 2
    return np.ascontiguousarray(image[top:top + CROP, left:left + CROP])


class Samples:
    """A picklable dataset: ``kind`` says how to read sample i from ``source``."""

    def __init__(self, source, kind: str, length: int = 0):
        self.source, self.kind, self.length = source, kind, length

    def __len__(self):
        return self.length if self.kind == "none" else len(self.source)

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        src, kind = self.source, self.kind
        if kind == "none":
            return [np.zeros((CROP, CROP, 3), np.uint8) if src == "image" else "" for _ in indices]
        if kind == "text-list":
            return [src[i] for i in indices]
        if kind == "text-map":
            return src.__getitems__(indices)
        if kind == "text-hf":
            return src[indices]["text"]
        if kind == "text-arrow":
            return src.take(indices).to_pylist()
        if kind == "image-list":
            return [centre_crop(src[i]) for i in indices]
        if kind == "image-map":
            return [centre_crop(a) for a in src.__getitems__(indices)]
        if kind == "image-hf":
            rows = src[indices]
            return [centre_crop(np.asarray(p, np.uint8).reshape(s)) for p, s in zip(rows["pixels"], rows["shape"])]
        if kind == "image-arrow":
            pixels, shapes = src
            return [centre_crop(pixels[i].values.to_numpy().reshape(shapes[i])) for i in indices]
        raise ValueError(kind)


def collate(batch):
    if isinstance(batch[0], np.ndarray):
        return torch.from_numpy(np.stack(batch))
    return sum(len(s) for s in batch)  # strings: keep the transfer back small and equal for all backends


def make_backends(texts, images, work: Path):
    backends = {("text", "no data (baseline)"): Samples("text", "none", len(texts)),
                ("image", "no data (baseline)"): Samples("image", "none", len(images))}
    backends[("text", "python list")] = Samples(texts, "text-list")
    StringsMmap.from_strings(work / "texts", texts, overwrite=True).close()
    backends[("text", "mmap_ninja")] = Samples(StringsMmap(work / "texts"), "text-map")
    backends[("image", "python list")] = Samples(images, "image-list")
    RaggedMmap.from_generator(work / "images", images, batch_size=64, overwrite=True).close()
    backends[("image", "mmap_ninja")] = Samples(RaggedMmap(work / "images"), "image-map")
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(work / "hf-text"))
        datasets.Dataset.from_dict({"pixels": [a.reshape(-1) for a in images],
                                    "shape": [list(a.shape) for a in images]}).save_to_disk(str(work / "hf-img"))
        text_hf = datasets.load_from_disk(str(work / "hf-text"))
        image_hf = datasets.load_from_disk(str(work / "hf-img")).with_format("numpy")
        backends[("text", "HF datasets")] = Samples(text_hf, "text-hf")
        backends[("image", "HF datasets")] = Samples(image_hf, "image-hf")
    except ImportError:
        import pyarrow as pa

        backends[("text", "pyarrow (in memory)")] = Samples(pa.array(texts, pa.large_string()), "text-arrow")
        pixels = pa.array([a.reshape(-1) for a in images], pa.large_list(pa.uint8()))
        backends[("image", "pyarrow (in memory)")] = Samples((pixels, [a.shape for a in images]), "image-arrow")
    return backends


# ------------------------------------------------------------------------------------------ measuring


def worker_memory(loader: DataLoader):
    """USS and PSS of each worker of a loader with persistent workers (alive between epochs)."""
    uss, pss = [], []
    for worker in loader._iterator._workers:  # the worker processes of the persistent iterator
        info = psutil.Process(worker.pid).memory_full_info()
        uss.append(info.uss)
        pss.append(getattr(info, "pss", float("nan")))
    return uss, pss


def run(dataset, method: str, workers: int, epochs: int, batch_size: int):
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                        multiprocessing_context=method, persistent_workers=True)
    rate = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        count = 0
        for batch in loader:
            count += len(batch) if isinstance(batch, torch.Tensor) else 0
        rate = len(dataset) / (time.perf_counter() - t0)
    uss, pss = worker_memory(loader)
    del loader
    gc.collect()
    time.sleep(0.5)
    return rate, uss, pss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=Path("data/text"))
    parser.add_argument("--images", type=Path, default=Path("data/images"))
    parser.add_argument("--text-limit", type=int, default=0, help="0: every text file")
    parser.add_argument("--image-limit", type=int, default=800)
    parser.add_argument("--store-size", type=int, default=384)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", default="fork,spawn")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", module="PIL")

    texts = read_texts(args.text, args.text_limit)
    images = read_images(args.images, args.image_limit, args.store_size)
    text_mib = sum(len(t.encode()) for t in texts) / MiB
    image_mib = sum(a.nbytes for a in images) / MiB
    print(f"text: {len(texts)} files, {text_mib:.1f} MiB UTF-8; images: {len(images)} decoded, {image_mib:.1f} MiB "
          f"(uint8, at most {args.store_size} px a side); {args.workers} workers, batch {args.batch_size}, "
          f"shuffled, samples/s of epoch {args.epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        backends = make_backends(texts, images, Path(tmp))
        header = f"{'data':6} {'backend':20} {'start':6} {'samples/s':>10} {'USS/worker':>11} {'PSS/worker':>11}"
        print(header)
        print("-" * len(header))
        for method in args.methods.split(","):
            for (data, name), dataset in backends.items():
                rate, uss, pss = run(dataset, method, args.workers, args.epochs, args.batch_size)
                print(f"{data:6} {name:20} {method:6} {rate:10.0f} {np.mean(uss) / MiB:8.1f} MiB "
                      f"{np.mean(pss) / MiB:8.1f} MiB", flush=True)
    print("baseline: workers of the same loader over a dataset that holds no data (the interpreter, torch, "
          "and whatever the backend imports in the parent); a worker's copy of the data shows as USS above it. ")
    print("USS: memory only that worker holds (what a copy of the data would show up in); PSS: its share of "
          "pages shared with other processes (page cache of a map, the parent's pages after fork).")


if __name__ == "__main__":
    main()
