"""ImagesMmap against its targets (issue 11, "Encoded images"), side by side in one run.

    python benchmarks/bench_images.py --data data [--repeats 3] [--threads 2] [--limit N]

Builds an `ImagesMmap` from ``DATA/images/*.jpg|*.jpeg|*.png`` (the files the seed's image table uses) in a
temporary directory and prints Markdown tables with PASS/FAIL per target:

1. disk: the map's data column against the source files (target <= 1.02x), the index reported beside it;
2. per-image overhead of ``m[i]`` over bare decoding of the same bytes, held in RAM, with the same decoder
   (simplejpeg's ``decode_jpeg`` for JPEGs, pyspng's ``load`` for the PNGs the map gives it, Pillow's ``Image.open``
   + ``np.asarray`` for the rest; target <= 5 %);
3. a full pass decoding every image single-threaded, with the decoders' default settings, against the seed's
   ``imread_from_disk`` row, measured two ways: literally as the seed ran it (``matplotlib.pyplot.imread`` on each
   file: Pillow underneath for JPEG, float32 in [0, 1] for PNG) and as a like-for-like Pillow row (``open`` ->
   ``convert("RGB")`` -> ``asarray``: uint8 RGB, what ``channels=3`` gives); target >= 1.75x faster, each pass
   copying every image into one preallocated buffer as the seed's table does. The target is judged against both
   on the ``channels=3`` row; the native-channels row is shown too, and the row of a second map built from the
   same files with ``baseline_jpeg=True`` (progressive JPEGs rewritten losslessly as baseline ones; every
   decoded image is checked equal to the first map's before timing);
4. ``get_batch(..., threads=T, pad_value=0)`` over batches of 32 consecutive images (a DataLoader's batch) against
   the same on one thread, and the ``fast=True`` flags, reported separately. (Batches of same-shape images are
   too small on a set of varied shapes to gain from threads: 1.6 images per group on the real set.)

Timings are on a warm page cache. Each image (overhead) or chunk of 32 images (passes) is timed for every row in
turn, ``--repeats`` times, and keeps its best time per row, so that load drifts on a shared machine hit every row
alike (such a machine still moves figures by 10-30 %; compare ratios from one run).
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this working tree's mmap_ninja

from mmap_ninja.images import ImagesMmap

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def image_files(image_dir: str, limit: int | None) -> list[str]:
    """The seed benchmark's list: every .jpg/.jpeg/.png file of the folder, sorted."""
    return sorted(p for p in glob.glob(os.path.join(image_dir, "*")) if p.lower().endswith(IMAGE_SUFFIXES))[:limit]


def imread(path: str) -> np.ndarray[Any, Any]:
    """The seed's ``imread_from_disk`` row: Pillow from the file, converted to RGB."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def plt_imread(path: str) -> np.ndarray[Any, Any]:
    """The seed's ``imread_from_disk`` row as the seed ran it: ``matplotlib.pyplot.imread`` on the file."""
    import matplotlib.pyplot as plt

    return np.asarray(plt.imread(path))


def rss_mb() -> float:
    try:
        import psutil  # type: ignore[import-untyped]

        return float(psutil.Process().memory_info().rss) / 1e6
    except ImportError:
        return float("nan")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="folder holding images/ (default ./data)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats, best kept (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the threaded pass (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--overhead-images", type=int, default=600,
                        help="images (evenly spread) timed for the per-image overhead (default 600)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()

    import PIL
    from PIL import Image

    # Pillow warns on every palette image with transparency that imread converts to RGB (the seed's row).
    warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)

    from mmap_ninja.kinds.image_decoding import Decoder, _pyspng, _simplejpeg, _spng_decodes

    simplejpeg = _simplejpeg()
    pyspng = _pyspng()
    paths = image_files(os.path.join(args.data, "images"), args.limit)
    if not paths:
        print(f"no .jpg/.jpeg/.png files in {os.path.join(args.data, 'images')}", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_images_"))
    out_dir = work / "images_map"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    print(f"# ImagesMmap benchmark\n\n`{' '.join([os.path.basename(sys.executable), *sys.argv])}`  ")
    print(f"{len(paths):,} images from {args.data}/images; Python {platform.python_version()}, NumPy "
          f"{np.__version__}, Pillow {PIL.__version__}, simplejpeg "
          f"{getattr(simplejpeg, '__version__', 'not installed')}, pyspng "
          f"{getattr(pyspng, '__version__', 'not installed')}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; best of {args.repeats} alternating repeats, warm page cache.\n")

    # ------------------------------------------------------------------ build and disk
    t = time.perf_counter()
    ImagesMmap.from_files(out_dir, paths, batch_size=256).close()
    build_s = time.perf_counter() - t
    source_bytes = sum(os.path.getsize(p) for p in paths)
    data_bytes = (out_dir / "data.bin").stat().st_size
    index_bytes = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file() and f.name != "data.bin")
    baseline_dir = work / "images_map_baseline"
    if baseline_dir.exists():
        shutil.rmtree(baseline_dir)
    t = time.perf_counter()
    ImagesMmap.from_files(baseline_dir, paths, batch_size=256, baseline_jpeg=True).close()
    baseline_build_s = time.perf_counter() - t
    baseline_bytes = (baseline_dir / "data.bin").stat().st_size
    t = time.perf_counter()
    m = ImagesMmap(out_dir)
    open_s = time.perf_counter() - t
    n = len(m)
    formats = [m.format(i) for i in range(n)]
    counts = {name: formats.count(name) for name in m.formats}
    print(f"Built in {build_s:.2f} s ({source_bytes / 1e6 / build_s:.0f} MB/s of files); opened in "
          f"{open_s * 1e3:.2f} ms. Formats: {counts}; decoders: {m.decoders}.\n")
    print("## Disk\n")
    print("| | MB | x source files |\n|:--|--:|--:|")
    print(f"| source files | {source_bytes / 1e6:,.1f} | 1.000 |")
    print(f"| map: data column | {data_bytes / 1e6:,.1f} | {data_bytes / source_bytes:.3f} |")
    print(f"| map: index (offsets, shapes, formats, header) | {index_bytes / 1e6:,.3f} | "
          f"{index_bytes / source_bytes:.4f} |")
    print(f"| map: total | {(data_bytes + index_bytes) / 1e6:,.1f} | {(data_bytes + index_bytes) / source_bytes:.3f} |")
    print(f"| map built with baseline_jpeg=True: data column | {baseline_bytes / 1e6:,.1f} | "
          f"{baseline_bytes / source_bytes:.3f} |")
    decoded_bytes = int(np.prod(m.shapes(), axis=1).sum())
    print(f"| decoded pixels (what a RaggedMmap stores) | {decoded_bytes / 1e6:,.1f} | "
          f"{decoded_bytes / source_bytes:.2f} |\n")
    disk_ok = data_bytes <= 1.02 * source_bytes
    baseline = ImagesMmap(baseline_dir, channels=3)
    rewritten = sum(baseline.raw(i).nbytes != m.raw(i).nbytes or bytes(baseline.raw(i)) != bytes(m.raw(i))
                    for i in range(n))
    print(f"`baseline_jpeg=True` rewrote {rewritten:,} progressive JPEGs as baseline ones (build "
          f"{baseline_build_s:.2f} s against {build_s:.2f} s).\n")

    # ------------------------------------------------------------------ per-image overhead
    step = max(1, n // args.overhead_images)
    chosen = list(range(0, n, step))[:args.overhead_images]
    in_ram = {i: bytes(m.raw(i)) for i in chosen}  # bare decoding reads bytes held in RAM
    shapes = {i: m.shape(i) for i in chosen}

    def bare_decode(i: int) -> np.ndarray[Any, Any]:
        data, channels = in_ram[i], shapes[i][2]
        if simplejpeg is not None and formats[i] == "JPEG" and channels != 2:
            return simplejpeg.decode_jpeg(data, {1: "GRAY", 3: "RGB", 4: "RGBA"}[channels])  # type: ignore
        if pyspng is not None and formats[i] == "PNG" and _spng_decodes(data, channels):
            try:
                return pyspng.load(data, MODES[channels])  # type: ignore
            except RuntimeError:
                pass  # libspng refuses it (as the map's decoder finds): Pillow decodes it
        with Image.open(io.BytesIO(data)) as image:
            target = MODES[channels]
            if image.mode == target:
                return np.asarray(image)
            if image.mode == "P" and "transparency" in image.info and target != "RGBA":
                return np.asarray(image.convert("RGBA").convert(target))
            return np.asarray(image.convert(target))

    # Each image is timed alternately bare and through the map, and each keeps its best time of both: load drifts
    # on a shared machine hit both sides of every pair alike.
    best_bare: dict[int, float] = {}
    best_map: dict[int, float] = {}
    clock = time.perf_counter
    for i in chosen:
        bare_times, map_times = [], []
        for _ in range(max(args.repeats, 3)):
            t = clock()
            bare_decode(i)
            bare_times.append(clock() - t)
            t = clock()
            m[i]
            map_times.append(clock() - t)
        best_bare[i], best_map[i] = min(bare_times), min(map_times)
    print("## Per-image overhead of m[i] over bare decoding of the same bytes (same decoder)\n")
    print("Each image timed alternately bare and through the map, best of each kept.\n")
    print("| images | n | bare decode (µs/image) | m[i] (µs/image) | overhead |\n|:--|--:|--:|--:|--:|")
    overhead_rows = {}
    for label, subset in [("JPEG", [i for i in chosen if formats[i] == "JPEG"]),
                          ("PNG", [i for i in chosen if formats[i] == "PNG"]), ("all", chosen)]:
        if not subset:
            continue
        bare_s, map_s = sum(best_bare[i] for i in subset), sum(best_map[i] for i in subset)
        overhead_rows[label] = map_s / bare_s - 1
        print(f"| {label} | {len(subset)} | {bare_s / len(subset) * 1e6:,.0f} | {map_s / len(subset) * 1e6:,.0f} | "
              f"{overhead_rows[label] * 100:+.1f} % |")
    print()
    overhead_ok = overhead_rows["all"] <= 0.05

    # ------------------------------------------------------------------ full passes
    largest = int(np.prod(m.shapes(), axis=1).max())
    largest_rgb = int(np.prod(m.shapes()[:, :2], axis=1).max()) * 16  # plt.imread gives float32 RGBA for PNGs
    buf = np.empty(max(largest, largest_rgb), dtype=np.uint8)
    buf[:] = 1  # fault the buffer in before timing

    def copying(get: Callable[[int], np.ndarray[Any, Any]]) -> Callable[[list[int]], None]:
        def run(ids: list[int]) -> None:
            for i in ids:
                a = get(i)
                buf[:a.nbytes].view(a.dtype).reshape(a.shape)[...] = a
        return run

    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=args.threads)
    bufs = [np.empty_like(buf) for _ in range(args.threads)]
    for b in bufs:
        b[:] = 1

    def threaded_copying(get: Callable[[int], np.ndarray[Any, Any]]) -> Callable[[list[int]], None]:
        """m[i] for a chunk on ``--threads`` threads, each taking one contiguous share and copying into its own
        buffer (how a DataLoader's thread workers read)."""
        def share(ids: list[int], out: np.ndarray[Any, Any]) -> None:
            for i in ids:
                a = get(i)
                out[:a.nbytes].view(a.dtype).reshape(a.shape)[...] = a

        def run(ids: list[int]) -> None:
            t = args.threads
            bounds = [len(ids) * w // t for w in range(t + 1)]
            futures = [pool.submit(share, ids[bounds[w]:bounds[w + 1]], bufs[w]) for w in range(t)]
            for future in futures:
                future.result()
        return run

    def batching(handle: ImagesMmap, threads: int | None) -> Callable[[list[int]], None]:
        def run(ids: list[int]) -> None:
            batch, _ = handle.get_batch(ids, threads=threads, pad_value=0)
            buf[:batch[0].nbytes].reshape(batch[0].shape)[...] = batch[-1]  # touch the result
        return run

    def chunked(fns: dict[str, Callable[[list[int]], None]], chunks: list[list[int]]) -> dict[str, list[float]]:
        """Per chunk, each function's best time of ``repeats``, the functions alternating chunk by chunk (so that
        load drifts on a shared machine hit them alike)."""
        best: dict[str, list[float]] = {name: [] for name in fns}
        for chunk in chunks:
            times: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(args.repeats):
                for name, fn in fns.items():
                    t = time.perf_counter()
                    fn(chunk)
                    times[name].append(time.perf_counter() - t)
            for name in fns:
                best[name].append(min(times[name]))
        return best

    rgb = ImagesMmap(out_dir, channels=3)
    fast = ImagesMmap(out_dir, fast=True)
    rgb_fast = ImagesMmap(out_dir, channels=3, fast=True)
    plt_name = "imread_from_disk (seed, literal: matplotlib.pyplot.imread from files)"
    plt_imread(paths[0])  # import matplotlib before timing
    seed_name, like_name, native_name = ("imread_from_disk (like for like: Pillow from files, RGB uint8)",
                                         "ImagesMmap m[i], channels=3 (RGB, like for like)",
                                         "ImagesMmap m[i], native channels")
    baseline_name = "ImagesMmap m[i], channels=3, map built with baseline_jpeg=True (same pixels)"
    unequal = [i for i in range(n) if not np.array_equal(baseline[i], rgb[i])]
    if unequal:
        print(f"baseline_jpeg=True changed the pixels of images {unequal[:10]}", file=sys.stderr)
        return 1
    # Chunks of 32 images of one format, so the per-format table comes from the same measurement.
    format_chunks = [(name, ids[k:k + 32]) for name in m.formats
                     for ids in [[i for i in range(n) if formats[i] == name]] for k in range(0, len(ids), 32)]
    rss_before = rss_mb()
    single = chunked({
        plt_name: copying(lambda i: plt_imread(paths[i])),
        seed_name: copying(lambda i: imread(paths[i])),
        like_name: copying(rgb.__getitem__),
        baseline_name: copying(baseline.__getitem__),
        native_name: copying(m.__getitem__),
        "ImagesMmap m[i], channels=3, fast=True": copying(rgb_fast.__getitem__),
        "ImagesMmap m[i], native, fast=True": copying(fast.__getitem__),
        f"ImagesMmap m[i], channels=3, on {args.threads} threads": threaded_copying(rgb.__getitem__),
    }, [ids for _, ids in format_chunks])
    batches = [list(range(k, min(k + 32, n))) for k in range(0, n, 32)]
    threaded_name, one_thread_name = (f"ImagesMmap get_batch of 32, padded, channels=3, threads={args.threads}",
                                      "ImagesMmap get_batch of 32, padded, channels=3, 1 thread")
    batched = chunked({one_thread_name: batching(rgb, None), threaded_name: batching(rgb, args.threads)}, batches)
    rss_growth = rss_mb() - rss_before
    times = {name: sum(ts) for name, ts in {**single, **batched}.items()}
    seed = times[seed_name]
    print(f"## Full pass decoding all {n:,} images (single-threaded unless said; exact decoder settings unless "
          f"fast=True)\n")
    print("Chunks of 32 images, each timed for every row in turn, best of the repeats kept per chunk; get_batch rows "
          "decode 32 consecutive images into one array padded to the largest (pad_value=0).\n")
    literal = times[plt_name]
    print("| pass | s | images/s | speed-up over imread_from_disk (Pillow RGB) | over plt.imread (seed literal) |\n"
          "|:--|--:|--:|--:|--:|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} | {n / seconds:,.0f} | {seed / seconds:.2f}x | {literal / seconds:.2f}x |")
    print(f"\nRSS growth over all passes: {rss_growth:,.0f} MB. (get_batch with padding fills a batch of the largest "
          f"image's size: slower than m[i] on images of varied shapes; its rows show what threads gain.)\n")
    like_for_like = seed / times[like_name]
    against_literal = literal / times[like_name]
    native = seed / times[native_name]
    threaded, one_thread = times[threaded_name], times[one_thread_name]

    # ------------------------------------------------------------------ per format, where the time goes
    print("## Full pass per format (same measurement, single-threaded)\n")
    print("| format | n | imread_from_disk (s) | m[i], channels=3 (s) | speed-up | m[i], native (s) | speed-up |\n"
          "|:--|--:|--:|--:|--:|--:|--:|")
    for name in m.formats:
        picks = [k for k, (fmt, _) in enumerate(format_chunks) if fmt == name]
        count = sum(len(format_chunks[k][1]) for k in picks)
        seed_s, like_s, native_s = (sum(single[row][k] for k in picks) for row in (seed_name, like_name, native_name))
        print(f"| {name} | {count:,} | {seed_s:.2f} | {like_s:.2f} | {seed_s / like_s:.2f}x | {native_s:.2f} | "
              f"{seed_s / native_s:.2f}x |")
    print()

    print("## Targets\n")
    print("| target | measured | result |\n|:--|--:|:--|")
    print(f"| disk: data column <= 1.02x the source files (index beside it) | {data_bytes / source_bytes:.3f}x "
          f"(+ {index_bytes / 1e3:,.0f} kB index) | {verdict(disk_ok)} |")
    print(f"| per-image overhead of m[i] over bare decoding <= 5 % | {overhead_rows['all'] * 100:+.1f} % | "
          f"{verdict(overhead_ok)} |")
    print(f"| full pass >= 1.75x faster than imread_from_disk (single thread, exact settings, RGB like for like) | "
          f"{like_for_like:.2f}x | {verdict(like_for_like >= 1.75)} |")
    print(f"| (same, against the seed's literal plt.imread row) | {against_literal:.2f}x | "
          f"{verdict(against_literal >= 1.75)} |")
    print(f"| (same, native channels: no conversion to RGB) | {native:.2f}x | {verdict(native >= 1.75)} |")
    with_baseline = seed / times[baseline_name]
    print(f"| (same, RGB like for like, the map built with baseline_jpeg=True: every pixel equal, checked) | "
          f"{with_baseline:.2f}x | {verdict(with_baseline >= 1.75)} |")
    many = times[f"ImagesMmap m[i], channels=3, on {args.threads} threads"]
    print(f"| m[i] on {args.threads} threads faster again than on one (channels=3) | {times[like_name] / many:.2f}x | "
          f"{verdict(many < times[like_name])} |")
    print(f"| get_batch(32 images, pad_value=0) on {args.threads} threads faster than on one | "
          f"{one_thread / threaded:.2f}x | {verdict(threaded < one_thread)} |")
    print(f"\nDecoder in use: {Decoder()!r}; JPEG by {m.decoders.get('JPEG', 'n/a')}. Load average at the end: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (threads cannot gain on a machine busy with other "
          f"work).")
    pool.shutdown()
    m.close()
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
