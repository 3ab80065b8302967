"""Same-shape samples: `NumpyMmap`, an appendable memory-mapped ndarray, and the ``np_*`` functions.

Samples are stored one after another, each in the map's order: ``order="F"`` keeps every sample
Fortran-contiguous (the map as a whole is sample-major, which is what lets it grow at the end).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from mmap_ninja._batch import check_out, pad_scalar
from mmap_ninja._cast import as_array, cast, raw_bytes, storable_dtype
from mmap_ninja._container import MapBase, resolve_positions
from mmap_ninja.arraylike import ReadOnlyArrayMixin
from mmap_ninja.storage import PathLike, Store, dtype_from_json, dtype_to_json


class NumpyMmap(ReadOnlyArrayMixin, MapBase):
    """An ndarray of shape ``(n, *sample_shape)`` on disk that can grow along its first axis.

    Indexing is NumPy's own (any index NumPy accepts) and returns read-only views of the mapping;
    ``np.asarray(m)`` is the whole array without a copy. Open with ``NumpyMmap(path)`` or
    `np_open_existing`; create with `np_from_ndarray` or `np_from_generator`.
    """

    _kind = "numpy"

    def _load(self) -> None:
        attrs = self._store.attrs
        data = self._store.column("data")
        if attrs.get("dtype") is None:  # created from an empty generator: the first extend decides
            self._dtype, self._sample_shape, self._order = None, None, attrs.get("order")
            self._array = np.empty(0)
            self._array.flags.writeable = False
        else:
            self._dtype = dtype_from_json(attrs["dtype"])
            self._sample_shape = tuple(attrs["sample_shape"])
            self._order = attrs["order"]
            self._array = self._shaped(data)
        self._length = len(self._array)

    def _shaped(self, data: np.ndarray) -> np.ndarray:
        sample_size = math.prod(self._sample_shape) * self._dtype.itemsize
        count = len(data) // sample_size
        items = data.view(self._dtype)
        if self._order == "F":
            ndim = len(self._sample_shape)
            return items.reshape((count, *self._sample_shape[::-1])).transpose(0, *range(ndim, 0, -1))
        return items.reshape((count, *self._sample_shape))

    # -------------------------------------------------------------- the ndarray face

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def shape(self) -> tuple:
        return self._array.shape

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def sample_shape(self) -> Optional[tuple]:
        return self._sample_shape

    @property
    def order(self) -> str:
        return self._order or "C"

    @property
    def array(self) -> np.ndarray:
        """The whole map as a read-only ndarray over the mapping (no copy)."""
        return self._array

    def __getitem__(self, index: Any) -> Any:
        result = self._array[index]
        if self.wrapper_fn is None:
            return result
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            return self._wrap(result)
        return [self._wrap(sample) for sample in result]

    def __iter__(self):
        if self.wrapper_fn is None:
            return iter(self._array)
        return (self._wrap(sample) for sample in self._array)

    def _get(self, position: int) -> np.ndarray:
        return self._array[position]

    def get_batch(self, indices: Any, *, pad_value: Any = None, out: Optional[np.ndarray] = None) -> Any:
        """The samples at ``indices`` as one new array of shape ``(k, *sample_shape)`` (one vectorized
        gather), written into ``out=`` if given (same dtype, C-contiguous, writable). With a ``pad_value``
        returns ``(batch, lengths)`` like `RaggedMmap.get_batch`: nothing needs padding unless ``out`` is
        larger than the samples in some dimension, where the rest is filled with ``pad_value``."""
        positions = resolve_positions(indices, self._length)
        k = len(positions)
        if self._dtype is None:
            raise ValueError("the map holds no samples and has no dtype yet")
        shape = (k, *self._sample_shape)
        if pad_value is None:
            out = np.empty(shape, self._dtype) if out is None else check_out(out, shape, self._dtype)
            if k:
                np.take(self._array, positions, axis=0, out=out)
            return out
        pad = pad_scalar(pad_value, self._dtype)
        lengths = (np.full(k, self._sample_shape[0], dtype=np.int64) if len(self._sample_shape) == 1
                   else np.tile(np.asarray(self._sample_shape, dtype=np.int64), (k, 1)))
        if out is None or out.shape == shape:
            return self.get_batch(positions, out=out), lengths
        check_out(out, shape, self._dtype, at_least=True)
        corner = (slice(None),) + tuple(slice(0, s) for s in self._sample_shape)
        out[corner] = self._array[positions]
        for axis, size in enumerate(self._sample_shape):  # pad each cell outside the corner once
            if size < out.shape[axis + 1]:
                out[(slice(None),) + corner[1:axis + 1] + (slice(size, None),)] = pad
        return out, lengths

    def __setitem__(self, index: Any, value: Any) -> None:
        """In-place assignment with NumPy's semantics (``mode="r+"``); values are cast only if none changes."""
        self._store._check_writer()
        if self._dtype is None:
            raise IndexError("the map holds no samples")
        writable = self._shaped(self._store.column("data", writable=True))
        writable[index] = cast(as_array(value, "the assigned value"), self._dtype, "the assigned value")
        if self._store.durable:
            self._store.flush()

    # -------------------------------------------------------------- growing

    def _as_batch(self, samples: Any) -> np.ndarray:
        if isinstance(samples, (np.ndarray, np.generic)):
            if np.ndim(samples) == 0:
                raise ValueError("extend() got a scalar; it takes a sequence of samples "
                                 "(to add one sample use append())")
            return np.asarray(samples)
        samples = list(samples)
        if self._sample_shape is not None:
            for k, sample in enumerate(samples):
                if np.shape(sample) != self._sample_shape:
                    raise ValueError(f"item {self._length + k} has shape {np.shape(sample)}, "
                                     f"expected {self._sample_shape}")
        return as_array(samples, "the samples") if samples else np.empty((0,))

    def _encode(self, batch: np.ndarray) -> tuple:
        batch = as_array(batch, "the samples")
        attrs = None
        if self._dtype is None:
            dtype = storable_dtype(batch.dtype, "the samples")
            order = self._order or ("F" if batch.ndim > 2 and np.isfortran(batch[0]) else "C")
            attrs = _attrs(dtype, batch.shape[1:], order)
            sample_shape = batch.shape[1:]
        else:
            dtype, sample_shape, order = self._dtype, self._sample_shape, self._order
        if batch.shape[1:] != sample_shape:
            raise ValueError(f"extend() got samples of shape {batch.shape[1:]}; the map's samples have shape "
                             f"{sample_shape} (to add one sample use append())")
        batch = cast(batch, dtype, f"samples {self._length}..{self._length + len(batch) - 1}")
        if order == "F":
            batch = batch.transpose(0, *range(batch.ndim - 1, 0, -1))
        return {"data": raw_bytes(np.ascontiguousarray(batch))}, attrs

    def append(self, sample: Any) -> None:
        """Add one sample (an array of the map's sample shape)."""
        self.extend(np.expand_dims(as_array(sample, "the sample"), 0))

    @classmethod
    def _create(cls, out_dir: PathLike, *, overwrite: bool, durable: bool, dtype: Any = None,
                sample_shape: Optional[Sequence[int]] = None, order: Optional[str] = None) -> "NumpyMmap":
        if order not in (None, "C", "F"):
            raise ValueError(f"order must be 'C' or 'F', got {order!r}")
        attrs = {"dtype": None, "sample_shape": None, "order": order}
        if dtype is not None and sample_shape is not None:
            attrs = _attrs(storable_dtype(dtype, "dtype"), tuple(sample_shape), order or "C")
        store = Store.create(out_dir, cls._kind, {"data": np.uint8}, attrs, overwrite=overwrite, durable=durable)
        return cls._from_store(store)


def _attrs(dtype: np.dtype, sample_shape: tuple, order: str) -> dict:
    if math.prod(sample_shape) == 0:
        raise ValueError(f"samples of shape {sample_shape} hold no elements and cannot be memory-mapped")
    return {"dtype": dtype_to_json(dtype), "sample_shape": list(sample_shape), "order": order}


NpTarget = Union[NumpyMmap, PathLike]


def from_ndarray(out_dir: PathLike, arr: Any, *, overwrite: bool = False, durable: bool = False) -> NumpyMmap:
    """Store ``arr`` (its first axis indexes the samples) as a new map; returns it open for writing.

    The dtype is kept exactly (byte order, structured fields, fixed-width strings); a Fortran-ordered
    ``arr`` is stored with every sample in Fortran order.
    """
    arr = as_array(arr, "the array")
    if arr.ndim == 0:
        raise ValueError("from_ndarray() needs an array with at least one dimension (its first axis indexes samples)")
    order = "F" if arr.ndim > 2 and np.isfortran(arr) else "C"
    target = NumpyMmap._create(out_dir, overwrite=overwrite, durable=durable, dtype=arr.dtype,
                               sample_shape=arr.shape[1:], order=order)
    try:
        target.extend(arr)
    except BaseException:
        target.close()
        raise
    return target


def from_generator(out_dir: PathLike, sample_generator: Iterable[Any], batch_size: int, verbose: bool = False,
                   *, overwrite: bool = False, durable: bool = False, dtype: Any = None,
                   sample_shape: Optional[Sequence[int]] = None) -> NumpyMmap:
    """Build a map from an iterable of same-shape samples, committing every ``batch_size`` of them.

    The first sample fixes the shape and dtype, unless ``dtype=`` and ``sample_shape=`` are given.
    """
    return NumpyMmap.from_generator(out_dir, sample_generator, batch_size, verbose, overwrite=overwrite,
                                    durable=durable, dtype=dtype, sample_shape=sample_shape)


def open_existing(out_dir: PathLike, mode: str = "r", **options: Any) -> NumpyMmap:
    """Open the same-shape map in ``out_dir`` (read-only unless ``mode="r+"``)."""
    return NumpyMmap(out_dir, mode, **options)


def extend(np_mmap: NpTarget, arr: Any, **writer_options: Any) -> None:
    """Append the samples ``arr`` (shape ``(k, *sample_shape)``) to a map, given as an open map or a path.

    For a path, ``writer_options`` (``durable=``, ``lock_timeout=``) apply to the writer opened for the call.
    """
    if isinstance(np_mmap, NumpyMmap):
        np_mmap.extend(arr)
    else:
        extend_dir(np_mmap, arr, **writer_options)


def extend_dir(out_dir: PathLike, arr: Any, *, durable: bool = False, lock_timeout: Optional[float] = 0.0) -> None:
    """Append the samples ``arr`` to the map in ``out_dir`` (opens a writer for the call and closes it)."""
    with NumpyMmap(out_dir, "r+", durable=durable, lock_timeout=lock_timeout) as target:
        target.extend(arr)


def append(np_mmap: NpTarget, sample: Any, **writer_options: Any) -> None:
    """Append one sample to a map, given as an open map or a path (see `extend` for ``writer_options``)."""
    extend(np_mmap, np.expand_dims(as_array(sample, "the sample"), 0), **writer_options)
