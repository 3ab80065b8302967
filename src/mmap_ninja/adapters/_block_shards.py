"""The shards of a sharded map at a URL read by blocks (``open_existing(url, fetch="blocks")`` on a sharded map).

A `RemoteShardedMap` opened with ``fetch="blocks"`` (or ``"auto"``) opens each shard it reads as a
`RemoteBlockMap` over the shard's URL: the shard's header is fetched (one small request, kept in a cache entry of
its own), checked against ``shards.json`` (header id and length), and the shard is then read
through the same block machinery as a single map: its checksum records and index fetched once into the one block
cache, and the block holding each sample fetched by ranged requests, checked, and cached by block. With
``fetch="auto"``, a shard whose header does not qualify for blocks (no ``checksums.granularity`` fine enough, too
few blocks; see `choose_fetch`) is downloaded whole as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from mmap_ninja.adapters._block_kinds import block_class
from mmap_ninja.adapters._block_map import RemoteBlockMap, _key, choose_fetch
from mmap_ninja.adapters.cache import Cache
from mmap_ninja.containers.sharded_header import ShardInfo
from mmap_ninja.errors import CorruptMapError, UnfinishedMapError
from mmap_ninja.kinds.maps import KINDS
from mmap_ninja.storage.format import HEADER_FILE, Header

__all__ = ["shard_by_blocks"]


def shard_by_blocks(remote: Any, cache: Cache, k: int, info: ShardInfo, top_raw: bytes, fetch: str, block_size: int,
                    settings: dict[str, Any], options: dict[str, Any],
                    headers: dict[tuple[str, Optional[str]], bytes],
                    whole_cached: bool = False) -> tuple[Optional[RemoteBlockMap], Optional[bytes]]:
    """Shard ``k`` (``info`` as ``shards.json``, whose content is ``top_raw``, lists it) of the sharded map at
    ``remote``: a `RemoteBlockMap` reading it by blocks of ``block_size`` bytes, or None when ``fetch="auto"``
    finds it fits whole downloads better (or ``whole_cached``: the shard is in the cache whole already); and the
    shard's header when it was fetched. A shard read by blocks keeps its header in a cache entry of its own (and
    in ``headers`` for the life of the sharded map), so reopening it, in this process or another, costs no
    request. ``options`` are the sharded map's read options (the block map passes them on to its blocks)."""
    raw = headers.get((info.path, info.id))
    if raw is None and fetch == "auto":
        if whole_cached:
            return None, None
        raw = _fetch_header(remote, k, info)  # (not cached yet: a shard downloaded whole keeps it in its entry)
    header = _checked(remote, k, info, raw) if raw is not None else None
    shard_url = remote.url_of(info.path)
    if header is not None and choose_fetch(fetch, header, block_size, shard_url) != "blocks":
        headers[(info.path, info.id)] = raw  # type: ignore[assignment]
        return None, raw
    raw = _cached_header(remote, cache, k, info, top_raw, raw)
    header = _checked(remote, k, info, raw)
    headers[(info.path, info.id)] = raw
    choose_fetch(fetch, header, block_size, shard_url)  # fetch="blocks": its ValueError for a shard it cannot read
    from mmap_ninja.adapters.remote import _Remote

    shard_remote = _Remote(shard_url, remote._options)
    made = block_class(KINDS[header.kind])(shard_remote, cache, raw, header, None, settings, options, block_size)
    return made, raw


def _fetch_header(remote: Any, k: int, info: ShardInfo) -> bytes:
    rel = f"{info.path}/{HEADER_FILE}"
    try:
        raw: bytes = remote.cat(rel)
    except FileNotFoundError:
        raise CorruptMapError(f"{remote.url_of(rel)} is missing: shard {k} of {remote.url} holds no map"
                              f"{remote.missing_hint}") from None
    return raw


def _checked(remote: Any, k: int, info: ShardInfo, raw: bytes) -> Header:
    """Shard ``k``'s header ``raw``, parsed and checked against ``info`` (its id and length)."""
    from mmap_ninja.adapters.remote import _length, _parse

    header_url = remote.url_of(f"{info.path}/{HEADER_FILE}")
    shard_url = remote.url_of(info.path)
    header = _parse(raw, header_url)
    if header.building:
        raise UnfinishedMapError(f"{shard_url} (shard {k} of {remote.url}) is an unfinished build; it cannot be "
                                 f"read")
    if info.id is not None and header.id != info.id:
        raise CorruptMapError(f"{header_url} has the id {header.id!r}, but the sharded map lists {info.id!r} for "
                              f"shard {k}: the shard was replaced")
    if _length(header) != info.length:
        raise CorruptMapError(f"{shard_url} holds {_length(header)} samples, but the sharded map lists "
                              f"{info.length} for shard {k}")
    return header


def _cached_header(remote: Any, cache: Cache, k: int, info: ShardInfo, top_raw: bytes,
                   fetched: Optional[bytes] = None) -> bytes:
    """Shard ``k``'s header from its cache entry, fetched (or ``fetched`` already) and checked into it when
    missing."""
    identity = info.id if info.id is not None else top_raw

    def fill(stage: Path) -> None:
        raw = fetched if fetched is not None else _fetch_header(remote, k, info)
        _checked(remote, k, info, raw)
        (stage / HEADER_FILE).write_bytes(raw)

    def check(entry: Path) -> None:
        try:
            raw = (entry / HEADER_FILE).read_bytes()
        except OSError as e:
            raise CorruptMapError(f"{entry} (a cached shard header) is unreadable: {e}") from None
        _checked(remote, k, info, raw)

    about = {"url": remote.url_of(info.path), "holds": f"header of shard {k} of {remote.url}", "id": info.id,
             "length": info.length}
    # "header only" keeps this entry's key apart from the shard's whole download, whose key has the same URL and
    # id and its commit where this has its length (the two collided when they were equal).
    entry, fd = cache.acquire(_key(remote.url_of(info.path), HEADER_FILE, identity, info.length, "header only"),
                              fill, check, about)
    try:
        return (entry / HEADER_FILE).read_bytes()
    finally:
        os.close(fd)
