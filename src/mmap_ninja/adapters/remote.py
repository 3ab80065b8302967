"""Maps in object storage (S3, GCS, Azure, HTTP, ``memory://``, ...: any fsspec URL), read through a local cache.

``mmap_ninja.open_existing("s3://bucket/path", cache_dir=..., storage_options=...)`` comes here. Opening fetches
only the top header (``header.json`` of a single map, ``shards.json`` of a sharded one). A map, or a shard of a
sharded map, is downloaded whole on first touch into ``cache_dir``: into a staging directory, checked (every
column holds its committed bytes, the index is sound, and the checksum records match: `mmap_ninja.verify` with
``deep=True``), then renamed into place and opened as an ordinary read-only map, memory-mapped. ``refresh()``
fetches the top header again, to see a map uploaded at the URL since.

The cache (default ``$MMAP_NINJA_CACHE``, else ``$XDG_CACHE_HOME/mmap_ninja``, else ``~/.cache/mmap_ninja``)::

    entries/<key>/     one downloaded map or shard (or a sharded map's shards.json); complete, or absent
    meta/<key>.json    what the entry holds (its URL and the remote identity), written once it is complete
    locks/<key>        LOCK_SH by every live reader of the entry, LOCK_EX by an evictor deleting it
    locks/<key>.download   LOCK_EX by the one process downloading it (the others wait on it)
    staging/<key>.*    a download in progress (removed when it fails; a stale one by the next downloader)
    trash/             entries being deleted

The key is a hash of the URL and the remote map's identity (its header's ``id`` and ``commit``; a shard's ``id``
and length), so a dataset replaced at the same URL never mixes with its cached predecessor. Processes on one node
(DataLoader workers included) share the cache: the first to need an entry downloads it under the download lock,
the others wait and reuse it, so each file is fetched once. With ``cache_size_limit`` (bytes), every download
ends by evicting the least recently used entries that no live reader holds until the cache fits.

`upload` publishes a local map (single or sharded) so that a reader never sees a header naming missing objects:
every shard's column files, then that shard's ``header.json``, and the top header (``shards.json`` or
``header.json``) last. Column objects are named after the map's id and commit (`mmap_ninja.adapters.remote_objects`),
so an upload never overwrites an object a published header names.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mmap_ninja.adapters.cache import Cache, default_cache_dir
from mmap_ninja.adapters.remote_objects import (
    OBJECTS,
    column_objects,
    header_to_keep,
    header_to_upload,
    previous_folders,
)
from mmap_ninja.adapters.remote_objects import prune as prune_objects
from mmap_ninja.containers.sharded import SHARDS_FILE, ShardedMap, is_sharded
from mmap_ninja.containers.verify import verify
from mmap_ninja.errors import (
    CorruptMapError,
    MapError,
    NotAMapError,
    ReadOnlyMapError,
    RemoteStorageError,
    UnfinishedMapError,
)
from mmap_ninja.kinds.legacy import is_legacy_map
from mmap_ninja.kinds.maps import KINDS, MapBase
from mmap_ninja.storage.checksums import RECORD_DTYPE, column_id, hasher
from mmap_ninja.storage.format import HEADER_FILE, Header, parse_header, plain_header, read_header
from mmap_ninja.storage.store import CHECKSUMS, COLUMN_SUFFIX, PathLike, absolute, is_derived

__all__ = ["Cache", "RemoteMap", "RemoteShardedMap", "RemoteStorageError", "default_cache_dir", "open_remote",
           "remote_class", "upload"]

_CHUNK = 8 << 20


def _key(*parts: Any) -> str:
    """A cache key: a hash of the location (first part) and a hash of the identity (the rest)."""
    where = hashlib.sha256(str(parts[0]).encode()).hexdigest()[:16]
    what = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]
    return f"{where}-{what}"


def check_cached_map(entry: Path) -> None:
    """A cheap check of a map found in the cache (a `CorruptMapError` if it fails): its structure (`verify`
    without hashing: every column holds its committed bytes, the offsets are sound) and the first and last
    checksum record of every column, which a truncated or zero-filled file (what a power cut after an
    un-fsynced rename can leave) fails. Hashes at most a few MiB."""
    report = verify(entry, deep=False)
    if not report.ok:
        raise CorruptMapError(f"{entry} (a cached download) is damaged: {'; '.join(report.problems)}")
    header = read_header(entry)
    if header.checksums is None or CHECKSUMS not in header.columns:
        return
    records = np.fromfile(entry / (CHECKSUMS + COLUMN_SUFFIX), dtype=RECORD_DTYPE,
                          count=header.columns[CHECKSUMS].length)
    hash_bytes = hasher(header.checksums)
    for name, column in header.columns.items():
        if name == CHECKSUMS or is_derived(name) or not column.length:
            continue
        mine = records[records["column"] == column_id(name)]
        if not len(mine):
            continue
        ends = {int(np.argmin(mine["start"])), int(np.argmax(mine["stop"]))}
        with open(entry / (name + COLUMN_SUFFIX), "rb") as f:
            for k in ends:
                start, stop = int(mine["start"][k]), int(mine["stop"][k])
                if stop - start > _SPOT_CHECK_BYTES:
                    continue
                f.seek(start)
                if hash_bytes([f.read(stop - start)]) != int(mine["digest"][k]):
                    raise CorruptMapError(f"{entry / (name + COLUMN_SUFFIX)} (a cached download) is damaged: bytes "
                                          f"{start}..{stop} do not match their checksum")


_SPOT_CHECK_BYTES = 4 << 20


# ------------------------------------------------------------------ the remote side


class _Remote:
    """A URL's file system (through fsspec) and its root path in it."""

    def __init__(self, url: str, storage_options: Optional[dict[str, Any]]):
        try:
            import fsspec
        except ImportError:
            raise ImportError("reading or writing maps at a URL needs fsspec (and s3fs for s3://): "
                              "pip install 'mmap_ninja[s3]'") from None
        self.url = url.rstrip("/")
        self._options = dict(storage_options or {})
        self._fsspec = fsspec
        self._pid = -1
        self.fs: Any = None
        self.root = ""
        self._connect()

    def _connect(self) -> None:
        """The file system for this process: fsspec's clients (s3fs's event loop) do not survive a fork, so a
        forked copy (a DataLoader worker) makes its own on first use."""
        if self._pid != os.getpid():
            with _remote_errors(self.url):
                self.fs, root = self._fsspec.core.url_to_fs(self.url, **self._options)
            self.root = root.rstrip("/")
            self._pid = os.getpid()

    @property
    def missing_hint(self) -> str:
        """What to add when an object is missing: for ``memory://``, that another process does not see it."""
        if self.url.startswith("memory://"):
            return ("; memory:// URLs live in the memory of one process: other processes (DataLoader workers "
                    "included) do not see what it uploaded")
        return ""

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def _path(self, rel: str) -> str:
        self._connect()
        return f"{self.root}/{rel}" if rel else self.root

    def _target(self, rel: str) -> str:
        """The path to write ``rel`` to; a local file system gets its parent folders (object stores need none)."""
        path = self._path(rel)
        protocol = self.fs.protocol
        if "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,)):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return path

    def cat(self, rel: str) -> bytes:
        with _remote_errors(self.url_of(rel)):
            path = self._path(rel)  # first: it connects (anew after a fork)
            data: bytes = self.fs.cat_file(path)
            return data

    def cat_ranges(self, rel: str, ranges: list[tuple[str, int, int]]) -> list[bytes]:
        """The bytes ``[start, stop)`` of each ``(object, start, stop)`` under the map at ``rel``, fetched by
        ranged requests in one call (concurrent where the file system is asynchronous: s3fs, gcsfs, HTTP)."""
        names = [f"{rel}/{name}" if rel else name for name, _, _ in ranges]
        wanted = [k for k, (_, a, b) in enumerate(ranges) if b > a]
        got: list[bytes] = [b""] * len(ranges)
        if not wanted:
            return got
        with _remote_errors(self.url_of(names[wanted[0]])):
            paths = [self._path(names[k]) for k in wanted]
            fetched = self.fs.cat_ranges(paths, [ranges[k][1] for k in wanted], [ranges[k][2] for k in wanted])
        for k, data in zip(wanted, fetched):
            if isinstance(data, FileNotFoundError):
                raise CorruptMapError(f"{self.url_of(names[k])} is missing (its map's header lists it)"
                                      f"{self.missing_hint}")
            if isinstance(data, BaseException):
                raise RemoteStorageError(f"cannot access {self.url_of(names[k])}: {type(data).__name__}: {data}")
            got[k] = bytes(data)
        return got

    def get(self, rel: str, local: Path, size: Optional[int] = None) -> None:
        """Download ``rel`` to ``local``: its first ``size`` bytes by ranged requests when ``size`` is known."""
        with _remote_errors(self.url_of(rel)):
            path = self._path(rel)
            if size is None:
                self.fs.get_file(path, str(local))
            else:
                from mmap_ninja.adapters._blocks import download_by_ranges

                download_by_ranges(self.fs, path, local, size)

    def put(self, local: Path, rel: str, size: int) -> None:
        """Upload the first ``size`` bytes of ``local``."""
        with _writing(self.url_of(rel)):
            path = self._target(rel)
            if os.stat(local).st_size == size:
                self.fs.put_file(str(local), path)
                return
            with open(local, "rb") as source, self.fs.open(path, "wb") as target:
                left = size
                while left:
                    chunk = source.read(min(left, _CHUNK))
                    if not chunk:
                        raise CorruptMapError(f"{local} ended while it was uploaded")
                    target.write(chunk)
                    left -= len(chunk)

    def names_in(self, rel: str) -> list[str]:
        """The names of the objects directly in the folder ``rel`` (none if there is no such folder)."""
        with _remote_errors(self.url_of(rel)):
            path = self._path(rel)
            self.fs.invalidate_cache(path)  # a listing cached by the client may predate an upload
            try:
                entries = self.fs.ls(path, detail=True)
            except FileNotFoundError:
                return []
        return [str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "file"]

    def remove(self, rel: str) -> bool:
        """Delete the object ``rel`` if it is there; whether it was."""
        with _remote_errors(self.url_of(rel)):
            path = self._path(rel)
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                return False
            return True

    def pipe(self, rel: str, data: bytes) -> None:
        with _writing(self.url_of(rel)):
            path = self._target(rel)
            self.fs.pipe_file(path, data)


@contextmanager
def _writing(url: str) -> Iterator[None]:
    """Errors of the storage client while writing ``url`` as `RemoteStorageError` naming it; a missing location
    (no such bucket) too, which reads leave a `FileNotFoundError`."""
    try:
        with _remote_errors(url):
            yield
    except FileNotFoundError as e:
        raise RemoteStorageError(f"cannot write {url}: {type(e).__name__}: {e}") from e


@contextmanager
def _remote_errors(url: str) -> Iterator[None]:
    """Errors of the storage client as `RemoteStorageError` naming ``url``; a missing object stays a
    `FileNotFoundError` (callers say what was missing)."""
    try:
        yield
    except (MapError, FileNotFoundError, ImportError):
        raise
    except Exception as e:
        raise RemoteStorageError(f"cannot access {url}: {type(e).__name__}: {e}") from e


def _fetch_top(remote: _Remote) -> tuple[str, bytes]:
    """The top header of the map at ``remote``: ``(file name, content)``."""
    reasons = []
    for name in (SHARDS_FILE, HEADER_FILE):
        try:
            return name, remote.cat(name)
        except FileNotFoundError as e:
            reasons.append(str(e))
    raise NotAMapError(f"{remote.url} holds no mmap_ninja map: neither {SHARDS_FILE} nor {HEADER_FILE} is there "
                       f"({reasons[-1]}){remote.missing_hint}")


@contextmanager
def _named(local: Path, url: str) -> Iterator[None]:
    """Map errors whose message names the local staging directory re-raised naming ``url`` instead."""
    try:
        yield
    except MapError as e:
        message = str(e).replace(str(local), url)
        try:
            renamed = type(e)(message)
        except Exception:
            raise e from None
        raise renamed from None


def _parse(raw: bytes, url: str) -> Header:
    """The uploaded header ``raw`` fetched from ``url`` (a map's ``header.json``), checked: its objects too."""
    try:
        content = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptMapError(f"{url} is not valid JSON: {e}") from None
    local = Path("/", HEADER_FILE)
    with _named(local, url):
        header = parse_header(content, local, features=(OBJECTS,))
    column_objects(header, url.removesuffix(f"/{HEADER_FILE}"))  # a header naming other maps' objects: refused now
    return header


def _parse_refreshed(raw: bytes, header_url: str, map_url: str, kind: str) -> Header:
    """The header a `refresh` fetched again (see `_parse`), refused if it is an unfinished build or another kind's
    map than the one the handle reads."""
    header = _parse(raw, header_url)
    if header.building:
        raise UnfinishedMapError(f"{map_url} is an unfinished build; it cannot be read")
    if header.kind != kind:
        raise NotAMapError(f"{map_url} holds a map of kind {header.kind!r} now, not {kind!r}; open it again with "
                           f"open_existing()")
    return header


def _length(header: Header) -> int:
    return KINDS[header.kind].layout.count(header.lengths, header.attrs) if header.kind in KINDS else 0


def _download_map(remote: _Remote, rel: str, stage: Path, raw: Optional[bytes] = None,
                  expect_id: Optional[str] = None, expect_length: Optional[int] = None) -> None:
    """Download the map at ``rel`` (its header already fetched: ``raw``) into ``stage`` and check it whole."""
    url = remote.url_of(rel)
    header_url = remote.url_of(f"{rel}/{HEADER_FILE}" if rel else HEADER_FILE)
    if raw is None:
        try:
            raw = remote.cat(f"{rel}/{HEADER_FILE}" if rel else HEADER_FILE)
        except FileNotFoundError:
            raise CorruptMapError(f"{header_url} is missing: {url} holds no map{remote.missing_hint}") from None
    header = _parse(raw, header_url)
    if header.building:
        raise UnfinishedMapError(f"{url} is an unfinished build; it cannot be read")
    if expect_id is not None and header.id != expect_id:
        raise CorruptMapError(f"{header_url} has the id {header.id!r}, but the sharded map lists {expect_id!r}: "
                              f"the shard was replaced")
    if expect_length is not None and _length(header) != expect_length:
        raise CorruptMapError(f"{url} holds {_length(header)} samples, but the sharded map lists {expect_length}")
    objects = column_objects(header, url)
    (stage / HEADER_FILE).write_bytes(header_to_keep(raw, header))  # a downloaded map is an ordinary local map
    renamed = {}
    for name, column in header.columns.items():
        file = name + COLUMN_SUFFIX
        source = f"{rel}/{objects[name]}" if rel else objects[name]
        renamed[str(stage / file)] = remote.url_of(source)
        try:
            remote.get(source, stage / file, column.length * column.dtype.itemsize)
        except FileNotFoundError:
            raise CorruptMapError(f"{remote.url_of(source)} is missing (the header lists column {name!r})"
                                  f"{remote.missing_hint}") from None
        need = column.length * column.dtype.itemsize
        got = os.stat(stage / file).st_size
        if got < need:
            raise CorruptMapError(f"{remote.url_of(source)} is truncated: it holds {got} bytes, the header commits "
                                  f"{need}")
    report = verify(stage, deep=True)
    if not report.ok:
        problems = []
        for problem in report.problems:
            for local, remote_url in renamed.items():
                problem = problem.replace(local, remote_url)
            problems.append(problem.replace(str(stage), url))
        raise CorruptMapError(f"{url} failed its check after download: {'; '.join(problems)}")


# ------------------------------------------------------------------ reading


def open_remote(url: str, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: str = "r", *,
                cache_dir: Optional[PathLike] = None, storage_options: Optional[dict[str, Any]] = None,
                cache_size_limit: Optional[int] = None, pinned: Optional[tuple[str, bytes]] = None,
                fetch: str = "auto", block_size: Optional[int] = None, **options: Any) -> Any:
    """Open the map at ``url`` (any fsspec URL) read-only through the cache: a `RemoteShardedMap` for a sharded
    map, a `RemoteMap` for a single one. Fetches only the top header (none when ``pinned``, the top header's
    ``(file name, content)`` a pickled map carries). ``storage_options`` go to fsspec (for S3: ``key``,
    ``secret``, ``client_kwargs={"endpoint_url": ...}``, ``config_kwargs={"retries": ...}``).

    ``fetch`` says how a single map's bytes are fetched: ``"whole"`` (the map is downloaded whole on first
    use), ``"blocks"`` (each read fetches the block of ``block_size`` bytes holding its sample, by ranged
    requests: a `RemoteBlockMap`, see `mmap_ninja.adapters._block_map`) or ``"auto"`` (blocks when the map's
    checksum records are fine-grained enough, whole otherwise). A sharded map's shards are read the same way,
    each shard deciding for itself (see `mmap_ninja.adapters._block_shards`).
    With ``cache_size_limit``, opening evicts unused entries down to the limit.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.remote import open_remote, upload
        >>> RaggedMmap.from_lists("local", [np.arange(n) for n in (1, 2, 3)], overwrite=True).close()
        >>> upload("local", "memory://remote-docs/tokens")
        >>> remote = open_remote("memory://remote-docs/tokens", cache_dir="cache")
        >>> type(remote).__name__, remote[2]
        ('RemoteRaggedMmap', array([0, 1, 2]))
    """
    if isinstance(wrapper_fn, str) and mode == "r":
        wrapper_fn, mode = None, wrapper_fn
    if mode not in ("r", "rb"):
        raise ValueError(f"{url.rstrip('/')} opens read-only (mode 'r'), got mode={mode!r}: a map at a URL is "
                         f"written by building it locally and publishing it with mmap_ninja.upload(path, url)")
    from mmap_ninja.adapters._block_map import DEFAULT_BLOCK_SIZE, FETCH_MODES, choose_fetch

    if fetch not in FETCH_MODES:
        raise ValueError(f"fetch must be one of {', '.join(map(repr, FETCH_MODES))}, got {fetch!r}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0):
        raise ValueError(f"block_size must be a positive number of bytes, got {block_size!r}")
    remote = _Remote(url, storage_options)
    cache = Cache(default_cache_dir() if cache_dir is None else cache_dir, cache_size_limit)
    if cache_size_limit is not None:
        cache.evict()  # a cache over its limit is brought under it now, not at the next download
    name, raw = pinned if pinned is not None else _fetch_top(remote)
    settings = {"cache_dir": str(cache.root), "storage_options": storage_options,
                "cache_size_limit": cache_size_limit, "wrapper_fn": wrapper_fn, "fetch": fetch,
                "block_size": block_size, **options}
    if name == HEADER_FILE:
        header = _parse(raw, remote.url_of(HEADER_FILE))
        if header.building:
            raise UnfinishedMapError(f"{remote.url} is an unfinished build; it cannot be read")
        if header.kind not in KINDS:
            raise CorruptMapError(f"{remote.url} holds a map of kind {header.kind!r}, which this mmap_ninja does "
                                  f"not know")
        size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
        if choose_fetch(fetch, header, size, remote.url) == "blocks":
            from mmap_ninja.adapters._block_kinds import block_class

            return block_class(KINDS[header.kind])(remote, cache, raw, header, wrapper_fn, settings, options, size)
        return remote_class(KINDS[header.kind])(remote, cache, raw, header, wrapper_fn, settings, options)
    view, fd = _acquire_view(remote, cache, raw)
    try:
        with _named(view, remote.url):
            return RemoteShardedMap(view, remote, cache, fd, raw, wrapper_fn, settings, **options)
    except BaseException:
        os.close(fd)
        raise


def _acquire_view(remote: _Remote, cache: Cache, raw: bytes) -> tuple[Path, int]:
    """The cache entry holding the sharded map header ``raw`` (checked before it is published), and the
    descriptor holding its shared lock."""
    try:
        content = json.loads(raw)
        identity = (content["id"], content["commit"])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError, KeyError) as e:
        raise CorruptMapError(f"{remote.url_of(SHARDS_FILE)} is not a sharded map header: {type(e).__name__}: "
                              f"{e}") from None

    def fill(stage: Path) -> None:
        (stage / SHARDS_FILE).write_bytes(raw)
        with _named(stage, remote.url):
            ShardedMap(stage, mode="r").close()  # checks the header before the entry is published

    about = {"url": remote.url, "holds": "sharded map header", "id": identity[0], "commit": identity[1]}
    return cache.acquire(_key(remote.url, SHARDS_FILE, *identity), fill, about=about)


def _refetch(remote: _Remote, expected: str) -> bytes:
    """The top header at ``remote`` now, which must still be a ``expected`` (``shards.json`` or ``header.json``)."""
    name, raw = _fetch_top(remote)
    if name != expected:
        kind = "a sharded map" if name == SHARDS_FILE else "a single map"
        raise NotAMapError(f"{remote.url} holds {kind} now; open it again with open_existing()")
    return raw


def _reopen(url: str, settings: dict[str, Any]) -> Any:
    return open_remote(url, **settings)


class RemoteMap(MapBase):
    """A single map at a URL, read-only: an ordinary container of its kind (``open_existing`` gives a subclass of
    both this class and the kind's class, e.g. ``RemoteMap`` and `RaggedMmap`), so that indexing in every form,
    ``get_batch``, iteration, operators (``key in m``, ``m == 0``, ``m + 1`` for numpy maps) and pickling are the
    kind's own. Its length, kind and metadata come from the header fetched at opening; the first use of anything
    else downloads the map into the cache (once) and opens it there, with the options given (``verify_reads``,
    ``channels``, ...). It opens with ``mode="r"``: every write is refused, naming the URL.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.remote import open_remote, upload
        >>> RaggedMmap.from_lists("local", [np.arange(n) for n in (1, 2, 3)], overwrite=True).close()
        >>> upload("local", "memory://remote-docs/tokens")
        >>> from mmap_ninja.adapters.remote import RemoteMap
        >>> remote = open_remote("memory://remote-docs/tokens", cache_dir="cache")
        >>> isinstance(remote, RemoteMap), isinstance(remote, RaggedMmap), remote.mode
        (True, True, 'r')
    """

    _remote_state = frozenset({"url", "header", "kind", "wrapper_fn", "_mode", "_remote", "_cache", "_raw",
                               "_settings", "_options", "_length", "_opening", "_ready", "_closed",
                               "_materializing"})
    fetch_block_size: Optional[int] = None
    """None: the map is downloaded whole (a map read by blocks is a `RemoteBlockMap`)."""

    def __init__(self, remote: _Remote, cache: Cache, raw: bytes, header: Header,
                 wrapper_fn: Optional[Callable[[Any], Any]], settings: dict[str, Any], options: dict[str, Any]):
        inspect.signature(KINDS[header.kind]).bind(remote.url, mode="r", **options)  # the kind's TypeError, now
        self.url = remote.url
        self.header = header
        self.kind = header.kind
        self.wrapper_fn = wrapper_fn
        self._mode = "r"  # known before the download: a write is refused (naming the URL) without one
        self._remote = remote
        self._cache = cache
        self._raw = raw
        self._settings = settings
        self._options = options
        self._length = _length(header)
        self._opening = threading.Lock()
        self._ready = False
        self._closed = False
        self._materializing: Optional[int] = None  # the thread running the kind's __init__ (it reads defaults)

    def _materialize(self) -> None:
        """Download the map into the cache (unless there already) and open it there as this container."""
        with self._opening:  # threads touching it first open it once
            if self._ready:
                return
            key = _key(self.url, HEADER_FILE, self.header.id, self.header.commit)
            about = {"url": self.url, "holds": f"{self.kind} map", "id": self.header.id,
                     "commit": self.header.commit}
            entry, fd = self._cache.acquire(key, lambda stage: _download_map(self._remote, "", stage, self._raw),
                                            check_cached_map, about)
            self._materializing = threading.get_ident()
            try:
                KINDS[self.kind].__init__(self, entry, self.wrapper_fn, mode="r", **self._options)
            except BaseException:
                os.close(fd)
                raise
            finally:
                self._materializing = None
            self.__dict__["_release_entry"] = weakref.finalize(self, os.close, fd)  # the reader's shared lock
            self._ready = True

    def __getattr__(self, name: str) -> Any:
        # Called only for what this instance does not hold yet: the state of the local map, made on first use.
        if (name.startswith("__") or self.__dict__.get("_ready", True)
                or self.__dict__.get("_materializing") == threading.get_ident()):  # the kind's __init__ asks
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._materialize()
        return getattr(self, name)

    @property
    def local(self) -> MapBase:
        """The map, downloaded into the cache (on first use) and opened read-only: this container itself."""
        if not self._ready:
            self._materialize()
        return self

    def __len__(self) -> int:
        return self._length

    @property
    def mode(self) -> str:
        """Always ``"r"``: a map at a URL is read-only."""
        return "r"

    @property
    def metadata(self) -> dict[str, Any]:
        """The user metadata stored with the map (from the header fetched at opening: no download)."""
        return dict(self.header.metadata)

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def _writable_store(self) -> Any:
        raise ReadOnlyMapError(f"{self.url} is a map at a URL, read-only: build or change the map locally and "
                               f"publish it with mmap_ninja.upload(path, url)")

    def refresh(self) -> int:
        """Fetch the header at the URL again: a map uploaded there since takes this one's place (the next read
        downloads it; samples read earlier stay valid). Returns how many samples appeared (negative if fewer)."""
        raw = _refetch(self._remote, HEADER_FILE)
        if raw == self._raw:
            return 0
        header = _parse_refreshed(raw, self._remote.url_of(HEADER_FILE), self.url, self.kind)
        with self._opening:
            before = self._length
            self.header, self._raw, self._length = header, raw, _length(header)
            # The local map's state is dropped, not closed (another thread may be reading from its view): the
            # next use opens the new version.
            for name in [n for n in self.__dict__ if n not in self._remote_state]:
                del self.__dict__[name]
            self._ready = False
        return self._length - before

    def close(self) -> None:
        """Close the local map and release the cache entry (samples read earlier stay valid)."""
        self._closed = True
        if self._ready:
            super().close()
            self.__dict__["_release_entry"]()
        else:
            self._ready = True  # nothing to open any more: reads now fail as on any closed map
            self._view = _Closed(self.url)

    def __enter__(self) -> RemoteMap:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}) of kind {self.kind!r}, length {self._length}"

    def __reduce__(self) -> tuple[Any, ...]:
        # The URL, the options and the header it was opened with (so copies read the same version), no data.
        return _reopen, (self.url, {**self._settings, "pinned": (HEADER_FILE, self._raw)})


class _Closed:
    """The view of a remote map closed before its first read."""

    __slots__ = ("_url",)

    def __init__(self, url: str):
        self._url = url

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"I/O operation on a closed map ({self._url})")


_REMOTE_CLASSES: dict[type[MapBase], type[RemoteMap]] = {}


def remote_class(kind_class: type[MapBase]) -> type[RemoteMap]:
    """The class of a map of ``kind_class`` at a URL: `RemoteMap` and ``kind_class`` both (made once per kind).

    The kind's class attributes that hold per-handle state (names starting with ``_``, such as an images map's
    decoder) are read through properties that open the local map first, so a default never stands in for the
    option the handle was opened with.

    Example:

        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.remote import RemoteMap, remote_class
        >>> remote_class(RaggedMmap).__name__, issubclass(remote_class(RaggedMmap), RemoteMap)
        ('RemoteRaggedMmap', True)
    """
    made = _REMOTE_CLASSES.get(kind_class)
    if made is None:
        namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": f"Remote{kind_class.__name__}",
                                     "__doc__": f"A {kind_class.__name__} at a URL (see `RemoteMap`)."}
        for klass in kind_class.__mro__:
            for name, value in vars(klass).items():
                if (name.startswith("_") and not name.startswith("__") and name not in namespace
                        and not callable(value) and not hasattr(value, "__get__")):
                    namespace[name] = _state_property(name, value)
        made = _REMOTE_CLASSES[kind_class] = type(f"Remote{kind_class.__name__}", (RemoteMap, kind_class), namespace)
    return made


def _state_property(name: str, default: Any) -> property:
    def get(self: RemoteMap) -> Any:
        if not self._ready and self._materializing != threading.get_ident():  # (the kind's __init__ reads it)
            self._materialize()
        return self.__dict__.get(name, default)

    def put(self: RemoteMap, value: Any) -> None:
        self.__dict__[name] = value

    return property(get, put)


class RemoteShardedMap(ShardedMap):
    """A sharded map at a URL, read with the API of `ShardedMap`: ``shards.json`` is in the cache, and each shard
    is downloaded into the cache when a read first needs it.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import merge, np_from_ndarray
        >>> from mmap_ninja.adapters.remote import open_remote, upload
        >>> np_from_ndarray("day0", np.arange(3), overwrite=True).close()
        >>> np_from_ndarray("day1", np.arange(3, 5), overwrite=True).close()
        >>> merge("days", ["day0", "day1"]).close()
        >>> upload("days", "memory://remote-docs/days")
        >>> days = open_remote("memory://remote-docs/days", cache_dir="cache")
        >>> type(days).__name__, len(days), days.shard_starts, days[4]
        ('RemoteShardedMap', 5, [0, 3, 5], np.int64(4))
    """

    fetch_block_size: Optional[int] = None
    """None: the shards are downloaded whole; else the block size of the shards read by blocks (with
    ``fetch="blocks"`` all of them, with ``"auto"`` those whose checksum records are fine enough)."""
    blocks_are_shards = False
    """Its shards are maps, each with blocks of its own (`mmap_ninja.containers.block_order.block_layout` reads
    them)."""

    def __init__(self, view: Path, remote: _Remote, cache: Cache, fd: int, raw: bytes,
                 wrapper_fn: Optional[Callable[[Any], Any]], settings: dict[str, Any], **options: Any):
        options.pop("lock_timeout", None)
        super().__init__(view, wrapper_fn, "r", **options)
        self.url = remote.url
        self._remote = remote
        self._cache = cache
        self._raw = raw
        self._settings = settings
        self._release_view = weakref.finalize(self, os.close, fd)
        self._fetch = settings.get("fetch", "auto")
        if self._fetch != "whole":
            from mmap_ninja.adapters._block_map import DEFAULT_BLOCK_SIZE

            self.fetch_block_size = settings.get("block_size") or DEFAULT_BLOCK_SIZE
            self._block_options = {"lock_timeout": self._lock_timeout, **options}
            self._shard_headers: dict[tuple[str, Optional[str]], bytes] = {}

    def open_shard(self, k: int) -> MapBase:
        """Shard ``k``: read by blocks (a `RemoteBlockMap`, see `mmap_ninja.adapters._block_shards`), or a local
        map downloaded into the cache on first use."""
        info = self.shards[k]
        identity = info.id if info.id is not None else self._raw
        key = _key(self._remote.url_of(info.path), identity, info.length)
        raw: Optional[bytes] = None
        if self.fetch_block_size is not None:
            from mmap_ninja.adapters._block_shards import shard_by_blocks

            by_blocks, raw = shard_by_blocks(self._remote, self._cache, k, info, self._raw, self._fetch,
                                             self.fetch_block_size, self._settings, self._block_options,
                                             self._shard_headers, (self._cache.entries / key).is_dir())
            if by_blocks is not None:
                return by_blocks  # type: ignore[return-value]  # a ShardedMap of its blocks, read as a shard

        def fill(stage: Path) -> None:
            _download_map(self._remote, info.path, stage, raw=raw, expect_id=info.id, expect_length=info.length)

        about = {"url": self._remote.url_of(info.path), "holds": f"shard {k} of {self.url}", "id": info.id,
                 "length": info.length}
        entry, fd = self._cache.acquire(key, fill, check_cached_map, about)
        try:
            shard = self.shard_class(entry, mode="r", **self.shard_options)
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(shard, os.close, fd)  # the shard's shared lock lives as long as the shard is mapped
        return shard

    def refresh(self) -> int:
        """Fetch ``shards.json`` at the URL again (to see shards uploaded since, or a map that replaced this one);
        returns how many samples appeared."""
        raw = _refetch(self._remote, SHARDS_FILE)
        if raw == self._raw:
            return 0
        view, fd = _acquire_view(self._remote, self._cache, raw)
        previous = self._path
        try:
            self._path = view  # ShardedMap.refresh reads shards.json there
            with _named(view, self.url):
                added = super().refresh()
        except BaseException:
            self._path = previous
            os.close(fd)
            raise
        self._release_view()
        self._release_view = weakref.finalize(self, os.close, fd)
        self._raw = raw
        return added

    def add_shards(self, paths: Any, *, copy: bool = False) -> None:
        """Refused: a sharded map at a URL is read-only."""
        raise ReadOnlyMapError(f"{self.url} is a sharded map at a URL, read-only: add the shards to the local sharded "
                               f"map and upload it again (mmap_ninja.upload(path, url))")

    def close(self) -> None:
        """Close every open shard and release the cache entries."""
        super().close()
        self._release_view()

    def __repr__(self) -> str:
        return f"RemoteShardedMap({self.url!r}) of {len(self.shards)} {self.kind} shards, length {len(self)}"

    def __reduce__(self) -> tuple[Any, ...]:
        return _reopen, (self.url, {**self._settings, "pinned": (SHARDS_FILE, self._raw)})


# ------------------------------------------------------------------ writing


def upload(local_path: PathLike, url: str, storage_options: Optional[dict[str, Any]] = None, *,
           prune: bool = False) -> None:
    """Upload the map in ``local_path`` (single or sharded) to ``url``, in an order that never shows a reader a
    header naming missing objects: each map's committed column bytes, then its ``header.json``; the sharded map's
    ``shards.json`` last. Commits made to the local map while it uploads are not included. A map already at
    ``url`` is replaced (see FORMAT.md): a single map uploaded where a sharded map was deletes its
    ``shards.json`` last, which publishes the single map.

    Column objects are named ``<column>.<id>-<commit>.bin`` and listed in the uploaded ``header.json`` (FORMAT.md,
    "Upload object names"), so an object a published header names is never overwritten: an upload that dies
    midway leaves readers the map that was there. The objects it replaces stay; with ``prune=True`` the upload
    ends, once its headers are published, by deleting the column objects its headers do not name (in its map
    folders and those of the map it replaced). Prune only when no reader still reads the map it replaced.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.remote import open_remote, upload
        >>> RaggedMmap.from_lists("local", [np.arange(n) for n in (1, 2, 3)], overwrite=True).close()
        >>> upload("local", "memory://remote-docs/tokens")
        >>> remote = open_remote("memory://remote-docs/tokens", cache_dir="cache")
        >>> len(remote), remote[1]
        (3, array([0, 1]))
    """
    source = absolute(local_path)
    remote = _Remote(url, storage_options)
    replaced = previous_folders(_published_top(remote)) if prune else []
    published: dict[str, set[str]] = {}
    if is_sharded(source):
        raw = (source / SHARDS_FILE).read_bytes()
        with tempfile.TemporaryDirectory() as scratch:  # parse exactly these bytes
            (Path(scratch) / SHARDS_FILE).write_bytes(raw)
            with _named(Path(scratch), str(source)):
                listing = ShardedMap(scratch, mode="r")
                shards = listing.shards
                listing.close()
        # Every shard is checked before the first object is written: a refusal leaves the URL as it was.
        checked = [(info.path, _checked_map(source / info.path, info.id, info.length)) for info in shards]
        for rel, (header_raw, names, sizes, files) in checked:
            published[rel] = _upload_map(source / rel, remote, rel, header_raw, names, sizes, files)
        remote.pipe(SHARDS_FILE, raw)
        if prune:
            prune_objects(remote, published, replaced)
        return
    if is_legacy_map(source):
        raise NotAMapError(f"{source} is a map of mmap_ninja 0.9.0; convert it first (mmap-ninja convert SRC DST)")
    read_header(source)  # NotAMapError naming the path when there is no map at all
    published[""] = _upload_map(source, remote, "", *_checked_map(source, None))
    # A sharded map uploaded here before would still be read (readers look for shards.json first): deleting its
    # shards.json, after the new header.json is in place, publishes this map. (Its shards' objects stay.)
    remote.remove(SHARDS_FILE)
    if prune:
        prune_objects(remote, published, replaced)


def _published_top(remote: _Remote) -> Optional[tuple[str, bytes]]:
    """The top header at ``remote`` before an upload (what `prune` removes the remains of), or None."""
    try:
        return _fetch_top(remote)
    except NotAMapError:
        return None


def _checked_map(directory: Path, expect_id: Optional[str],
                 expect_length: Optional[int] = None) -> tuple[bytes, dict[str, str], dict[str, int], dict[str, str]]:
    """The header to upload for the finished map in ``directory`` (its bytes, with the object names), the object
    name of each column, the committed bytes of each column and its local file, after checking that every column
    file is there and holds them (and, for a shard, that its id and length are those ``shards.json`` lists)."""
    try:
        raw = (directory / HEADER_FILE).read_bytes()
    except FileNotFoundError:
        raise NotAMapError(f"{directory} holds no mmap_ninja map ({HEADER_FILE} is missing)") from None
    try:
        content = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptMapError(f"{directory / HEADER_FILE} is not valid JSON: {e}") from None
    slots = isinstance(content, dict) and "commit.slots" in (content.get("requires") or ())
    local_header = read_header(directory) if slots else None  # a slot map's column files may carry a suffix
    if local_header is not None:  # a slot map is published as a plain one (FORMAT.md, commit.slots)
        content = json.loads(raw := plain_header(directory, local_header))
    header = parse_header(content, directory / HEADER_FILE)
    if header.building:
        raise UnfinishedMapError(f"{directory} is an unfinished build; finish it before uploading it")
    if expect_id is not None and header.id != expect_id:
        raise CorruptMapError(f"{directory} has the id {header.id!r}, but its sharded map lists {expect_id!r}")
    if expect_length is not None and _length(header) != expect_length:
        raise CorruptMapError(f"{directory} holds {_length(header)} samples, but its sharded map lists "
                              f"{expect_length}: the shard was changed after the merge; nothing was uploaded")
    sizes, files = {}, {}
    for name, column in header.columns.items():
        file = (local_header or header).file_of(name)
        need = column.length * column.dtype.itemsize
        try:
            have = os.stat(directory / file).st_size
        except FileNotFoundError:
            raise CorruptMapError(f"{directory / file} is missing (the header lists column {name!r})") from None
        if have < need:
            raise CorruptMapError(f"{directory / file} is truncated: it holds {have} bytes, the header commits "
                                  f"{need}")
        sizes[name], files[name] = need, file
    uploaded, names = header_to_upload(raw, header, directory / HEADER_FILE)
    return uploaded, names, sizes, files


def _upload_map(directory: Path, remote: _Remote, rel: str, raw: bytes, names: dict[str, str],
                sizes: dict[str, int], files: dict[str, str]) -> set[str]:
    """Upload a map `_checked_map` checked: the committed bytes of its column files, each to its object name,
    then its header. Returns the names of the objects its header names (and the header's)."""
    for column, need in sizes.items():
        remote.put(directory / files[column], f"{rel}/{names[column]}" if rel else names[column], need)
    remote.pipe(f"{rel}/{HEADER_FILE}" if rel else HEADER_FILE, raw)
    return {*names.values(), HEADER_FILE}
