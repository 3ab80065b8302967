"""The container every kind shares: opening by path, indexing, iteration, writing as transactions, building
in batches, pickling and closing. A kind is a subclass that names its `Layout`; it is registered by kind name
so that `open_existing` can open any map.
"""

from __future__ import annotations

import inspect
import operator
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, TypeVar, Union

import numpy as np

from mmap_ninja.errors import (
    ClosedMapError,
    CorruptMapError,
    KindMismatchError,
    MapError,
    NotAMapError,
    ReadOnlyMapError,
    ShardedFolderError,
    UnfinishedMapError,
)
from mmap_ninja.kinds import _batching, parallel
from mmap_ninja.kinds.attrs_check import check_attrs
from mmap_ninja.kinds.batch import check_batch_size, check_samples_iterable, join_batches
from mmap_ninja.kinds.layouts import EmptyColumns, Layout
from mmap_ninja.kinds.legacy import LegacyView, is_legacy_map, legacy_write_refusal, open_legacy
from mmap_ninja.kinds.shard_guard import refuse_shard, sharded_folder_error
from mmap_ninja.storage.checksums import CheckedView, ReadChecker
from mmap_ninja.storage.format import HEADER_FILE, SHARDS_FILE, check_metadata, dtype_from_json
from mmap_ninja.storage.replace import replacement_stage, swap_in
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike, Store, check_lock_timeout, resolved

__all__ = ["KINDS", "MapBase", "SampleIndex", "SampleIndices", "resolve_index", "resolve_positions"]


M = TypeVar("M", bound="MapBase")

SampleIndex = Union[int, "np.integer[Any]"]
"""An index that selects one sample (``m[i]``): an int or a NumPy integer (negative counts from the end)."""
SampleIndices = Union[slice, Sequence[int], "np.ndarray[Any, Any]"]
"""An index that selects many samples (``m[2:5]``, ``m[[0, 3]]``, ``m[mask]``): a slice, a sequence of ints, or
an int or boolean array."""

if TYPE_CHECKING:
    # To a type checker every map is a `torch.utils.data.Dataset`, so `DataLoader(m)` and `random_split(m, ...)`
    # check; at run time the base is `object`: the core never imports torch. (Without torch installed the name is
    # `Any`, which strict mypy refuses to subclass: hence the ignore, unused when torch's inline types are seen.)
    from torch.utils.data import Dataset

    _DatasetBase = Dataset[Any]
else:
    _DatasetBase = object

KINDS: dict[str, type[MapBase]] = {}
"""Every kind of map, by the name its header gives (``"strings"``, ``"ragged"``, ``"numpy"``, ...)."""

_INT64_MAX = np.iinfo(np.int64).max
_HEADER_DAMAGE = (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError)
"""What building a view from a hostile header or damaged index may raise (reported as a `CorruptMapError`)."""
_CREATION_RETRIES = 10  # opening a map another process is creating retries for up to ~50 ms


def _normalize_mode(mode: str) -> str:
    normalized = mode.replace("b", "") if isinstance(mode, str) else mode  # 0.9.0 spelled them "rb" and "r+b"
    if normalized not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' (read-only) or 'r+' (read and write), got {mode!r}")
    return normalized


def resolve_index(index: Any, length: int) -> int:
    """``index`` (anything `operator.index` takes, but a bool) as a position in ``range(length)``."""
    if isinstance(index, (bool, np.bool_)):
        raise TypeError("a map cannot be indexed by a boolean scalar; use a boolean mask of the map's length")
    position = operator.index(index)
    if position < 0:
        position += length
    if not 0 <= position < length:
        raise IndexError(f"index {index} is out of range for a map of length {length}")
    return position


def resolve_positions(index: Any, length: int) -> np.ndarray[Any, Any]:
    """A slice, a sequence of ints or a boolean mask as an int64 array of positions in ``range(length)``."""
    if isinstance(index, slice):
        return np.arange(*index.indices(length), dtype=np.int64)
    if isinstance(index, (int, np.integer)) or (isinstance(index, np.ndarray) and index.ndim == 0):
        raise TypeError(f"a sequence of indices (a list, a range, a slice, an integer array or a boolean mask) is "
                        f"needed here, got the single index {index!r}")
    positions = np.asarray(index)
    if positions.ndim != 1:
        raise TypeError(f"a map is indexed by an int, a slice, a 1-D sequence of ints or a boolean mask; "
                        f"got {type(index).__name__} with {positions.ndim} dimensions")
    if positions.dtype == bool:
        if positions.size != length:
            raise IndexError(f"boolean mask of length {positions.size} does not match the map's length {length}")
        return np.flatnonzero(positions)
    if positions.size == 0:
        return np.empty(0, dtype=np.int64)
    if positions.dtype.kind not in "iu":
        raise TypeError(f"index arrays must hold integers or booleans, got dtype {positions.dtype}")
    if positions.dtype == np.uint64 and (positions > _INT64_MAX).any():
        raise IndexError(f"index {positions[positions > _INT64_MAX][0]} is out of range for a map of length {length}")
    positions = positions.astype(np.int64)
    outside = (positions < -length) | (positions >= length)
    if outside.any():
        raise IndexError(f"index {positions[outside][0]} is out of range for a map of length {length}")
    return np.where(positions < 0, positions + length, positions)


class _StaleView:
    """Stands in for a handle's view after it wrote: the first use builds the view of the new state, so a loop
    of writes does not remap the files after every one of them.

    It resolves once: every attribute read through it, by any thread, comes from the same view. A reader that
    took ``view = self._view`` and reads ``view.length`` and then ``view.get_many`` must get both from one
    state, or it would compute positions from one state's length and read them from another's offsets."""

    __slots__ = ("_owner", "_resolved")

    def __init__(self, owner: MapBase):
        self._owner = owner
        self._resolved: Any = None

    def __getattr__(self, name: str) -> Any:
        view = self._resolved
        if view is None:
            view = self._owner._resolve(self)
        return getattr(view, name)


class _ClosedView:
    __slots__ = ("_path",)

    def __init__(self, path: Path):
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise ClosedMapError(f"I/O operation on a closed map ({self._path})")


class MapBase(_DatasetBase):  # type: ignore[misc, unused-ignore]
    """Base of `StringsMmap`, `RaggedMmap`, `NumpyMmap`: a map of samples stored in the directory ``out_dir``.

    Opening reads only the header: ``MapClass(out_dir)`` is O(1) and needs only read access. With the default
    ``mode="r+"`` the map can also be written: every ``append``, ``extend`` and in-place assignment is a
    transaction that takes the map's writer lock (waiting up to ``lock_timeout`` seconds, ``None`` for ever),
    catches up with what other handles and processes committed, writes after the latest end and publishes;
    ``with m.transaction():`` makes many writes one commit. ``mode="r"`` never writes. When ``out_dir`` holds no
    map yet, the handle is an empty map and its first write creates it (``mode="r"`` refuses a missing map).
    ``wrapper_fn`` is applied to every sample read, to a copy of it unless ``copy_before_wrapper_fn=False``.
    ``durable=True`` fsyncs every commit before publishing it. ``allow_unfinished=True`` opens a build that was
    interrupted (read-only), to read what it committed. ``verify_reads=True`` checks every read against the
    checksums of the bytes it is read from (each checksum record once per handle; ``refresh()`` forgets them) and
    raises `mmap_ninja.storage.checksums.ChecksumMismatchError` on damage: indexing in every form, iteration,
    ``get_batch``, a records map's field containers, and whole-column reads (``values``, ``offsets``, ``array``,
    ``to_arrow``), which check every committed byte first. Not checked: key lookups of a records map and shapes or
    lengths read from the header. Reads are unchecked by default (no cost).
    """

    layout: ClassVar[Layout]
    _view: Any
    _legacy: Any  # the reader of a map written by mmap_ninja 0.9.0, or None
    default_batch_size: ClassVar[int] = 1024
    """The samples per commit of a builder (``from_generator``, ``from_indexable``, ...) given no ``batch_size``."""
    plain_reads: ClassVar[bool] = True
    """Whether ``m[i]`` (an int in range) is its view's ``get(i)`` when no ``wrapper_fn`` is set. A subclass that
    defines ``__getitem__`` is taken to read otherwise (read options such as an images map's decoder) unless it
    sets this again; a sharded map's hot path then calls the container, not its view (see `sample_reader`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        layout = cls.__dict__.get("layout")
        if layout is not None:
            KINDS.setdefault(layout.kind, cls)
        if "__getitem__" in cls.__dict__ and "plain_reads" not in cls.__dict__:
            cls.plain_reads = False

    def sample_reader(self) -> Callable[[int], Any]:
        """A function of a position (known to be in range) giving the sample ``self[position]`` gives, with every
        read option of this handle (decoder, ``channels``, ``verify_reads``, ``wrapper_fn``): the view's own
        reader when that is the same, else the container's ``__getitem__``. Containers reading many maps (a
        sharded map) call it once per map they open, and then it per sample."""
        if self.wrapper_fn is None and self.plain_reads:
            view = self._view
            if not isinstance(view, _StaleView):
                return view.get  # type: ignore[no-any-return]
        return self.__getitem__

    def release_files(self) -> int:
        """For a read-only handle another container keeps open (a sharded map's shard): close the descriptors its
        mappings do not need, and return how many descriptors it still holds."""
        store = self._store
        if store is None:
            return 0
        store.release_descriptors()
        return store.descriptors()

    def open_files_held(self) -> int:
        """How many file descriptors this handle holds: its columns' (their own and their mappings') and, for a map
        kept with ``commit="slots"``, its reader lock."""
        store = self._store
        return 0 if store is None else store.descriptors()

    def __init__(self, out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: str = "r+", *,
                 copy_before_wrapper_fn: bool = True, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                 durable: bool = False, allow_unfinished: bool = False, verify_reads: bool = False):
        if isinstance(wrapper_fn, str) and mode == "r+":  # MapClass(path, "r"): the mode given positionally
            wrapper_fn, mode = None, wrapper_fn
        self._setup(resolved(out_dir), _normalize_mode(mode), wrapper_fn, copy_before_wrapper_fn, lock_timeout,
                    durable, allow_unfinished)
        self._verify_reads = bool(verify_reads)
        if allow_unfinished:
            self._mode = "r"
        try:
            store: Optional[Store] = self._open_store()
        except NotAMapError:
            if is_legacy_map(self._path):  # written by mmap_ninja 0.9.0: read it as it is, refuse writes
                if self._verify_reads:
                    raise ValueError(f"{self._path} was written by mmap_ninja 0.9.0 and has no checksums: "
                                     f"verify_reads=True cannot check it (mmap-ninja convert upgrades it)") from None
                self._open_legacy()
                return
            if (self._path / SHARDS_FILE).is_file():  # from_dask or merge built it: never show it as an empty map
                raise self._sharded_folder_error() from None
            if self._mode == "r" or (self._path.exists() and not self._path.is_dir()):  # (a file: not a map)
                raise
            # A header that appeared since: a racing process created the map. None: 0.9.0's incremental start, an
            # empty map that the first write creates.
            store = self._open_store() if (self._path / HEADER_FILE).exists() else None
        if store is not None and store.header.building and store.header.commit == 0:
            store.close()  # a build killed before its first commit: it holds nothing, not even its columns
            store = None
            self._mode = "r"
        self._store = store
        if store is not None:
            self._check_kind(store)
            if self._verify_reads and store.header.checksums is None:
                store.close()
                raise ValueError(f"{self._path} has no checksums (it was written before mmap_ninja kept them): "
                                 f"verify_reads=True cannot check its reads")
        self._view = self._rebuild()

    def _sharded_folder_error(self) -> ShardedFolderError:
        """The error of opening the folder of a sharded map with the class of a single map."""
        return sharded_folder_error(self._path, self.layout.kind, type(self).__name__)

    def _open_store(self) -> Store:
        attempt = 0
        while True:
            try:
                return Store.open(self._path, durable=self._durable, lock_timeout=self._lock_timeout,
                                  allow_unfinished=self._allow_unfinished, resolve=False)
            except UnfinishedMapError as error:
                attempt += 1
                if not error.in_progress or attempt > _CREATION_RETRIES:
                    raise
                time.sleep(0.005)  # another process may be creating it: that takes milliseconds, a build longer

    def _open_legacy(self) -> None:
        reader = open_legacy(self._path)
        if reader.kind != self.layout.kind:
            raise KindMismatchError(f"{self._path} holds a {reader.kind!r} map written by mmap_ninja 0.9.0, not a "
                                    f"{self.layout.kind!r} one; open it with mmap_ninja.open_existing()")
        self._legacy = reader
        self._store = None
        self._view = LegacyView(reader)

    def _setup(self, path: Path, mode: str, wrapper_fn: Optional[Callable[[Any], Any]],
               copy_before_wrapper_fn: bool, lock_timeout: Optional[float], durable: bool,
               allow_unfinished: bool) -> None:
        self._path = path
        self._mode = mode
        self.wrapper_fn = wrapper_fn
        self.copy_before_wrapper_fn = copy_before_wrapper_fn
        self._lock_timeout = check_lock_timeout(lock_timeout)
        self._durable = durable
        self._allow_unfinished = allow_unfinished
        self._legacy = None
        self._view_lock = threading.Lock()
        self._tickets = 0  # views are numbered when their building starts; a newer one is never replaced by an older
        self._installed = 0
        self._shard_checked = False  # whether a write checked that no sharded map lists this map as a shard
        self._verify_reads = False
        self._verified: set[tuple[int, int, int, int]] = set()  # checksum records this handle's reads verified

    @classmethod
    def _attach(cls: type[M], store: Store, mode: str = "r+", wrapper_fn: Optional[Callable[[Any], Any]] = None,
                copy_before_wrapper_fn: bool = True, *,
                verified: Optional[set[tuple[int, int, int, int]]] = None) -> M:
        """A container over an open ``store``; ``verified`` (the set of checksum records another handle checked,
        shared with it) makes it check its reads as that handle does (``verify_reads=True``)."""
        self = cls.__new__(cls)
        self._setup(store.path, _normalize_mode(mode), wrapper_fn, copy_before_wrapper_fn, store.lock_timeout,
                    store.durable, False)
        if verified is not None:
            self._verify_reads, self._verified = True, verified
        self._store = store
        self._view = self._rebuild()
        return self

    def _check_kind(self, store: Store) -> None:
        if store.kind != self.layout.kind:
            store.close()
            raise KindMismatchError(f"{self._path} holds a {store.kind!r} map, not a {self.layout.kind!r} one; open "
                                    f"it with {KINDS[store.kind].__name__ if store.kind in KINDS else 'its class'} "
                                    f"or mmap_ninja.open_existing()")
        try:
            check_attrs(store.kind, store.attrs)
            needed = self.layout.columns_for(store.attrs)
        except CorruptMapError as e:
            store.close()
            raise CorruptMapError(f"{self._path / HEADER_FILE}: {e}") from None
        except _HEADER_DAMAGE as e:  # what the checks above do not foresee: still the header's fault
            store.close()
            raise CorruptMapError(f"{self._path / HEADER_FILE} has attributes a {store.kind!r} map cannot have "
                                  f"({type(e).__name__}: {e})") from None
        missing = [name for name in needed if name not in store.header.columns]
        if missing:
            store.close()
            raise CorruptMapError(f"{self._path / HEADER_FILE} lists no column {missing[0]!r}, which a "
                                  f"{store.kind!r} map has")
        wrong = [(name, dt) for name, dt in needed.items() if store.header.columns[name].dtype != dtype_from_json(dt)]
        if wrong:
            store.close()
            name, dtype = wrong[0]
            raise CorruptMapError(f"{self._path / HEADER_FILE} gives column {name!r} the dtype "
                                  f"{store.header.columns[name].dtype}; a {store.kind!r} map stores it as {dtype}")

    # -------------------------------------------------------------- views

    def _rebuild(self) -> Any:
        """Build the view of the store's current state and install it unless a newer one is already in."""
        with self._view_lock:  # the ticket and the state it numbers are taken together, so tickets order states
            self._tickets += 1
            ticket = self._tickets
            store = self._store
            snapshot = store.snapshot() if store is not None else None
        if store is None or snapshot is None:
            view: Any = self.layout.view(EmptyColumns(self._path, self.layout))
        else:
            try:
                view = self._new_view(snapshot)
            except MapError:
                raise
            except _HEADER_DAMAGE as e:  # a hostile header or damaged index the attribute checks did not foresee
                raise CorruptMapError(f"{self._path} cannot be read: its header ({HEADER_FILE}) or an index column "
                                      f"is damaged ({type(e).__name__}: {e})") from None
            if self._verify_reads and store.header.checksums is not None:
                view = CheckedView(view, self._read_checker(snapshot, store.header.checksums, view.length))
        with self._view_lock:
            if ticket > self._installed:
                self._installed = ticket
                self._view = view
            elif not isinstance(self._view, _StaleView):
                return self._view  # a newer view went in while this one was built
        return view

    def _new_view(self, columns: Any) -> Any:
        """The layout's view of ``columns``, before it is published (a kind may set its read options on it)."""
        return self.layout.view(columns)

    def _read_checker(self, snapshot: Any, algorithm: str, length: int) -> ReadChecker:
        """The checker ``verify_reads=True`` puts in front of a view of ``snapshot``."""
        return ReadChecker(snapshot, algorithm, length, self._verified)

    def _checker(self, view: Any) -> Optional[ReadChecker]:
        """``view``'s read checker when this handle verifies its reads, else None: a read path that does not go
        through the view's ``get``/``get_many``/``iterate`` (batches gathered from whole columns) checks with it."""
        if not self._verify_reads:
            return None
        checker: Optional[ReadChecker] = getattr(view, "checker", None)
        return checker

    def _whole(self, name: str) -> Any:
        """The view's whole-column array ``name`` (``values``, ``offsets``, ``array``), every committed byte it
        covers checked first when this handle verifies its reads."""
        view = self._view
        self._check_all(view)
        return getattr(view, name)

    def _check_all(self, view: Any) -> None:
        """When this handle verifies its reads: check every committed byte ``view`` reads from (each checksum
        record once per handle), before a read of whole columns."""
        checker = self._checker(view)
        if checker is not None:
            checker.check_all()

    def _resolve(self, stale: _StaleView) -> Any:
        """The view ``stale`` stands for: the first thread to ask builds it (or finds a newer one installed)."""
        view = self._rebuild()
        with self._view_lock:
            if stale._resolved is None:
                stale._resolved = view
            return stale._resolved

    def _invalidate(self) -> None:
        """After a write: the next use builds the view of the new state; a view whose building started before
        the write can no longer be installed over it."""
        with self._view_lock:
            self._tickets += 1
            self._installed = self._tickets
            self._view = _StaleView(self)

    # -------------------------------------------------------------- reading

    @property
    def path(self) -> Path:
        """The map's directory, as an absolute path with its symbolic links resolved once, when the map was opened:
        a map opened through a link reports (and its pickled copies reopen) the folder the link named then."""
        return self._path

    @property
    def mode(self) -> str:
        """``"r+"`` (reads and writes) or ``"r"`` (never writes)."""
        return self._mode

    @property
    def exists(self) -> bool:
        """Whether the map exists on disk (a handle opened on an empty path has no map until its first write)."""
        return self._store is not None or self._legacy is not None

    @property
    def legacy(self) -> bool:
        """Whether the map was written by mmap_ninja 0.9.0 (read-only here; ``mmap-ninja convert`` upgrades it)."""
        return self._legacy is not None

    def _view_attrs(self) -> dict[str, Any]:
        store = self._store
        return store.attrs if store is not None else {}

    @property
    def codec(self) -> Optional[str]:
        """The name of the map's per-sample codec (``"zstd"``, ``"lz4"``), or None."""
        spec = self._view_attrs().get("codec")
        return None if not spec else str(spec["name"])

    @property
    def metadata(self) -> dict[str, Any]:
        """The user metadata stored with the map (a copy; see `set_metadata`)."""
        return dict(self._store.metadata) if self._store is not None else {}

    def __len__(self) -> int:
        return int(self._view.length)

    def __getitem__(self, index: Any) -> Any:
        """``m[i]`` gives one sample; a slice, a sequence of ints or a boolean mask gives a list of them."""
        view = self._view
        if type(index) is int:  # the common case first: isinstance on a tuple costs more
            length = view.length
            position = index + length if index < 0 else index
            if not 0 <= position < length:
                raise IndexError(self._out_of_range(index, length))
            sample = view.get(position)
            return sample if self.wrapper_fn is None else self._wrap(sample)
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("a map cannot be indexed by a boolean scalar; use a boolean mask of the map's length")
        try:
            position = operator.index(index)  # NumPy integers, 0-d integer arrays and tensors
        except TypeError:
            return self.__getitems__(index)
        return self[position]

    def _out_of_range(self, index: Any, length: int) -> str:
        if self._store is None:
            return f"index {index} is out of range: no map exists at {self._path} yet (its first write creates it)"
        return f"index {index} is out of range for a map of length {length}"

    def __getitems__(self, indices: Any) -> list[Any]:
        """The samples at ``indices`` as a list, in one vectorized lookup (``wrapper_fn`` applied).

        This is PyTorch's batched-fetch protocol: a ``DataLoader`` with a batch size calls it once per
        batch instead of ``__getitem__`` once per sample. Arrays are read-only views into the map.
        """
        view = self._view
        samples: list[Any] = view.get_many(resolve_positions(indices, view.length))
        if self.wrapper_fn is not None:
            samples = [self._wrap(s) for s in samples]
        return samples

    def _wrap(self, sample: Any) -> Any:
        if self.copy_before_wrapper_fn and isinstance(sample, np.ndarray):
            sample = sample.copy()
        assert self.wrapper_fn is not None
        return self.wrapper_fn(sample)

    @classmethod
    def combine_batches(cls, parts: list[tuple[np.ndarray[Any, Any], Any]], positions: np.ndarray[Any, Any],
                        arguments: dict[str, Any]) -> Any:
        """Join what ``get_batch`` gave for disjoint groups of the rows of one batch (e.g. one group per shard
        of a sharded map) into what one ``get_batch`` over all of them gives. ``parts`` are ``(rows, batch)``,
        the rows of the result each part fills; ``positions`` the samples' indices (for error messages);
        ``arguments`` the caller's arguments of ``get_batch`` but ``indices`` (``pad_value``, ``out``, ...).

        This default is for kinds whose batch is one array, or ``(padded, lengths)`` with a ``pad_value``
        (ragged, numpy, images); a kind whose batches look otherwise overrides it."""
        return join_batches(parts, positions, arguments.get("pad_value"), arguments.get("out"))

    def __iter__(self) -> Iterator[Any]:
        """Every sample in order, from the snapshot the iteration started with."""
        samples = self._view.iterate()
        return samples if self.wrapper_fn is None else map(self._wrap, samples)

    def refresh(self) -> int:
        """See what other handles and processes committed since this one read the map; returns how many
        samples appeared (negative if the map was replaced by a shorter one)."""
        before = len(self)
        if self._legacy is not None:
            return 0  # 0.9.0's format has no commits to catch up with
        self._verified.clear()  # verify_reads: forget what was checked (in-place writes since are no commits)
        if self._store is None:
            try:
                store = Store.open(self._path, durable=self._durable, lock_timeout=self._lock_timeout, resolve=False)
            except NotAMapError:
                return 0
            self._check_kind(store)
            self._store = store
        elif not self._store.refresh() and not self._verify_reads:
            return 0
        self._rebuild()  # with verify_reads, also when nothing was committed: the checksums are read again
        return len(self) - before

    def __repr__(self) -> str:
        where = ", written by mmap_ninja 0.9.0" if self._legacy is not None else (
            "" if self._store is not None else ", no map there yet")
        return f"{type(self).__name__}({str(self._path)!r}, mode={self._mode!r}) of length {len(self)}{where}"

    # -------------------------------------------------------------- writing

    def _writable_store(self) -> Store:
        if self._legacy is not None:
            raise ReadOnlyMapError(legacy_write_refusal(self._path))
        if self._allow_unfinished:
            raise ReadOnlyMapError(f"{self._path} was opened with allow_unfinished=True, which reads an unfinished "
                                   f"build without changing it; re-run the build (it replaces the unfinished one)")
        if self._mode == "r":
            raise ReadOnlyMapError(f"{self._path} is open with mode='r', which never writes; open it with mode='r+'")
        if self._shard_checked is False:  # once per handle: a map becomes a shard only under another path
            refuse_shard(self._path)
            self._shard_checked = True
        store = self._store
        if store is None:  # the first write creates the map (or joins one a racing process just created)
            attrs = self.layout.attrs()
            store = Store.create(self._path, self.layout.kind, self.layout.columns_for(attrs), attrs,
                                 initial=self.layout.initial_for(attrs), durable=self._durable,
                                 lock_timeout=self._lock_timeout, join_existing=True)
            self._store = store
            self._check_kind(store)
        return store

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the writer lock for the block and publish all its writes as one commit when it ends (nothing
        if it raises). Readers see none of them until then; this handle sees them at once. Use it to make a
        loop of single ``append`` calls cost one lock and one commit. Blocks nest: a nested block that raises
        takes back its own appends and the enclosing one goes on. (In-place assignments reach the files at once
        and are not undone if a block raises.)"""
        store = self._writable_store()
        try:
            with store.transaction():
                yield
        finally:
            self._invalidate()

    def append(self, sample: Any) -> None:
        """Add one sample at the end (one transaction)."""
        self.extend([sample])

    def extend(self, samples: Iterable[Any], verbose: bool = False) -> None:
        """Add samples at the end, all or none: readers see them only once all are on disk. (``verbose`` is
        accepted for mmap_ninja 0.9.0's signature; one extend is one commit, with no progress to show.)"""
        layout = self.layout
        if self._mode == "r+" and self._store is None and self._legacy is None:
            # The first write creates the map: check the samples first, so that a refused one creates nothing.
            empty = EmptyColumns(self._path, layout)
            lengths = {name: len(empty.column(name)) for name in layout.columns}
            first = layout.batch(samples, lengths, empty.attrs)
            if not len(first):
                return
            layout.encode(first, lengths, empty.attrs)
            samples = first
        store = self._writable_store()
        try:
            with store.transaction():
                batch = layout.batch(samples, store.lengths, store.attrs)
                if len(batch):
                    self._train(store, batch)
                    columns, new_attrs = layout.encode(batch, store.lengths, store.attrs, _dictionary(store))
                    store.append(columns, new_attrs)
        finally:
            self._invalidate()

    def _train(self, store: Store, samples: list[Any]) -> None:
        """Train the codec's dictionary on ``samples`` if it wants one and has none yet (inside a transaction),
        so that it is published with the first compressed data."""
        attrs = store.attrs
        codec = self.layout.codec(attrs)
        if codec is None or attrs.get("trained", True):
            return
        if len(samples) > codec.train_samples:  # a random draw across the gathered batches (seeded: reproducible)
            chosen = np.random.default_rng(0).choice(len(samples), codec.train_samples, replace=False)
            samples = [samples[i] for i in np.sort(chosen).tolist()]
        dictionary = codec.train(self.layout.sample_bytes(samples)) or b""
        store.append({"dictionary": [dictionary]}, {**attrs, "trained": True})

    def flush(self) -> None:
        """Make what this map committed durable on disk now (fsync its files), as ``np.memmap.flush`` does; to
        fsync every commit as it is made, open the map with ``durable=True``."""
        store = self._store
        if store is not None:
            store.sync()

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the map's user metadata (JSON values; one commit)."""
        checked = check_metadata(metadata)
        store = self._writable_store()
        with store.transaction():
            store.set_metadata(checked)

    def __setitem__(self, index: Any, value: Any) -> None:
        """Overwrite samples in place; a new value must have the old one's byte size (its shape, for arrays).

        Every value is checked before any is written. An in-place write is not a commit: readers see it at
        once, without ``refresh()``, and a process killed during it may leave that sample half written.
        """
        if self._mode == "r+" and self._store is None and self._legacy is None:
            raise IndexError(self._out_of_range(index, 0))  # before the write would create the map
        store = self._writable_store()
        with store.transaction():
            view = self._rebuild()
            length = view.length
            if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
                positions, values = [resolve_index(index, length)], [value]
            else:
                positions = resolve_positions(index, length).tolist()
                values = list(value) if not isinstance(value, (str, bytes)) else [value]
                if len(values) != len(positions):
                    raise ValueError(f"cannot assign {len(values)} values to {len(positions)} samples")
            writes = [self.layout.encode_set(view, store.attrs, p, v) for p, v in zip(positions, values)]
            for column, offset, buffer in writes:
                store.write_at(column, offset, buffer)

    # -------------------------------------------------------------- building

    @classmethod
    @contextmanager
    def build(cls: type[M], out_dir: PathLike, *, overwrite: bool = False, durable: bool = False,
              metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
              wrapper_fn: Optional[Callable[[Any], Any]] = None,
              lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> Iterator[M]:
        """Create a map and give it to the block to fill (``extend``, ``extend_flat``, ...), every write a commit.

        Until the block ends without an error the map is marked unfinished and this build keeps its writer
        lock: see `from_generator`. ``options`` are the kind's own (``dtype=`` for ragged maps, ...). The map
        stays open after the block, in ``mode`` (``"r"``: a read-only handle, as ``MapClass(path, mode="r")``
        opens; the block writes through it either way). This is what every ``from_*`` builder uses.
        ``commit="slots"`` (every builder takes it) keeps the header in two slots written in place (FORMAT.md,
        ``commit.slots``); the default is ``$MMAP_NINJA_COMMIT``, else ``"slots"`` on Windows and ``"rename"``
        elsewhere.
        """
        mode = _normalize_mode(mode)
        layout = cls.layout
        commit = options.pop("commit", None)
        cls._check_options(options, "build")
        attrs = layout.attrs(**options)  # a bad option fails here, before anything is created
        destination = resolved(out_dir)
        refuse_shard(destination)
        metadata = check_metadata(metadata)
        # overwrite=True over a finished map: built aside, swapped in once complete (`storage.replace`).
        staged = replacement_stage(destination, check_lock_timeout(lock_timeout)) if overwrite else None
        try:
            store = Store.create(destination if staged is None else staged.path, layout.kind,
                                 layout.columns_for(attrs), attrs, initial=layout.initial_for(attrs),
                                 metadata=metadata, requires=layout.requires(attrs), building=True,
                                 overwrite=overwrite, durable=durable, lock_timeout=lock_timeout, commit=commit)
        except BaseException:
            if staged is not None:
                staged.discard()  # (and the old map's lock it held)
            raise
        target = cls._attach(store, "r+", wrapper_fn)  # the build writes through it, whatever the mode asked
        target._shard_checked = True
        try:
            yield target
            store.finish_build()
            target._mode = mode  # the handle returned: mode="r" never writes from now on
            if staged is not None:
                store.close()
                swap_in(staged, durable=durable)
                target._store, target._path = Store.open(destination, durable=durable, lock_timeout=lock_timeout,
                                                         resolve=False), destination
        except BaseException:
            store.abandon_build()
            target.close()
            if staged is not None:
                staged.discard()  # the old map was never touched
            raise
        target._invalidate()

    @classmethod
    def _check_options(cls, options: dict[str, Any], call: str) -> None:
        """Refuse an option the kind's builders do not take, as Python refuses a keyword: naming the public call
        (``RaggedMmap.from_generator()``), not the layout that would take it further."""
        accepted = [name for name, parameter in inspect.signature(cls.layout.attrs).parameters.items()
                    if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)]
        for name in options:
            if name not in accepted and name != "commit":  # (the protocol: `build` takes it, not the layout)
                known = f"its options are {', '.join(accepted)}" if accepted else "it takes no kind options"
                raise TypeError(f"{cls.__name__}.{call}() got an unexpected keyword argument {name!r} "
                                f"({known}, besides the builder's own keywords)")

    @classmethod
    def _build(cls: type[M], out_dir: PathLike, batches: Iterable[Any], **build_options: Any) -> M:
        """``from_memory=True`` in ``build_options``: the batches are slices of a list in RAM (no caller code runs
        between them), so the build's headers may be renamed into place behind it (`Store.defer_build_commits`)."""
        from_memory = bool(build_options.pop("from_memory", False))
        with cls.build(out_dir, **build_options) as target:
            store = target._writable_store()
            if from_memory:
                store.defer_build_commits()
            codec = cls.layout.codec(store.attrs)
            pending = iter(batches)
            if codec is not None and codec.trains():
                # Gather samples from the first batches, so the dictionary is trained on more than one batch.
                gathered: list[Any] = []
                count = size = 0
                for batch in pending:
                    gathered.append(batch)
                    count += len(batch)
                    size += sum(map(_approx_size, batch))
                    if count >= codec.train_window or size >= codec.train_window_bytes:
                        break
                with store.transaction():
                    target._train(store, [sample for batch in gathered for sample in batch])
                pending = chain(gathered, pending)
            if from_memory:
                # Slices of a list: looking one batch ahead runs no caller code, and the last batch is published
                # with the header that finishes the build (`Store.last_build_write`).
                batch = next(pending, None)
                while batch is not None:
                    following = next(pending, None)
                    if following is None:
                        store.last_build_write()
                    target.extend(batch)
                    batch = following
            else:
                for batch in pending:
                    target.extend(batch)
        return target

    @classmethod
    def from_generator(cls: type[M], out_dir: PathLike, sample_generator: Iterable[Any],
                       batch_size: Optional[int] = None, verbose: bool = False, *, overwrite: bool = False,
                       durable: bool = False,
                       metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                       wrapper_fn: Optional[Callable[[Any], Any]] = None,
                       lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> M:
        """Build a map from any iterable, committing every ``batch_size`` samples; returns it open.

        Memory stays bounded by about one batch. ``verbose=True`` shows a tqdm progress bar. Until the call
        returns, the map is marked unfinished: if the iterable raises (or the process dies), opening it raises
        `UnfinishedMapError`, re-running the build replaces it without ``overwrite=True``, and
        ``allow_unfinished=True`` reads the batches it committed. ``metadata`` is stored with the map.
        """
        cls._check_options(options, "from_generator")
        check_samples_iterable(sample_generator, f"{cls.__name__}.from_generator")
        batch_size = check_batch_size(cls.default_batch_size if batch_size is None else batch_size)
        samples: Iterable[Any] = sample_generator
        if verbose:
            from tqdm.auto import tqdm

            samples = tqdm(samples, total=_length_or_none(sample_generator), desc=cls.__name__, unit=" samples")
        return cls._build(out_dir, _batching.batches(samples, batch_size), overwrite=overwrite, durable=durable,
                          metadata=metadata, mode=mode, wrapper_fn=wrapper_fn, lock_timeout=lock_timeout,
                          from_memory=type(samples) in (list, tuple), **options)

    @classmethod
    def from_indexable(cls: type[M], out_dir: PathLike, indexable: Any, batch_size: Optional[int] = None,
                       n_jobs: Optional[int] = None, verbose: bool = False, *, overwrite: bool = False,
                       durable: bool = False, metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                       wrapper_fn: Optional[Callable[[Any], Any]] = None,
                       lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> M:
        """Build a map from ``indexable[0]``, ``indexable[1]``, ..., in order (see `from_generator`).

        With ``n_jobs`` > 1 (``-1``: one per CPU) worker processes read the samples: each receives the
        indexable once and then only index ranges. Any exception raised reading an item stops the build with
        an error naming the index.
        """
        cls._check_options(options, "from_indexable")
        check_samples_iterable(indexable, f"{cls.__name__}.from_indexable")
        batch_size = check_batch_size(cls.default_batch_size if batch_size is None else batch_size)
        batches = parallel.indexed_batches(indexable, batch_size, n_jobs, verbose, cls.__name__)
        return cls._build(out_dir, batches, overwrite=overwrite, durable=durable, metadata=metadata, mode=mode,
                          wrapper_fn=wrapper_fn, lock_timeout=lock_timeout, **options)

    @classmethod
    def from_dask(cls, out_dir: PathLike, collection: Any, **options: Any) -> Any:
        """A sharded map with one shard per partition of a ``dask.bag`` of samples (or, for records, of rows or
        a ``dask.dataframe``), built on the active Dask scheduler (a ``distributed.Client`` included); see
        `mmap_ninja.adapters.dask.from_dask`. Needs the ``dask`` extra."""
        from mmap_ninja.adapters.dask import from_dask

        return from_dask(cls, out_dir, collection, **options)

    # -------------------------------------------------------------- life cycle

    def close(self) -> None:
        """Release the files (and the writer lock of an open transaction). Samples read earlier stay valid."""
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
        if hasattr(self, "_path"):
            self._view = _ClosedView(self._path)

    @property
    def closed(self) -> bool:
        return isinstance(self._view, _ClosedView)

    def __enter__(self: M) -> M:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            store = self.__dict__.get("_store")
            if store is not None:
                store.close()
        except Exception:
            pass

    def __reduce__(self) -> tuple[Any, ...]:
        # The path and the options, never the data.
        options = {"wrapper_fn": self.wrapper_fn, "mode": self._mode,
                   "copy_before_wrapper_fn": self.copy_before_wrapper_fn, "lock_timeout": self._lock_timeout,
                   "durable": self._durable, "allow_unfinished": self._allow_unfinished}
        if self._verify_reads:
            options["verify_reads"] = True
        return _reopen, (type(self), str(self._path), options)


def _approx_size(sample: Any) -> int:
    """Roughly how many bytes a sample holds (to bound what a builder gathers in memory)."""
    return len(sample) if isinstance(sample, (str, bytes)) else int(getattr(sample, "nbytes", 64))


def _dictionary(store: Store) -> bytes:
    """A codec's trained dictionary (empty if the map has none)."""
    return bytes(store.column("dictionary")) if "dictionary" in store.header.columns else b""


def _reopen(cls: type[M], path: str, options: dict[str, Any]) -> M:
    return cls(path, **options)


def _length_or_none(iterable: Any) -> Optional[int]:
    try:
        return len(iterable)
    except TypeError:
        return None
