"""`verify`: check a map on disk, cheaply (structure) or thoroughly (every checksum)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmap_ninja.containers.sharded import is_sharded
from mmap_ninja.errors import CorruptMapError, FormatVersionError, NotAMapError
from mmap_ninja.kinds.attrs_check import check_attrs
from mmap_ninja.kinds.legacy import is_legacy_map, open_legacy
from mmap_ninja.storage.checksums import RECORD_DTYPE, column_id, hasher
from mmap_ninja.storage.format import HEADER_FILE, Header, read_header
from mmap_ninja.storage.store import CHECKSUMS, COLUMN_SUFFIX, PathLike, absolute, is_derived, is_url

__all__ = ["Report", "index_problems", "verify"]


@dataclass
class Report:
    """What `verify` found: ``problems`` (each naming a file and, where it can, the samples affected) and
    ``notes`` (facts that are not damage). ``checksums_missing``: the map (or a shard) has no checksums, so a deep
    verify could check only its structure.

    Example:

        >>> from mmap_ninja import StringsMmap, verify
        >>> StringsMmap.from_strings("reported", ["x"], overwrite=True).close()
        >>> verify("reported")
        Report(path=PosixPath('.../reported'), kind='strings', length=1, deep=False, problems=[], notes=[], ...)
    """

    path: Path | str  # a map at a URL: the URL (a Path would collapse its "//")
    kind: Optional[str] = None
    length: Optional[int] = None
    deep: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bytes_hashed: int = 0
    checksums_missing: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing damaged was found."""
        return not self.problems


def verify(path: PathLike, deep: bool = False, *, progress: bool = False,
           storage_options: Optional[dict[str, Any]] = None, cache_dir: Optional[PathLike] = None) -> Report:
    """Check the map in ``path``; returns a `Report` (``report.ok`` is True when nothing is wrong).

    Always (in time that does not grow with the data's bytes): the header and its own checksum, that every
    column file exists and holds its committed bytes, and the index: offsets start at 0, never decrease and end
    at the committed data; then what the kind records beside them (its layout's ``check_columns``: each ragged
    sample's shape against the elements its offsets give, also in records fields; each image's shape and format
    code). With ``deep=True`` also every checksum record: the bytes of every commit are hashed
    again and every committed byte must be covered. A sharded map (a directory with ``shards.json``) is checked
    shard by shard, each shard against what ``shards.json`` records (its header id and length); a problem names
    the shard and the samples of the whole map it holds. ``progress=True`` shows a progress bar of the bytes
    hashed (deep checks). A records map's key index (a derived column, which has no checksums) is checked by a
    deep verify by looking every row's key up. Raises `NotAMapError` if ``path`` holds no map.

    ``path`` may be a URL (``s3://bucket/path``, any fsspec URL; ``storage_options`` go to fsspec): the shallow
    check reads the headers and the objects' sizes, and fetches the index columns (all but the samples' data, the
    checksum records and a key index; up to 64 MiB a map, else a note says they were not checked) to check them as
    above; ``deep=True`` downloads every map (shard) into the cache
    (``cache_dir``, as for `mmap_ninja.open_existing`) and checks every checksum of the copy
    (`mmap_ninja.adapters.remote_check.verify_remote`).

    Example:

        >>> from mmap_ninja import StringsMmap, verify
        >>> StringsMmap.from_strings("checked", ["a", "b"], overwrite=True).close()
        >>> report = verify("checked", deep=True)
        >>> report.ok, report.kind, report.length, report.problems
        (True, 'strings', 2, [])
    """
    if is_url(path):
        from mmap_ninja.adapters.remote_check import verify_remote

        return verify_remote(str(path), deep, progress=progress, storage_options=storage_options,
                             cache_dir=cache_dir)
    directory = absolute(path)
    report = Report(directory, deep=deep)
    if is_legacy_map(directory):
        return _verify_legacy(report)
    if is_sharded(directory):
        return _verify_sharded(report, progress)
    try:
        header = read_header(directory)
    except CorruptMapError as e:
        report.problems.append(str(e))
        return report
    report.kind = header.kind
    from mmap_ninja.kinds.maps import KINDS

    cls = KINDS.get(header.kind)
    if cls is None:
        report.problems.append(f"{directory / HEADER_FILE} holds a map of kind {header.kind!r}, which this "
                               f"mmap_ninja does not know: nothing can read it")
        return report
    try:
        check_attrs(header.kind, header.attrs)
        needed = cls.layout.columns_for(header.attrs)
    except (CorruptMapError, KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as e:
        report.problems.append(f"{directory / HEADER_FILE} has attributes a {header.kind!r} map cannot have: {e}")
        return report
    missing = [name for name in needed if name not in header.columns]
    if missing:
        report.problems.append(f"{directory / HEADER_FILE} lists no column {missing[0]!r}, which a "
                               f"{header.kind!r} map has")
        return report
    for name, dtype in needed.items():
        if header.columns[name].dtype != np.dtype(dtype):
            report.problems.append(f"{directory / HEADER_FILE} gives column {name!r} the dtype "
                                   f"{header.columns[name].dtype}; a {header.kind!r} map stores it as {dtype}")
            return report
    if header.building:
        report.notes.append("the map is an unfinished build (its from_* call did not return)")
    if (directory / (HEADER_FILE + ".tmp")).exists():
        report.notes.append(f"{HEADER_FILE}.tmp is left from a commit that did not finish; it is ignored")
    try:
        columns = _mapped_columns(directory, header, report)
        if columns is None:
            return report
        units = cls.layout.index_units(header.attrs)
        report.problems += index_problems(columns, header.kind, header.attrs)
        report.length = cls.layout.count(header.lengths, header.attrs)
        if deep:
            _check_checksums(directory, header, columns, units, report, progress)
            if header.kind == "records" and header.attrs.get("key") is not None and report.ok:
                _check_key_index(directory, report)
    except (CorruptMapError, TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError) as e:
        # What the checks above do not foresee in a hostile header is still damage to report, not to raise.
        report.problems.append(f"{directory}: the map is damaged ({type(e).__name__}: {e})")
    return report


_KEY_BATCH = 65_536
_SCAN_CHUNK = 1 << 20  # index items checked at a time (8 MiB of int64), so a check's memory does not grow with n
_MAX_KEY_PROBLEMS = 5


def _check_key_index(directory: Path, report: Report) -> None:
    """A records map's key index (the derived column ``derived-key.slots``, updated in place, so it has no
    checksum records): every row's key must lead back to that row. O(rows), like the hashing it follows."""
    from mmap_ninja.kinds.records import RecordsMmap

    where = directory / ("derived-key.slots" + COLUMN_SUFFIX)
    missed = 0
    try:
        rec = RecordsMmap(directory, mode="r", allow_unfinished=True)  # an unfinished build is checked too
    except (CorruptMapError, FormatVersionError, OSError, ValueError) as e:
        report.problems.append(f"{where}: the key index cannot be checked: {e}")
        return
    try:
        name = rec.key
        assert name is not None  # the header names a key
        keys = rec.field(name)
        for start in range(0, len(rec), _KEY_BATCH):
            values = keys[start:start + _KEY_BATCH]
            for row, value in enumerate(values.tolist() if isinstance(values, np.ndarray) else values, start):
                try:
                    found: Optional[int] = rec.index_of(value)
                except KeyError:
                    found = None
                if found != row:
                    missed += 1
                    if missed <= _MAX_KEY_PROBLEMS:
                        leads = "finds no row" if found is None else f"leads to row {found}"
                        report.problems.append(f"{where}: the key index is damaged: the key {value!r} of row {row} "
                                               f"(field {name!r}) {leads}")
    finally:
        rec.close()
    if missed > _MAX_KEY_PROBLEMS:
        report.problems.append(f"{where}: the key index misses {missed} rows in all")


def _verify_sharded(report: Report, progress: bool) -> Report:
    """Check ``shards.json`` and every shard it lists (with the same depth)."""
    from mmap_ninja.containers.sharded import SHARDS_FILE, ShardedMap

    try:
        top = ShardedMap(report.path, mode="r")
    except (CorruptMapError, FormatVersionError) as e:
        report.problems.append(str(e))
        return report
    report.kind, report.length = top.kind, len(top)
    starts = top.shard_starts
    for k, info in enumerate(top.shards):
        shard_path = top.path / info.path
        where = f"shard {k} ({info.path}, samples {starts[k]}..{starts[k + 1] - 1} of the sharded map)"
        try:
            sub = verify(shard_path, deep=report.deep, progress=progress)
        except NotAMapError:
            report.problems.append(f"{top.path / SHARDS_FILE} lists {where}, but {shard_path} holds no map")
            continue
        report.bytes_hashed += sub.bytes_hashed
        report.checksums_missing |= sub.checksums_missing
        report.problems += [f"{where}: {problem}" for problem in sub.problems]
        report.notes += [f"{where}: {note}" for note in sub.notes]
        if not sub.ok:
            continue
        if sub.kind != top.kind:
            report.problems.append(f"{where} holds a {sub.kind!r} map; {SHARDS_FILE} says the shards are "
                                   f"{top.kind!r}")
        elif sub.length != info.length:
            report.problems.append(f"{where} holds {sub.length} samples, but {SHARDS_FILE} records {info.length}: "
                                   f"it was changed after it was added")
        elif info.id is not None and read_header(shard_path).id != info.id:
            report.problems.append(f"{where} was replaced after it was added: its header id differs from the one "
                                   f"{SHARDS_FILE} records")
    return report


def _verify_legacy(report: Report) -> Report:
    """A map written by mmap_ninja 0.9.0 has no checksums: check that it opens (its files, lengths and dtypes)."""
    try:
        reader = open_legacy(report.path)
    except CorruptMapError as e:
        report.problems.append(str(e))
        return report
    report.kind, report.length = reader.kind, len(reader)
    report.notes.append("written by mmap_ninja 0.9.0: no checksums to check; `mmap-ninja convert` upgrades it")
    report.checksums_missing = True
    return report


def _mapped_columns(directory: Path, header: Header, report: Report) -> Optional[dict[str, np.ndarray[Any, Any]]]:
    columns = {}
    for name, column in header.columns.items():
        path = directory / header.file_of(name)
        need = column.length * column.dtype.itemsize
        try:
            info = os.stat(path)
        except FileNotFoundError:
            report.problems.append(f"{path} is missing (the header lists column {name!r})")
            continue
        if not stat.S_ISREG(info.st_mode):
            report.problems.append(f"{path} is not a regular file")
        elif info.st_size < need:
            report.problems.append(f"{path} is truncated: it holds {info.st_size} bytes, the header commits {need}")
        else:
            columns[name] = (np.memmap(path, dtype=column.dtype, mode="r", shape=(column.length,)) if need
                             else np.empty(0, dtype=column.dtype))
    return None if report.problems else columns


def index_problems(columns: dict[str, np.ndarray[Any, Any]], kind: str, attrs: dict[str, Any]) -> list[str]:
    """What a shallow `verify` finds wrong in the index of a map of ``kind`` with ``attrs`` (``columns``: its columns
    by name, as arrays of their committed items; a data column an index points into is only measured, never read):
    offsets that do not start at 0, decrease or do not end at the committed data (each records field's own), then
    what the kind's layout checks beside them (``check_columns``: each ragged sample's shape against the elements
    its offsets give, each image's shape and format code). `verify` of a map at a URL runs the same checks on
    the index columns it fetches."""
    from mmap_ninja.kinds.maps import KINDS

    layout = KINDS[kind].layout
    report = Report(Path())
    for prefix, unit in layout.index_units(attrs).items():  # a records map's fields each have their own index
        _check_index(columns, unit, report, prefix)
    if report.ok:  # what the kind's columns hold beyond sound offsets (a ragged map's shapes against them)
        report.problems += layout.check_columns(columns, attrs)
    return report.problems


def _check_index(columns: dict[str, np.ndarray[Any, Any]], unit: int, report: Report, prefix: str = "") -> None:
    """Check the offsets of a variable-size kind (the columns named ``prefix`` + ``offsets``, ...: a records
    map's fields are checked one by one)."""
    if prefix + "offsets" not in columns or prefix + "data" not in columns:
        return
    _check_offsets(columns[prefix + "offsets"], len(columns[prefix + "data"]) // unit, prefix + "offsets", report)
    if prefix + "shape_offsets" in columns and prefix + "dims" in columns:
        _check_offsets(columns[prefix + "shape_offsets"], len(columns[prefix + "dims"]), prefix + "shape_offsets",
                       report)


def _item_ranges(items: np.ndarray[Any, Any]) -> Iterator[tuple[int, int, bool]]:
    """``(start, stop, hole)`` item ranges covering ``items`` in order: ``hole`` ranges are holes of a sparse file
    (all zeros, found with ``SEEK_DATA``/``SEEK_HOLE`` without reading them), so that a scan skips what a hostile
    header's sparse file does not hold. One range of data where the file system cannot tell."""
    count, itemsize = len(items), items.dtype.itemsize
    filename = getattr(items, "filename", None)
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if not count or filename is None or seek_data is None or seek_hole is None or \
            getattr(items, "offset", 0) != 0:
        yield 0, count, False
        return
    fd = os.open(filename, os.O_RDONLY)
    try:
        position, end = 0, count * itemsize
        while position < end:
            try:
                data = min(os.lseek(fd, position, seek_data), end)
            except OSError:  # ENXIO: no data after position
                data = end
            if data > position:
                yield position // itemsize, -(-data // itemsize), True  # hole boundaries are page-aligned
                position = data
            if position >= end:
                break
            hole = min(os.lseek(fd, position, seek_hole), end)
            yield position // itemsize, -(-hole // itemsize), False
            position = -(-hole // itemsize) * itemsize
    finally:
        os.close(fd)


def _check_offsets(offsets: np.ndarray[Any, Any], end: int, name: str, report: Report) -> None:
    where = f"{name}{COLUMN_SUFFIX}"
    if len(offsets) == 0:
        report.problems.append(f"{where} is empty: it needs n + 1 entries from 0")
        return
    if offsets[0] != 0:
        report.problems.append(f"{where} does not start at 0 (it starts at {int(offsets[0])})")
    decreasing: list[int] = []
    for first, stop, hole in _item_ranges(offsets):
        if hole:  # zeros: they decrease only from a positive offset before them
            if first and offsets[first - 1] > 0:
                decreasing.append(first - 1)
        else:
            for start in range(first, stop, _SCAN_CHUNK):  # in bounded chunks: the index may be gigabytes
                low = max(start - 1, 0)
                chunk = np.asarray(offsets[low:min(start + _SCAN_CHUNK, stop)])
                decreasing += (np.flatnonzero(chunk[1:] < chunk[:-1])[:5] + low).tolist()
                if len(decreasing) >= 5:
                    break
        if len(decreasing) >= 5:
            break
    decreasing = decreasing[:5]
    if decreasing:
        report.problems.append(f"{where} decreases at sample(s) {decreasing}")
    if offsets[-1] != end:
        report.problems.append(f"{where} ends at {int(offsets[-1])}, but the committed data holds {end}")


def _check_checksums(directory: Path, header: Header, columns: dict[str, np.ndarray[Any, Any]], units: dict[str, int],
                     report: Report, progress: bool = False) -> None:
    if header.checksums is None or CHECKSUMS not in columns:
        report.notes.append("the map has no checksums (it was written before mmap_ninja kept them)")
        report.checksums_missing = True
        return
    if header.columns[CHECKSUMS].dtype != RECORD_DTYPE:
        report.problems.append(f"{directory / HEADER_FILE} gives the checksums column the dtype "
                               f"{header.columns[CHECKSUMS].dtype}, not the records' {RECORD_DTYPE}")
        return
    try:
        hash_bytes = hasher(header.checksums)
    except ValueError as e:
        report.problems.append(f"{directory / HEADER_FILE}: {e}")
        return
    records = np.asarray(columns[CHECKSUMS]).view(RECORD_DTYPE)
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        hashed = sum(c.nbytes for name, c in columns.items() if name != CHECKSUMS and not is_derived(name))
        bar = tqdm(total=hashed, unit="B", unit_scale=True, desc=f"verifying {directory.name}")
    try:
        _hash_records(directory, columns, records, hash_bytes, units, report, bar)
    finally:
        if bar is not None:
            bar.close()


def _hash_records(directory: Path, columns: dict[str, np.ndarray[Any, Any]], records: np.ndarray[Any, Any],
                  hash_bytes: Any, units: dict[str, int], report: Report, bar: Any) -> None:
    for name, items in columns.items():
        if name == CHECKSUMS or is_derived(name):  # derived data (a key index) has no checksum records
            continue
        data = np.asarray(items).view(np.uint8).reshape(-1)
        mine = records[records["column"] == column_id(name)]
        mine = mine[np.argsort(mine["start"], kind="stable")]
        covered = 0
        for start, stop, digest in zip(mine["start"].tolist(), mine["stop"].tolist(), mine["digest"].tolist()):
            samples = _samples(name, start, stop, columns, units)
            where = f"{directory / (name + COLUMN_SUFFIX)} bytes {start}..{stop}{samples}"
            if start != covered or stop > len(data) or stop < start:
                report.problems.append(f"{where}: the checksum records do not tile the column (expected a range "
                                       f"from byte {covered})")
                break
            report.bytes_hashed += stop - start
            if bar is not None:
                bar.update(stop - start)
            if hash_bytes([data[start:stop]]) != digest:
                report.problems.append(f"{where}: the bytes do not match their checksum")
            covered = stop
        else:
            if covered != len(data):
                report.problems.append(f"{directory / (name + COLUMN_SUFFIX)} bytes {covered}..{len(data)} are "
                                       f"committed but have no checksum")


def _samples(name: str, start: int, stop: int, columns: dict[str, np.ndarray[Any, Any]], units: dict[str, int]) -> str:
    """`` (samples i..j)`` for a byte range of a data or offsets column (``units``: bytes per offset unit, by the
    prefix of the index's columns)."""
    prefix, _, base = name.rpartition(".")
    prefix = prefix + "." if prefix else ""
    offsets = columns.get(prefix + "offsets")
    if offsets is None or len(offsets) < 2 or prefix not in units:
        return ""
    if base == "offsets":
        first, last = start // 8, max(start // 8, (stop - 1) // 8)
        return f" (the offsets of samples {max(first - 1, 0)}..{min(last, len(offsets) - 2)})"
    if base == "data":
        unit = units[prefix]
        first = int(np.searchsorted(offsets, start // unit, side="right")) - 1
        last = int(np.searchsorted(offsets, max(stop - 1, 0) // unit, side="right")) - 1
        return f" (samples {max(first, 0)}..{min(last, len(offsets) - 2)})"
    return ""
