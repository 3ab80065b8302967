"""A map at a URL, described and checked: `remote_listing` (headers and object sizes, what ``mmap-ninja info``
prints) and `verify_remote` (``mmap_ninja.verify`` and ``mmap-ninja verify`` of a URL).

A description reads the headers (``shards.json`` and every shard's ``header.json``) and lists the objects' sizes:
no column is downloaded. A shallow check also fetches each map's (each shard's) index columns, every column but
its data, its checksum records and its key index (the offsets, a ragged map's ``shape_offsets`` and ``dims``, an
images map's ``shapes`` and ``formats``), when they hold at most `INDEX_CHECK_LIMIT` bytes, and checks them as a
local shallow `verify` does (`mmap_ninja.containers.verify.index_problems`): offsets from 0, never decreasing,
ending at the committed data; each ragged sample's shape against its offsets; each image's shape and format. A
map with larger index columns gets a note saying they were not checked. A deep check then downloads every map
(or shard) into the cache, where each download is checked as `mmap_ninja.adapters.remote` checks every download,
and verifies every checksum of the cached copy, so a copy that rotted in the cache is found too.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmap_ninja.adapters.remote import (
    _fetch_top,
    _length,
    _named,
    _parse,
    _Remote,
    _remote_errors,
    open_remote,
)
from mmap_ninja.adapters.remote_objects import column_objects
from mmap_ninja.containers.sharded import SHARDS_FILE, ShardInfo
from mmap_ninja.containers.sharded_header import read_top_header
from mmap_ninja.containers.verify import Report, index_problems, verify
from mmap_ninja.errors import CorruptMapError, FormatVersionError, NotAMapError, UnfinishedMapError
from mmap_ninja.kinds.maps import KINDS
from mmap_ninja.storage.format import HEADER_FILE, Header
from mmap_ninja.storage.store import CHECKSUMS, PathLike, is_derived

__all__ = ["INDEX_CHECK_LIMIT", "RemoteListing", "RemoteMapListing", "remote_listing", "verify_remote"]

INDEX_CHECK_LIMIT = 64 << 20
"""The most bytes of index columns a shallow `verify_remote` fetches from one map (one shard) to check them."""


@dataclass
class RemoteMapListing:
    """One map at a URL (a single map, or a shard): its header (None if it could not be read: ``problem`` says
    why) and the size of each of its objects, by file name."""

    url: str
    header: Optional[Header] = None
    sizes: dict[str, int] = field(default_factory=dict)
    problem: Optional[str] = None


@dataclass
class RemoteListing:
    """The headers of the map at ``url`` and its objects' sizes. A sharded map has ``shards`` (as ``shards.json``
    lists them) and a listing of each; a single map has ``maps`` of one entry."""

    url: str
    sharded: bool
    kind: Optional[str] = None
    attrs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    shards: list[ShardInfo] = field(default_factory=list)
    maps: list[RemoteMapListing] = field(default_factory=list)


def remote_listing(url: str, storage_options: Optional[dict[str, Any]] = None) -> RemoteListing:
    """Fetch the headers of the map at ``url`` and list its objects' sizes (nothing else is downloaded). Raises
    `NotAMapError` when ``url`` holds no map, `CorruptMapError` (or `FormatVersionError`) for a top header that
    cannot be read; a shard's damage is kept in its listing's ``problem``."""
    remote = _Remote(url, storage_options)
    name, raw = _fetch_top(remote)
    if name == HEADER_FILE:
        header = _parse(raw, remote.url_of(HEADER_FILE))
        return RemoteListing(remote.url, False, header.kind, header.attrs, header.metadata,
                             maps=[RemoteMapListing(remote.url, header, _sizes(remote, ""))])
    with tempfile.TemporaryDirectory() as scratch:  # parse exactly these bytes, as a local reader would
        (Path(scratch) / SHARDS_FILE).write_bytes(raw)
        with _named(Path(scratch), remote.url):
            top = read_top_header(Path(scratch))
    listing = RemoteListing(remote.url, True, top.kind, dict(top.attrs), dict(top.metadata), list(top.shards))
    for info in top.shards:
        listing.maps.append(_shard_listing(remote, info))
    return listing


def _shard_listing(remote: _Remote, info: ShardInfo) -> RemoteMapListing:
    url = remote.url_of(info.path)
    entry = RemoteMapListing(url)
    try:
        raw = remote.cat(f"{info.path}/{HEADER_FILE}")
    except FileNotFoundError:
        entry.problem = f"{remote.url_of(SHARDS_FILE)} lists the shard {info.path!r}, but {url} holds no map"
        return entry
    try:
        entry.header = _parse(raw, remote.url_of(f"{info.path}/{HEADER_FILE}"))
    except (CorruptMapError, FormatVersionError) as e:
        entry.problem = str(e)
        return entry
    entry.sizes = _sizes(remote, info.path)
    return entry


def _sizes(remote: _Remote, rel: str) -> dict[str, int]:
    """The size of every object directly in the map folder ``rel`` (one listing request)."""
    with _remote_errors(remote.url_of(rel)):
        path = remote._path(rel)
        remote.fs.invalidate_cache(path)  # a listing cached by the client may predate an upload
        try:
            entries = remote.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
    return {str(e["name"]).rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0)
            for e in entries if e.get("type") == "file"}


def verify_remote(url: str, deep: bool = False, *, progress: bool = False,
                  storage_options: Optional[dict[str, Any]] = None, cache_dir: Optional[PathLike] = None) -> Report:
    """`mmap_ninja.verify` for a map at ``url``: the headers, that every column object holds its committed bytes,
    and a sharded map's shards against ``shards.json`` (ids and lengths), from headers and object sizes only.
    With ``deep=True`` also every byte: each map (each shard) is downloaded into the cache (``cache_dir``) if it
    is not there, and its cached copy is verified with every checksum. Raises `NotAMapError` if ``url`` holds no
    map."""
    report = Report(url.rstrip("/"), deep=deep)  # a URL stays a str
    try:
        listing = remote_listing(url, storage_options)
    except (CorruptMapError, FormatVersionError) as e:
        report.problems.append(str(e))
        return report
    report.path = listing.url
    report.kind = listing.kind
    remote = _Remote(listing.url, storage_options)
    if not listing.sharded:
        report.length = _check_listed(listing.maps[0], "", report)
        if report.length is not None:
            _check_index_columns(remote, "", listing.maps[0], "", report)
    else:
        report.length = sum(info.length for info in listing.shards)
        starts = np.cumsum([0] + [info.length for info in listing.shards]).tolist()
        for k, (info, entry) in enumerate(zip(listing.shards, listing.maps)):
            where = f"shard {k} ({info.path}, samples {starts[k]}..{starts[k + 1] - 1} of the sharded map): "
            length = _check_listed(entry, where, report)
            if entry.header is None or length is None:
                continue
            if entry.header.kind != listing.kind:
                report.problems.append(f"{where}{entry.url} holds a {entry.header.kind!r} map; {SHARDS_FILE} says "
                                       f"the shards are {listing.kind!r}")
            elif length != info.length:
                report.problems.append(f"{where}{entry.url} holds {length} samples, but {SHARDS_FILE} records "
                                       f"{info.length}: it was changed after it was added")
            elif info.id is not None and entry.header.id != info.id:
                report.problems.append(f"{where}{entry.url} was replaced after it was added: its header id differs "
                                       f"from the one {SHARDS_FILE} records")
            else:
                _check_index_columns(remote, info.path, entry, where, report)
    if deep and report.ok:
        _verify_downloaded(listing, report, progress, storage_options, cache_dir)
    return report


def _check_listed(entry: RemoteMapListing, where: str, report: Report) -> Optional[int]:
    """The structural checks a header and the objects' sizes allow; returns the map's length (None if damaged)."""
    if entry.problem is not None:
        report.problems.append(where + entry.problem)
        return None
    header = entry.header
    assert header is not None
    cls = KINDS.get(header.kind)
    if cls is None:
        report.problems.append(f"{where}{entry.url} holds a map of kind {header.kind!r}, which this mmap_ninja does "
                               f"not know: nothing can read it")
        return None
    try:
        needed = cls.layout.columns_for(header.attrs)
    except (CorruptMapError, KeyError, TypeError, ValueError) as e:
        report.problems.append(f"{where}{entry.url}/{HEADER_FILE} has attributes a {header.kind!r} map cannot "
                               f"have: {e}")
        return None
    missing = [name for name in needed if name not in header.columns]
    if missing:
        report.problems.append(f"{where}{entry.url}/{HEADER_FILE} lists no column {missing[0]!r}, which a "
                               f"{header.kind!r} map has")
        return None
    if header.building:
        report.notes.append(f"{where}{entry.url} is an unfinished build (its from_* call did not return)")
    sound = True
    objects = column_objects(header, entry.url)  # checked when the header was parsed
    for name, column in header.columns.items():
        file = objects[name]
        need = column.length * column.dtype.itemsize
        have = entry.sizes.get(file)
        if have is None:
            report.problems.append(f"{where}{entry.url}/{file} is missing (the header lists column {name!r})")
            sound = False
        elif have < need:
            report.problems.append(f"{where}{entry.url}/{file} is truncated: it holds {have} bytes, the header "
                                   f"commits {need}")
            sound = False
    return _length(header) if sound else None


def _check_index_columns(remote: _Remote, rel: str, entry: RemoteMapListing, where: str, report: Report) -> None:
    """Fetch the index columns of the map at ``rel`` (sizes checked by `_check_listed`) and check them as a local
    shallow verify does (see the module's docstring); a note instead when they hold more than
    `INDEX_CHECK_LIMIT` bytes."""
    header = entry.header
    assert header is not None
    index_names = [name for name in header.columns
                   if name != CHECKSUMS and not is_derived(name) and name.rsplit(".", 1)[-1] not in _NOT_INDEX]
    nbytes = sum(header.columns[name].length * header.columns[name].dtype.itemsize for name in index_names)
    if nbytes > INDEX_CHECK_LIMIT:
        report.notes.append(f"{where}{entry.url}: its index columns ({nbytes} bytes) were not fetched, so its offsets "
                            f"and shapes were not checked; verify with deep=True checks them")
        return
    objects = column_objects(header, entry.url)
    ranges = [(objects[name], 0, header.columns[name].length * header.columns[name].dtype.itemsize)
              for name in index_names]
    columns: dict[str, np.ndarray[Any, Any]] = {}
    for name, (_, _, stop), raw in zip(index_names, ranges, remote.cat_ranges(rel, ranges)):
        if len(raw) != stop:
            report.problems.append(f"{where}{entry.url}/{objects[name]} holds {len(raw)} bytes where the header "
                                   f"commits {stop}")
            return
        columns[name] = np.frombuffer(raw, dtype=header.columns[name].dtype)
    for name, column in header.columns.items():  # the data the index points into: measured, never read
        if name not in columns:
            columns[name] = np.lib.stride_tricks.as_strided(np.zeros(1, column.dtype), (column.length,), (0,),
                                                            writeable=False)
    report.problems += [f"{where}{entry.url}: {problem}"
                        for problem in index_problems(columns, header.kind, header.attrs)]


_NOT_INDEX = ("data", "dictionary")
"""The columns (by name, after a records field's prefix) a shallow check does not fetch: the samples' bytes."""


def _verify_downloaded(listing: RemoteListing, report: Report, progress: bool,
                       storage_options: Optional[dict[str, Any]], cache_dir: Optional[PathLike]) -> None:
    """Download every map of ``listing`` into the cache (if it is not there) and verify the copies deeply."""
    try:
        opened = open_remote(listing.url, storage_options=storage_options, cache_dir=cache_dir)
    except (CorruptMapError, UnfinishedMapError, NotAMapError) as e:
        report.problems.append(str(e))
        return
    try:
        if not listing.sharded:
            _verify_copy(lambda: opened.local, "", listing.url, report, progress)
            return
        starts = opened.shard_starts
        for k, info in enumerate(listing.shards):
            where = f"shard {k} ({info.path}, samples {starts[k]}..{starts[k + 1] - 1} of the sharded map): "
            _verify_copy(lambda k=k: opened.shard(k), where, f"{listing.url}/{info.path}", report, progress)
    finally:
        opened.close()


def _verify_copy(download: Any, where: str, url: str, report: Report, progress: bool) -> None:
    try:
        local = download()
    except (CorruptMapError, UnfinishedMapError) as e:  # the download's own check failed (it names the URL)
        report.problems.append(where + str(e))
        return
    sub = verify(local.path, deep=True, progress=progress)
    local_path = str(local.path)
    report.bytes_hashed += sub.bytes_hashed
    report.checksums_missing |= sub.checksums_missing
    report.problems += [where + p.replace(local_path, f"{url} (cached copy {local_path})") for p in sub.problems]
    report.notes += [where + n.replace(local_path, url) for n in sub.notes]
