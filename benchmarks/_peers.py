"""Worker tasks that measure mmap_ninja beside a peer or a floor (issues 8 and 10), one JSON result each.

Imported by `_worker` (which runs as a script, so this module is found next to it). Like `_worker` it needs
only the standard library and NumPy at import time; pyarrow is imported by the tasks that use it. Every task
takes the JSON spec `run.py` sends and returns a JSON-able dict.

- ``arrow_from_map``: copy one of our maps into an Arrow IPC file, record batch by record batch.
- ``iterate``: ``for x in m`` over a map, or the same items sliced out of a memory-mapped Arrow IPC file.
- ``build_vs_raw``: ``from_lists`` / ``from_strings`` against a raw ``os.writev`` writer, alternating.
- ``token_floor``: random ``m[i]`` against a plain ndarray over the same mapped bytes, interleaved.
- ``append_per_call``: many single ``append`` calls, bare or inside one ``m.transaction()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable

import numpy as np

Spec = dict[str, Any]
Result = dict[str, Any]

perf = time.perf_counter

try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 1024


# ---------------------------------------------------------------------------------------------- inputs


def drop_from_page_cache(paths: Iterable[str]) -> int:
    """fsync and POSIX_FADV_DONTNEED every file; returns how many files were dropped."""
    count = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            count += 1
        finally:
            os.close(fd)
    return count


def token_sequences(n: int, seed: int, min_len: int = 1, max_len: int = 64) -> list[np.ndarray[Any, Any]]:
    """``n`` deterministic int32 token sequences (lengths uniform in [min_len, max_len], ids < 50,000)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    flat = rng.integers(0, 50_000, size=int(lengths.sum()), dtype=np.int32)
    return np.split(flat, np.cumsum(lengths)[:-1])



class MapColumns:
    """A map's committed columns read with NumPy alone (FORMAT.md), so any interpreter can read it."""

    def __init__(self, path: str) -> None:
        folder = Path(path)
        header = json.loads((folder / "header.json").read_text())
        self.kind: str = header["kind"]
        specs = header["columns"]

        def column(name: str, dtype: np.dtype[Any] | None = None) -> np.ndarray[Any, Any]:
            stored = np.lib.format.descr_to_dtype(specs[name]["dtype"])
            raw = np.fromfile(folder / f"{name}.bin", dtype=stored, count=specs[name]["length"])
            return raw if dtype is None else raw.view(dtype)

        self.offsets = column("offsets")
        self.dtype: np.dtype[Any] = (np.dtype(np.uint8) if self.kind == "strings"
                                     else np.lib.format.descr_to_dtype(header["attrs"]["dtype"]))
        self.values = column("data", self.dtype)
        if self.kind == "ragged":
            self.shape_offsets = column("shape_offsets")
            self.dims = column("dims")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def ndims(self) -> np.ndarray[Any, Any]:
        return np.diff(self.shape_offsets)

    def samples(self) -> list[Any]:
        """Every sample as an in-RAM object: ``str`` for strings, a C-contiguous ndarray otherwise."""
        bounds = self.offsets.tolist()
        if self.kind == "strings":
            raw = self.values.tobytes()
            return [raw[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:])]
        shape_bounds, dims = self.shape_offsets.tolist(), self.dims.tolist()
        return [self.values[a:b].reshape(dims[c:d]).copy()
                for a, b, c, d in zip(bounds, bounds[1:], shape_bounds, shape_bounds[1:])]


def map_classes() -> tuple[Any, Any]:
    import mmap_ninja.ragged as ragged
    import mmap_ninja.string as string

    return string.StringsMmap, ragged.RaggedMmap


def open_ours(kind: str, path: str) -> Any:
    strings_cls, ragged_cls = map_classes()
    return strings_cls(path) if kind == "strings" else ragged_cls(path)


# ---------------------------------------------------------------------------------------------- Arrow file


def task_arrow_from_map(spec: Spec) -> Result:
    """Write one of our maps as an Arrow IPC file (``rows_per_batch`` rows per record batch).

    Strings become one ``large_string`` column; 1-D samples one ``large_list<dtype>`` column; N-D samples
    (images) a ``large_list<dtype>`` of their elements and a ``fixed_size_list<int64, ndim>`` of their shapes.
    """
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.ipc  # type: ignore[import-untyped]

    cols = MapColumns(spec["source"])
    rows = spec["rows_per_batch"]
    n = len(cols)
    if cols.kind == "strings":
        schema = pa.schema([("text", pa.large_string())])
        ndim = 0
    else:
        ndims = cols.ndims()
        ndim = int(ndims[0]) if n else 1
        if n and (ndims != ndim).any():
            raise ValueError(f"{spec['source']}: samples of different numbers of dimensions")
        fields = [("values", pa.large_list(pa.from_numpy_dtype(cols.dtype)))]
        if ndim != 1:
            fields.append(("shape", pa.list_(pa.int64(), ndim)))
        schema = pa.schema(fields)
    t0 = perf()
    with pa.OSFile(spec["path"], "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            offsets = cols.offsets[start:stop + 1]
            first, last = int(offsets[0]), int(offsets[-1])
            relative = pa.array(offsets - first, type=pa.int64())
            if cols.kind == "strings":
                arrays = [pa.LargeStringArray.from_buffers(stop - start, relative.buffers()[1],
                                                           pa.py_buffer(cols.values[first:last].tobytes()))]
            else:
                arrays = [pa.LargeListArray.from_arrays(relative, pa.array(cols.values[first:last]))]
                if ndim != 1:
                    shapes = cols.dims[int(cols.shape_offsets[start]):int(cols.shape_offsets[stop])]
                    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(shapes, type=pa.int64()), ndim))
            writer.write_batch(pa.record_batch(arrays, schema=schema))
    return {"build_s": perf() - t0, "n": n, "batches": -(-n // rows), "rows_per_batch": rows,
            "disk_bytes": os.path.getsize(spec["path"]), "pyarrow": pa.__version__}


# ---------------------------------------------------------------------------------------------- iteration


def _ours_pass(m: Any, kind: str, buf: np.ndarray[Any, Any]) -> Callable[[], int]:
    """One timed pass of ``for x in m``; returns characters (strings) or 0."""
    if kind == "strings":
        def strings() -> int:
            chars = 0
            for text in m:
                chars += len(text)
            return chars
        return strings
    if kind == "tokens":
        def tokens() -> int:
            for x in m:
                buf[:len(x)] = x
            return 0
        return tokens

    def images() -> int:
        for x in m:
            buf[:x.size].reshape(x.shape)[...] = x
        return 0
    return images


def _arrow_pass(reader: Any, kind: str, buf: np.ndarray[Any, Any]) -> Callable[[], int]:
    """One timed pass over an Arrow IPC file, record batch by record batch, each item sliced out of the batch's
    flat values with the batch's offsets as a Python list (the fastest per-item loop we know for pyarrow)."""
    count = reader.num_record_batches
    if kind == "strings":
        def strings() -> int:
            chars = 0
            for b in range(count):
                column = reader.get_batch(b).column(0)
                _, offsets_buffer, utf8_buffer = column.buffers()
                first = column.offset
                offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[first:first + len(column) + 1].tolist()
                utf8 = memoryview(utf8_buffer)
                for start, stop in zip(offsets, offsets[1:]):
                    text = str(utf8[start:stop], "utf-8")
                    chars += len(text)
            return chars
        return strings
    if kind == "tokens":
        def tokens() -> int:
            for b in range(count):
                column = reader.get_batch(b).column(0)
                offsets = column.offsets.to_numpy().tolist()
                values = column.values.to_numpy()
                for start, stop in zip(offsets, offsets[1:]):
                    x = values[start:stop]
                    buf[:len(x)] = x
            return 0
        return tokens

    def images() -> int:
        for b in range(count):
            batch = reader.get_batch(b)
            column = batch.column(0)
            offsets = column.offsets.to_numpy().tolist()
            values = column.values.to_numpy()
            shape_column = batch.column(1)
            shapes = shape_column.values.to_numpy().reshape(len(shape_column), -1).tolist()
            for start, stop, shape in zip(offsets, offsets[1:], shapes):
                x = values[start:stop].reshape(shape)
                buf[:x.size].reshape(x.shape)[...] = x
        return 0
    return images


def _checksum(items: Iterator[Any]) -> tuple[int, int]:
    """Number of items and of elements (characters for strings): both rows must read the same."""
    count = size = 0
    for x in items:
        count += 1
        size += len(x) if isinstance(x, str) else int(x.size)
    return count, size


def _arrow_items(reader: Any, kind: str) -> Iterator[Any]:
    for b in range(reader.num_record_batches):
        batch = reader.get_batch(b)
        column = batch.column(0)
        if kind == "strings":
            yield from column.to_pylist()
            continue
        offsets = column.offsets.to_numpy().tolist()
        values = column.values.to_numpy()
        for start, stop in zip(offsets, offsets[1:]):
            yield values[start:stop]


def task_iterate(spec: Spec) -> Result:
    """Per-item iteration, µs/item: the best of ``passes`` timed passes after one untimed (checksum) pass."""
    impl, kind = spec["impl"], spec["kind"]
    buf = np.empty(spec["max_sample_items"], dtype=np.dtype(spec["dtype"]))
    buf[:] = 0  # fault the buffer in before timing
    # Both sides' files are dropped from the page cache and read back by the untimed pass, so both are mapped
    # from page-cache pages made the same way (by reads). Left as the writers made them, the pages of a map
    # built while decoding images copied ~10% slower than those of the Arrow file (larger folios there).
    folder = Path(spec["path"])
    dropped = drop_from_page_cache([str(folder)] if folder.is_file() else
                                   [str(p) for p in sorted(folder.iterdir()) if p.suffix == ".bin"])
    if impl == "arrow":
        import pyarrow as pa
        import pyarrow.ipc

        reader = pa.ipc.open_file(pa.memory_map(spec["path"], "r"))
        n = sum(reader.get_batch(b).num_rows for b in range(reader.num_record_batches))
        one_pass = _arrow_pass(reader, kind, buf)
        count, size = _checksum(_arrow_items(reader, kind))
    else:
        m = open_ours(kind if kind == "strings" else "ragged", spec["path"])
        n = len(m)
        one_pass = _ours_pass(m, kind, buf)
        count, size = _checksum(iter(m))
    times, cpu_times = [], []
    chars = 0
    for _ in range(spec.get("passes", 3)):
        t0, c0 = perf(), time.process_time()
        chars = one_pass()
        times.append(perf() - t0)
        cpu_times.append(time.process_time() - c0)
    best = min(times)
    return {"n": n, "items": count, "elements": size, "chars": chars, "best_s": best, "all_s": times,
            "dropped_files": dropped,
            "us_per_item": best / max(1, n) * 1e6,
            "cpu_us_per_item": min(cpu_times) / max(1, n) * 1e6}  # the process's own CPU time: blind to waits


# ---------------------------------------------------------------------------------------------- build


def _write_vectored(fd: int, buffers: Sequence[Any]) -> None:
    """``os.writev`` of the buffers as they are (no copy into one buffer), ``_IOV_MAX`` at a time."""
    for start in range(0, len(buffers), _IOV_MAX):
        group = buffers[start:start + _IOV_MAX]
        expected = sum(memoryview(b).nbytes for b in group)
        written = os.writev(fd, group)
        if written != expected:  # never seen on a local file system; the raw writer does not retry
            raise OSError(f"short vectored write: {written} of {expected} bytes")


def raw_writer(folder: Path, kind: str, samples: Sequence[Any], batch_size: int) -> int:
    """The baseline of issue 10: per batch, the samples' buffers to ``os.writev``, their lengths with
    ``np.fromiter``, the batch's offsets in one write; for N-D samples also their shapes in one write.
    No commit protocol, no checks. Returns the bytes of sample data written."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    data_fd = os.open(folder / "data.bin", flags, 0o644)
    offsets_fd = os.open(folder / "offsets.bin", flags, 0o644)
    shapes_fd = os.open(folder / "shapes.bin", flags, 0o644) if kind == "images" else None
    try:
        end = np.zeros(1, dtype=np.int64)
        os.write(offsets_fd, end.data)
        for start in range(0, len(samples), batch_size):
            batch = samples[start:start + batch_size]
            if kind == "strings":
                buffers: Sequence[Any] = [text.encode("utf-8") for text in batch]
                lengths = np.fromiter(map(len, buffers), dtype=np.int64, count=len(buffers))
            elif kind == "tokens":
                buffers = batch
                lengths = np.fromiter(map(len, buffers), dtype=np.int64, count=len(buffers))
            else:
                buffers = batch
                lengths = np.fromiter(map(attrgetter("size"), buffers), dtype=np.int64, count=len(buffers))
            _write_vectored(data_fd, buffers)
            offsets = np.cumsum(lengths)
            offsets += end
            os.write(offsets_fd, offsets.data)
            end = offsets[-1:]
            if shapes_fd is not None:
                os.write(shapes_fd, np.array([a.shape for a in batch], dtype=np.int64).data)
        return os.fstat(data_fd).st_size
    finally:
        for fd in (data_fd, offsets_fd, shapes_fd):
            if fd is not None:
                os.close(fd)


def task_build_vs_raw(spec: Spec) -> Result:
    """Build from samples in RAM with the library's default batch size vs `raw_writer` with the same batch
    size, alternating in this process (best of ``repeats`` each), into fresh files each time."""
    kind, workdir = spec["kind"], Path(spec["workdir"])
    strings_cls, ragged_cls = map_classes()
    if kind == "tokens":
        samples: list[Any] = token_sequences(spec["n"], spec.get("seed", 2))
    else:
        samples = MapColumns(spec["source"]).samples()[:spec.get("limit")]
    module = __import__("mmap_ninja.string" if kind == "strings" else "mmap_ninja.ragged", fromlist=["x"])
    batch_size = spec.get("batch_size") or module.DEFAULT_BATCH_SIZE

    def ours() -> float:
        path = workdir / "ours"
        shutil.rmtree(path, ignore_errors=True)  # outside the timing, as the raw writer's old files are
        options = {"batch_size": spec["batch_size"]} if spec.get("batch_size") else {}  # else the default
        t0 = perf()
        if kind == "strings":
            m = strings_cls.from_strings(path, samples, overwrite=True, **options)
        else:
            m = ragged_cls.from_lists(path, samples, overwrite=True, **options)
        seconds = perf() - t0
        m.close()
        return seconds

    def raw() -> tuple[float, int]:
        path = workdir / "raw"
        path.mkdir(exist_ok=True)
        for leftover in path.iterdir():
            leftover.unlink()
        t0 = perf()
        nbytes = raw_writer(path, kind, samples, batch_size)
        return perf() - t0, nbytes

    ours_s, raw_s = [], []
    nbytes = 0
    for _ in range(spec.get("repeats", 3)):
        seconds, nbytes = raw()
        raw_s.append(seconds)
        ours_s.append(ours())
    mb = nbytes / 1e6
    return {"n": len(samples), "bytes": nbytes, "batch_size": batch_size, "ours_s": min(ours_s),
            "raw_s": min(raw_s), "ours_all_s": ours_s, "raw_all_s": raw_s, "ours_mb_s": mb / min(ours_s),
            "raw_mb_s": mb / min(raw_s)}


# ---------------------------------------------------------------------------------------------- random read


def task_token_floor(spec: Spec) -> Result:
    """Random ``m[i]`` on a ragged map vs ``data[offsets[i]:offsets[i + 1]]`` on plain ndarrays over the same
    files (``np.memmap`` viewed as ``np.ndarray``; ``offsets`` int64), runs interleaved, best of ``repeats``."""
    m = open_ours("ragged", spec["path"])
    n = len(m)
    folder = Path(spec["path"])
    # The committed lengths through the public API; the files themselves per FORMAT.md.
    data = np.memmap(folder / "data.bin", dtype=m.dtype, mode="r", shape=(len(m.values),)).view(np.ndarray)
    offsets = np.memmap(folder / "offsets.bin", dtype=np.int64, mode="r", shape=(n + 1,)).view(np.ndarray)
    rng = np.random.default_rng(spec.get("seed", 0))
    positions: np.ndarray[Any, Any] = np.asarray(rng.integers(0, n, size=int(spec["reads"])), dtype=np.int64)
    idx: list[int] = positions.tolist()
    for i in range(0, n, max(1, n // 50_000)):  # both rows read warm pages
        m[i]
        data[offsets[i]:offsets[i + 1]]

    def ours() -> float:
        t0 = perf()
        for i in idx:
            m[i]
        return perf() - t0

    def floor() -> float:
        t0 = perf()
        for i in idx:
            data[offsets[i]:offsets[i + 1]]
        return perf() - t0

    mismatches = sum(not np.array_equal(m[i], data[offsets[i]:offsets[i + 1]]) for i in idx[:1000])
    ours_s, floor_s = [], []
    for _ in range(spec.get("repeats", 5)):
        ours_s.append(ours())
        floor_s.append(floor())
    return {"n": n, "reads": len(idx), "mismatches": mismatches, "ours_us": min(ours_s) / len(idx) * 1e6,
            "floor_us": min(floor_s) / len(idx) * 1e6}


# ---------------------------------------------------------------------------------------------- append


def task_append_per_call(spec: Spec) -> Result:
    """``count`` single ``m.append(x)`` calls on a fresh map: bare (one transaction and commit each) or inside
    one ``with m.transaction():`` block (timed to the end of the block, its commit included)."""
    kind, mode, count = spec["kind"], spec["mode"], spec["count"]
    strings_cls, ragged_cls = map_classes()
    if kind == "strings":
        texts = MapColumns(spec["source"]).samples()
        samples: list[Any] = [texts[k % len(texts)] for k in range(count)]
        m = strings_cls.from_strings(spec["path"], [], overwrite=True)
    else:
        samples = token_sequences(count, spec.get("seed", 3))
        m = ragged_cls.from_lists(spec["path"], [], dtype=np.int32, overwrite=True)
    if mode == "transaction" and not hasattr(m, "transaction"):
        raise AttributeError(f"{type(m).__name__} has no transaction() in this tree (issue 8's context manager "
                             f"has not landed): the per-call cost inside a transaction cannot be measured")
    append = m.append
    t0 = perf()
    if mode == "transaction":
        with m.transaction():
            for x in samples:
                append(x)
    else:
        for x in samples:
            append(x)
    seconds = perf() - t0
    m.close()
    reopened = open_ours(kind, spec["path"])
    stored = len(reopened)
    reopened.close()
    if stored != count:
        raise RuntimeError(f"{count} appends left {stored} samples in the map")
    return {"count": count, "seconds": seconds, "us_per_append": seconds / count * 1e6}


TASKS: dict[str, Callable[[Spec], Result]] = {
    "arrow_from_map": task_arrow_from_map,
    "iterate": task_iterate,
    "build_vs_raw": task_build_vs_raw,
    "token_floor": task_token_floor,
    "append_per_call": task_append_per_call,
}
