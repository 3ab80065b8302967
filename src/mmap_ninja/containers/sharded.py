"""Sharded maps: one dataset made of many ordinary maps (its shards), read as if it were one map.

A sharded map is a directory holding ``shards.json`` (the top-level header: the kind and schema of the shards
and, for each shard, its path relative to the directory, its length and its header's ``id``) and the shard
directories, each an ordinary map of one kind and schema. Opening reads only ``shards.json``; a shard is opened
on first use, and at most ``max_open_shards`` are kept open (least recently used first out), so a dataset of
thousands of shards keeps a bounded number of files and mappings.

`merge` makes a sharded map out of existing maps without copying their data: it moves each map into the
directory by ``os.rename`` and publishes the new ``shards.json`` by an atomic rename, last. A merge that dies
midway leaves the old ``shards.json`` (or none) in place, so readers see the old sharded map; the next `merge`,
`ShardedMap.add_shards` or `recover_merge` on that directory moves the maps the dead merge had moved back where
they were (they are listed in ``.merge-journal.json`` before the first move).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Optional

from mmap_ninja.containers.sharded_header import FORMAT_VERSION, ShardInfo
from mmap_ninja.containers.sharded_header import TopHeader as _TopHeader
from mmap_ninja.containers.sharded_header import read_top_header as _read_top_header
from mmap_ninja.containers.sharded_map import (
    DEFAULT_MAX_OPEN_FILES,
    DEFAULT_MAX_OPEN_SHARDS,
    ShardedMap,
    register_merge,
)
from mmap_ninja.errors import (
    CorruptMapError,
    FormatVersionError,
    MapExistsError,
    NotAMapError,
    SchemaMismatchError,
    UnknownFeatureError,
)
from mmap_ninja.kinds.keys import key_field, key_mismatch
from mmap_ninja.kinds.legacy import is_legacy_map
from mmap_ninja.kinds.maps import KINDS
from mmap_ninja.kinds.shard_guard import register_sharded_reader
from mmap_ninja.storage import _osfile
from mmap_ninja.storage._fsio import check_entry, fsync_dir, fsync_tree
from mmap_ninja.storage.dirs import (
    directory_lock,
    lock_directory,
    make_folders,
    refuse_foreign,
    release,
    replace_file,
    unmake_folders,
)
from mmap_ninja.storage.format import SHARDS_FILE, Header, check_metadata, read_header
from mmap_ninja.storage.header_slots import FEATURE as SLOTS_FEATURE
from mmap_ninja.storage.journal import check_journal, move_map
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, LOCK_FILE, PathLike, absolute, resolved

__all__ = [
    "DEFAULT_MAX_OPEN_FILES",
    "DEFAULT_MAX_OPEN_SHARDS",
    "FORMAT_VERSION",
    "SHARDS_DIR",
    "SHARDS_FILE",
    "SchemaMismatchError",
    "ShardInfo",
    "ShardedMap",
    "directory_lock",
    "is_sharded",
    "merge",
    "publish_shards",
    "recover_merge",
    "shard_schema",
]

JOURNAL_FILE = ".merge-journal.json"
SHARDS_DIR = "shards"



def is_sharded(path: PathLike) -> bool:
    """Whether ``path`` is the directory of a sharded map (it holds ``shards.json``)."""
    return (absolute(path) / SHARDS_FILE).is_file()


def shard_schema(header: Header) -> dict[str, Any]:
    """What shards of one sharded map must agree on: the kind, the schema part of the attributes (the kind's
    `Layout.shared_attrs`: dtype, sample shape, codec, field names and types, ... but not facts of one map's
    samples such as a ragged map's ``ndims`` or an images map's ``formats``), and the features a reader needs."""
    return _schema(header.kind, header.attrs, header.requires)


def _schema(kind: str, attrs: dict[str, Any], requires: Sequence[str]) -> dict[str, Any]:
    cls = KINDS.get(kind)
    shared = cls.layout.shared_attrs(attrs) if cls is not None else dict(attrs)  # unknown: refused by its count
    # The commit protocol is a fact of one shard (each is read through its own header), not of the samples: a
    # slot map (Windows' default) and a renamed one merge and blend. Codecs' and records' features still count.
    return {"kind": kind, "attrs": shared, "requires": sorted(f for f in requires if f != SLOTS_FEATURE)}


def _same_schema(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, and in the same order where order means something (a records map's fields; other keys are sorted)."""
    return a == b and json.dumps(a) == json.dumps(b)


# ------------------------------------------------------------------ merging


def _flock(directory: Path, timeout: Optional[float]) -> int:
    return lock_directory(directory, timeout, what="the sharded map")


def publish_shards(out_dir: PathLike, shard_paths: Sequence[str], kind: str, *,
                   metadata: Optional[dict[str, Any]] = None, extra: Optional[dict[str, Any]] = None) -> ShardedMap:
    """Publish ``shards.json`` for maps already inside ``out_dir`` at the relative ``shard_paths`` (a merge by
    metadata: nothing moves), after checking that each is a finished map of ``kind`` and that they share one
    schema; returns the sharded map open. ``extra`` holds further top-level keys (e.g. where the shards came
    from). The caller holds `directory_lock` (a builder that put the shards there)."""
    out = absolute(out_dir)
    infos: list[ShardInfo] = []
    expected: Optional[dict[str, Any]] = None
    reference = ""
    cls = KINDS[kind]
    for rel in shard_paths:
        path = out / rel
        header = read_header(path)
        if header.building:
            raise ValueError(f"{path} is an unfinished build and cannot be published as a shard")
        schema = shard_schema(header)
        length = cls.layout.count(header.lengths, header.attrs)
        if schema["kind"] != kind:
            raise SchemaMismatchError(f"{path} holds a {schema['kind']!r} map, not a {kind!r} one")
        if length and expected is None:
            expected, reference = schema, rel
        elif length and expected is not None and not _same_schema(schema, expected):
            raise SchemaMismatchError(f"{path} cannot be published with {reference}: it has "
                                      f"{_describe_mismatch(expected, schema)}")
        infos.append(ShardInfo(rel, length, header.id))
    if expected is None:
        expected = shard_schema(read_header(out / shard_paths[0])) if shard_paths else \
            _schema(kind, cls.layout.attrs(), [])
    previous = _read_top_header(out) if (out / SHARDS_FILE).exists() else None
    top = _TopHeader(kind, expected["attrs"], infos, id=previous.id if previous is not None else uuid.uuid4().hex,
                     commit=previous.commit + 1 if previous is not None else 1, metadata=check_metadata(metadata),
                     extra=extra)
    replace_file(out / SHARDS_FILE, top.encode(), durable=True)
    return ShardedMap(out)


class _Source:
    __slots__ = ("header", "path")

    def __init__(self, path: Path, header: Header):
        self.path = path
        self.header = header


def _check_source(path: Path, out_dir: Path, copy: bool) -> _Source:
    if path.is_symlink() and not copy:  # a rename would move the link, which then dangles or points outside
        raise ValueError(f"{path} is a symbolic link to {path.resolve()}; merge moves maps by rename: give the "
                         f"map's own path, or pass copy=True to copy it")
    if is_sharded(path):
        raise ValueError(f"{path} is itself a sharded map; merging sharded maps is not supported")
    owner = next((parent for parent in path.parents if is_sharded(parent)), None)
    if owner is not None:  # moving it would take it out of the sharded map that lists it
        raise ValueError(f"{path} is a shard of the sharded map {owner}; merge maps that no sharded map holds")
    if is_legacy_map(path):
        raise NotAMapError(f"{path} is a map of mmap_ninja 0.9.0; convert it first (mmap-ninja convert SRC DST), "
                           f"then merge the converted map")
    header = read_header(path)  # NotAMapError / CorruptMapError / UnknownFeatureError name the path
    if header.building:
        raise ValueError(f"{path} is an unfinished build; finish (or re-run) it before merging it")
    real, real_out = resolved(path), resolved(out_dir)  # where they are, whatever links their paths go through
    if real == real_out or real_out in real.parents:
        raise ValueError(f"{path} is inside the sharded map {out_dir} already")
    if real in real_out.parents:
        raise ValueError(f"{out_dir} lies inside the map {path}, which cannot be moved into it")
    return _Source(path, header)


def _describe_mismatch(expected: dict[str, Any], got: dict[str, Any]) -> str:
    if expected["kind"] != got["kind"]:
        return f"kind {got['kind']!r} instead of {expected['kind']!r}"
    difference = _first_difference(expected["attrs"], got["attrs"], "")
    return difference or f"requires {got['requires']!r} instead of {expected['requires']!r}"


def _first_difference(expected: Any, got: Any, where: str) -> Optional[str]:
    """The first place where two schemas differ, as ``"fields.tokens.attrs.dtype '<f4' instead of '<i4'"``."""
    if not (isinstance(expected, dict) and isinstance(got, dict)):
        return None if expected == got else f"{where or 'attrs'} {got!r} instead of {expected!r}"
    for key in [*expected, *(k for k in got if k not in expected)]:
        name = f"{where}.{key}" if where else str(key)
        if key not in got:
            return f"no {name} (the other has {expected[key]!r})"
        if key not in expected:
            return f"{name} {got[key]!r}, which the other has not"
        difference = _first_difference(expected[key], got[key], name)
        if difference:
            return difference
    if list(expected) != list(got):
        return f"{where or 'attrs'} in the order {list(got)} instead of {list(expected)}"
    return None


class _KeyCheck:
    """The shards of one sharded map are all keyed by the same field, or none is (`index_of` asks each shard for
    the same field): the first map seen (an existing shard, when appending) sets which."""

    def __init__(self, out: Path, existing: Optional[_TopHeader]):
        self.reference: Optional[tuple[Path, Optional[str]]] = None
        if existing is not None and existing.shards:
            path = out / existing.shards[0].path
            with suppress(CorruptMapError, NotAMapError, FormatVersionError):  # damage: the schema check says it
                self.reference = (path, key_field(read_header(path).attrs))

    def check(self, path: Path, header: Header) -> None:
        if self.reference is None:
            self.reference = (path, key_field(header.attrs))
        mismatch = key_mismatch(path, key_field(header.attrs), *self.reference)
        if mismatch is not None:
            raise SchemaMismatchError(f"{path} cannot be merged with {self.reference[0]}: {mismatch}")


def _sample_count(source: _Source) -> int:
    cls = KINDS.get(source.header.kind)
    if cls is None:
        raise UnknownFeatureError(f"{source.path} holds a map of kind {source.header.kind!r}, unknown here")
    return cls.layout.count(source.header.lengths, source.header.attrs)


def _same_file_system(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def merge(out_dir: PathLike, paths: Sequence[PathLike], *, copy: bool = False,
          metadata: Optional[dict[str, Any]] = None,
          lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT) -> ShardedMap:
    """Make the maps at ``paths`` the shards of the sharded map ``out_dir`` (created, or appended to) and
    return it open. No data is copied: each map is moved into ``out_dir/shards/`` by ``os.rename`` and referred
    to by its relative path, so ``out_dir`` is one self-contained directory. Maps on another file system, and
    symbolic links to maps, are refused unless ``copy=True`` (which copies them, leaving the originals in place).
    Maps of mmap_ninja 0.9.0 are converted first (``mmap-ninja convert``).

    Every map must be complete and share one kind, dtype, schema and codec (with the sharded map's, when
    appending), or nothing is moved and a `SchemaMismatchError` names the first map that differs and how.
    ``shards.json`` is replaced by one atomic rename, after every move: a reader sees the old sharded map or the
    new one. A refused merge leaves no folder it made. If the process dies midway, the next `merge` into
    ``out_dir`` (or `recover_merge`) moves the maps back to where they were.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap, merge
        >>> for k in range(2):
        ...     RaggedMmap.from_lists(f"day{k}", [np.arange(k + 1)], overwrite=True).close()
        >>> days = merge("days", ["day0", "day1"])
        >>> len(days), days[1], sorted(p.name for p in (days.path / "shards").iterdir())
        (2, array([0, 1]), ['shard-000000', 'shard-000001'])
    """
    out = absolute(out_dir)
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError("merge() takes a sequence of map paths, not a single path")
    checked_metadata = None if metadata is None else check_metadata(metadata)  # before anything is moved
    sources_paths = [absolute(p) for p in paths]
    real_paths = [resolved(p) for p in sources_paths]  # one map given under two names (through a link) too
    if len(set(real_paths)) != len(real_paths):
        seen: set[Path] = set()
        duplicate = next(p for p, real in zip(sources_paths, real_paths)
                         if real in seen or seen.add(real))  # type: ignore[func-returns-value]
        raise ValueError(f"{duplicate} is given twice")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} is a file, not a directory")
    if out.is_dir() and not (out / SHARDS_FILE).exists():
        _refuse_foreign(out, names_only=True)  # before the lock file is created in it (again under the lock)
    created = make_folders(out)  # the outermost folder this merge made (None: another merge's, appended to)
    try:
        lock_fd = _flock(out, lock_timeout)
    except BaseException:
        unmake_folders(created, out)
        raise
    try:
        _recover_locked(out)
        for name in (SHARDS_FILE, SHARDS_FILE + ".tmp", JOURNAL_FILE, JOURNAL_FILE + ".tmp"):
            check_entry(out / name)  # before anything moves: the publishing writes never go through a link
        if (out / SHARDS_DIR).is_symlink():
            raise CorruptMapError(f"{out / SHARDS_DIR} is a symbolic link: merge moves maps into the sharded map's "
                                  f"own folder only")
        existing: Optional[_TopHeader] = _read_top_header(out) if (out / SHARDS_FILE).exists() else None
        if existing is None:
            _refuse_foreign(out)
        sources = [_check_source(p, out, copy) for p in sources_paths]
        expected: Optional[dict[str, Any]] = None
        reference_path = out
        if existing is not None:
            # The shards' requires (a records map's, a codec's) are in their headers, not in shards.json (whose
            # own requires are features of the sharded format): compare with a shard that has samples.
            reference = next((s for s in existing.shards if s.length), None)
            if reference is not None:
                reference_path = out / reference.path
                try:
                    expected = shard_schema(read_header(reference_path))
                except NotAMapError:
                    raise CorruptMapError(f"{out / SHARDS_FILE} lists the shard {reference.path!r}, but "
                                          f"{reference_path} holds no map") from None
        keyed = _KeyCheck(out, existing)
        for source in sources:
            schema = shard_schema(source.header)
            keyed.check(source.path, source.header)
            if existing is not None and schema["kind"] != existing.kind:
                raise SchemaMismatchError(f"{source.path} cannot be added to {out}: it holds a {schema['kind']!r} "
                                          f"map, the sharded map's shards are {existing.kind!r}")
            if _sample_count(source) == 0 and expected is None:
                continue  # an empty map fixes no dtype yet; a later one (or none) sets the schema
            if expected is None:
                expected, reference_path = schema, source.path
            elif schema["kind"] != expected["kind"] or (_sample_count(source) and not _same_schema(schema, expected)):
                raise SchemaMismatchError(f"{source.path} cannot be merged with {reference_path}: it has "
                                          f"{_describe_mismatch(expected, schema)}")
        if expected is None:  # every map empty (or none given)
            if not sources and existing is None:
                raise ValueError("merge() needs at least one map to create a sharded map")
            expected = shard_schema(sources[0].header) if existing is None or sources else \
                _schema(existing.kind, existing.attrs, existing.requires)
        (out / SHARDS_DIR).mkdir(exist_ok=True)
        if not copy:
            for source in sources:
                if not _same_file_system(source.path, out / SHARDS_DIR):
                    raise OSError(errno.EXDEV, f"{source.path} is on another file system than {out}; merge moves "
                                               f"maps without copying them: pass copy=True to copy it instead")
        taken = {Path(s.path).parts[-1] for s in existing.shards} if existing is not None else set()
        taken |= set(os.listdir(out / SHARDS_DIR))
        moves: list[tuple[Path, str]] = []
        number = len(existing.shards) if existing is not None else 0
        for source in sources:
            name = f"shard-{number:06d}"
            while name in taken:
                number += 1
                name = f"shard-{number:06d}"
            taken.add(name)
            number += 1
            moves.append((source.path, f"{SHARDS_DIR}/{name}"))
        journal = {"commit": (existing.commit if existing is not None else 0) + 1, "copy": copy,
                   "moves": [{"source": str(src), "dest": dest} for src, dest in moves]}
        replace_file(out / JOURNAL_FILE, json.dumps(journal).encode(), durable=True)
        infos = []
        try:
            for source, (src, dest) in zip(sources, moves):
                infos.append(ShardInfo(dest, _sample_count(source), source.header.id))
                _move_one(src, out / dest, source.header, copy, lock_timeout)
            # What shards.json will name reaches the disk first: the moved maps' files and folders, the new
            # entries in shards/, and the old ones' removal from the sources' folders (else a power cut could
            # leave a map in both places, or in neither).
            for _, dest in moves:
                fsync_tree(out / dest)
            fsync_dir(out / SHARDS_DIR)
            if not copy:
                for parent in sorted({src.parent for src, _ in moves}):
                    fsync_dir(parent)
        except Exception:
            _recover_locked(out)  # put back what was moved: the merge is all or nothing
            raise
        if existing is None:
            top = _TopHeader(expected["kind"], expected["attrs"], infos, id=uuid.uuid4().hex, commit=1,
                             metadata=checked_metadata or {})
        else:
            top = _TopHeader(existing.kind, expected["attrs"], existing.shards + infos, id=existing.id,
                             commit=existing.commit + 1, requires=existing.requires,
                             metadata=existing.metadata if checked_metadata is None else checked_metadata,
                             extra=existing.extra)
        replace_file(out / SHARDS_FILE, top.encode(), durable=True)
        os.unlink(out / JOURNAL_FILE)
    except BaseException:
        if created is not None and not (out / SHARDS_FILE).exists() and not (out / JOURNAL_FILE).exists():
            if _osfile.HELD_FILES_PINNED:  # Windows: the lock file cannot be deleted while held (nor, if another
                lock_fd, held = -1, lock_fd  # merge opens it meanwhile, then: it stays)
                release(held)
            unmake_folders(created, out)  # nothing was moved: leave no trace
        raise
    finally:
        if lock_fd >= 0:
            release(lock_fd)
    return ShardedMap(out)


_MERGE_FILES = frozenset({LOCK_FILE, SHARDS_DIR, SHARDS_FILE, SHARDS_FILE + ".tmp", JOURNAL_FILE,
                          JOURNAL_FILE + ".tmp"})  # what a merge writes in the sharded map's folder


def _refuse_foreign(out: Path, names_only: bool = False) -> None:
    """Refuse a directory holding something a merge did not write. ``names_only``: look only for foreign names
    (without the lock, a concurrent merge may be publishing: its ``shards/`` is filled and its journal gone just
    before its ``shards.json`` appears)."""
    refuse_foreign(out, _MERGE_FILES, lambda foreign: MapExistsError(
        f"{out} is not empty and holds no sharded map (found {foreign[0]!r}); merge into a new directory"))
    if names_only or (out / JOURNAL_FILE).exists():  # a journal: a dead merge's moves, which recovery undoes
        return
    if (out / SHARDS_DIR).exists() and os.listdir(out / SHARDS_DIR):
        raise MapExistsError(f"{out} is not empty and holds no sharded map (found {SHARDS_DIR!r}); merge into a new "
                             f"directory")


def _move_one(src: Path, dest: Path, header: Header, copy: bool, lock_timeout: Optional[float]) -> None:
    """Move (or copy) one map, holding its writer lock so that no append races the move (see `move_map`)."""
    move_map(src, dest, header, copy, _flock(src, lock_timeout))


def recover_merge(out_dir: PathLike) -> int:
    """Undo a merge into ``out_dir`` that died before publishing: move the maps it had moved back where they
    were (or delete its partial copies, with ``copy=True``). Returns how many maps were moved back or deleted.
    `merge` and `add_shards` do this first on their own."""
    out = absolute(out_dir)
    with directory_lock(out, DEFAULT_LOCK_TIMEOUT):
        return _recover_locked(out)


def _recover_locked(out: Path) -> int:
    journal_path = out / JOURNAL_FILE
    try:
        journal = json.loads(journal_path.read_bytes())
    except FileNotFoundError:
        return 0
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptMapError(f"{journal_path} is not valid JSON: {e}") from None
    commit, copy, moves = check_journal(out, journal_path, journal, SHARDS_DIR)
    top = _read_top_header(out) if (out / SHARDS_FILE).exists() else None
    if top is not None and top.commit >= commit:
        os.unlink(journal_path)  # the merge published; only its journal was left
        return 0
    undone = 0
    moved_back: set[Path] = set()
    for src, dest in moves:
        staging = dest.with_name(dest.name + ".copying")
        if copy:
            for partial in (dest, staging):
                if partial.exists():
                    shutil.rmtree(partial)
                    undone += 1
        elif dest.exists() and not src.exists():
            os.rename(dest, src)
            undone += 1
            moved_back.add(src.parent)
    for parent in sorted(moved_back):  # the maps are back for good before the journal that records them goes
        fsync_dir(parent)
    if moved_back:
        fsync_dir(out / SHARDS_DIR)
    os.unlink(journal_path)
    fsync_dir(out)
    return undone


def _kind_and_shards(directory: Path) -> tuple[str, list[Path]]:
    """The kind of the sharded map in ``directory`` and its shards' folders, from its ``shards.json``."""
    top = _read_top_header(directory)
    return top.kind, [Path(os.path.normpath(directory / info.path)) for info in top.shards]


register_sharded_reader(_kind_and_shards)
register_merge(merge)
