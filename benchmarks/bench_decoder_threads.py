"""Which image decoders gain from threads: each decodes the same encoded images (held in RAM) on one thread and
split in two halves on two threads, best of ``--repeats``; a decoder that holds the GIL gains nothing.

    python benchmarks/bench_decoder_threads.py --data data [--limit 300] [--repeats 3]

This is why ``ImagesMmap.get_batch(..., threads=2)`` gains little on a PNG-heavy set: pyspng (the fastest PNG decoder
here) holds the GIL, while simplejpeg and Pillow release it.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _seconds(decode: Callable[[bytes], Any], images: list[bytes], threads: int) -> float:
    start = time.perf_counter()
    if threads == 1:
        for data in images:
            decode(data)
    else:
        shares = [images[w * len(images) // threads:(w + 1) * len(images) // threads] for w in range(threads)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda share: [decode(data) for data in share], shares))
    return time.perf_counter() - start


def _decodable(decode: Callable[[bytes], Any], images: list[bytes], limit: int) -> list[bytes]:
    kept = []
    for data in images:
        try:
            decode(data)
        except Exception:  # a decoder that refuses an image is measured on the others
            continue
        kept.append(data)
        if len(kept) == limit:
            break
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder with images/")
    parser.add_argument("--limit", type=int, default=300, help="images per decoder")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from PIL import Image

    files = sorted(p for p in (args.data / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    jpegs = [p.read_bytes() for p in files if p.suffix.lower() != ".png"]
    pngs = [p.read_bytes() for p in files if p.suffix.lower() == ".png"]
    decoders: list[tuple[str, Callable[[bytes], Any], list[bytes]]] = [
        ("Pillow, JPEG", lambda b: np.asarray(Image.open(io.BytesIO(b))), jpegs),
        ("Pillow, PNG", lambda b: np.asarray(Image.open(io.BytesIO(b))), pngs),
    ]
    try:
        import simplejpeg

        decoders.append(("simplejpeg, JPEG", simplejpeg.decode_jpeg, jpegs))
    except ImportError:
        pass
    try:
        import pyspng

        decoders.append(("pyspng, PNG", pyspng.load, pngs))
    except ImportError:
        pass
    print(f"{args.limit} images per decoder from {args.data / 'images'}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; best of {args.repeats}\n")
    print("| decoder | 1 thread (ms) | 2 threads (ms) | gain |\n|:--|--:|--:|--:|")
    for name, decode, images in decoders:
        kept = _decodable(decode, images, args.limit)
        one = min(_seconds(decode, kept, 1) for _ in range(args.repeats))
        two = min(_seconds(decode, kept, 2) for _ in range(args.repeats))
        print(f"| {name} | {one * 1e3:.0f} | {two * 1e3:.0f} | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
