"""`ShardedMap`: a sharded map (see `mmap_ninja.containers.sharded`) read with the API of a single map.

Opening reads only ``shards.json``; a shard is opened on first use, and at most ``max_open_shards`` are kept open
(least recently used first out) holding at most ``max_open_files`` descriptors, so a dataset of thousands of
shards keeps a bounded number of files and mappings. Every read goes through the shard's own container, with the
shard's read options. Writing (`ShardedMap.add_shards`) is `mmap_ninja.containers.sharded.merge`, which registers itself
here when imported (it builds on this module).
"""

from __future__ import annotations

import inspect
import threading
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import accumulate, count
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mmap_ninja.containers.sharded_header import ShardInfo
from mmap_ninja.containers.sharded_header import TopHeader as _TopHeader
from mmap_ninja.containers.sharded_header import read_top_header as _read_top_header
from mmap_ninja.containers.sharded_kind import KindFace
from mmap_ninja.containers.sharded_records import RecordsFace
from mmap_ninja.containers.sharded_rows import NOT_ROWS, array_rows
from mmap_ninja.containers.sharded_writes import RefusedWrites
from mmap_ninja.errors import (
    CorruptMapError,
    MissingKeyError,
    NotAMapError,
    ReadOnlyMapError,
    UnknownFeatureError,
)
from mmap_ninja.kinds.arraylike import ReadOnlyArrayMixin
from mmap_ninja.kinds.maps import KINDS, MapBase, _DatasetBase, resolve_index, resolve_positions
from mmap_ninja.storage.format import SHARDS_FILE
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike, resolved

__all__ = ["DEFAULT_MAX_OPEN_FILES", "DEFAULT_MAX_OPEN_SHARDS", "ShardedMap", "register_merge"]

DEFAULT_MAX_OPEN_SHARDS = 64
DEFAULT_MAX_OPEN_FILES = 256  # descriptors (each mapping holds one) of the open shards: well under the usual 1,024

_merge: Optional[Callable[..., Any]] = None


def register_merge(merge: Callable[..., Any]) -> None:
    """Give `ShardedMap.add_shards` its implementation (`mmap_ninja.containers.sharded.merge` registers itself)."""
    global _merge
    _merge = merge


class ShardedMap(RecordsFace, KindFace, RefusedWrites, _DatasetBase):  # type: ignore[misc, unused-ignore]  # a Dataset to a checker
    """A sharded map (see the module's docstring), read with the API of a single map.

    ``len(m)``, ``m[i]`` (negative too), ``m[a:b]`` / ``m[[i, j]]`` / a boolean mask (a list of samples;
    for numpy shards an array, as ``NumpyMmap`` gives),
    ``m.get_batch(indices, ...)`` with the arguments of the shards' kind when it has one, iteration, and
    ``__getitems__`` for PyTorch's batched fetch. It pickles as its path. ``wrapper_fn`` is applied to every
    sample read (to a copy unless ``copy_before_wrapper_fn=False``). ``max_open_shards`` bounds how many shards
    are open at once, and ``max_open_files`` how many file descriptors they hold (a shard's mapped columns
    hold one each, and a slot map's reader lock one; the least recently used shards are dropped first, never
    the one being read): a records map of many fields over many shards stays well under the usual limit of
    1,024. Arrays read earlier keep their own
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
        (5, [0, 3, 5], np.int64(3), array([1, 2, 3]))
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
        from mmap_ninja.storage.format import dtype_from_json

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

    def open_files_held(self) -> int:
        """How many file descriptors this map holds (its open shards'): `open_files`, as a single map's
        ``open_files_held()`` answers, so that a container of maps (a blend, a sharded map of them) can budget it."""
        return self.open_files

    def release_files(self) -> int:
        """Close the descriptors the open shards' mappings do not need; how many they still hold."""
        with self._lock:
            for k, shard in self._open.items():
                self._files[k] = shard.release_files()
            return sum(self._files.values())

    def sample_reader(self) -> Callable[[int], Any]:
        """A function of a position in range giving ``self[position]`` (with every read option and ``wrapper_fn``),
        for containers reading many maps (a blend)."""
        return self.__getitem__

    def flush(self) -> None:
        """Nothing to write: a sharded map is read-only sample by sample (as ``flush`` of a map open read-only)."""

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
        """``m[i]`` gives one sample; a slice, a sequence of ints or a boolean mask gives a list of them, or for
        numpy samples one array of them as `NumpyMmap` gives (`mmap_ninja.containers.sharded_rows`)."""
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
                if issubclass(self._cls, ReadOnlyArrayMixin):  # numpy samples: NumPy's indexing, as NumpyMmap's
                    rows = array_rows(self, index)
                    if rows is not NOT_ROWS:
                        return rows
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
        if _merge is None:  # pragma: no cover - mmap_ninja.containers.sharded registers it when the package is imported
            raise RuntimeError("mmap_ninja.containers.sharded is not loaded")
        _merge(self._path, paths, copy=copy, lock_timeout=self._lock_timeout)
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
