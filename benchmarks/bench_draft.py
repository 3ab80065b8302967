"""DCT-scaled JPEG decoding (``draft=``) and `RandomResizedCropDecode` against full decoding, on the real image set.

    python benchmarks/bench_draft.py --data data [--size 224] [--repeats 2] [--limit N]

``--data`` holds ``images/`` (``bash get_real_data.sh DIR`` or ``scripts/get_data.py``). The files are copied into an
`ImagesMmap` once (no re-encoding); every epoch then reads from the map, on one thread, and ends in a float tensor:

- ``full + resize``: ``m[i]`` decoded at full size, Pillow ``BILINEAR`` resize to size x size, float tensor;
- ``draft + resize``: the same with the map opened with ``draft=(size, size)`` (each JPEG decoded at the smallest
  DCT scale, 1/2, 1/4 or 1/8, that keeps it at least size x size);
- ``full + crop``: torchvision's ``RandomResizedCrop`` on a Pillow image (full decode, crop, ``BILINEAR`` resize to
  size), horizontal flip, float tensor, in batches of 64;
- ``RandomResizedCropDecode``: the same crops (same seed), decoded at the smallest DCT scale keeping the crop at
  least size, horizontal flip, float tensor, in batches of 64.

Each is timed on the pictures whose both sides are at least twice the size (where DCT scaling can act) and on the
whole set (best of ``--repeats`` epochs), in CPU seconds of this process (the speed-ups are of CPU time, which stays
meaningful on a machine shared with other work) and wall-clock seconds. Quality: each reduced decode's output
against its full-decode reference of the same image and crop, as mean and minimum PSNR (identical images counted as
99 dB) and the largest absolute difference of a pixel value.
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmap_ninja.adapters.torch import RandomResizedCropDecode
from mmap_ninja.images import ImagesMmap

BATCH = 64


def _tensor(batch: np.ndarray) -> torch.Tensor:
    """A uint8 (k, H, W, C) batch (or one (H, W, C) image) as float CHW in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(batch))
    return tensor.permute(*range(tensor.ndim - 3), -1, -3, -2).float().div_(255)


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else min(99.0, 10 * math.log10(255.0 ** 2 / mse))


def _reference_crops(m: ImagesMmap, indices: Sequence[int], decode: RandomResizedCropDecode, size: int) -> np.ndarray:
    """torchvision's RandomResizedCrop + flip on Pillow images, with the crops `decode` chooses."""
    out = np.empty((len(indices), size, size, 3), np.uint8)
    for k, i in enumerate(indices):
        height, width = m.shape(i)[:2]
        rng = decode._rng(i)
        top, left, h, w = decode._box(rng, height, width)
        with Image.open(io.BytesIO(m.raw(i))) as image:
            crop = image.convert("RGB").crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(crop)
        out[k] = pixels[:, ::-1] if decode.hflip and rng.random() < decode.hflip else pixels
    return out


def _epoch(run: Callable[[list[int]], Any], indices: list[int], batch: int) -> tuple[float, float]:
    """The epoch's wall-clock and CPU seconds (this process; one thread, so CPU time is what the epoch costs
    even when other processes compete for the cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for b in range(0, len(indices), batch):
        run(indices[b:b + batch])
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder with images/")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="use the first N images only (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = args.size
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*not writable.*")  # Pillow's arrays are read-only; never written
    files = sorted(p for p in (args.data / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit:
        files = files[:args.limit]
    with tempfile.TemporaryDirectory(prefix="bench_draft_") as tmp:
        m = ImagesMmap.from_files(Path(tmp) / "images", files, channels=3)
        drafted = ImagesMmap(Path(tmp) / "images", channels=3, draft=(size, size))
        shapes = m.shapes()
        large = [i for i in range(len(m)) if shapes[i, 0] >= 2 * size and shapes[i, 1] >= 2 * size]
        subsets = {f"both sides >= {2 * size}": large, "whole set": list(range(len(m)))}
        crops = RandomResizedCropDecode(size, seed=args.seed, hflip=0.5)

        def full_resize(batch: list[int]) -> None:
            for i in batch:
                _tensor(_resized(m[i], size))

        def draft_resize(batch: list[int]) -> None:
            for i in batch:
                _tensor(_resized(drafted[i], size))

        def full_crop(batch: list[int]) -> None:
            _tensor(_reference_crops(m, batch, crops, size))

        def crop_decode(batch: list[int]) -> None:
            _tensor(crops(m, batch))

        pipelines: list[tuple[str, Callable[[list[int]], None], int, str]] = [
            ("full + resize", full_resize, 1, ""), ("draft + resize", draft_resize, 1, "full + resize"),
            ("full + crop (torchvision rule)", full_crop, BATCH, ""),
            ("RandomResizedCropDecode", crop_decode, BATCH, "full + crop (torchvision rule)")]
        print(f"# DCT-scaled decoding, {len(m)} images from {args.data / 'images'} (size {size}, one thread, best of "
              f"{args.repeats})\n")
        print("| pictures | pipeline | images | epoch CPU (s) | images/s (CPU) | vs full | epoch wall (s) | mean PSNR "
              "(dB) | min PSNR (dB) | max abs diff |")
        print("|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
        for subset_name, indices in subsets.items():
            if not indices:
                continue
            quality = {"draft + resize": _quality([_resized(drafted[i], size) for i in indices],
                                                  [_resized(m[i], size) for i in indices]),
                       "RandomResizedCropDecode": _quality(list(crops(m, indices)),
                                                           list(_reference_crops(m, indices, crops, size)))}
            seconds: dict[str, float] = {}
            for name, run, batch, baseline in pipelines:
                epochs = [_epoch(run, indices, batch) for _ in range(args.repeats)]
                seconds[name] = min(cpu for _, cpu in epochs)
                wall = min(w for w, _ in epochs)
                speedup = f"{seconds[baseline] / seconds[name]:.2f}x" if baseline else ""
                psnr_mean, psnr_min, diff = quality.get(name, ("", "", ""))
                print(f"| {subset_name} | {name} | {len(indices)} | {seconds[name]:.2f} | "
                      f"{len(indices) / seconds[name]:.0f} | {speedup} | {wall:.2f} | {psnr_mean} | {psnr_min} | "
                      f"{diff} |", flush=True)
        m.close()
        drafted.close()


def _quality(outputs: list[np.ndarray], references: list[np.ndarray]) -> tuple[str, str, str]:
    values = [_psnr(a, b) for a, b in zip(outputs, references)]
    diff = max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(outputs, references))
    return f"{np.mean(values):.1f}", f"{np.min(values):.1f}", str(diff)


if __name__ == "__main__":
    main()
