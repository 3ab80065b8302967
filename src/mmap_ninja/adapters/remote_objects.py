"""The names of a map's column objects in object storage (FORMAT.md, "Upload object names").

`upload` writes each column of a map (or of a shard) under ``<column>.<id>-<commit>.bin`` and lists the names in
the uploaded ``header.json`` (a top-level ``"objects"`` key, and ``"objects"`` in ``requires``), so that an upload
never overwrites an object a published header names: an uploader that dies between its objects and its header
leaves the old header naming the old objects, untouched.

Every remote reader asks `column_objects` (or `object_name`) which object holds a column. It returns exactly the
names the header lists, after checking that each is the name of that column with the header's ``id`` and
``commit`` (a `CorruptMapError` naming the header's URL and the column otherwise); a header uploaded before the
feature existed (no ``objects``) names ``<column>.bin``. A local map never has the key: `header_to_upload` adds it
to the uploaded copy of a header, `header_to_keep` takes it out of a downloaded one. `prune` deletes, after an
upload published its headers, the column objects that no header it published names.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from mmap_ninja.errors import CorruptMapError, MapError
from mmap_ninja.storage.format import HEADER_FILE, SHARDS_FILE, Header, header_checksum
from mmap_ninja.storage.store import COLUMN_SUFFIX

if TYPE_CHECKING:
    from mmap_ninja.adapters.remote import _Remote

__all__ = ["OBJECTS", "column_objects", "header_to_keep", "header_to_upload", "object_name", "previous_folders",
           "prune", "uploaded_name", "without_objects"]

OBJECTS = "objects"
"""The ``requires`` feature and the header key of maps uploaded with named objects."""

# What an id must look like to be part of an object name: a map's ids are uuid4 hex strings.
_ID = re.compile(r"[0-9A-Za-z_-]{1,128}")


def uploaded_name(column: str, map_id: str, commit: int) -> str:
    """The object name `upload` gives column ``column`` of the map with header ``id`` and ``commit``.

    Example:

        >>> uploaded_name("data", "5f0c9e3a", 12)
        'data.5f0c9e3a-12.bin'
    """
    return f"{column}.{map_id}-{commit}{COLUMN_SUFFIX}"


def column_objects(header: Header, map_url: str = "") -> dict[str, str]:
    """The name of the object holding each column of the map whose (uploaded) header is ``header``, relative to
    the map's folder ``map_url``: the names the header lists under ``objects``, each checked to be its column's
    name with the header's ``id`` and ``commit``; ``<column>.bin`` for a header without the feature (uploaded
    before it existed). Raises `CorruptMapError` naming ``map_url``'s ``header.json`` and the column for a header
    that names an object of another map or commit, or whose ``objects`` key and feature disagree.

    Example:

        >>> from mmap_ninja.storage.format import Column, Header
        >>> import numpy as np
        >>> plain = Header(kind="numpy", columns={"data": Column(np.dtype("<f4"), 3)}, attrs={}, id="ab12", commit=2)
        >>> column_objects(plain)
        {'data': 'data.bin'}
        >>> listed = plain.evolve(requires=("objects",), extra={"objects": {"data": "data.ab12-2.bin"}})
        >>> column_objects(listed)
        {'data': 'data.ab12-2.bin'}
    """
    where = f"{map_url}/{HEADER_FILE}" if map_url else HEADER_FILE
    listed = header.extra.get(OBJECTS)
    if OBJECTS not in header.requires:
        if listed is not None:
            raise CorruptMapError(f"{where} lists {OBJECTS!r} but does not require the feature {OBJECTS!r}: a reader "
                                  f"that ignored the key would read other objects than those it lists")
        return {name: name + COLUMN_SUFFIX for name in header.columns}
    if not isinstance(listed, Mapping):
        raise CorruptMapError(f"{where} requires {OBJECTS!r} but has no {OBJECTS!r} object naming each column's "
                              f"object (got {type(listed).__name__})")
    if not isinstance(header.id, str) or not _ID.fullmatch(header.id):
        raise CorruptMapError(f"{where} requires {OBJECTS!r} but its id {header.id!r} cannot name objects")
    extra = sorted(set(listed) - set(header.columns), key=str)
    if extra:
        raise CorruptMapError(f"{where} lists an object for {extra[0]!r}, which is not one of its columns")
    names = {}
    for column in header.columns:
        expected = uploaded_name(column, header.id, header.commit)
        name = listed.get(column)
        if name is None:
            raise CorruptMapError(f"{where} lists no object for its column {column!r} (expected {expected!r})")
        if name != expected:
            raise CorruptMapError(
                f"{where} names the object {name!r} for its column {column!r}, which is not the object of this "
                f"map and commit ({expected!r}: id {header.id}, commit {header.commit}): the header and its "
                f"objects do not belong together, refused rather than read")
        names[column] = expected
    return names


def object_name(header: Header, column: str, map_url: str = "") -> str:
    """The name of the object holding ``column`` (see `column_objects`, which checks the header)."""
    names = column_objects(header, map_url)
    if column not in names:
        raise KeyError(f"{map_url or 'the map'} has no column {column!r}")
    return names[column]


def header_to_upload(raw: bytes, header: Header, where: Path) -> tuple[bytes, dict[str, str]]:
    """The header to upload for the local map whose ``header.json`` holds ``raw`` (parsed: ``header``), and the
    object name of each of its columns. The local header plus ``objects`` and the feature (its checksum made
    anew); a 1.0 header is marked 2.0, which has ``requires``. A header without an ``id`` (written before 1.0's
    last revision) has no name to give its objects: it is uploaded as it is, under ``<column>.bin``."""
    if header.id is None:
        return raw, {name: name + COLUMN_SUFFIX for name in header.columns}
    if not _ID.fullmatch(header.id):
        raise CorruptMapError(f"{where}: the map's id {header.id!r} cannot be part of an object name (letters, "
                              f"digits, '_' and '-'); nothing was uploaded")
    names = {name: uploaded_name(name, header.id, header.commit) for name in header.columns}
    content: dict[str, Any] = json.loads(raw)
    content.pop("checksum", None)
    if content["version"][0] < 2:
        content["version"] = [2, 0]
    content["requires"] = [*content.get("requires", []), OBJECTS]
    content[OBJECTS] = names
    content["checksum"] = header_checksum(content)
    return json.dumps(content).encode(), names


def header_to_keep(raw: bytes, header: Header) -> bytes:
    """The ``header.json`` a download writes for the uploaded header ``raw`` (parsed: ``header``): without
    ``objects`` and its feature, an ordinary local map's header (its columns are written back as
    ``<column>.bin``)."""
    if OBJECTS not in header.requires:
        return raw
    content: dict[str, Any] = json.loads(raw)
    content.pop("checksum", None)
    content.pop(OBJECTS, None)
    content["requires"] = [feature for feature in content["requires"] if feature != OBJECTS]
    content["checksum"] = header_checksum(content)
    return json.dumps(content).encode()


def without_objects(header: Header) -> Header:
    """``header`` (an uploaded one, parsed) as a local map's: without the ``objects`` key and its feature. What a
    reader that writes a header of its own into the cache (rather than `header_to_keep`'s bytes) starts from."""
    if OBJECTS not in header.requires and OBJECTS not in header.extra:
        return header
    return header.evolve(requires=tuple(feature for feature in header.requires if feature != OBJECTS),
                         extra={key: value for key, value in header.extra.items() if key != OBJECTS})


def previous_folders(top: Optional[tuple[str, bytes]]) -> list[str]:
    """The map folders (relative to the URL) of the map whose top header was ``(file name, content)`` before an
    upload: ``""`` for a single map, each shard's path for a sharded one; none if it could not be read."""
    if top is None:
        return []
    name, raw = top
    if name == HEADER_FILE:
        return [""]
    from mmap_ninja.containers.sharded_header import read_top_header

    with tempfile.TemporaryDirectory() as scratch:  # checked as a reader checks it: no path leaves the URL
        (Path(scratch) / SHARDS_FILE).write_bytes(raw)
        try:
            return [info.path for info in read_top_header(Path(scratch)).shards]
        except (MapError, OSError, ValueError):
            return []


def prune(remote: _Remote, published: dict[str, set[str]], previous: list[str]) -> list[str]:
    """Delete the column objects no published header names, after an upload published its headers: in each map
    folder it uploaded (``published``: folder -> the object names its header lists), every ``*.bin`` object its
    header does not name; in each folder of the map the upload replaced that the new map does not use
    (``previous``), its ``*.bin`` objects and its ``header.json``. Nothing else is touched (other files under the
    URL are the user's). Returns the deleted objects, relative to the URL."""
    deleted = []
    for folder in dict.fromkeys([*published, *previous]):
        keep = published.get(folder)
        for name in remote.names_in(folder):
            stale = name.endswith(COLUMN_SUFFIX) and (keep is None or name not in keep)
            if stale or (keep is None and name == HEADER_FILE):
                rel = f"{folder}/{name}" if folder else name
                if remote.remove(rel):
                    deleted.append(rel)
    return deleted
