"""One measurement in a fresh process: ``python _worker.py '<json spec>'`` prints one JSON line.

Run by `benchmarks.__main__` both with this repository's interpreter (``impl="ours"``, ``PYTHONPATH=src``)
and with the interpreter of the upstream virtualenv (``impl="upstream"``, mmap_ninja 0.9.0). Both import the
package as ``mmap_ninja``, so the same code measures both. This file needs only the standard library, NumPy
and psutil (Pillow and pyarrow where a task uses them): it must import in the upstream virtualenv too.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _peers import TASKS as PEER_TASKS  # this script's folder is first on sys.path
from _peers import drop_from_page_cache, token_sequences

perf = time.perf_counter


# ---------------------------------------------------------------------------------------------- memory


def memory() -> dict:
    """RSS and the anonymous part of it (heap, not page cache), in bytes."""
    import psutil

    rss = psutil.Process().memory_info().rss
    anon = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"rss": rss, "anon": anon}


def growth(before: dict, after: dict) -> dict:
    mb = 1 / 2**20
    return {"rss_mb": (after["rss"] - before["rss"]) * mb,
            "anon_mb": None if before["anon"] is None else (after["anon"] - before["anon"]) * mb}


# ---------------------------------------------------------------------------------------------- page cache


def files_under(path) -> list:
    path = Path(path)
    if path.is_file():
        return [str(path)]
    return [str(p) for p in sorted(path.rglob("*")) if p.is_file()]


# ---------------------------------------------------------------------------------------------- data sources


def text_files(text_dir, limit=None) -> list:
    return sorted(glob.glob(os.path.join(text_dir, "*.txt")))[:limit]


def read_text(path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def image_files(image_dir, limit=None) -> list:
    return sorted(p for p in glob.glob(os.path.join(image_dir, "*")) if p.lower().endswith(IMAGE_SUFFIXES))[:limit]


def imread(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_our_map(path, limit=None):
    """Samples of a map in this repository's format, read with NumPy only (so the upstream venv can read it).

    Strings come back as ``str``, ragged samples as in-RAM ndarray copies.
    """
    path = Path(path)
    header = json.loads((path / "header.json").read_text())
    cols = header["columns"]

    def column(name):
        dtype = np.lib.format.descr_to_dtype(cols[name]["dtype"])
        return np.fromfile(path / f"{name}.bin", dtype=dtype, count=cols[name]["length"])

    offsets = column("offsets").tolist()
    n = len(offsets) - 1 if limit is None else min(limit, len(offsets) - 1)
    if header["kind"] == "strings":
        raw = np.fromfile(path / "data.bin", dtype=np.uint8, count=offsets[n]).tobytes()
        return [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    dtype = np.lib.format.descr_to_dtype(header["attrs"]["dtype"])
    values = np.fromfile(path / "data.bin", dtype=dtype, count=offsets[n])
    shape_offsets, dims = column("shape_offsets").tolist(), column("dims").tolist()
    return [values[offsets[i]:offsets[i + 1]].reshape(dims[shape_offsets[i]:shape_offsets[i + 1]]).copy()
            for i in range(n)]


# ---------------------------------------------------------------------------------------------- maps


def map_classes():
    import mmap_ninja.ragged as ragged
    import mmap_ninja.string as string

    return string.StringsMmap, ragged.RaggedMmap


def open_map(impl, kind, path):
    if kind == "images":  # ours only: decoded to uint8 RGB, like imread
        from mmap_ninja.images import ImagesMmap

        return ImagesMmap(path, channels=3)
    strings_cls, ragged_cls = map_classes()
    if kind == "strings":
        return strings_cls(path, mode="rb") if impl == "upstream" else strings_cls(path)
    return ragged_cls(path)


def build_map(impl, kind, path, samples, batch_size, codec=None, options=None):
    if kind == "images":
        from mmap_ninja.images import ImagesMmap

        return ImagesMmap.from_files(path, samples, batch_size, overwrite=True, **(options or {}))
    strings_cls, ragged_cls = map_classes()
    if codec is not None:  # ours only
        cls = strings_cls if kind == "strings" else ragged_cls
        return cls.from_generator(path, iter(samples), batch_size, overwrite=True, codec=codec)
    if kind == "strings":
        if impl == "upstream":
            return strings_cls.from_generator(path, iter(samples), batch_size)
        return strings_cls.from_generator(path, iter(samples), batch_size, overwrite=True)
    if impl == "upstream":
        return ragged_cls.from_generator(path, iter(samples), batch_size)
    return ragged_cls.from_generator(path, iter(samples), batch_size, overwrite=True)


def close(m):
    if hasattr(m, "close"):
        with contextlib.suppress(Exception):
            m.close()


# ---------------------------------------------------------------------------------------------- tasks


def task_version(spec):
    import mmap_ninja

    return {"version": getattr(mmap_ninja, "__version__", "?"), "file": mmap_ninja.__file__,
            "numpy": np.__version__, "python": sys.version.split()[0]}


def task_build(spec):
    """Build a map of ``kind`` from a source: a text dir, an image dir, one of our maps, or token sequences."""
    impl, kind, path, source = spec["impl"], spec["kind"], spec["path"], spec["source"]
    limit = spec.get("limit")
    if source["type"] == "our_map":
        samples = read_our_map(source["path"], limit)
    elif source["type"] == "tokens":
        samples = token_sequences(source["n"], source["seed"], source.get("min_len", 1), source.get("max_len", 64))
    elif source["type"] == "text_dir":
        samples = (read_text(p) for p in text_files(source["path"], limit))
    elif source["type"] == "image_dir":
        samples = (imread(p) for p in image_files(source["path"], limit))
    elif source["type"] == "image_files":  # the files themselves (ImagesMmap keeps their encoded bytes)
        samples = (Path(p) for p in image_files(source["path"], limit))
    else:
        raise ValueError(source)
    t0 = perf()
    m = build_map(impl, kind, path, samples, spec["batch_size"], spec.get("codec"), spec.get("options"))
    seconds = perf() - t0
    n = len(m)
    close(m)
    return {"build_s": seconds, "n": n, "disk_bytes": disk_usage(path)}


def task_build_arrow(spec):
    """Write the strings of one of our maps as an Arrow IPC file with one ``large_string`` column."""
    import pyarrow as pa
    import pyarrow.ipc

    texts = read_our_map(spec["source"])
    t0 = perf()
    schema = pa.schema([("text", pa.large_string())])
    with pa.OSFile(spec["path"], "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, len(texts), spec["rows_per_batch"]):
            batch = pa.array(texts[start:start + spec["rows_per_batch"]], type=pa.large_string())
            writer.write_batch(pa.record_batch([batch], schema=schema))
    return {"build_s": perf() - t0, "n": len(texts), "disk_bytes": disk_usage(spec["path"]),
            "pyarrow": pa.__version__}


def disk_usage(path) -> int:
    """Bytes allocated on disk (like ``du``) by a file or every file under a directory."""
    return sum(os.stat(p).st_blocks * 512 for p in files_under(path))


def task_text_row(spec):
    """Load, ``iters`` passes over every document, memory growth. One table row of the text table."""
    impl, iters = spec["impl"], spec["iters"]
    if impl == "arrow":
        import pyarrow as pa
        import pyarrow.ipc
    elif impl in ("ours", "upstream"):
        map_classes()
    gc.collect()
    before = memory()
    t0 = perf()
    if impl == "in_memory":
        data = [read_text(p) for p in text_files(spec["text_dir"], spec.get("limit"))]
    elif impl == "read_from_disk":
        data = text_files(spec["text_dir"], spec.get("limit"))
    elif impl == "arrow":
        source = pa.memory_map(spec["path"], "r")
        table = pa.ipc.open_file(source).read_all()
        data = table.column(0)
    else:
        data = open_map(impl, "strings", spec["path"])
    load_s = perf() - t0
    after_load = memory()

    t0 = perf()
    for _ in range(iters):
        chars = 0
        if impl == "read_from_disk":
            for p in data:
                with open(p, encoding="utf-8", errors="replace") as f:
                    chars += len(f.read())
        elif impl == "arrow":
            for chunk in data.chunks:  # record batches of 1024 rows: decode one batch of str at a time
                for s in chunk.to_pylist():
                    chars += len(s)
        elif impl == "upstream":
            for i in range(len(data)):  # 0.9.0 has no __iter__
                chars += len(data[i])
        else:
            for s in data:
                chars += len(s)
    iter_s = perf() - t0
    after = memory()
    return {"load_s": load_s, "iter_s": iter_s, "iters": iters, "n": len(data), "chars": chars,
            "load": growth(before, after_load), "total": growth(before, after)}


def task_image_row(spec):
    """Load, then full passes copying every sample into one preallocated buffer: cold, then warm."""
    impl = spec["impl"]
    if impl in ("ours", "upstream"):
        map_classes()
    else:
        from PIL import Image  # noqa: F401
    gc.collect()
    before = memory()
    t0 = perf()
    if impl == "in_memory":
        data = [imread(p) for p in image_files(spec["image_dir"], spec.get("limit"))]
    elif impl == "imread_from_disk":
        data = image_files(spec["image_dir"], spec.get("limit"))
    else:
        data = open_map(impl, spec.get("map_kind", "ragged"), spec["path"])
    load_s = perf() - t0
    after_load = memory()
    n = len(data)
    buf = np.empty(spec["max_sample_bytes"], dtype=np.uint8)
    buf[:] = 1  # fault the buffer in before timing

    if impl == "imread_from_disk":
        def get(i):
            return imread(data[i])
    else:
        def get(i):
            return data[i]

    def one_pass():
        nbytes = 0
        t = perf()
        for i in range(n):
            a = get(i)
            size = a.nbytes
            buf[:size].reshape(a.shape)[...] = a
            nbytes += size
        return perf() - t, nbytes

    if impl == "in_memory":
        dropped = 0
    elif impl == "imread_from_disk":
        dropped = drop_from_page_cache(data)
    else:
        dropped = drop_from_page_cache(files_under(spec["path"]))
    cold_s, nbytes = one_pass()
    warm = [one_pass()[0] for _ in range(spec.get("warm_passes", 2))]
    after = memory()
    return {"load_s": load_s, "cold_s": cold_s, "warm_s": min(warm), "warm_all_s": warm, "bytes": nbytes,
            "n": n, "dropped_files": dropped, "load": growth(before, after_load), "total": growth(before, after)}


def task_memcpy(spec):
    """Bandwidth of copying ``nbytes`` in RAM: one big copy, best of a few."""
    nbytes = spec["nbytes"]
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0
    best = min(_time(lambda: np.copyto(dst, src)) for _ in range(3))
    return {"bytes": nbytes, "seconds": best, "gb_s": nbytes / best / 1e9}


def _time(fn):
    t = perf()
    fn()
    return perf() - t


def task_random(spec):
    """Random single-item reads (µs/item) and 256-item batches (list, and padded into one array)."""
    impl, kind = spec["impl"], spec["kind"]
    rng = np.random.default_rng(spec.get("seed", 0))
    if impl == "bytes_decode":
        m = [s.encode("utf-8") for s in read_our_map(spec["path"])]
    elif impl == "in_memory":
        m = read_our_map(spec["path"])
    elif impl == "arrow":
        import pyarrow as pa
        import pyarrow.ipc

        m = pa.ipc.open_file(pa.memory_map(spec["path"], "r")).read_all().column(0)
    else:
        m = open_map(impl, kind, spec["path"])
    n = len(m)
    idx = rng.integers(0, n, size=spec["reads"]).tolist()
    # Touch everything once, so every row reads from a warm page cache and mapped pages.
    warm = [m[i] for i in range(0, n, max(1, n // 50_000))]
    del warm

    def single():
        if impl == "bytes_decode":
            t = perf()
            for i in idx:
                m[i].decode("utf-8")
            return perf() - t
        if impl == "arrow":
            t = perf()
            for i in idx:
                m[i].as_py()
            return perf() - t
        t = perf()
        for i in idx:
            m[i]
        return perf() - t

    result = {"n": n, "reads": len(idx)}
    if kind == "strings" and impl in ("ours", "upstream"):
        # The baseline in the same process, interleaved with the map's runs, so machine load hits both alike.
        in_ram = [s.encode("utf-8") for s in read_our_map(spec["our_map"])] if impl == "ours" else None

        def decode():
            t = perf()
            for i in idx:
                in_ram[i].decode("utf-8")
            return perf() - t
    else:
        in_ram = None
    times, decode_times = [], []
    for _ in range(spec.get("repeats", 5)):
        times.append(single())
        if in_ram is not None:
            decode_times.append(decode())
    result["us_per_item"] = min(times) / len(idx) * 1e6
    if decode_times:
        result["decode_us_per_item"] = min(decode_times) / len(idx) * 1e6
    if spec.get("batches") and impl in ("ours", "upstream"):
        batches = [rng.integers(0, n, size=256) for _ in range(spec["batches"])]

        def as_list():
            for b in batches:
                m[b]

        def padded_loop():  # the same simple loop for both libraries
            for b in batches:
                items = m[b]
                longest = max(len(a) for a in items)
                out = np.zeros((len(items), longest), dtype=items[0].dtype)
                for k, a in enumerate(items):
                    out[k, :len(a)] = a

        def get_batch():  # this repository's vectorized padding, where the library has it
            for b in batches:
                m.get_batch(b, pad_value=0)

        fns = {"batch_list_us": as_list, "batch_padded_us": padded_loop}
        if hasattr(m, "get_batch"):
            fns["batch_get_batch_us"] = get_batch
        for key, fn in fns.items():
            fn()  # untimed first run: maps in every page the timed run touches, for both libraries alike
            t = perf()
            fn()
            result[key] = (perf() - t) / len(batches) * 1e6
    return result


def task_open(spec):
    """Time and memory of opening a map (imports done first)."""
    impl, kind = spec["impl"], spec["kind"]
    map_classes()
    gc.collect()
    before = memory()
    t0 = perf()
    m = open_map(impl, kind, spec["path"])
    open_s = perf() - t0
    after = memory()
    n = len(m)
    last = m[n - 1]
    return {"open_s": open_s, "n": n, "last_len": len(last), **growth(before, after)}


def task_grow(spec):
    """Grow a token-sequence map batch by batch, timing every ``extend``; stops at ``n_total`` or ``budget_s``."""
    impl, path, batch, n_total = spec["impl"], spec["path"], spec["batch"], spec["n_total"]
    _strings_cls, ragged_cls = map_classes()
    seed = spec.get("seed", 1)
    lo, hi = spec.get("min_len", 1), spec.get("max_len", 8)
    first = token_sequences(batch, seed, lo, hi)
    t0 = perf()
    if impl == "upstream":
        m = ragged_cls.from_lists(path, first)
    else:
        m = ragged_cls.from_lists(path, first, batch_size=batch, overwrite=True)
    create_s = perf() - t0
    sizes, times = [], []
    started = perf()
    k = 1
    while len(m) < n_total and perf() - started < spec["budget_s"]:
        samples = token_sequences(batch, seed + k, lo, hi)
        k += 1
        t0 = perf()
        m.extend(samples)
        times.append(perf() - t0)
        sizes.append(len(m))
    n = len(m)
    close(m)
    return {"create_s": create_s, "sizes": sizes, "times": times, "n": n, "capped": n < n_total,
            "disk_bytes": disk_usage(path)}


def task_pickle(spec):
    m = open_map(spec["impl"], spec["kind"], spec["path"])
    try:
        return {"bytes": len(pickle.dumps(m))}
    except Exception as e:  # upstream's StringsMmap holds an mmap object
        return {"bytes": None, "error": f"{type(e).__name__}: {e}"}


def task_build_throughput(spec):
    """Build a map from samples in RAM vs. writing the same bytes sequentially to a plain file (best of N)."""
    kind, workdir = spec["kind"], Path(spec["workdir"])
    if kind == "tokens":
        samples = token_sequences(spec["n"], spec.get("seed", 2))
    else:
        samples = read_our_map(spec["source"], spec.get("limit"))
    strings_cls, ragged_cls = map_classes()
    plain = workdir / "plain.bin"

    def write_plain():
        if plain.exists():
            plain.unlink()
        t = perf()
        with open(plain, "wb") as f:
            if kind == "strings":
                for s in samples:
                    f.write(s.encode("utf-8"))
            else:
                for a in samples:
                    f.write(a)
        return perf() - t, plain.stat().st_size

    def write_one_buffer():
        if plain.exists():
            plain.unlink()
        buffer = b"".join(s.encode("utf-8") for s in samples) if kind == "strings" else \
            np.concatenate([a.reshape(-1) for a in samples])
        t = perf()
        with open(plain, "wb") as f:
            f.write(buffer)
        return perf() - t

    def build():
        path = workdir / "map"
        shutil.rmtree(path, ignore_errors=True)  # the last build's files, outside the timing like plain.unlink()
        t = perf()
        options = {"batch_size": spec["batch_size"]} if spec.get("batch_size") else {}  # else the default
        if kind == "strings":
            m = strings_cls.from_strings(path, samples, overwrite=True, **options)
        else:
            m = ragged_cls.from_lists(path, samples, overwrite=True, **options)
        seconds = perf() - t
        m.close()
        return seconds

    plain_s, builds, single = [], [], []
    for _ in range(spec.get("repeats", 3)):
        seconds, nbytes = write_plain()
        plain_s.append(seconds)
        single.append(write_one_buffer())
        builds.append(build())
    mb = nbytes / 1e6
    return {"bytes": nbytes, "n": len(samples), "plain_s": min(plain_s), "one_buffer_s": min(single),
            "build_s": min(builds), "plain_mb_s": mb / min(plain_s), "one_buffer_mb_s": mb / min(single),
            "build_mb_s": mb / min(builds)}


TASKS = {name[5:]: fn for name, fn in globals().items() if name.startswith("task_")}
TASKS.update(PEER_TASKS)


def main():
    spec = json.loads(sys.argv[1])
    if spec.get("profile"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(TASKS[spec["task"]], spec)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(15)
    else:
        result = TASKS[spec["task"]](spec)
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
