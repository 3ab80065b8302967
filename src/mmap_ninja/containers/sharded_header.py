"""The top-level header of a sharded map, ``shards.json`` (see `mmap_ninja.containers.sharded`): its shards
(`ShardInfo`),
reading it with every check (size, JSON, checksum, version, ``requires``, each shard's entry) and writing it."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from mmap_ninja.errors import CorruptMapError, FormatVersionError, NotAMapError, UnknownFeatureError
from mmap_ninja.storage.format import SHARDS_FILE

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MAX_SHARDS_HEADER_BYTES", "SHARDS_FILE", "ShardInfo", "TopHeader",
           "read_top_header"]

FORMAT_NAME = "mmap_ninja.sharded"  # the format's name on disk (FORMAT.md), not a module path
FORMAT_VERSION = (1, 0)
MAX_SHARDS_HEADER_BYTES = 256 << 20  # about a million shards; anything larger is damage


class ShardInfo:
    """One shard as ``shards.json`` lists it: its path relative to the sharded map, its length and header id."""

    __slots__ = ("id", "length", "path")

    def __init__(self, path: str, length: int, id: Optional[str]):
        self.path = path
        self.length = length
        self.id = id

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "length": self.length, "id": self.id}

    def __repr__(self) -> str:
        return f"ShardInfo(path={self.path!r}, length={self.length}, id={self.id!r})"



class TopHeader:
    """The content of ``shards.json``: the shards' kind and schema, the shards, the map's id and commit."""

    __slots__ = ("attrs", "commit", "extra", "id", "kind", "metadata", "requires", "shards")

    def __init__(self, kind: str, attrs: dict[str, Any], shards: list[ShardInfo], *, id: str, commit: int,
                 requires: Sequence[str] = (), metadata: Optional[dict[str, Any]] = None,
                 extra: Optional[dict[str, Any]] = None):
        self.kind = kind
        self.attrs = attrs
        self.shards = shards
        self.id = id
        self.commit = commit
        self.requires = list(requires)
        self.metadata = metadata or {}
        self.extra = extra or {}

    def encode(self) -> bytes:
        content: dict[str, Any] = {
            "format": FORMAT_NAME, "version": list(FORMAT_VERSION), "id": self.id, "commit": self.commit,
            "kind": self.kind, "requires": self.requires, "attrs": self.attrs, "metadata": self.metadata,
            "length": sum(s.length for s in self.shards), "shards": [s.to_json() for s in self.shards],
        }
        content.update(self.extra)
        content["checksum"] = _checksum(content)
        return json.dumps(content).encode()


TOP_KEYS = {"format", "version", "id", "commit", "kind", "requires", "attrs", "metadata", "length", "shards",
             "checksum"}


def _checksum(content: dict[str, Any]) -> str:
    return f"crc32:{zlib.crc32(json.dumps(content).encode()):08x}"


def read_top_header(directory: Path) -> TopHeader:
    """``directory``'s ``shards.json``, checked (a `NotAMapError`, `CorruptMapError`, `FormatVersionError` or
    `UnknownFeatureError` names what is wrong)."""
    path = directory / SHARDS_FILE
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_SHARDS_HEADER_BYTES:
                raise CorruptMapError(f"{path} is {size:,} bytes, more than a shards header may be")
            raw = f.read(size + 1)
    except (FileNotFoundError, NotADirectoryError):
        if directory.exists() and not directory.is_dir():
            raise NotAMapError(f"{directory} is a file, not a sharded map directory") from None
        if not directory.is_dir():
            raise NotAMapError(f"{directory}: no such sharded map directory") from None
        raise NotAMapError(f"{directory} holds no sharded map ({SHARDS_FILE} is missing)") from None
    try:
        content = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptMapError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT_NAME:
        raise CorruptMapError(f"{path} is not a mmap_ninja sharded map header")
    version = content.get("version")
    if not (isinstance(version, list) and len(version) == 2 and all(type(v) is int for v in version)):
        raise CorruptMapError(f"{path} has no valid format version: {version!r}")
    if version[0] > FORMAT_VERSION[0]:  # before the checksum, which a newer major version may compute otherwise
        raise FormatVersionError(f"{directory} is a sharded map of format version {version[0]}.{version[1]}, newer "
                                 f"than this mmap_ninja reads ({FORMAT_VERSION[0]}.{FORMAT_VERSION[1]})")
    stored = content.pop("checksum", None)
    if stored is not None and stored != _checksum(content):
        raise CorruptMapError(f"{path} is corrupt: its checksum {stored!r} does not match its content")
    requires = content.get("requires", [])
    if not isinstance(requires, list) or requires:
        raise UnknownFeatureError(f"{directory} requires the feature(s) {requires!r} of sharded maps, which this "
                                  f"mmap_ninja does not know; upgrade mmap_ninja to read it")
    kind, attrs, shards = content.get("kind"), content.get("attrs"), content.get("shards")
    map_id, commit, metadata = content.get("id"), content.get("commit"), content.get("metadata", {})
    if not isinstance(kind, str) or not isinstance(attrs, dict) or not isinstance(shards, list):
        raise CorruptMapError(f"{path} needs a string 'kind', an object 'attrs' and a list 'shards'")
    if not isinstance(map_id, str) or type(commit) is not int or not isinstance(metadata, dict):
        raise CorruptMapError(f"{path} needs a string 'id', an integer 'commit' and an object 'metadata'")
    infos = []
    for k, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise CorruptMapError(f"{path}: shard {k} is not an object: {entry!r}")
        rel, length, shard_id = entry.get("path"), entry.get("length"), entry.get("id")
        if (not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts
                or type(length) is not int or length < 0 or not (shard_id is None or isinstance(shard_id, str))):
            raise CorruptMapError(f"{path}: shard {k} needs a relative 'path' inside the map, a non-negative "
                                  f"'length' and an 'id', got {entry!r}")
        infos.append(ShardInfo(rel, length, shard_id))
    return TopHeader(kind, attrs, infos, id=map_id, commit=commit, requires=requires, metadata=metadata,
                      extra={k: v for k, v in content.items() if k not in TOP_KEYS})
