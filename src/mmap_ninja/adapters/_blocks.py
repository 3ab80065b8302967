"""Ranged block reads of a map in object storage: which bytes a block of samples needs, fetching them with ranged
requests (fsspec ``cat_ranges``, concurrent on stores that support it), checking them against their checksum
records, and writing a block as a small ordinary map (the block's samples, with its index rebased) that the kind's
own container reads.

A block of size ``B`` (bytes) holds the samples whose first byte in the map's largest data column lies in
``[k·B, (k+1)·B)``; its bytes in every data column are widened to whole checksum records, so every byte fetched is
checked before it is used. Index columns (offsets) up to `INDEX_WHOLE_LIMIT` bytes and whole columns (a codec's
dictionary) are fetched once per map. A larger index column (a map of 10⁹ documents has 8 GB of offsets) is fetched
by block too: its blocks are then cut by sample count (about ``block_size`` bytes of the largest data column each,
from the column's mean bytes per sample), and a block fetches first the entries of the index it needs (widened to
whole checksum records of the index column, checked), then the data they point to. See
`mmap_ninja.adapters._block_map` for the container and FORMAT.md ("Finer-grained checksum records").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmap_ninja.adapters.remote_objects import object_name, without_objects
from mmap_ninja.errors import ChecksumMismatchError, CorruptMapError
from mmap_ninja.kinds.maps import KINDS
from mmap_ninja.storage.checksums import RECORD_DTYPE, column_id, hasher
from mmap_ninja.storage.format import HEADER_FILE, Column, Header, encode_header
from mmap_ninja.storage.store import CHECKSUMS, COLUMN_SUFFIX, is_derived

__all__ = ["BlockPlan", "Range", "column_object", "fetch_checked", "plan_columns"]

INDEX_HEADER = "remote-header.json"  # the remote header, kept beside a map's fetched index
PLAN_FILE = "blocks.json"

INDEX_WHOLE_LIMIT = 64 << 20
"""Index columns of at most this many bytes are fetched whole with a map's index entry; a larger one is fetched by
block, the entries each block needs (read when a plan is made, so a test may lower it)."""


def column_object(header: Header, column: str) -> str:
    """The name of the object holding ``column`` of the map whose header is ``header`` (relative to its URL): the
    one place block reads ask (`mmap_ninja.adapters.remote_objects` checks the names an uploaded header lists)."""
    return object_name(header, column)


class _BlocksUnsupported(ValueError):
    """The map cannot be read by blocks (no checksum records, derived columns, a column of unknown shape)."""


@dataclass(frozen=True)
class Range:
    """A byte range ``[start, stop)`` of one column object, and the checksum records that tile it."""

    column: str
    start: int
    stop: int
    records: np.ndarray[Any, Any]  # RECORD_DTYPE rows, sorted by start


def _split(name: str) -> tuple[str, str]:
    prefix, _, base = name.rpartition(".")
    return (prefix + "." if prefix else ""), base


_INDEXED = {"data": "offsets", "dims": "shape_offsets"}


def plan_columns(header: Header, length: int) -> dict[str, tuple[str, Any]]:
    """The role of every column but ``checksums``: ``("index", None)`` (offsets: fetched whole, rebased per
    block), ``("whole", None)`` (fetched whole, copied into each block), ``("indexed", index column)`` (fetched by
    block between the index's entries) or ``("stride", items per sample)`` (fetched by block). Raises
    `_BlocksUnsupported` naming what prevents block reads."""
    if header.checksums is None or CHECKSUMS not in header.columns:
        raise _BlocksUnsupported("it has no checksum records to check blocks against")
    roles: dict[str, tuple[str, Any]] = {}
    for name, column in header.columns.items():
        if name == CHECKSUMS:
            continue
        if is_derived(name):  # a key index: no block holds it (lookups read the map downloaded whole: `_block_kinds`)
            continue
        prefix, base = _split(name)
        if base in ("offsets", "shape_offsets"):
            if column.length != length + 1 or column.dtype != np.dtype("<i8"):
                raise _BlocksUnsupported(f"its index column {name!r} does not hold one entry per sample and one more")
            roles[name] = ("index", None)
        elif base in _INDEXED and prefix + _INDEXED[base] in header.columns:
            roles[name] = ("indexed", prefix + _INDEXED[base])
        elif base.endswith("dictionary"):
            roles[name] = ("whole", None)
        elif length and column.length % length == 0:
            roles[name] = ("stride", column.length // length)
        elif not column.length:
            roles[name] = ("stride", 0)
        else:
            raise _BlocksUnsupported(f"its column {name!r} holds {column.length} items for {length} samples")
    return roles


def _nbytes(header: Header, name: str) -> int:
    column = header.columns[name]
    return column.length * column.dtype.itemsize


def largest_column(header: Header, roles: dict[str, tuple[str, Any]]) -> Optional[str]:
    """The map's largest data column (the one blocks are measured in), or None."""
    ranged = [name for name, (role, _) in roles.items() if role in ("indexed", "stride")]
    return max(ranged, key=lambda name: _nbytes(header, name)) if ranged else None


def side_columns(header: Header, roles: dict[str, tuple[str, Any]]) -> set[str]:
    """The data columns far smaller than the largest (at most 1/16 of its bytes: a ragged map's ``dims``, an
    images map's shapes and formats): fetched whole with the index, since a block of them checked by whole
    records would cost more than all of them."""
    largest = largest_column(header, roles)
    if largest is None:
        return set()
    ranged = ranged_indexes(header, roles)
    return {name for name, (role, arg) in roles.items() if role in ("indexed", "stride") and name != largest
            and 16 * _nbytes(header, name) <= _nbytes(header, largest) and _nbytes(header, name) <= INDEX_WHOLE_LIMIT
            and not (role == "indexed" and arg in ranged)}


def ranged_indexes(header: Header, roles: dict[str, tuple[str, Any]]) -> set[str]:
    """The index columns larger than `INDEX_WHOLE_LIMIT`: fetched by block, not whole."""
    return {name for name, (role, _) in roles.items() if role == "index" and _nbytes(header, name) > INDEX_WHOLE_LIMIT}


def records_of(records: np.ndarray[Any, Any], name: str) -> np.ndarray[Any, Any]:
    """The checksum records of column ``name``, sorted by start."""
    mine: np.ndarray[Any, Any] = records[records["column"] == column_id(name)]
    ordered: np.ndarray[Any, Any] = mine[np.argsort(mine["start"], kind="stable")]
    return ordered


def widen(records: np.ndarray[Any, Any], name: str, start: int, stop: int) -> Range:
    """The smallest range of whole records of column ``name`` (``records``: its own, sorted) holding
    ``[start, stop)``; a `CorruptMapError` if the records do not cover it."""
    if stop <= start:
        return Range(name, start, start, records[:0])
    starts = records["start"].astype(np.int64)
    stops = records["stop"].astype(np.int64)
    first = int(np.searchsorted(stops, start, side="right"))
    last = int(np.searchsorted(starts, stop, side="left"))
    chosen = records[first:last]
    if (not len(chosen) or int(chosen["start"][0]) > start or int(chosen["stop"][-1]) < stop
            or (len(chosen) > 1 and np.any(chosen["start"][1:] != chosen["stop"][:-1]))):
        raise CorruptMapError(f"the checksum records of column {name!r} do not tile bytes {start}..{stop}")
    return Range(name, int(chosen["start"][0]), int(chosen["stop"][-1]), chosen)


def _bad_records(data: bytes, wanted: Range, hash_bytes: Any) -> list[tuple[int, int]]:
    view = memoryview(data)
    bad = []
    for record in wanted.records:
        a, b = int(record["start"]), int(record["stop"])
        if hash_bytes([view[a - wanted.start:b - wanted.start]]) != int(record["digest"]):
            bad.append((a, b))
    return bad


def fetch_checked(remote: Any, rel: str, header: Header, wanted: list[Range],
                  fetched: Optional[list[bytes]] = None) -> list[bytes]:
    """The bytes of every range of ``wanted`` (columns of the map at ``rel``), fetched by ranged requests in one
    concurrent batch (or given: ``fetched``) and each checked against its records. A range that fails is fetched
    again once; if it fails again, `ChecksumMismatchError` names the URL and the byte range."""
    algorithm = header.checksums
    assert algorithm is not None
    hash_bytes = hasher(algorithm)
    got: list[bytes] = (list(fetched) if fetched is not None else
                        remote.cat_ranges(rel, [(column_object(header, r.column), r.start, r.stop) for r in wanted]))

    def failing_ranges() -> list[int]:
        return [k for k, r in enumerate(wanted)
                if len(got[k]) != r.stop - r.start or _bad_records(got[k], r, hash_bytes)]

    failing = failing_ranges()
    if failing:  # fetched once more: a damaged transfer, or an object being replaced
        again = remote.cat_ranges(rel, [(column_object(header, wanted[k].column), wanted[k].start, wanted[k].stop)
                                        for k in failing])
        for k, data in zip(failing, again):
            got[k] = data
        failing = failing_ranges()
    if not failing:
        return got
    k = failing[0]
    r = wanted[k]
    url = remote.url_of(f"{rel}/{column_object(header, r.column)}" if rel else column_object(header, r.column))
    if len(got[k]) != r.stop - r.start:
        raise CorruptMapError(f"{url} is truncated: bytes {r.start}..{r.stop} gave {len(got[k])} bytes, twice")
    a, b = _bad_records(got[k], r, hash_bytes)[0]
    raise ChecksumMismatchError(f"{url} bytes {a}..{b} do not match their checksum (fetched twice); the map at "
                                f"the URL is damaged")


class BlockPlan:
    """The blocks of one map: from its header, its checksum records and its index columns (read from a local
    directory holding them), which samples each block holds and which bytes of each column it needs. Index columns
    larger than `INDEX_WHOLE_LIMIT` (``ranged``) are not in the directory: a block fetches the entries it needs
    (`fetch`)."""

    def __init__(self, header: Header, length: int, roles: dict[str, tuple[str, Any]], folder: Path,
                 block_size: int):
        self.header = header
        self.length = length
        self.roles = roles
        self.folder = folder
        self.block_size = block_size
        count = header.columns[CHECKSUMS].length
        self.records = np.fromfile(folder / (CHECKSUMS + COLUMN_SUFFIX), dtype=RECORD_DTYPE, count=count)
        self.ranged = ranged_indexes(header, roles)
        self.index: dict[str, np.ndarray[Any, Any]] = {}
        for name, (role, _) in roles.items():
            if role == "index" and name not in self.ranged:
                self.index[name] = np.fromfile(folder / (name + COLUMN_SUFFIX), dtype="<i8", count=length + 1)
        self.side = side_columns(header, roles)
        self._own_records = {name: records_of(self.records, name) for name, (role, _) in roles.items()
                             if (role in ("indexed", "stride") and name not in self.side) or name in self.ranged}
        self.largest = largest_column(header, roles)

    def nbytes(self, name: str) -> int:
        column = self.header.columns[name]
        return column.length * column.dtype.itemsize

    def _unit(self, name: str) -> int:
        """Bytes per index unit of an indexed column (ragged data is bytes indexed in elements)."""
        index_name = self.roles[name][1]
        if index_name in self.ranged:  # the last entry is not at hand: what the kind says its offsets count
            if _split(name)[1] != "data":
                return int(self.header.columns[name].dtype.itemsize)
            units = KINDS[self.header.kind].layout.index_units(self.header.attrs) if self.header.kind in KINDS else {}
            return int(units.get(_split(name)[0], 1))
        end = int(self.index[index_name][-1])
        return self.nbytes(name) // end if end else 1

    def _entries(self, index_name: str, first: int, stop: int,
                 entries: Optional[dict[str, np.ndarray[Any, Any]]]) -> np.ndarray[Any, Any]:
        if index_name in self.index:
            return self.index[index_name][first:stop + 1]
        if entries is None or index_name not in entries:
            raise KeyError(f"the entries {first}..{stop} of the index column {index_name!r} were not fetched")
        return entries[index_name]

    def byte_range(self, name: str, first: int, stop: int,
                   entries: Optional[dict[str, np.ndarray[Any, Any]]] = None) -> tuple[int, int]:
        """The bytes of column ``name`` holding samples ``first .. stop - 1`` (``entries``: the entries
        ``first .. stop`` of the ranged index columns, fetched for this block)."""
        role, arg = self.roles[name]
        if role == "indexed":
            unit = self._unit(name)
            index = self._entries(arg, first, stop, entries)
            return int(index[0]) * unit, int(index[-1]) * unit
        stride = int(arg) * self.header.columns[name].dtype.itemsize
        return first * stride, stop * stride

    def sample_starts(self) -> np.ndarray[Any, Any]:
        """The first byte of every sample in the largest data column."""
        name = self.largest
        if name is None or not self.length:
            return np.zeros(self.length, dtype=np.int64)
        role, arg = self.roles[name]
        if role == "indexed":
            return self.index[arg][:-1] * self._unit(name)
        stride = int(arg) * self.header.columns[name].dtype.itemsize
        return np.arange(self.length, dtype=np.int64) * stride

    def by_count(self) -> bool:
        """Whether blocks are cut by sample count: the largest data column's index is fetched by block, so where
        its samples start is not known before a block is fetched."""
        return self.largest is not None and self.roles[self.largest][0] == "indexed" and \
            self.roles[self.largest][1] in self.ranged

    def blocks(self) -> list[tuple[int, int, int]]:
        """``(block number, first sample, stop sample)`` of every block holding samples, in order."""
        if not self.length:
            return []
        if self.by_count():
            assert self.largest is not None
            per = max(1, self.block_size * self.length // max(self.nbytes(self.largest), 1))
            return [(k, first, min(first + per, self.length)) for k, first in enumerate(range(0, self.length, per))]
        numbers = self.sample_starts() // self.block_size
        cuts = (np.flatnonzero(np.diff(numbers)) + 1).tolist()
        firsts = [0, *cuts]
        stops = [*cuts, self.length]
        return [(int(numbers[a]), a, b) for a, b in zip(firsts, stops)]

    def ranges(self, first: int, stop: int, entries: Optional[dict[str, np.ndarray[Any, Any]]] = None,
               columns: Optional[list[str]] = None) -> list[Range]:
        """The ranges of whole records of every data column (or of ``columns``) holding samples
        ``first .. stop - 1``."""
        found = []
        for name in (columns if columns is not None else [n for n in self._own_records if n not in self.ranged]):
            lo, hi = self.byte_range(name, first, stop, entries)
            found.append(widen(self._own_records[name], name, lo, hi))
        return found

    def fetch(self, remote: Any, first: int, stop: int) -> tuple[list[Range], list[bytes],
                                                                 dict[str, np.ndarray[Any, Any]]]:
        """Fetch (and check) what the block of samples ``first .. stop - 1`` needs: the ranges of its data columns,
        their bytes and the entries ``first .. stop`` of the ranged index columns. Entries of ranged index columns
        come first, with the ranges that do not depend on them, in one batch; the ranges they locate next."""
        data_columns = [n for n in self._own_records if n not in self.ranged]
        later = [n for n in data_columns if self.roles[n][0] == "indexed" and self.roles[n][1] in self.ranged]
        now = [n for n in data_columns if n not in later]
        index_wanted = [widen(self._own_records[name], name, first * 8, (stop + 1) * 8) for name in sorted(self.ranged)]
        wanted = index_wanted + self.ranges(first, stop, columns=now)
        got = fetch_checked(remote, "", self.header, wanted) if wanted else []
        entries: dict[str, np.ndarray[Any, Any]] = {}
        for r, data in zip(index_wanted, got):
            values = np.frombuffer(data[first * 8 - r.start:(stop + 1) * 8 - r.start], dtype="<i8")
            if len(values) != stop + 1 - first or np.any(values[1:] < values[:-1]) or (len(values) and values[0] < 0):
                url = remote.url_of(column_object(self.header, r.column))
                raise CorruptMapError(f"{url} bytes {first * 8}..{(stop + 1) * 8} (the offsets of samples {first}.."
                                      f"{stop - 1}) are not non-decreasing entries: the index is damaged")
            entries[r.column] = values
        if later:
            more = self.ranges(first, stop, entries, later)
            for r in more:
                if r.stop > self.nbytes(r.column):
                    raise CorruptMapError(f"{remote.url_of(column_object(self.header, r.column))}: the index points "
                                          f"past its {self.nbytes(r.column)} committed bytes")
            wanted += more
            got += fetch_checked(remote, "", self.header, more)
        keep = len(index_wanted)
        return wanted[keep:], got[keep:], entries

    def write_block(self, stage: Path, first: int, stop: int, wanted: list[Range], fetched: list[bytes],
                    entries: Optional[dict[str, np.ndarray[Any, Any]]] = None) -> None:
        """Write samples ``first .. stop - 1`` into ``stage`` as an ordinary map of the kind: the data columns'
        bytes (cut out of the fetched ranges), the index columns rebased, whole columns copied, one checksum
        record per column and a header."""
        algorithm = self.header.checksums
        assert algorithm is not None
        hash_bytes = hasher(algorithm)
        columns: dict[str, Column] = {}
        records = []
        by_column = dict(zip((r.column for r in wanted), zip(wanted, fetched)))
        for name, (role, _) in self.roles.items():
            dtype = self.header.columns[name].dtype
            if role == "index":
                index = self._entries(name, first, stop, entries)
                content: Any = np.ascontiguousarray(index - index[0]).astype("<i8")
            elif role == "whole":
                content = (self.folder / (name + COLUMN_SUFFIX)).read_bytes()
            elif name in self.side:
                lo, hi = self.byte_range(name, first, stop, entries)
                with open(self.folder / (name + COLUMN_SUFFIX), "rb") as f:
                    f.seek(lo)
                    content = f.read(hi - lo)
            else:
                lo, hi = self.byte_range(name, first, stop, entries)
                got_range, data = by_column[name]
                content = memoryview(data)[lo - got_range.start:hi - got_range.start]
            raw = memoryview(content).cast("B") if not isinstance(content, bytes) else memoryview(content)
            (stage / (name + COLUMN_SUFFIX)).write_bytes(raw)
            columns[name] = Column(dtype, raw.nbytes // dtype.itemsize)
            records.append((column_id(name), 0, 0, raw.nbytes, hash_bytes([raw])))
        table = np.array(records, dtype=RECORD_DTYPE)
        table.tofile(stage / (CHECKSUMS + COLUMN_SUFFIX))
        columns[CHECKSUMS] = Column(RECORD_DTYPE, len(table))
        # A block is the map's rows on their own: without derived columns (a key index numbers the whole map's rows)
        # and the attributes and features that go with them.
        attrs, requires = self.header.attrs, without_objects(self.header).requires
        layout = KINDS[self.header.kind].layout if self.header.kind in KINDS else None
        if layout is not None and any(map(is_derived, self.header.columns)):
            attrs = layout.without_derived(attrs)
            dropped = set(layout.requires(self.header.attrs)) - set(layout.requires(attrs))
            requires = tuple(feature for feature in requires if feature not in dropped)
        block_header = Header(kind=self.header.kind, columns=columns, attrs=attrs, id=self.header.id,
                              commit=self.header.commit, requires=requires, metadata=self.header.metadata,
                              checksums=algorithm)
        (stage / HEADER_FILE).write_bytes(encode_header(block_header))


def index_ranges(header: Header, roles: dict[str, tuple[str, Any]]) -> list[tuple[str, int, int]]:
    """``(column, start, stop)`` of the columns a map's index entry holds: the index, whole and side columns."""
    wanted = [(CHECKSUMS, 0, header.columns[CHECKSUMS].length * RECORD_DTYPE.itemsize)]
    side = side_columns(header, roles)
    ranged = ranged_indexes(header, roles)
    for name, (role, _) in roles.items():
        if (role == "index" and name not in ranged) or role == "whole" or name in side:
            column = header.columns[name]
            wanted.append((name, 0, column.length * column.dtype.itemsize))
    return wanted


def fill_index(remote: Any, rel: str, raw: bytes, header: Header, roles: dict[str, tuple[str, Any]],
               stage: Path) -> None:
    """Fetch a map's checksum records, index columns and whole columns (one concurrent batch) into ``stage``,
    each index and whole column checked against its records (fetched again once, then refused)."""
    plain = index_ranges(header, roles)
    got = remote.cat_ranges(rel, [(column_object(header, name), a, b) for name, a, b in plain])
    records_bytes = got[0]
    if len(records_bytes) != plain[0][2]:
        url = remote.url_of(f"{rel}/{column_object(header, CHECKSUMS)}" if rel else column_object(header, CHECKSUMS))
        raise CorruptMapError(f"{url} is truncated: it holds {len(records_bytes)} bytes of checksum records, the "
                              f"header commits {plain[0][2]}")
    records = np.frombuffer(records_bytes, dtype=RECORD_DTYPE)
    # Whole columns: their records cover exactly the bytes fetched, so they are checked as they came.
    wanted = [widen(records_of(records, name), name, a, b) for name, a, b in plain[1:]]
    if any((r.start, r.stop) != (a, b) for r, (_, a, b) in zip(wanted, plain[1:])):
        raise CorruptMapError(f"{remote.url_of(rel)}: the checksum records do not cover exactly the committed bytes "
                              f"of an index column")
    checked = fetch_checked(remote, rel, header, wanted, got[1:]) if wanted else []
    (stage / (CHECKSUMS + COLUMN_SUFFIX)).write_bytes(records_bytes)
    for r, data in zip(wanted, checked):
        (stage / (r.column + COLUMN_SUFFIX)).write_bytes(data)
    (stage / INDEX_HEADER).write_bytes(raw)


def write_plan(stage: Path, blocks: list[tuple[int, int, int]], block_size: int) -> None:
    (stage / PLAN_FILE).write_text(json.dumps({"block_size": block_size, "blocks": blocks}))


def check_index(entry: Path) -> None:
    """A map's index found in the cache, checked before use: every column file it holds against its checksum
    records (a `CorruptMapError` if a byte is damaged, or the records are)."""
    from mmap_ninja.adapters.remote import _parse

    header = _parse((entry / INDEX_HEADER).read_bytes(), str(entry / INDEX_HEADER))
    assert header.checksums is not None
    hash_bytes = hasher(header.checksums)
    records = np.fromfile(entry / (CHECKSUMS + COLUMN_SUFFIX), dtype=RECORD_DTYPE)
    for path in entry.glob("*" + COLUMN_SUFFIX):
        name = path.name[:-len(COLUMN_SUFFIX)]
        if name == CHECKSUMS or name not in header.columns:
            continue
        data = path.read_bytes()
        wanted = widen(records_of(records, name), name, 0, len(data))
        if len(data) != _nbytes(header, name) or _bad_records(data, wanted, hash_bytes):
            raise CorruptMapError(f"{path} (a cached index) is damaged")


def check_block(entry: Path) -> None:
    """A block found in the cache, checked whole before use (a `CorruptMapError` if a byte is damaged)."""
    from mmap_ninja.containers.verify import verify

    report = verify(entry, deep=True)
    if not report.ok:
        raise CorruptMapError(f"{entry} (a cached block) is damaged: {'; '.join(report.problems)}")


def describe(url: str, first: int, stop: int, number: Optional[int]) -> str:
    return f"block {number} (samples {first}..{stop - 1}) of {url}"


DOWNLOAD_PART = 32 << 20
"""Bytes per ranged request of a whole download (`download_by_ranges`); `DOWNLOAD_PARTS_AT_ONCE` at a time."""
DOWNLOAD_PARTS_AT_ONCE = 4


def download_by_ranges(fs: Any, path: str, local: Path, size: int) -> None:
    """Write the first ``size`` bytes of the object ``path`` of the fsspec file system ``fs`` to ``local``, by
    ranged requests of `DOWNLOAD_PART` bytes, `DOWNLOAD_PARTS_AT_ONCE` concurrently (``cat_ranges``), in order.

    Whole downloads come here rather than to ``fs.get_file`` because the map's header says the size: s3fs's
    ``get_file`` of an object over its ``default_block_size`` (50 MiB) first opens a GET of the whole object to
    learn its size, closes it, and then fetches the object again in ranged parts, so the server sends (and logs)
    up to twice the object. A short object gives a short file (the caller checks the size); a missing one raises
    `FileNotFoundError`."""
    with open(local, "wb") as f:
        step = DOWNLOAD_PART * DOWNLOAD_PARTS_AT_ONCE
        for at in range(0, size, step):
            starts = list(range(at, min(size, at + step), DOWNLOAD_PART))
            stops = [min(start + DOWNLOAD_PART, size) for start in starts]
            for data in fs.cat_ranges([path] * len(starts), starts, stops):
                if isinstance(data, BaseException):
                    raise data
                f.write(data)
                if len(data) < DOWNLOAD_PART:
                    return
