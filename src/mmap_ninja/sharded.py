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
import inspect
import json
import os
import shutil
import threading
import uuid
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from itertools import accumulate, count
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mmap_ninja import locks
from mmap_ninja._fsio import check_entry, fsync_dir, fsync_tree, replace_file
from mmap_ninja.errors import (
    CorruptMapError,
    FormatVersionError,
    MapExistsError,
    MissingKeyError,
    NotAMapError,
    ReadOnlyMapError,
    SchemaMismatchError,
    UnknownFeatureError,
)
from mmap_ninja.format import SHARDS_FILE, Header, check_metadata, read_header
from mmap_ninja.journal import check_journal
from mmap_ninja.keys import key_field, key_mismatch
from mmap_ninja.legacy import is_legacy_map
from mmap_ninja.maps import KINDS, MapBase, _DatasetBase, register_sharded_reader, resolve_index, resolve_positions
from mmap_ninja.sharded_header import FORMAT_VERSION, ShardInfo
from mmap_ninja.sharded_header import TopHeader as _TopHeader
from mmap_ninja.sharded_header import read_top_header as _read_top_header
from mmap_ninja.sharded_records import RecordsFace
from mmap_ninja.storage import DEFAULT_LOCK_TIMEOUT, LOCK_FILE, PathLike, absolute, lock_directory, resolved

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
DEFAULT_MAX_OPEN_SHARDS = 64
DEFAULT_MAX_OPEN_FILES = 256  # descriptors (each mapping holds one) of the open shards: well under the usual 1,024



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
    return {"kind": kind, "attrs": shared, "requires": sorted(requires)}


def _same_schema(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, and in the same order where order means something (a records map's fields; other keys are sorted)."""
    return a == b and json.dumps(a) == json.dumps(b)


# ------------------------------------------------------------------ reading


class ShardedMap(RecordsFace, _DatasetBase):  # type: ignore[misc, unused-ignore]  # a Dataset to a checker
    """A sharded map (see the module's docstring), read with the API of a single map.

    ``len(m)``, ``m[i]`` (negative too), ``m[a:b]`` / ``m[[i, j]]`` / a boolean mask (a list of samples),
    ``m.get_batch(indices, ...)`` with the arguments of the shards' kind when it has one, iteration, and
    ``__getitems__`` for PyTorch's batched fetch. It pickles as its path. ``wrapper_fn`` is applied to every
    sample read (to a copy unless ``copy_before_wrapper_fn=False``). ``max_open_shards`` bounds how many shards
    are open at once, and ``max_open_files`` how many file descriptors they hold (a shard's mapped columns
    hold one each; the least recently used shards are dropped first, never the one being read): a records map of
    many fields over many shards stays well under the usual limit of 1,024. Arrays read earlier keep their own
    mapping alive. ``mode="r+"`` (the default) allows `add_shards`; ``mode="r"`` never writes. Other options
    are the shards' own (``verify_reads=True``, an images map's ``channels=``, ...) and are given to every shard
    it opens; one the shards' kind does not take is refused here, with the shards' TypeError.

    Shards that are records maps give it their API too (`RecordsFace`): ``fields``, ``schema``,
    ``columns(indices)``, and ``m["field"]``, a read-only sharded map of that field.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import ShardedMap, merge, np_from_ndarray
        >>> np_from_ndarray("part0", np.arange(3), overwrite=True).close()
        >>> np_from_ndarray("part1", np.arange(3, 5), overwrite=True).close()
        >>> merge("sharded", ["part0", "part1"]).close()
        >>> whole = ShardedMap("sharded")
        >>> len(whole), whole.shard_starts, whole[3], whole[1:4]
        (5, [0, 3, 5], np.int64(3), [np.int64(1), np.int64(2), np.int64(3)])
    """

    def __init__(self, out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: str = "r+", *,
                 copy_before_wrapper_fn: bool = True, max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS,
                 max_open_files: int = DEFAULT_MAX_OPEN_FILES,
                 lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **shard_options: Any):
        if isinstance(wrapper_fn, str) and mode == "r+":
            wrapper_fn, mode = None, wrapper_fn
        mode = mode.replace("b", "") if isinstance(mode, str) else mode
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' (read-only) or 'r+' (read and add shards), got {mode!r}")
        if isinstance(max_open_shards, bool) or not isinstance(max_open_shards, int) or max_open_shards < 1:
            raise ValueError(f"max_open_shards must be a positive integer, got {max_open_shards!r}")
        if isinstance(max_open_files, bool) or not isinstance(max_open_files, int) or max_open_files < 1:
            raise ValueError(f"max_open_files must be a positive integer, got {max_open_files!r}")
        self._path = resolved(out_dir)  # once: shards are never read from another folder a link names later
        self._mode = mode
        self._wrapper_fn = wrapper_fn
        self.copy_before_wrapper_fn = copy_before_wrapper_fn
        self._max_open = max_open_shards
        self._max_files = max_open_files
        self._lock_timeout = lock_timeout
        self._lock = threading.Lock()
        self._field: Optional[str] = None  # a field's sharded container: that field of each records shard
        self._source: Optional[ShardedMap] = None  # ... and the sharded records map it is a field of
        self._install(_read_top_header(self._path))
        inspect.signature(self._cls).bind(self._path, mode="r", **shard_options)  # the shards' TypeError, now
        self.shard_options = shard_options

    def _install(self, header: _TopHeader) -> None:
        kind = header.kind if self._field is None else header.attrs["fields"][self._field]["kind"]
        cls = KINDS.get(kind)
        if cls is None:
            raise UnknownFeatureError(f"{self._path} holds shards of kind {header.kind!r}, which this mmap_ninja "
                                      f"does not know; a newer mmap_ninja may read it")
        starts = [0, *accumulate(s.length for s in header.shards)]
        with self._lock:
            self._header = header
            self._cls = cls
            self._starts = starts  # shard k holds the samples starts[k] .. starts[k + 1] - 1
            self._starts_array = np.asarray(starts, dtype=np.int64)
            self._length = starts[-1]
            # The open shards, their sample readers, and when each was last used (evicted least recently used
            # first). Reads look these up without the lock: one dict or list item each, atomic under the GIL.
            # ``_getters[k + 1]`` reads shard k while it is open, so that ``bisect_right(starts, i)`` indexes it
            # directly; the first and last items stay None (a position below 0 or from ``len(m)`` on).
            self._open: dict[int, MapBase] = {}
            self._getters: list[Optional[Callable[[int], Any]]] = [None] * (len(header.shards) + 2)
            self._used: dict[int, int] = {}
            self._files: dict[int, int] = {}  # the descriptors each open shard holds
            self._clock = count()
            # Whether any shard can ever be evicted: when all fit, hits skip the use clock.
            self._evicting = len(header.shards) > self._max_open
            self._update_fast_path()

    def _update_fast_path(self) -> None:
        """``m[i]`` reads ``(starts, getters)`` from ``_fast`` in one step (a consistent pair, even while another
        thread refreshes). The getters are the live ones when a hit needs nothing else: no ``wrapper_fn`` to
        apply and no use clock to tick; otherwise a list of None, which sends every read the long way."""
        getters = self._getters
        hot = self._wrapper_fn is None and not self._evicting
        self._fast = (self._starts, getters if hot else [None] * len(getters))

    @property
    def wrapper_fn(self) -> Optional[Callable[[Any], Any]]:
        """The function applied to every sample read (None: samples as stored)."""
        return self._wrapper_fn

    @wrapper_fn.setter
    def wrapper_fn(self, wrapper_fn: Optional[Callable[[Any], Any]]) -> None:
        with self._lock:
            self._wrapper_fn = wrapper_fn
            self._update_fast_path()

    # -------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        """The sharded map's folder: an absolute path with its symbolic links resolved once, when it was opened."""
        return self._path

    @property
    def mode(self) -> str:
        """``"r"`` (reads only) or ``"r+"`` (reads, and may add shards with `add_shards`)."""
        return self._mode

    @property
    def kind(self) -> str:
        """The kind of the shards (``"strings"``, ``"ragged"``, ``"numpy"``, ...)."""
        return self._cls.layout.kind

    @property
    def shard_class(self) -> type[MapBase]:
        """The container class of the shards (`RaggedMmap`, ...)."""
        return self._cls

    @property
    def attrs(self) -> dict[str, Any]:
        """The schema the shards share (their header attributes, without those derived from the samples)."""
        attrs = self._header.attrs if self._field is None else self._header.attrs["fields"][self._field]["attrs"]
        return dict(attrs)

    @property
    def dtype(self) -> Optional[np.dtype[Any]]:
        """The samples' dtype, for kinds that have one."""
        from mmap_ninja.format import dtype_from_json

        spec = self.attrs.get("dtype")
        return None if spec is None else dtype_from_json(spec)

    @property
    def metadata(self) -> dict[str, Any]:
        """The user metadata stored in ``shards.json`` (a copy)."""
        return dict(self._header.metadata)

    @property
    def shards(self) -> list[ShardInfo]:
        """The shards in order, as ``shards.json`` lists them."""
        return list(self._header.shards)

    @property
    def shard_starts(self) -> list[int]:
        """``n_shards + 1`` cumulative lengths: shard k holds samples ``shard_starts[k]`` to ``shard_starts[k+1]-1``."""
        return list(self._starts)

    @property
    def open_shards(self) -> int:
        """How many shards are open right now (at most ``max_open_shards``)."""
        return len(self._open)

    @property
    def open_files(self) -> int:
        """How many file descriptors the open shards hold (at most ``max_open_files``, unless one shard alone
        holds more), not counting the mappings of arrays read earlier that are still alive."""
        return sum(self._files.values())

    def shard(self, k: int) -> MapBase:
        """Shard ``k``, opened read-only (checked against ``shards.json``: same header id and length)."""
        n = len(self._header.shards)
        if not -n <= k < n:
            raise IndexError(f"shard {k} is out of range: the map has {n} shards")
        return self._shard(k % n)

    def _shard(self, k: int) -> MapBase:
        shard = self._open.get(k)
        if shard is None:
            return self._admit(k)[0]
        self._used[k] = next(self._clock)
        return shard

    def _admit(self, k: int) -> tuple[MapBase, Callable[[int], Any]]:
        """Open shard ``k`` (unless another thread just did) and evict the least recently used beyond the limit."""
        with self._lock:
            shard = self._open.get(k)
            if shard is None:
                shard, self._files[k] = self._load(k)
                # The shard's reader with its read options (decoder, channels, verify_reads): positions were
                # checked here already.
                reader = shard.sample_reader()
                self._getters[k + 1] = reader
                self._open[k] = shard
                if not self._evicting and self._files.get(k, 0) * len(self._header.shards) > self._max_files:
                    self._evicting = True  # all the shards cannot stay open: hits tick the use clock now
                    self._update_fast_path()
                # Shards map some columns only when first read (a ragged field's shapes): count what they hold now.
                for j, opened in self._open.items():
                    self._files[j] = opened.open_files_held()
                while len(self._open) > 1 and (len(self._open) > self._max_open or
                                               sum(self._files.values()) > self._max_files):
                    used = self._used
                    victim = min((j for j in self._open if j != k), key=lambda j: used.get(j, -1))
                    # Dropped, not closed: another thread may still be reading from it; its descriptors go
                    # with it, and its mappings with the last array read from it.
                    del self._open[victim]
                    self._getters[victim + 1] = None
                    used.pop(victim, None)
                    self._files.pop(victim, None)
            else:
                known = self._getters[k + 1]
                assert known is not None
                reader = known
            self._used[k] = next(self._clock)
            return shard, reader

    def open_shard(self, k: int) -> MapBase:
        """Open shard ``k`` read-only, unchecked: every read reaches a shard through this (and then checks it
        against ``shards.json``). A subclass may override it to fetch the shard first, as the remote adapter does."""
        if self._source is not None:
            return self._source.open_shard(k)
        return self._cls(self._path / self._header.shards[k].path, mode="r", **self.shard_options)

    def _load(self, k: int) -> tuple[MapBase, int]:
        """Shard ``k`` opened and checked, and how many descriptors it holds (a read-only shard never grows: its
        mappings need no descriptor of its own)."""
        info = self._header.shards[k]
        shard_path = self._path / info.path
        try:
            shard = self.open_shard(k)
        except NotAMapError:
            raise CorruptMapError(f"{self._path / SHARDS_FILE} lists shard {k} at {info.path!r}, but {shard_path} "
                                  f"holds no map") from None
        store = shard._store
        shard_id = None if store is None else store.header.id
        if info.id is not None and shard_id != info.id:
            raise CorruptMapError(f"shard {k} ({shard_path}) was replaced after it was added: its header id is "
                                  f"{shard_id!r}, {SHARDS_FILE} records {info.id!r}")
        if len(shard) != info.length:
            raise CorruptMapError(f"shard {k} ({shard_path}) holds {len(shard)} samples, but {SHARDS_FILE} records "
                                  f"{info.length}; it was changed after it was added")
        files = shard.release_files()
        return (shard if self._field is None else shard.field(self._field)), files  # type: ignore[attr-defined]

    # -------------------------------------------------------------- reading

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        """``m[i]`` gives one sample; a slice, a sequence of ints or a boolean mask gives a list of them."""
        if type(index) is int:  # the hot path: a plain position in an open shard (see _update_fast_path)
            starts, getters = self._fast
            k = bisect_right(starts, index)
            get = getters[k]
            if get is not None:
                return get(index - starts[k - 1])
        else:
            if isinstance(index, (bool, np.bool_)):
                raise TypeError("a map cannot be indexed by a boolean scalar; use a boolean mask of the map's length")
            try:
                index = index.__index__()  # NumPy integers, 0-d integer arrays and tensors
            except (AttributeError, TypeError):
                if isinstance(index, str):
                    return self.field(index)  # records shards: the field's sharded container
                return self.__getitems__(index)
        length = self._length
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError(f"index {index} is out of range for a sharded map of length {length}")
        starts = self._starts
        k = bisect_right(starts, position) - 1
        get = self._getters[k + 1]
        if get is None:
            get = self._admit(k)[1]
        else:
            self._used[k] = next(self._clock)
        sample = get(position - starts[k])
        return sample if self._wrapper_fn is None else self._wrap(sample)

    def _wrap(self, sample: Any) -> Any:
        if self.copy_before_wrapper_fn and isinstance(sample, np.ndarray):
            sample = sample.copy()
        assert self.wrapper_fn is not None
        return self.wrapper_fn(sample)

    def _groups(self, positions: np.ndarray[Any, Any]) -> Iterator[tuple[int, np.ndarray[Any, Any],
                                                                         np.ndarray[Any, Any]]]:
        """``(shard, rows, local positions)`` for every shard that ``positions`` touch: ``rows`` are where those
        samples go in the result."""
        if not len(positions):
            return
        shard_of = np.searchsorted(self._starts_array, positions, side="right") - 1
        if shard_of[0] == shard_of[-1] and (shard_of == shard_of[0]).all():
            k = int(shard_of[0])
            yield k, np.arange(len(positions)), positions - self._starts[k]
            return
        order = np.argsort(shard_of, kind="stable")
        sorted_shards = shard_of[order]
        bounds = np.flatnonzero(np.diff(sorted_shards)) + 1
        for rows in np.split(order, bounds):
            k = int(shard_of[rows[0]])
            yield k, rows, positions[rows] - self._starts[k]

    def __getitems__(self, indices: Any) -> list[Any]:
        """The samples at ``indices`` as a list, grouped by shard and read with one vectorized lookup per shard."""
        positions = resolve_positions(indices, self._length)
        result: list[Any] = [None] * len(positions)
        for k, rows, local in self._groups(positions):
            samples = self._shard(k).__getitems__(local)  # the shard's reads, with its read options
            if len(rows) == len(result):
                result = samples
            else:
                for row, sample in zip(rows.tolist(), samples):
                    result[row] = sample
        if self.wrapper_fn is not None:
            result = [self._wrap(s) for s in result]
        return result

    def get_batch(self, indices: Any, *args: Any, **options: Any) -> Any:
        """The samples at ``indices`` as one batch, with the arguments and the result of the shards' own
        ``get_batch`` (`RaggedMmap.get_batch`, `NumpyMmap.get_batch`, `ImagesMmap.get_batch`,
        `RecordsMmap.get_batch`): equal to what one map holding all the samples gives. Each shard the batch
        touches reads its samples with one ``get_batch``; the shard class's ``combine_batches`` joins them
        (into ``out=`` if given). ``wrapper_fn`` is not applied."""
        method = getattr(self._cls, "get_batch", None)
        if method is None:
            raise TypeError(f"maps of kind {self.kind!r} have no get_batch(); index them instead")
        arguments = _batch_arguments(method, indices, args, options)
        positions = resolve_positions(indices, self._length)
        groups = list(self._groups(positions)) if len(positions) else []
        if len(groups) <= 1:  # one shard (or none): its own get_batch, out= included
            if not self._header.shards:
                raise ValueError(f"{self._path} holds no shards, so no samples and no dtype yet")
            k, local = (groups[0][0], groups[0][2]) if groups else (0, positions)
            return self._shard(k).get_batch(local, **arguments)  # type: ignore[attr-defined]
        per_shard = {name: value for name, value in arguments.items() if name != "out"}
        parts = []
        for k, rows, local in groups:
            try:
                parts.append((rows, self._shard(k).get_batch(local, **per_shard)))  # type: ignore[attr-defined]
            except ValueError as e:
                if type(e) is not ValueError:  # damage, checksum errors, ...: every MapError keeps its class
                    raise
                raise ValueError(f"{e} (indices within shard {k}, whose samples start at {self._starts[k]})") \
                    from None
        return self._cls.combine_batches(parts, positions, arguments)

    def window(self, index: int, offset: int, length: int) -> Any:
        """Elements ``[offset, offset + length)`` of sample ``index``, read by its shard's own ``window``
        (`RaggedMmap.window`: a read-only view, or a copy for a codec); ``wrapper_fn`` is not applied."""
        if getattr(self._cls, "window", None) is None:
            raise AttributeError(f"maps of kind {self.kind!r} have no window(); only ragged maps do")
        position = resolve_index(index, self._length)
        k = bisect_right(self._starts, position) - 1
        local = position - self._starts[k]
        try:
            return self._shard(k).window(local, offset, length)  # type: ignore[attr-defined]
        except IndexError as e:
            raise IndexError(f"{e} (sample {position} of {self._path} is sample {local} of shard {k})") from None

    def index_of(self, key: Any) -> int:
        """The position of the row whose key field holds ``key``, for shards built with a key (records maps'
        ``key=``): each shard's on-disk index is probed in turn (O(number of shards)); keys are unique within a
        shard, and the first shard holding ``key`` answers. A KeyError if no shard has it; a TypeError if a shard
        has no key field (the answer could be in it)."""
        if getattr(self._cls, "index_of", None) is None:
            raise AttributeError(f"maps of kind {self.kind!r} have no index_of(); only records maps built with key= "
                                 f"are looked up by key")
        for k, info in enumerate(self._header.shards):
            if not info.length:
                continue
            shard = self._shard(k)
            try:
                return self._starts[k] + int(shard.index_of(key))  # type: ignore[attr-defined]
            except KeyError:
                continue
            except TypeError:
                if getattr(shard, "key", None) is None:
                    raise TypeError(f"shard {k} ({self._path / info.path}) has no key field, so {self._path} "
                                    f"cannot be looked up by key") from None
                raise
        raise MissingKeyError(f"no row of {self._path} has the key {key!r}")

    def __contains__(self, item: Any) -> bool:
        """For shards that define ``in`` (records maps with a key: whether a row has the key ``item``), whether
        one of them holds it; for other kinds, whether a sample equals ``item``, as for a single map."""
        if getattr(self._cls, "__contains__", None) is None:
            return any(sample is item or sample == item for sample in self)
        return any(info.length and item in self._shard(k) for k, info in enumerate(self._header.shards))

    def __iter__(self) -> Iterator[Any]:
        """Every sample in order, shard after shard."""
        for k in range(len(self._header.shards)):
            if self._header.shards[k].length:
                samples = iter(self._shard(k))
                yield from (samples if self.wrapper_fn is None else map(self._wrap, samples))

    # -------------------------------------------------------------- life cycle

    def project(self, name: str) -> ShardedMap:
        """Field ``name`` of records shards as a read-only sharded map of that field (see `field`)."""
        projected = ShardedMap.__new__(ShardedMap)
        projected._path, projected._mode, projected._wrapper_fn = self._path, "r", None
        projected.copy_before_wrapper_fn = True
        projected._max_open, projected._max_files = self._max_open, self._max_files
        projected._lock_timeout, projected._lock, projected.shard_options = self._lock_timeout, threading.Lock(), {}
        projected._field, projected._source = name, self
        projected._install(self._header)
        return projected

    def refresh(self) -> int:
        """Read ``shards.json`` again (to see shards added since); returns how many samples appeared."""
        before = self._length
        if self._source is not None:  # a field: its records map's refresh
            self._source.refresh()
            if self._source._header is not self._header:
                self._install(self._source._header)
            return self._length - before
        header = _read_top_header(self._path)
        if header.id == self._header.id and header.commit == self._header.commit:
            return 0
        self._install(header)
        return self._length - before

    def add_shards(self, paths: Sequence[PathLike], *, copy: bool = False) -> None:
        """Move the maps at ``paths`` into this sharded map as new shards, after the existing ones (see `merge`)."""
        if self._mode == "r":
            raise ReadOnlyMapError(f"{self._path} is open with mode='r', which never writes; open it with mode='r+'")
        merge(self._path, paths, copy=copy, lock_timeout=self._lock_timeout)
        self.refresh()

    def close(self) -> None:
        """Close every open shard."""
        with self._lock:
            for shard in self._open.values():
                shard.close()
            self._open.clear()
            self._getters[:] = [None] * len(self._getters)
            self._used.clear()
            self._files.clear()

    def __enter__(self) -> ShardedMap:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._source is not None:
            return f"field {self._field!r} ({self.kind}) of {self._source!r}"
        return (f"ShardedMap({str(self._path)!r}, mode={self._mode!r}) of {len(self._header.shards)} "
                f"{self.kind} shards, length {self._length}")

    def __reduce__(self) -> tuple[Any, ...]:
        if self._source is not None:
            return _field_of, (self._source, self._field)
        # The path and the options, never the data or the open shards.
        options = {"wrapper_fn": self.wrapper_fn, "mode": self._mode,
                   "copy_before_wrapper_fn": self.copy_before_wrapper_fn, "max_open_shards": self._max_open,
                   "max_open_files": self._max_files,
                   "lock_timeout": self._lock_timeout, **self.shard_options}
        return _reopen, (str(self._path), options)


def _reopen(path: str, options: dict[str, Any]) -> ShardedMap:
    return ShardedMap(path, **options)


def _field_of(records: ShardedMap, name: str) -> ShardedMap:
    return records.project(name)


def _batch_arguments(method: Callable[..., Any], indices: Any, args: tuple[Any, ...],
                     options: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a call ``shard.get_batch(indices, *args, **options)`` but ``self`` and ``indices``, by
    name (a call the shard class's own ``get_batch`` would refuse raises the same TypeError here)."""
    signature = _signature_of(method)
    bound = signature.bind(None, indices, *args, **options)
    self_name, indices_name = list(signature.parameters)[:2]
    return {name: value for name, value in bound.arguments.items() if name not in (self_name, indices_name)}


_signature_of = lru_cache(maxsize=64)(inspect.signature)  # once per shard class's get_batch, not per call


# ------------------------------------------------------------------ merging


def _flock(directory: Path, timeout: Optional[float]) -> int:
    return lock_directory(directory, timeout, what="the sharded map")


def _unlock(fd: int) -> None:
    locks.release(fd)


@contextmanager
def directory_lock(directory: PathLike, timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive lock of a sharded map's directory (``.lock``) for the block: `merge`, `add_shards`
    and the Dask build take it, so only one of them changes a sharded map at a time. Waits at most ``timeout``
    seconds (``None``: for ever), then raises `MapLockedError`."""
    fd = _flock(absolute(directory), timeout)
    try:
        yield
    finally:
        _unlock(fd)


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
    created: Optional[Path] = None  # the outermost folder this merge made (out, or a parent of it)
    for folder in (out, *out.parents):
        if folder.exists():
            break
        created = folder
    if created is not None:
        try:
            out.mkdir(parents=True)
        except FileExistsError:  # another merge made it just now: it is that merge's to clean up; append to it
            created = None
    try:
        lock_fd = _flock(out, lock_timeout)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
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
            shutil.rmtree(created, ignore_errors=True)  # nothing was moved: leave no trace
        raise
    finally:
        _unlock(lock_fd)
    return ShardedMap(out)


def _refuse_foreign(out: Path, names_only: bool = False) -> None:
    """Refuse a directory holding something a merge did not write. ``names_only``: look only for foreign names
    (without the lock, a concurrent merge may be publishing: its ``shards/`` is filled and its journal gone just
    before its ``shards.json`` appears)."""
    foreign = sorted(set(os.listdir(out)) - {LOCK_FILE, SHARDS_DIR, SHARDS_FILE, SHARDS_FILE + ".tmp", JOURNAL_FILE,
                                             JOURNAL_FILE + ".tmp"})
    if names_only and not foreign:
        return
    journal = (out / JOURNAL_FILE).exists()  # a dead merge's moves, which recovery undoes
    if foreign or (not journal and (out / SHARDS_DIR).exists() and os.listdir(out / SHARDS_DIR)):
        raise MapExistsError(f"{out} is not empty and holds no sharded map (found "
                             f"{(foreign or [SHARDS_DIR])[0]!r}); merge into a new directory")


def _move_one(src: Path, dest: Path, header: Header, copy: bool, lock_timeout: Optional[float]) -> None:
    """Move (or copy) one map, holding its writer lock so that no append races the move."""
    lock_fd = _flock(src, lock_timeout)
    try:
        now = read_header(src)
        if now.id != header.id or now.commit != header.commit:
            raise ValueError(f"{src} changed while it was being merged (commit {header.commit} -> {now.commit})")
        if copy:
            staging = dest.with_name(dest.name + ".copying")
            shutil.copytree(src, staging, ignore=shutil.ignore_patterns(LOCK_FILE))
            os.rename(staging, dest)
        else:
            os.rename(src, dest)
    finally:
        os.close(lock_fd)


def recover_merge(out_dir: PathLike) -> int:
    """Undo a merge into ``out_dir`` that died before publishing: move the maps it had moved back where they
    were (or delete its partial copies, with ``copy=True``). Returns how many maps were moved back or deleted.
    `merge` and `add_shards` do this first on their own."""
    out = absolute(out_dir)
    lock_fd = _flock(out, DEFAULT_LOCK_TIMEOUT)
    try:
        return _recover_locked(out)
    finally:
        _unlock(lock_fd)


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
