"""Ranged block reads of a map in object storage: which bytes a block of samples needs, fetching them with ranged
requests (fsspec ``cat_ranges``, concurrent on stores that support it), checking them against their checksum
records, and writing a block as a small ordinary map (the block's samples, with its index rebased) that the kind's
own container reads.

A block of size ``B`` (bytes) holds the samples whose first byte in the map's largest data column lies in
``[k·B, (k+1)·B)``; its bytes in every data column are widened to whole checksum records, so every byte fetched is
checked before it is used. Index columns (offsets) and whole columns (a codec's dictionary) are fetched once per
map. See `mmap_ninja.adapters._block_map` for the container and FORMAT.md ("Finer-grained checksum records").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmap_ninja.adapters.remote_objects import object_name, without_objects
from mmap_ninja.checksums import RECORD_DTYPE, column_id, hasher
from mmap_ninja.errors import ChecksumMismatchError, CorruptMapError
from mmap_ninja.format import HEADER_FILE, Column, Header, encode_header
from mmap_ninja.storage import CHECKSUMS, COLUMN_SUFFIX, is_derived

__all__ = ["BlockPlan", "BlocksUnsupported", "Range", "column_object", "fetch_checked", "plan_columns"]

INDEX_HEADER = "remote-header.json"  # the remote header, kept beside a map's fetched index
PLAN_FILE = "blocks.json"


def column_object(header: Header, column: str) -> str:
    """The name of the object holding ``column`` of the map whose header is ``header`` (relative to its URL): the
    one place block reads ask (`mmap_ninja.adapters.remote_objects` checks the names an uploaded header lists)."""
    return object_name(header, column)


class BlocksUnsupported(ValueError):
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
    `BlocksUnsupported` naming what prevents block reads."""
    if header.checksums is None or CHECKSUMS not in header.columns:
        raise BlocksUnsupported("it has no checksum records to check blocks against")
    roles: dict[str, tuple[str, Any]] = {}
    for name, column in header.columns.items():
        if name == CHECKSUMS:
            continue
        if is_derived(name):
            raise BlocksUnsupported(f"it has the derived column {name!r} (a key index), which is read whole")
        prefix, base = _split(name)
        if base in ("offsets", "shape_offsets"):
            if column.length != length + 1 or column.dtype != np.dtype("<i8"):
                raise BlocksUnsupported(f"its index column {name!r} does not hold one entry per sample and one more")
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
            raise BlocksUnsupported(f"its column {name!r} holds {column.length} items for {length} samples")
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
    return {name for name, (role, _) in roles.items() if role in ("indexed", "stride") and name != largest
            and 16 * _nbytes(header, name) <= _nbytes(header, largest)}


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
    directory holding them), which samples each block holds and which bytes of each column it needs."""

    def __init__(self, header: Header, length: int, roles: dict[str, tuple[str, Any]], folder: Path,
                 block_size: int):
        self.header = header
        self.length = length
        self.roles = roles
        self.folder = folder
        self.block_size = block_size
        count = header.columns[CHECKSUMS].length
        self.records = np.fromfile(folder / (CHECKSUMS + COLUMN_SUFFIX), dtype=RECORD_DTYPE, count=count)
        self.index: dict[str, np.ndarray[Any, Any]] = {}
        for name, (role, _) in roles.items():
            if role == "index":
                self.index[name] = np.fromfile(folder / (name + COLUMN_SUFFIX), dtype="<i8", count=length + 1)
        self.side = side_columns(header, roles)
        self._own_records = {name: records_of(self.records, name) for name, (role, _) in roles.items()
                             if role in ("indexed", "stride") and name not in self.side}
        self.largest = largest_column(header, roles)

    def nbytes(self, name: str) -> int:
        column = self.header.columns[name]
        return column.length * column.dtype.itemsize

    def _unit(self, name: str) -> int:
        """Bytes per index unit of an indexed column (ragged data is bytes indexed in elements)."""
        index = self.index[self.roles[name][1]]
        end = int(index[-1])
        return self.nbytes(name) // end if end else 1

    def byte_range(self, name: str, first: int, stop: int) -> tuple[int, int]:
        """The bytes of column ``name`` holding samples ``first .. stop - 1``."""
        role, arg = self.roles[name]
        if role == "indexed":
            unit = self._unit(name)
            index = self.index[arg]
            return int(index[first]) * unit, int(index[stop]) * unit
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

    def blocks(self) -> list[tuple[int, int, int]]:
        """``(block number, first sample, stop sample)`` of every block holding samples, in order."""
        if not self.length:
            return []
        numbers = self.sample_starts() // self.block_size
        cuts = (np.flatnonzero(np.diff(numbers)) + 1).tolist()
        firsts = [0, *cuts]
        stops = [*cuts, self.length]
        return [(int(numbers[a]), a, b) for a, b in zip(firsts, stops)]

    def ranges(self, first: int, stop: int) -> list[Range]:
        """The ranges of whole records of every data column holding samples ``first .. stop - 1``."""
        found = []
        for name, records in self._own_records.items():
            lo, hi = self.byte_range(name, first, stop)
            found.append(widen(records, name, lo, hi))
        return found

    def write_block(self, stage: Path, first: int, stop: int, wanted: list[Range], fetched: list[bytes]) -> None:
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
                index = self.index[name]
                content: Any = np.ascontiguousarray(index[first:stop + 1] - index[first]).astype("<i8")
            elif role == "whole":
                content = (self.folder / (name + COLUMN_SUFFIX)).read_bytes()
            elif name in self.side:
                lo, hi = self.byte_range(name, first, stop)
                with open(self.folder / (name + COLUMN_SUFFIX), "rb") as f:
                    f.seek(lo)
                    content = f.read(hi - lo)
            else:
                lo, hi = self.byte_range(name, first, stop)
                got_range, data = by_column[name]
                content = memoryview(data)[lo - got_range.start:hi - got_range.start]
            raw = memoryview(content).cast("B") if not isinstance(content, bytes) else memoryview(content)
            (stage / (name + COLUMN_SUFFIX)).write_bytes(raw)
            columns[name] = Column(dtype, raw.nbytes // dtype.itemsize)
            records.append((column_id(name), 0, 0, raw.nbytes, hash_bytes([raw])))
        table = np.array(records, dtype=RECORD_DTYPE)
        table.tofile(stage / (CHECKSUMS + COLUMN_SUFFIX))
        columns[CHECKSUMS] = Column(RECORD_DTYPE, len(table))
        block_header = Header(kind=self.header.kind, columns=columns, attrs=self.header.attrs, id=self.header.id,
                              commit=self.header.commit, requires=without_objects(self.header).requires,
                              metadata=self.header.metadata, checksums=algorithm)
        (stage / HEADER_FILE).write_bytes(encode_header(block_header))


def index_ranges(header: Header, roles: dict[str, tuple[str, Any]]) -> list[tuple[str, int, int]]:
    """``(column, start, stop)`` of the columns a map's index entry holds: the index, whole and side columns."""
    wanted = [(CHECKSUMS, 0, header.columns[CHECKSUMS].length * RECORD_DTYPE.itemsize)]
    side = side_columns(header, roles)
    for name, (role, _) in roles.items():
        if role in ("index", "whole") or name in side:
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
    from mmap_ninja.verify import verify

    report = verify(entry, deep=True)
    if not report.ok:
        raise CorruptMapError(f"{entry} (a cached block) is damaged: {'; '.join(report.problems)}")


def describe(url: str, first: int, stop: int, number: Optional[int]) -> str:
    return f"block {number} (samples {first}..{stop - 1}) of {url}"
