"""`RaggedMmap`: a memory-mapped list of arrays of one dtype and any shapes (images, token sequences, ...)."""

from __future__ import annotations

from itertools import chain
from operator import attrgetter
from typing import Any, Iterable, List, Optional

import numpy as np

from mmap_ninja._cast import as_array, as_sample, cast, raw_bytes, storable_dtype
from mmap_ninja._batch import assemble
from mmap_ninja._container import OffsetsMap, resolve_index, resolve_positions
from mmap_ninja.storage import PathLike, Store, dtype_from_json, dtype_to_json

# from_lists' default: its samples are in memory already, so a batch costs little more than its commit.
DEFAULT_BATCH_SIZE = 16_384
# A batch of fewer bytes is joined into one buffer (fewer, larger writes); a larger one is written sample
# by sample with vectored writes, so a batch never needs a second copy of more than this in memory.
_CONCAT_BELOW = 64 << 20


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
        self._dims_array = self._store.column("dims")
        self._dims = memoryview(self._dims_array)

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

    def shapes(self, indices: Any = slice(None)) -> np.ndarray:
        """The shapes of the samples at ``indices`` (default: all) as a ``(k, ndim)`` int64 array, read
        from the index without touching the data; a ValueError if their numbers of dimensions differ."""
        return self._shapes_at(resolve_positions(indices, self._length))

    def _shapes_at(self, positions: np.ndarray) -> np.ndarray:
        shape_offsets = self._shape_offsets_array
        firsts = shape_offsets[positions]
        ndims = shape_offsets[positions + 1] - firsts
        if len(ndims) and (ndims != ndims[0]).any():
            j = int(np.flatnonzero(ndims != ndims[0])[0])
            raise ValueError(f"samples {positions[0]} and {positions[j]} have different numbers of dimensions "
                             f"({self.shape(int(positions[0]))} and {self.shape(int(positions[j]))})")
        ndim = int(ndims[0]) if len(ndims) else 1
        return self._dims_array[firsts[:, None] + np.arange(ndim, dtype=np.int64)]

    def get_batch(self, indices: Any, *, pad_value: Any = None, out: Optional[np.ndarray] = None) -> Any:
        """Read the samples at ``indices`` (ints, a slice or a boolean mask) into one new array.

        With ``pad_value=None`` the samples must share one shape and the result is their stack, of shape
        ``(k, *shape)`` (a ValueError names two differing shapes otherwise). With a ``pad_value`` it is
        ``(padded, lengths)``: ``padded`` has shape ``(k, *max_shape)``, every dimension padded to its
        largest size in the batch and filled with ``pad_value`` past each sample; ``lengths`` is the
        ``(k,)`` lengths for 1-D samples or the ``(k, ndim)`` shapes otherwise. ``out=`` is written into
        instead of a new array: it must have the map's dtype, be C-contiguous and writable, and have the
        result's shape (when padding, any dimension but the first may be larger, e.g. a fixed max length).
        The work is vectorized: no Python step per sample for small samples, one memcpy each for large ones.
        ``wrapper_fn`` is not applied.
        """
        positions = resolve_positions(indices, self._length)
        if self._dtype is None:
            raise ValueError("the map holds no samples and has no dtype yet")
        shapes = self._shapes_at(positions)
        starts = self._offsets_array[positions]
        sizes = self._offsets_array[positions + 1] - starts
        return assemble(self._values, starts, sizes, shapes, positions, pad_value, out)

    def to_arrow(self):
        """The map as a ``pyarrow.LargeListArray`` whose buffers are the map's own ``offsets`` and
        ``values`` (no copy; needs pyarrow and 1-D samples of a numeric dtype)."""
        from mmap_ninja.adapters.arrow import ragged_to_arrow

        return ragged_to_arrow(self)

    @classmethod
    def from_arrow(cls, out_dir: PathLike, array: Any, **options: Any) -> "RaggedMmap":
        """Build a map of 1-D samples from an Arrow list array (``list``, ``large_list`` or
        ``fixed_size_list`` of numbers), a chunked array, or a Hugging Face ``datasets`` column.
        Options: ``dtype``, ``batch_size``, ``overwrite``, ``durable``. Returns the map open for writing."""
        from mmap_ninja.adapters.arrow import ragged_from_arrow

        return ragged_from_arrow(cls, out_dir, array, **options)

    def _get(self, position: int) -> np.ndarray:
        offsets, shape_offsets = self._offsets, self._shape_offsets
        first, stop = shape_offsets[position], shape_offsets[position + 1]
        if stop - first == 1:  # 1-D: the slice already has the sample's shape (no dims lookup, no reshape)
            return self._values[offsets[position]:offsets[position + 1]]
        return self._values[offsets[position]:offsets[position + 1]].reshape(tuple(self._dims[first:stop]))

    def _get_many(self, positions: np.ndarray) -> List[np.ndarray]:
        starts, stops = self._spans(positions)
        dim_starts = self._shape_offsets_array[positions]
        dim_stops = self._shape_offsets_array[positions + 1]
        values, dims = self._values, self._dims
        if ((dim_stops - dim_starts) == 1).all():  # all 1-D: the slices already have the samples' shapes
            return [values[a:b] for a, b in zip(starts, stops)]
        dim_starts, dim_stops = dim_starts.tolist(), dim_stops.tolist()
        return [values[a:b].reshape(tuple(dims[c:d])) for a, b, c, d in zip(starts, stops, dim_starts, dim_stops)]

    def _as_arrays(self, samples: List[Any]) -> tuple:
        """The samples as arrays of one storable dtype, and that dtype (set by the first sample if new)."""
        dtype = self._dtype
        if (dtype is not None and set(map(type, samples)) == {np.ndarray}
                and set(map(attrgetter("dtype"), samples)) == {dtype}):
            return samples, dtype  # the common case, checked without a Python step per sample
        first, arrays = self._length, []
        for k, sample in enumerate(samples):
            array = as_sample(sample, dtype, f"item {first + k}")
            if dtype is None:
                dtype = storable_dtype(array.dtype, f"item {first + k}")
            arrays.append(array)
        return arrays, dtype

    def _encode(self, samples: List[Any]) -> tuple:
        arrays, dtype = self._as_arrays(samples)
        count = len(arrays)
        if set(map(attrgetter("ndim"), arrays)) == {1}:
            sizes = np.fromiter(map(len, arrays), dtype=np.int64, count=count)
            ndims, dims = np.ones(count, dtype=np.int64), sizes
        else:
            sizes = np.fromiter(map(attrgetter("size"), arrays), dtype=np.int64, count=count)
            ndims = np.fromiter(map(attrgetter("ndim"), arrays), dtype=np.int64, count=count)
            dims = np.fromiter(chain.from_iterable(map(attrgetter("shape"), arrays)), dtype=np.int64,
                               count=int(ndims.sum()))
        if int(sizes.sum()) * dtype.itemsize < _CONCAT_BELOW:
            try:  # every array has the map's dtype: join their buffers, 3x cheaper than np.concatenate
                data = [b"".join(arrays)]
            except (BufferError, TypeError, ValueError):  # a non-contiguous sample, or a dtype with no buffer
                data = [raw_bytes(np.concatenate(arrays, axis=None, dtype=dtype))]  # each sample in C order
        else:
            data = [raw_bytes(np.ascontiguousarray(a)) for a in arrays]
        columns = {
            "data": data,
            "offsets": self._next_offsets(sizes),
            "shape_offsets": self._shape_offsets_array[-1] + np.cumsum(ndims, dtype=np.int64),
            "dims": dims,
        }
        attrs = {"dtype": dtype_to_json(dtype)} if self._dtype is None else None
        return columns, attrs

    def extend_flat(self, values: Any, lengths: Any) -> None:
        """Append ``len(lengths)`` 1-D samples given back to back in ``values`` (one commit).

        Sample j is the next ``lengths[j]`` elements of ``values``: the shape of a tokenizer's output or of
        Arrow's list arrays, stored without splitting it into one array per sample first.
        """
        self._store._check_writer()
        values = as_array(values, "values")
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {values.shape}")
        sizes = self._check_lengths(lengths, len(values))
        if not len(sizes):
            return
        dtype = self._dtype or storable_dtype(values.dtype, "values")
        first = self._length
        values = cast(values, dtype, f"items {first}..{first + len(sizes) - 1}")
        self._commit({
            "data": raw_bytes(np.ascontiguousarray(values)),
            "offsets": self._next_offsets(sizes),
            "shape_offsets": self._shape_offsets_array[-1] + np.arange(1, len(sizes) + 1, dtype=np.int64),
            "dims": sizes,
        }, {"dtype": dtype_to_json(dtype)} if self._dtype is None else None)

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
