"""Checksums of committed bytes: one record per column per write, so appends stay O(batch).

Every commit adds, for each column it grew, a record ``(column id, start byte, stop byte, hash)`` to the map's
``checksums`` column, written before the header that publishes the data. An in-place write re-hashes the records
whose ranges it touches, in the same transaction. ``mmap_ninja.verify(path, deep=True)`` re-hashes every record and
checks that the records cover every committed byte. FORMAT.md specifies the records.

Reads are not checked by default (zero cost). ``MapClass(path, verify_reads=True)`` checks each sample read: before
a sample is returned, the records covering the bytes it is read from are hashed again (each record once per
handle: reading a whole commit's samples hashes that commit once), and a mismatch raises
`ChecksumMismatchError` naming the file, the byte range and the samples it holds.

New maps hash with xxh3-64 from the ``xxhash`` package, a core dependency (about 25 GB/s here: a build loses ~4%),
so every installation can append to and deep-verify every map. Maps written by an installation that lacked it
use the standard library's CRC-32 (about 7 GB/s) and keep it. A map records which one it uses.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable
from typing import Any, Callable, Optional

import numpy as np

from mmap_ninja.errors import ChecksumMismatchError

__all__ = ["ALGORITHMS", "RECORD_DTYPE", "CheckedView", "ChecksumMismatchError", "ReadChecker", "column_id",
           "default_algorithm", "hasher"]

RECORD_DTYPE = np.dtype([("column", "<u4"), ("hash", "<u4"), ("start", "<u8"), ("stop", "<u8"), ("digest", "<u8")])
"""One checksum record; ``hash`` is reserved (0) and ``digest`` holds the hash value (CRC-32 in its low 32 bits)."""

Hasher = Callable[[Iterable[Any]], int]


def _xxh3(buffers: Iterable[Any]) -> int:
    import xxhash

    state = xxhash.xxh3_64()
    deque(map(state.update, buffers), maxlen=0)  # a loop in C: a batch can be a million small buffers
    value: int = state.intdigest()
    return value


def _crc32(buffers: Iterable[Any]) -> int:
    value = 0
    for buffer in buffers:
        value = zlib.crc32(buffer, value)
    return value


ALGORITHMS: dict[str, Hasher] = {"xxh3_64": _xxh3, "crc32": _crc32}


def default_algorithm() -> str:
    """The algorithm of new maps: always xxh3-64 (``xxhash`` is a core dependency), so a map's format never
    depends on which packages happen to be installed."""
    return "xxh3_64"


def hasher(algorithm: str) -> Hasher:
    """The function hashing a sequence of buffers (as one byte string) with ``algorithm``."""
    if algorithm == "xxh3_64":
        try:
            import xxhash  # noqa: F401
        except ImportError:
            raise ImportError("this map's checksums are xxh3-64, which needs the 'xxhash' package (a dependency "
                              "of mmap_ninja that is missing from this installation): pip install xxhash") from None
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}") from None


def column_id(name: str) -> int:
    """The id a record gives its column: the CRC-32 of the column's name."""
    return zlib.crc32(name.encode())


# ---------------------------------------------------------------------------------------------- checked reads


_CHECKSUMS_COLUMN = "checksums"
_WHOLE_COLUMNS = ("dictionary",)  # read whole to decode any sample


class ReadChecker:
    """Verifies, before a sample is returned, the checksum records covering the bytes that sample is read from:
    in every column, its span (its data between its offsets, its offsets, its shape; a fixed-size sample's
    stride; a codec's whole dictionary). A record verified once is remembered in ``verified`` (shared by the
    views of one handle: key column, start, stop, digest), so reading many samples of one commit hashes it once.
    Bytes that no record covers yet (written by this handle's open transaction) are not checked.

    ``prefix`` restricts the checker to the columns of one field of a records map (``"text."``): a field's
    container checks only its own bytes. A mismatch is confirmed before it is reported: another handle may have
    rewritten the bytes in place (``m[i] = v``) and their record with them, so the record is read again from the
    checksums file and the bytes hashed once more; only if they still differ is `ChecksumMismatchError` raised.
    """

    def __init__(self, snapshot: Any, algorithm: str, length: int, verified: set[tuple[int, int, int, int]],
                 prefix: str = ""):
        self._path = snapshot.path
        self._hash = hasher(algorithm)
        self._length = length
        self._verified = verified
        lengths: dict[str, int] = snapshot.lengths
        self._bytes: dict[str, np.ndarray[Any, Any]] = {}
        for name in lengths:
            if name != _CHECKSUMS_COLUMN and name.startswith(prefix):
                self._bytes[name] = np.asarray(snapshot.column(name)).view(np.uint8).reshape(-1)
        # The records as they are in the file (a shared mapping: in-place rewrites by other handles show there).
        self._live = np.asarray(snapshot.column(_CHECKSUMS_COLUMN)).view(RECORD_DTYPE)
        records = self._live
        self._records: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any],
                                       np.ndarray[Any, Any]]] = {}
        for name in self._bytes:
            rows = np.flatnonzero(records["column"] == column_id(name))
            rows = rows[np.argsort(records["start"][rows], kind="stable")]
            mine = records[rows]
            self._records[name] = (mine["start"].astype(np.int64), mine["stop"].astype(np.int64),
                                   mine["digest"].copy(), rows)
        # Columns grouped by record field ("name." prefix) or "" for a plain map.
        self._groups: dict[str, list[str]] = {}
        for name in self._bytes:
            group = name.rsplit(".", 1)[0] + "." if "." in name else ""
            self._groups.setdefault(group, []).append(name)

    def check(self, position: int, fields: Optional[Iterable[str]] = None) -> None:
        """Raise `ChecksumMismatchError` if a byte that sample ``position`` is read from fails its checksum
        (``fields``: only the columns of these fields of a records map)."""
        for name, start, stop in self.spans(position, fields):
            self._check_range(name, start, stop, position)

    def check_many(self, positions: Any, fields: Optional[Iterable[str]] = None) -> None:
        """`check` every position of ``positions`` (each checksum record is still hashed once)."""
        chosen = None if fields is None else list(fields)
        for position in np.asarray(positions, dtype=np.int64).reshape(-1).tolist():
            self.check(position, chosen)

    def check_all(self) -> None:
        """Check every committed byte of the columns this checker covers: for reads of whole columns (a map's
        ``array``, ``values`` or ``offsets``, ``np.asarray(m)``, ``to_arrow``)."""
        for name, data in self._bytes.items():
            starts, stops = self._records[name][:2]
            for k in range(len(starts)):
                if int(stops[k]) <= len(data):
                    self._check_record(name, k, None)

    def spans(self, position: int, fields: Optional[Iterable[str]] = None) -> list[tuple[str, int, int]]:
        """``(column, start byte, stop byte)`` of every span sample ``position`` is read from."""
        spans = []
        n = self._length
        groups = self._groups.items() if fields is None else [
            (field + ".", self._groups.get(field + ".", [])) for field in fields]
        data = self._bytes
        for prefix, names in groups:
            done = set()
            offsets_name, data_name = prefix + "offsets", prefix + "data"
            if offsets_name in data and data_name in data:
                offsets = data[offsets_name].view(np.int64)
                end = int(offsets[-1]) if len(offsets) else 0
                unit = len(data[data_name]) // end if end else 1
                spans.append((offsets_name, 8 * position, 8 * (position + 2)))
                spans.append((data_name, int(offsets[position]) * unit, int(offsets[position + 1]) * unit))
                done |= {offsets_name, data_name}
                shape_offsets_name, dims_name = prefix + "shape_offsets", prefix + "dims"
                if shape_offsets_name in data and dims_name in data:
                    shape_offsets = data[shape_offsets_name].view(np.int64)
                    spans.append((shape_offsets_name, 8 * position, 8 * (position + 2)))
                    spans.append((dims_name, 8 * int(shape_offsets[position]), 8 * int(shape_offsets[position + 1])))
                    done |= {shape_offsets_name, dims_name}
            for name in names:
                if name in done:
                    continue
                size = len(data[name])
                if name.endswith(_WHOLE_COLUMNS) or not n or size % n:
                    spans.append((name, 0, size))
                else:
                    stride = size // n
                    spans.append((name, position * stride, (position + 1) * stride))
        return spans

    def _check_range(self, name: str, start: int, stop: int, position: int) -> None:
        if stop <= start:
            return
        starts, stops = self._records[name][:2]
        first = max(int(np.searchsorted(starts, start, side="right")) - 1, 0)
        last = int(np.searchsorted(starts, stop, side="left"))
        size = len(self._bytes[name])
        for k in range(first, last):
            b = int(stops[k])
            if b <= start or b > size:
                continue
            self._check_record(name, k, position)

    def _check_record(self, name: str, k: int, position: Optional[int]) -> None:
        starts, stops, digests, rows = self._records[name]
        a, b, digest = int(starts[k]), int(stops[k]), int(digests[k])
        key_id = column_id(name)
        key = (key_id, a, b, digest)
        if key in self._verified:
            return
        data = self._bytes[name]
        if self._hash([data[a:b]]) != digest:
            # Another handle may have rewritten these bytes in place (and then their record): read the record
            # again from the file and hash the bytes once more before calling them damaged.
            fresh = self._live[int(rows[k])]
            digest = int(fresh["digest"])
            same = int(fresh["column"]) == key_id and int(fresh["start"]) == a and int(fresh["stop"]) == b
            if not same or self._hash([data[a:b]]) != digest:
                read = "" if position is None else f": sample {position} is read from them"
                raise ChecksumMismatchError(
                    f"{self._path / (name + '.bin')} bytes {a}..{b} do not match their checksum{read}"
                    f"{self._holding(name, a, b)}; the map is damaged (mmap_ninja.verify(path, deep=True) lists "
                    f"every damaged range)")
            digests[k] = digest
            key = (key_id, a, b, digest)
        self._verified.add(key)

    def _holding(self, name: str, start: int, stop: int) -> str:
        """`` (they hold samples i..j)`` for a byte range of a column, where that can be told."""
        prefix = name.rsplit(".", 1)[0] + "." if "." in name else ""
        base = name[len(prefix):]
        n = self._length
        if base == "offsets":
            first, last = max(start // 8 - 1, 0), min(max(stop - 1, 0) // 8, n - 1)
        elif base == "data" and prefix + "offsets" in self._bytes:
            offsets = self._bytes[prefix + "offsets"].view(np.int64)
            end = int(offsets[-1]) if len(offsets) else 0
            unit = len(self._bytes[name]) // end if end else 1
            first = int(np.searchsorted(offsets * unit, start, side="right")) - 1
            last = int(np.searchsorted(offsets * unit, max(stop - 1, 0), side="right")) - 1
        elif n and len(self._bytes[name]) % n == 0 and not name.endswith(_WHOLE_COLUMNS):
            stride = len(self._bytes[name]) // n
            first, last = start // stride, max(stop - 1, 0) // stride
        else:
            return ""
        return f" (they hold samples {max(first, 0)}..{min(last, n - 1)})"


_ONE = frozenset({"get", "decode", "raw", "format_name", "shape", "window"})
_MANY = frozenset({"get_many", "shapes_at", "checked_shapes", "columns_at"})


class CheckedView:
    """A layout's view whose sample reads (``get``, ``get_many``, ``iterate``, ``decode``, ``raw``, ...) first
    verify the checksums of the bytes they read (see `ReadChecker`); everything else is the view's own."""

    def __init__(self, view: Any, checker: ReadChecker):
        self._inner = view
        self.checker = checker

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        checker = self.checker
        if name in _ONE:
            def one(position: int, *args: Any, **kwargs: Any) -> Any:
                checker.check(position)
                return value(position, *args, **kwargs)
            return one
        if name in _MANY:
            def many(positions: Any, *args: Any, **kwargs: Any) -> Any:
                checker.check_many(positions)
                return value(positions, *args, **kwargs)
            return many
        if name == "iterate":
            def iterate(start: int = 0) -> Any:
                for position, sample in enumerate(value(start), start):
                    checker.check(position)
                    yield sample
            return iterate
        return value
