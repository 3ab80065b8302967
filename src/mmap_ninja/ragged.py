"""`RaggedMmap`: a memory-mapped list of arrays of one dtype and any shapes (images, token sequences, ...)."""

from __future__ import annotations

from itertools import chain
from typing import Any, Iterable, List, Optional

import numpy as np

from mmap_ninja._cast import as_sample, raw_bytes, storable_dtype
from mmap_ninja._container import OffsetsMap, resolve_index
from mmap_ninja.storage import PathLike, Store, dtype_from_json, dtype_to_json

DEFAULT_BATCH_SIZE = 1024
# Below this many bytes per sample on average, one concatenated write beats one buffer per sample.
_CONCAT_BELOW = 64 * 1024


class RaggedMmap(OffsetsMap):
    """A list of ndarrays on disk, each with its own shape (and number of dimensions); one dtype for all.

    ``m[i]`` is a read-only view into the mapping with the sample's shape, made without copying.
    The dtype is set by ``dtype=`` or by the first sample; later samples are cast to it only when no
    value changes (storing 300 in a uint8 map raises). Create with `from_lists`, `from_generator` or
    `from_indexable`; open with ``RaggedMmap(path)``.
    """

    _kind = "ragged"

    def _load(self) -> None:
        super()._load()
        descr = self._store.attrs.get("dtype")
        self._dtype = None if descr is None else dtype_from_json(descr)
        data = self._store.column("data")
        self._values = data if self._dtype is None else data.view(self._dtype)
        self._shape_offsets_array = self._store.column("shape_offsets")
        self._shape_offsets = memoryview(self._shape_offsets_array)
        self._dims = memoryview(self._store.column("dims"))

    @property
    def dtype(self) -> Optional[np.dtype]:
        """The samples' dtype (None while the map is empty and no dtype was given)."""
        return self._dtype

    @property
    def values(self) -> np.ndarray:
        """Every sample's elements back to back (read-only, 1-D): Arrow's list ``values``."""
        return self._values

    def shape(self, index: int) -> tuple:
        """The shape of sample ``index``, without touching its data."""
        position = resolve_index(index, self._length)
        shape_offsets = self._shape_offsets
        return tuple(self._dims[shape_offsets[position]:shape_offsets[position + 1]])

    def _get(self, position: int) -> np.ndarray:
        offsets, shape_offsets = self._offsets, self._shape_offsets
        shape = tuple(self._dims[shape_offsets[position]:shape_offsets[position + 1]])
        return self._values[offsets[position]:offsets[position + 1]].reshape(shape)

    def _get_many(self, positions: np.ndarray) -> List[np.ndarray]:
        starts, stops = self._spans(positions)
        dim_starts = self._shape_offsets_array[positions].tolist()
        dim_stops = self._shape_offsets_array[positions + 1].tolist()
        values, dims = self._values, self._dims
        return [values[a:b].reshape(tuple(dims[c:d])) for a, b, c, d in zip(starts, stops, dim_starts, dim_stops)]

    def _encode(self, samples: List[Any]) -> tuple:
        first, dtype = self._length, self._dtype
        arrays = []
        for k, sample in enumerate(samples):
            array = as_sample(sample, dtype, f"item {first + k}")
            if dtype is None:
                dtype = storable_dtype(array.dtype, f"item {first + k}")
            arrays.append(array)
        count = len(arrays)
        sizes = np.fromiter((a.size for a in arrays), dtype=np.int64, count=count)
        ndims = np.fromiter((a.ndim for a in arrays), dtype=np.int64, count=count)
        dims = np.fromiter(chain.from_iterable(a.shape for a in arrays), dtype=np.int64, count=int(ndims.sum()))
        data = [raw_bytes(a) for a in arrays]
        if count > 1 and int(sizes.sum()) * dtype.itemsize < _CONCAT_BELOW * count:
            data = [np.concatenate(data)]
        columns = {
            "data": data,
            "offsets": self._next_offsets(sizes),
            "shape_offsets": self._shape_offsets_array[-1] + np.cumsum(ndims, dtype=np.int64),
            "dims": dims,
        }
        attrs = {"dtype": dtype_to_json(dtype)} if self._dtype is None else None
        return columns, attrs

    def _prepare_set(self, position: int, value: Any) -> np.ndarray:
        if self._dtype is None:
            raise ValueError("the map holds no samples")
        array = as_sample(value, self._dtype, f"the new value of item {position}")
        shape = self.shape(position)
        if array.shape != shape:
            raise ValueError(f"item {position} has shape {shape} and the new value {array.shape}; "
                             f"in-place assignment needs the same shape")
        return array

    def _write(self, position: int, array: np.ndarray) -> None:
        values = self._store.column("data", writable=True).view(self._dtype)
        values[self._offsets[position]:self._offsets[position + 1]] = array.reshape(-1)

    @classmethod
    def _create(cls, out_dir: PathLike, *, overwrite: bool, durable: bool, dtype: Any = None) -> "RaggedMmap":
        attrs = {"dtype": None if dtype is None else dtype_to_json(storable_dtype(dtype, "dtype"))}
        columns = {"data": np.uint8, "offsets": np.int64, "shape_offsets": np.int64, "dims": np.int64}
        store = Store.create(out_dir, cls._kind, columns, attrs, initial={"offsets": [0], "shape_offsets": [0]},
                             overwrite=overwrite, durable=durable)
        return cls._from_store(store)

    @classmethod
    def from_lists(cls, out_dir: PathLike, lists: Iterable[Any], dtype: Any = None, verbose: bool = False, *,
                   batch_size: int = DEFAULT_BATCH_SIZE, overwrite: bool = False,
                   durable: bool = False) -> "RaggedMmap":
        """Build a map from a sequence of array-likes (committed every ``batch_size`` samples)."""
        return cls.from_generator(out_dir, lists, batch_size, verbose, overwrite=overwrite, durable=durable,
                                  dtype=dtype)


RaggedMmmap = RaggedMmap  # the spelling used in the original README
