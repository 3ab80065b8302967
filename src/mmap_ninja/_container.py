"""What every container shares: opening, indexing, building in batches, pickling, closing."""

from __future__ import annotations

import operator
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, TypeVar

import numpy as np

from mmap_ninja import _parallel
from mmap_ninja.storage import PathLike, Store

M = TypeVar("M", bound="MapBase")


class _Closed:
    """Stands in for a closed map's buffers, so a read after close() fails clearly at no cost to open maps."""

    def __getitem__(self, _):
        raise ValueError("I/O operation on a closed map")


_CLOSED = _Closed()


def _normalize_mode(mode: str) -> str:
    normalized = mode.replace("b", "")  # mmap_ninja 0.9.0 spelled them "rb" and "r+b"
    if normalized not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' (read-only) or 'r+' (read and write), got {mode!r}")
    return normalized


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def resolve_index(index: Any, length: int) -> int:
    """``index`` as a position in ``range(length)``; IndexError naming both if it is out of range."""
    position = operator.index(index)
    if position < 0:
        position += length
    if not 0 <= position < length:
        raise IndexError(f"index {index} is out of range for a map of length {length}")
    return position


def resolve_positions(index: Any, length: int) -> np.ndarray:
    """A slice, a sequence of ints or a boolean mask as an int64 array of positions in ``range(length)``."""
    if isinstance(index, slice):
        return np.arange(*index.indices(length), dtype=np.int64)
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
    positions = positions.astype(np.int64)
    outside = (positions < -length) | (positions >= length)
    if outside.any():
        bad = positions[outside][0]
        raise IndexError(f"index {bad} is out of range for a map of length {length}")
    return np.where(positions < 0, positions + length, positions)


def _reopen(cls, path: str, options: dict):
    return cls(path, **options)


class MapBase:
    """Base of `StringsMmap`, `RaggedMmap` and `NumpyMmap`; subclasses say how samples map to columns."""

    _kind: str = ""
    _length: int = 0

    def __init__(self, path: PathLike, mode: str = "r", *, wrapper_fn: Optional[Callable] = None,
                 copy_before_wrapper_fn: bool = True, lock_timeout: Optional[float] = 0.0,
                 durable: bool = False):
        """Open the map stored in ``path``.

        ``mode="r"`` (the default) opens read-only, takes no lock and works on read-only files; ``mode="r+"``
        takes the single-writer lock (waiting ``lock_timeout`` seconds, ``None`` for ever) and allows
        ``append``, ``extend`` and in-place assignment. ``wrapper_fn`` is applied to every sample read,
        to a copy of it unless ``copy_before_wrapper_fn=False``. With ``durable=True`` every commit is
        fsynced before it is published.
        """
        mode = _normalize_mode(mode)
        store = Store(path, writable=mode == "r+", lock_timeout=lock_timeout, durable=durable,
                      _expect_kind=self._kind)
        self._attach(store, wrapper_fn, copy_before_wrapper_fn)

    def _attach(self, store: Store, wrapper_fn: Optional[Callable], copy_before_wrapper_fn: bool) -> None:
        self._store = store
        self.wrapper_fn = wrapper_fn
        self.copy_before_wrapper_fn = copy_before_wrapper_fn
        self._load()

    @classmethod
    def _from_store(cls: type[M], store: Store) -> M:
        self = cls.__new__(cls)
        self._attach(store, None, True)
        return self

    # -------------------------------------------------------------- subclass hooks

    def _load(self) -> None:
        """(Re)build the views over the store's committed columns and set ``_length``."""
        raise NotImplementedError

    def _get(self, position: int) -> Any:
        raise NotImplementedError

    def _get_many(self, positions: np.ndarray) -> List[Any]:
        return [self._get(p) for p in positions.tolist()]

    def _as_batch(self, samples: Iterable[Any]) -> Any:
        return list(samples)

    def _encode(self, samples: List[Any]) -> tuple:
        """``(columns, attrs)`` for `Store.append`; raises on a bad sample before anything is written."""
        raise NotImplementedError

    def _prepare_set(self, position: int, value: Any) -> Any:
        """Validate an in-place assignment; returns what `_write` needs."""
        raise NotImplementedError

    def _write(self, position: int, prepared: Any) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------- reading

    @property
    def path(self) -> Path:
        """The map's directory."""
        return self._store.path

    @property
    def mode(self) -> str:
        return "r+" if self._store.writable else "r"

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        """``m[i]`` gives one sample; a slice, a sequence of ints or a boolean mask gives a list of them."""
        exact_int = type(index) is int  # the common case, checked first: isinstance on a tuple costs more
        if exact_int or (isinstance(index, (int, np.integer)) and not isinstance(index, bool)):
            length = self._length
            position = index + length if index < 0 else index
            if not 0 <= position < length:
                raise IndexError(f"index {index} is out of range for a map of length {length}")
            sample = self._get(position if exact_int else int(position))
            return sample if self.wrapper_fn is None else self._wrap(sample)
        return self.__getitems__(index)

    def __getitems__(self, indices: Any) -> List[Any]:
        """The samples at ``indices`` as a list, in one vectorized lookup (``wrapper_fn`` applied).

        This is PyTorch's batched-fetch protocol: a ``DataLoader`` with a batch size calls it once per
        batch instead of ``__getitem__`` once per sample. Arrays are read-only views into the map; see
        `mmap_ninja.adapters.torch.collate` to turn them into tensors.
        """
        samples = self._get_many(resolve_positions(indices, self._length))
        if self.wrapper_fn is not None:
            samples = [self._wrap(s) for s in samples]
        return samples

    def _wrap(self, sample: Any) -> Any:
        if self.copy_before_wrapper_fn and isinstance(sample, np.ndarray):
            sample = sample.copy()
        return self.wrapper_fn(sample)

    def __iter__(self) -> Iterator[Any]:
        get, wrap = self._get, self._wrap if self.wrapper_fn is not None else None
        for position in range(self._length):
            yield get(position) if wrap is None else wrap(get(position))

    def refresh(self) -> int:
        """See what other writers committed since this map was opened; returns how many samples appeared."""
        before = self._length
        if self._store.refresh():
            self._load()
        return self._length - before

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, mode={self.mode!r}) of length {self._length}"

    # -------------------------------------------------------------- writing

    def append(self, sample: Any) -> None:
        """Add one sample at the end (one commit)."""
        self.extend([sample])

    def extend(self, samples: Iterable[Any]) -> None:
        """Add samples at the end, all or none: they are visible to readers only once all are on disk."""
        self._store._check_writer()
        batch = self._as_batch(samples)
        if not len(batch):
            return
        self._commit(*self._encode(batch))

    def _commit(self, columns: dict, attrs: Optional[dict] = None) -> None:
        self._store.append(columns, attrs)
        self._load()

    def __setitem__(self, index: Any, value: Any) -> None:
        """Overwrite samples in place (``mode="r+"``); a new value must have the old one's byte size.

        Every value is checked before any is written. An in-place write is not a commit: a process
        killed during it may leave that sample half written (the rest of the map is unaffected).
        """
        self._store._check_writer()
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            positions, values = [resolve_index(index, self._length)], [value]
        else:
            positions = resolve_positions(index, self._length).tolist()
            values = list(value) if not isinstance(value, (str, bytes)) else [value]
            if len(values) != len(positions):
                raise ValueError(f"cannot assign {len(values)} values to {len(positions)} samples")
        prepared = [self._prepare_set(p, v) for p, v in zip(positions, values)]
        for p, payload in zip(positions, prepared):
            self._write(p, payload)
        if self._store.durable:
            self._store.flush()

    # -------------------------------------------------------------- building

    @classmethod
    def _create(cls: type[M], out_dir: PathLike, *, overwrite: bool, durable: bool, **options: Any) -> M:
        raise NotImplementedError

    @classmethod
    def from_generator(cls: type[M], out_dir: PathLike, sample_generator: Iterable[Any], batch_size: int,
                       verbose: bool = False, *, overwrite: bool = False, durable: bool = False,
                       **options: Any) -> M:
        """Build a map from any iterable, committing every ``batch_size`` samples.

        Memory stays bounded by about one batch. If the iterable raises, the batches committed so far
        stay in the map (the partial batch does not) and the error propagates. ``verbose=True`` shows a
        tqdm progress bar, with a total when the iterable has a length. Returns the map open for writing.
        """
        batch_size = check_batch_size(batch_size)
        target = cls._create(out_dir, overwrite=overwrite, durable=durable, **options)
        samples = sample_generator
        if verbose:
            from tqdm.auto import tqdm

            samples = tqdm(samples, total=_length_or_none(sample_generator), desc=f"{cls.__name__}",
                           unit=" samples")
        try:
            iterator = iter(samples)
            batch = list(islice(iterator, batch_size))  # batching in C: no Python step per sample
            while batch:
                target.extend(batch)
                batch = list(islice(iterator, batch_size))
        except BaseException:
            target.close()
            raise
        return target

    @classmethod
    def from_indexable(cls: type[M], out_dir: PathLike, indexable: Any, batch_size: int,
                       n_jobs: Optional[int] = None, verbose: bool = False, *, overwrite: bool = False,
                       durable: bool = False, **options: Any) -> M:
        """Build a map from ``indexable[0]``, ..., ``indexable[len(indexable) - 1]``, in order.

        With ``n_jobs`` > 1 (``-1``: one per CPU) worker processes read the samples: each receives the
        indexable once and then only index ranges. Any exception raised reading an item, an IndexError
        or KeyError included, stops the build with an error naming the index; committed batches stay.
        """
        batch_size = check_batch_size(batch_size)
        target = cls._create(out_dir, overwrite=overwrite, durable=durable, **options)
        try:
            for batch in _parallel.indexed_batches(indexable, batch_size, n_jobs, verbose, cls.__name__):
                target.extend(batch)
        except BaseException:
            target.close()
            raise
        return target

    # -------------------------------------------------------------- life cycle

    def close(self) -> None:
        """Release the file descriptors and the writer lock. Samples read earlier stay valid."""
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
            self._close_views()

    def _close_views(self) -> None:
        for name, value in list(vars(self).items()):
            if isinstance(value, (np.ndarray, memoryview)):
                setattr(self, name, _CLOSED)

    @property
    def closed(self) -> bool:
        return self._store.closed

    def __enter__(self: M) -> M:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __reduce__(self):
        # The path and the options, never the data; the copy opens read-only (the lock stays with us).
        options = {"wrapper_fn": self.wrapper_fn, "copy_before_wrapper_fn": self.copy_before_wrapper_fn}
        return _reopen, (type(self), str(self.path), options)


def _length_or_none(iterable: Any) -> Optional[int]:
    try:
        return len(iterable)
    except TypeError:
        return None



class OffsetsMap(MapBase):
    """A map of variable-size samples: a ``data`` column of bytes and an ``offsets`` column of n + 1 int64
    (starting at 0) saying where each sample starts and ends, as in Arrow's large-list layout."""

    def _load(self) -> None:
        offsets = self._store.column("offsets")
        self._length = len(offsets) - 1
        self._offsets_array = offsets
        self._offsets = memoryview(offsets)  # indexing a memoryview gives a Python int, faster than NumPy

    @property
    def offsets(self) -> np.ndarray:
        """The n + 1 offsets (read-only int64): sample i is ``values[offsets[i]:offsets[i + 1]]``."""
        return self._offsets_array

    def _next_offsets(self, sizes: np.ndarray) -> np.ndarray:
        return self._offsets_array[-1] + np.cumsum(sizes, dtype=np.int64)

    def _check_lengths(self, lengths: Any, total: int) -> np.ndarray:
        """``lengths`` as int64 sizes of new samples, checked to be non-negative and to add up to ``total``."""
        sizes = np.asarray(lengths)
        if sizes.ndim != 1 or (sizes.size and sizes.dtype.kind not in "iu"):
            raise TypeError(f"lengths must be a 1-D sequence of integers, got {sizes.dtype} of shape {sizes.shape}")
        sizes = sizes.astype(np.int64)
        if (sizes < 0).any():
            bad = int(np.flatnonzero(sizes < 0)[0])
            raise ValueError(f"lengths[{bad}] is {sizes[bad]}; lengths cannot be negative")
        if int(sizes.sum()) != total:
            raise ValueError(f"the lengths add up to {int(sizes.sum())}, but {total} were given")
        return sizes

    def _spans(self, positions: np.ndarray) -> tuple:
        """Start and stop offsets of the samples at ``positions``, as lists of Python ints."""
        return self._offsets_array[positions].tolist(), self._offsets_array[positions + 1].tolist()
