"""`RemoteBlockMap`: a single map at a URL read by ranged block requests (``open_existing(url, fetch="blocks")``).

Opening costs the one request that fetched the header. The first read fetches the map's checksum records, index
columns and whole columns (one concurrent batch, checked) into a cache entry, with the plan of its blocks; then
each read needs the block holding its sample: fetched once per node (the cache's per-entry locks), by ranged
requests covering whole checksum records in every data column, checked, and written as a small ordinary map of the
kind, which the kind's own container reads. The blocks are the shards of a `ShardedMap`: every read path of a
sharded map (indexing, ``get_batch``, iteration, read options, ``verify_reads``) works, and at most
``max_open_shards`` blocks are mapped at once.

The cache holds one entry per block (a directory with the block's files), written aside, fsynced and renamed into
place (a reader killed mid-fetch leaves only a staging directory that the next fetch of the block removes), and
evicted least recently used by block, never while a reader holds it (readers hold a shared lock on every block
they map). With ``cache_size_limit``, blocks nobody holds are evicted after every fetch; when held blocks alone
exceed the limit, the fetch goes over it and warns once per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
import weakref
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

from mmap_ninja.adapters import _blocks
from mmap_ninja.adapters._blocks import BlockPlan, _BlocksUnsupported
from mmap_ninja.adapters.cache import Cache
from mmap_ninja.adapters.remote_objects import without_objects
from mmap_ninja.containers.sharded import ShardedMap, shard_schema
from mmap_ninja.containers.sharded_header import ShardInfo, TopHeader
from mmap_ninja.errors import CacheOverLimitWarning, NotAMapError, ReadOnlyMapError
from mmap_ninja.kinds.maps import KINDS, MapBase
from mmap_ninja.storage.format import Header
from mmap_ninja.storage.store import is_derived

__all__ = ["DEFAULT_BLOCK_SIZE", "FETCH_MODES", "RemoteBlockMap", "choose_fetch"]

DEFAULT_BLOCK_SIZE = 8 << 20
"""Bytes per block of the largest data column when ``block_size`` is not given."""

FETCH_MODES = ("auto", "whole", "blocks")

AUTO_MIN_BLOCKS = 4
"""``fetch="auto"`` reads a map by blocks only when its largest column holds more than this many blocks (a smaller
map is downloaded whole: about the same bytes, in one cache entry, as an instance of its kind's class)."""

_SHARDS_FILE = "shards.json"
_warned_over_limit = False


def _key(*parts: Any) -> str:
    where = hashlib.sha256(str(parts[0]).encode()).hexdigest()[:16]
    what = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]
    return f"{where}-{what}"


def _length(header: Header) -> int:
    return KINDS[header.kind].layout.count(header.lengths, header.attrs) if header.kind in KINDS else 0


def choose_fetch(fetch: str, header: Header, block_size: int, url: str) -> str:
    """``"blocks"`` or ``"whole"`` for the single map whose header is ``header``: ``"auto"`` reads by blocks when
    the map's checksum records are fine-grained enough (``checksums.granularity`` at most twice the block size),
    its columns allow it, it has no derived column (a key index, whose lookups read the map downloaded whole) and
    it holds more than `AUTO_MIN_BLOCKS` blocks, else whole; ``"blocks"`` refuses a map
    that cannot be read by blocks, naming why."""
    if fetch not in FETCH_MODES:
        raise ValueError(f"fetch must be one of {', '.join(map(repr, FETCH_MODES))}, got {fetch!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive number of bytes, got {block_size!r}")
    if fetch == "whole":
        return "whole"
    try:
        _blocks.plan_columns(header, _length(header))
    except _BlocksUnsupported as e:
        if fetch == "blocks":
            raise ValueError(f"{url} cannot be read by blocks (fetch='blocks'): {e}; use fetch='whole'") from None
        return "whole"
    if fetch == "blocks":
        return "blocks"
    if any(map(is_derived, header.columns)):  # a key index: its lookups read the map whole, so auto does at once
        return "whole"
    granularity = header.checksum_granularity
    largest = max((column.length * column.dtype.itemsize for name, column in header.columns.items()
                   if name != "checksums"), default=0)
    fine = granularity is not None and granularity <= 2 * block_size
    return "blocks" if fine and largest > AUTO_MIN_BLOCKS * block_size else "whole"


class RemoteBlockMap(ShardedMap):
    """A single map at a URL read block by block (see the module's docstring): a read-only `ShardedMap` whose
    shards are the map's blocks, so it has every read path of a sharded map of the map's kind. ``fetch_block_size``
    is the block size in bytes (what `BlockShuffleSampler` groups samples by).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap, open_existing, upload
        >>> RaggedMmap.from_lists("blocks_local", [np.arange(n) for n in range(100)], overwrite=True).close()
        >>> upload("blocks_local", "memory://blocks-docs/tokens")
        >>> m = open_existing("memory://blocks-docs/tokens", cache_dir="blocks_cache", fetch="blocks",
        ...                   block_size=4096)
        >>> m.fetch_block_size, len(m), m[99][-1]
        (4096, 100, np.int64(98))
    """

    blocks_are_shards = True
    """Its shards are its blocks (`mmap_ninja.containers.block_order.block_layout` takes them as the layout)."""

    _base_state = frozenset({"url", "header", "_remote", "_cache", "_raw", "_settings", "_options", "_length",
                             "_opening", "_ready", "_closed", "_block_size", "_pending_wrapper", "_plan",
                             "_index_release"})

    def __init__(self, remote: Any, cache: Cache, raw: bytes, header: Header,
                 wrapper_fn: Optional[Callable[[Any], Any]], settings: dict[str, Any], options: dict[str, Any],
                 block_size: int):
        shard_options = {k: v for k, v in options.items() if k not in ("max_open_shards", "max_open_files",
                                                                         "copy_before_wrapper_fn", "lock_timeout")}
        import inspect

        inspect.signature(KINDS[header.kind]).bind(remote.url, mode="r", **shard_options)  # its TypeError, now
        self.url = remote.url
        self.header = header
        self._remote = remote
        self._cache = cache
        self._raw = raw
        self._settings = settings
        self._options = options
        self._length = _length(header)
        self._block_size = block_size
        self._pending_wrapper = wrapper_fn
        self._opening = threading.Lock()
        self._ready = False
        self._closed = False

    # -------------------------------------------------------------- opening on first use

    def _materialize(self) -> None:
        with self._opening:
            if self._ready:
                return
            if self._closed:
                raise ValueError(f"I/O operation on a closed map ({self.url})")
            header = self.header
            roles = _blocks.plan_columns(header, self._length)
            block_size = self._block_size
            # (the limit decides which index columns the entry holds and how blocks are cut)
            key = _key(self.url, "index", header.id, header.commit, block_size, _blocks.INDEX_WHOLE_LIMIT)

            def fill(stage: Path) -> None:
                _blocks.fill_index(self._remote, "", self._raw, header, roles, stage)
                plan = BlockPlan(header, self._length, roles, stage, block_size)
                blocks = plan.blocks()
                shards = [ShardInfo(f"blocks/{number}", stop - first, None) for number, first, stop in blocks]
                schema = shard_schema(without_objects(header))  # (the blocks are local maps: no object names)
                # (shards.json's requires are features of the sharded format, as merge writes it: the map's own,
                # a records map's or a codec's, are in each block's header)
                top = TopHeader(header.kind, schema["attrs"], shards, id=header.id or "", commit=header.commit,
                                metadata=header.metadata)
                (stage / _SHARDS_FILE).write_bytes(top.encode())
                _blocks.write_plan(stage, blocks, block_size)

            about = {"url": self.url, "holds": f"index of a {header.kind} map (blocks of {block_size} bytes)",
                     "id": header.id, "commit": header.commit}
            entry, fd = self._cache.acquire(key, fill, _blocks.check_index, about)
            try:
                plan = BlockPlan(header, self._length, roles, entry, block_size)
                options = dict(self._options)
                ShardedMap.__init__(self, entry, self._pending_wrapper, "r", **options)
                self._plan = plan
                self._blocks = json.loads((entry / _blocks.PLAN_FILE).read_text())["blocks"]
            except BaseException:
                os.close(fd)
                raise
            self._index_release = weakref.finalize(self, os.close, fd)
            self._ready = True

    def __getattr__(self, name: str) -> Any:
        # Only for what this instance does not hold yet: the sharded map's state, made on first use.
        if name.startswith("__") or self.__dict__.get("_ready", True):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self._materialize()
        return getattr(self, name)

    @property
    def fetch_block_size(self) -> int:
        """The block size in bytes: block k holds the samples whose first byte in the map's largest data column
        lies in ``[k * fetch_block_size, (k + 1) * fetch_block_size)``."""
        return self._block_size

    def __len__(self) -> int:
        return self._length

    @property
    def kind(self) -> str:
        """The kind of the map (``"strings"``, ``"ragged"``, ...)."""
        return self.header.kind

    @property
    def metadata(self) -> dict[str, Any]:
        """The user metadata stored with the map (from the header fetched at opening: no request)."""
        return dict(self.header.metadata)

    @property
    def mode(self) -> str:
        """Always ``"r"``: a map at a URL is read-only."""
        return "r"

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    # -------------------------------------------------------------- blocks

    def _acquire_block(self, k: int) -> tuple[Path, int, bool]:
        """Block ``k``'s cache entry (fetched and checked if missing), the descriptor holding its shared lock, and
        whether this call fetched it."""
        number, first, stop = self._blocks[k]
        header = self.header
        by_count = "by count" if self._plan.by_count() else "by bytes"  # (block k differs between the two)
        key = _key(self.url, "block", header.id, header.commit, self._block_size, number, by_count)
        fetched = []

        def fill(stage: Path) -> None:
            wanted, got, entries = self._plan.fetch(self._remote, first, stop)
            self._plan.write_block(stage, first, stop, wanted, got, entries)
            fetched.append(True)

        about = {"url": self.url, "holds": _blocks.describe(self.url, first, stop, number), "id": header.id,
                 "commit": header.commit, "block": number}
        entry, fd = self._cache.acquire(key, fill, _blocks.check_block, about)
        return entry, fd, bool(fetched)

    def _read_ahead(self, k: int) -> None:
        """After blocks ``k - 2``, ``k - 1`` and ``k`` were opened one after the other, each for the first time,
        fetch block ``k + 1`` in a background thread (sequential reads then overlap a block's fetch with the
        reading of the one before). A shuffled window (`BlockShuffleSampler`) reopens its blocks and rarely opens
        three neighbours first in order: a block fetched ahead for it would belong to a later window or another
        rank and could be evicted before its turn, fetched twice. Errors are left to the read that needs the
        block (which fetches it again)."""
        seen = self.__dict__.setdefault("_opened_blocks", set())
        ascending = k - 1 == self.__dict__.get("_last_opened") and k not in seen
        run = self.__dict__.get("_ascending_run", 0) + 1 if ascending else 0
        seen.add(k)
        self.__dict__["_last_opened"] = k
        self.__dict__["_ascending_run"] = run
        if run < 2 or k + 1 >= len(self._blocks):
            return
        pool = _read_ahead_pool()

        def fetch() -> None:
            with suppress(Exception):  # the foreground read fetches it again and reports what fails
                os.close(self._acquire_block(k + 1)[1])

        pool.submit(fetch)

    def open_shard(self, k: int) -> MapBase:
        """Block ``k`` (in order) as a local map of the kind, fetched into the cache on first use and checked."""
        if self._closed:
            raise ValueError(f"I/O operation on a closed map ({self.url})")
        entry, fd, fetched = self._acquire_block(k)
        self._read_ahead(k)
        try:
            shard = self._cls(entry, mode="r", **self.shard_options)
        except BaseException:
            os.close(fd)
            raise
        weakref.finalize(shard, os.close, fd)  # the block's shared lock lives as long as the block is mapped
        if fetched and self._cache.size_limit is not None:
            _warn_if_over(self._cache)
        return shard

    # -------------------------------------------------------------- as a shard of a sharded map at a URL

    @property
    def _store(self) -> Any:
        """What a sharded map holding this map as a shard checks against ``shards.json`` (its header)."""
        return SimpleNamespace(header=self.header)

    def sample_reader(self) -> Callable[[int], Any]:
        """A function of a position (in range) giving ``self[position]``: how a sharded map reads its shards."""
        return self.__getitem__

    def release_files(self) -> int:
        """How many descriptors the open blocks hold (each block releases its own as it is opened)."""
        return self.open_files_held()

    def open_files_held(self) -> int:
        """How many file descriptors the open blocks hold (none before the first read)."""
        return int(self.open_files) if self.__dict__.get("_ready") else 0

    # -------------------------------------------------------------- the rest

    def refresh(self) -> int:
        """Fetch the header at the URL again: a map uploaded there since takes this one's place (its index and
        blocks are fetched on the next read). Returns how many samples appeared (negative if fewer)."""
        name, raw = self._remote_top()
        if raw == self._raw:
            return 0
        from mmap_ninja.adapters.remote import _parse_refreshed

        header = _parse_refreshed(raw, self._remote.url_of(name), self.url, self.header.kind)
        with self._opening:
            before = self._length
            self.header, self._raw, self._length = header, raw, _length(header)
            for attribute in [n for n in self.__dict__ if n not in self._base_state]:
                del self.__dict__[attribute]
            release = self.__dict__.pop("_index_release", None)
            if release is not None:
                release()
            self._ready = False
        return self._length - before

    def _remote_top(self) -> tuple[str, bytes]:
        from mmap_ninja.adapters.remote import _fetch_top

        name, raw = _fetch_top(self._remote)
        if name != "header.json":
            raise NotAMapError(f"{self.url} holds a sharded map now; open it again with open_existing()")
        return name, raw

    def add_shards(self, paths: Any, *, copy: bool = False) -> None:
        """Refused: a map at a URL is read-only."""
        raise ReadOnlyMapError(f"{self.url} is a map at a URL, read-only: build or change the map locally and "
                               f"publish it with mmap_ninja.upload(path, url)")

    def close(self) -> None:
        """Close the open blocks and release the cache entries (samples read earlier stay valid)."""
        with self._opening:
            self._closed = True
            if self._ready:
                ShardedMap.close(self)
                self._index_release()

    def __enter__(self) -> RemoteBlockMap:
        return self

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.url!r}) of kind {self.header.kind!r}, length {self._length}, blocks of "
                f"{self._block_size} bytes")

    def __reduce__(self) -> tuple[Any, ...]:
        from mmap_ninja.adapters.remote import _reopen

        return _reopen, (self.url, {**self._settings, "pinned": ("header.json", self._raw)})


_pool: Optional[tuple[int, Any]] = None


def _read_ahead_pool() -> Any:
    """This process's read-ahead thread (one per process: a forked child makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="mmap_ninja-read-ahead"))
    return _pool[1]


def _warn_if_over(cache: Cache) -> None:
    """Warn once per process when the cache stays over its limit after a fetch (held blocks fill it)."""
    global _warned_over_limit
    limit = cache.size_limit
    if _warned_over_limit or limit is None:
        return
    used = sum(cache.usage().values())
    if used > limit:
        _warned_over_limit = True
        warnings.warn(f"the cache {cache.root} holds {used} bytes, over its cache_size_limit of {limit}: the blocks "
                      f"that live readers hold fill it (each process holds at most max_open_shards blocks)",
                      CacheOverLimitWarning, stacklevel=3)

