"""The ``ragged`` layout: arrays of one dtype and any shapes, elements back to back with element offsets, and each
sample's shape in ``shape_offsets`` and ``dims`` (FORMAT.md, "ragged"); its views read a sample as a zero-copy
array, a window of one, or a batch. Optionally compressed per sample (`CompressedRaggedView`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from itertools import chain, islice
from operator import attrgetter
from typing import Any, ClassVar, NoReturn, Optional

import numpy as np

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.kinds._batching import ndims_of, uniform_arrays, write_pieces
from mmap_ninja.kinds._lazy import mapped_on_first_use
from mmap_ninja.kinds.casting import as_array, as_sample, cast, raw_bytes, storable_dtype
from mmap_ninja.kinds.codecs import Codec
from mmap_ninja.kinds.layouts import (
    Columns,
    Encoded,
    Layout,
    OffsetsView,
    View,
    _compress_all,
    _dtype,
    _refuse_in_place,
    check_lengths,
    codec_attrs,
    damaged_sample,
)
from mmap_ninja.storage.format import dtype_from_json, dtype_to_json

__all__ = ["CompressedRaggedView", "RaggedLayout", "RaggedView", "check_window", "window_of"]


_EMPTY_DIM_BOUND = 1 << 16
"""The largest dimension an empty ragged sample may have beyond its batch's largest sample size (a padded batch is
sized by every dimension, also an empty sample's)."""

_UNSIGNED_INDEX = np.dtype("<u8")
"""The index columns' items (``<i8``) read as unsigned: a negative one is then larger than any valid one."""


def check_window(position: int, rows: int, offset: int, length: int) -> None:
    """Refuse a window ``[offset, offset + length)`` that does not lie within sample ``position``'s ``rows``."""
    if length < 0:
        raise ValueError(f"a window's length cannot be negative, got {length} (sample {position})")
    if offset < 0 or offset + length > rows:
        raise IndexError(f"window [{offset}, {offset + length}) is out of range for sample {position}, whose "
                         f"length is {rows}")


def window_of(sample: np.ndarray[Any, Any], position: int, offset: int, length: int) -> np.ndarray[Any, Any]:
    """``sample[offset:offset + length]`` after `check_window` (for samples read whole: compressed, 0.9.0)."""
    if sample.ndim == 0:
        raise IndexError(f"sample {position} is 0-d: it has no first axis to take a window of")
    check_window(position, sample.shape[0], offset, length)
    return sample[offset:offset + length]


class RaggedView(OffsetsView):
    def __init__(self, store: Columns, dtype: Optional[np.dtype[Any]], ndims: Optional[list[int]]):
        data = store.column("data")
        super().__init__(store, data if dtype is None else data.view(dtype), store.column("offsets"))
        self.dtype = dtype
        self._store = store
        # The header keeps which numbers of dimensions occur: with only 1-D samples a read needs no shape lookup,
        # and the shape columns are mapped on first use only (opening a token map maps two files, issue 21): by a
        # padded batch, which checks the recorded shapes against the offsets.
        self.flat = ndims == [1]
        self.known_ndims = None if ndims is None else np.asarray(ndims, dtype=np.int64)
        self.known_ndim_set = frozenset(ndims or ())
        if not self.flat:  # mapped now: every read needs them
            self.shape_starts, self.shape_stops, self.dim_items  # noqa: B018

    @mapped_on_first_use
    def shape_offsets(self) -> np.ndarray[Any, Any]:
        return self._store.column("shape_offsets")

    @mapped_on_first_use
    def dims(self) -> np.ndarray[Any, Any]:
        return self._store.column("dims")

    @mapped_on_first_use
    def shape_starts(self) -> memoryview:
        return self.shape_offsets[:-1].data

    @mapped_on_first_use
    def shape_stops(self) -> memoryview:
        return self.shape_offsets[1:].data

    @mapped_on_first_use
    def dim_items(self) -> memoryview:
        return self.dims.data

    def shape(self, position: int) -> tuple[int, ...]:
        shape = tuple(self.dim_items[self.shape_starts[position]:self.shape_stops[position]])
        if shape and min(shape) < 0:
            raise self.corrupt_shape(position)
        return shape

    def get(self, position: int) -> np.ndarray[Any, Any]:
        start, stop = self.starts[position], self.stops[position]
        if not 0 <= start <= stop <= self.size:
            raise self.corrupt(position)
        if self.flat:
            return self.values[start:stop]
        first, last = self.shape_starts[position], self.shape_stops[position]
        if last - first == 1:
            return self.values[start:stop]
        shape = tuple(self.dim_items[first:last])
        try:
            sample = self.values[start:stop].reshape(shape)
        except (ValueError, TypeError):  # a damaged dims.bin / shape_offsets.bin: the shape does not fit the span
            raise self.corrupt_shape(position, stop - start) from None
        if sample.shape != shape:  # NumPy took a negative dimension for "the rest"
            raise self.corrupt_shape(position, stop - start)
        return sample

    def corrupt_shape(self, position: int, size: Optional[int] = None) -> CorruptMapError:
        """The error for sample ``position`` whose recorded shape has a negative dimension or does not hold its
        ``size`` elements."""
        first, last = self.shape_starts[position], self.shape_stops[position]
        shown = tuple(self.dim_items[first:last]) if 0 <= first <= last <= len(self.dim_items) and \
            last - first <= 64 else f"dims[{first}:{last}]"
        why = ": a dimension is negative" if isinstance(shown, tuple) and shown and min(shown) < 0 else \
            f", but its offsets give it {size} elements"
        return CorruptMapError(f"{self.path / 'dims.bin'} (or shape_offsets.bin) is corrupt: sample {position} has "
                               f"the shape {shown}{why}")

    def checked_shapes(self, positions: np.ndarray[Any, Any], sizes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """`shapes_at` of ``positions``, checked against ``sizes`` (the elements each sample's offsets give): a
        shape that does not hold exactly its sample's elements is a damaged ``dims.bin``, reported before any
        batch is allocated from it."""
        if not len(positions):
            return self.shapes_at(positions)
        firsts, ndim = self._shape_starts_at(positions)
        if ndim == 1:  # the common case, in as few NumPy calls as the batch itself (issue 18: reads within 5 %)
            lengths: np.ndarray[Any, Any] = self.dims[firsts]
            if (lengths != sizes).any():
                j = int(np.flatnonzero(lengths != sizes)[0])
                raise self.corrupt_shape(int(positions[j]), int(sizes[j]))
            return lengths.reshape(-1, 1)
        shapes: np.ndarray[Any, Any] = self.dims[firsts[:, None] + np.arange(ndim, dtype=np.int64)]
        if ndim == 0:  # 0-d samples: one element each
            bad = sizes != 1
        else:
            exact, rough = shapes[:, 0].copy(), shapes[:, 0].astype(np.float64)
            for axis in range(1, ndim):  # a few columns: cheaper than np.prod(axis=1)
                exact *= shapes[:, axis]
                rough *= shapes[:, axis]  # an int64 product that overflowed differs from this one
            bad = (exact != sizes) | (rough != sizes) | (shapes < 0).any(axis=1)
            empty = sizes == 0
            if empty.any():  # (0, n) holds no elements whatever n is: n must still not size a padded batch
                bound = max(int(sizes.max()), _EMPTY_DIM_BOUND)
                bad |= empty & (shapes > bound).any(axis=1)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise self.corrupt_shape(int(positions[j]), int(sizes[j]))
        return shapes

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
        starts, stops = self.spans(positions)
        values = self.values
        if self.flat:
            return [values[a:b] for a, b in zip(starts, stops)]
        firsts, lasts = self.shape_offsets[positions], self.shape_offsets[positions + 1]
        if ((lasts - firsts) == 1).all():
            return [values[a:b] for a, b in zip(starts, stops)]
        dims = self.dim_items
        samples = []
        for position, a, b, c, d in zip(positions.tolist(), starts, stops, firsts.tolist(), lasts.tolist()):
            shape = tuple(dims[c:d])
            try:
                sample = values[a:b].reshape(shape)
            except (ValueError, TypeError):
                raise self.corrupt_shape(position, b - a) from None
            if sample.shape != shape:  # a negative dimension
                raise self.corrupt_shape(position, b - a)
            samples.append(sample)
        return samples

    def window(self, position: int, offset: int, length: int) -> np.ndarray[Any, Any]:
        """Elements ``[offset, offset + length)`` of sample ``position`` along its first axis: a read-only view."""
        start, stop = self.starts[position], self.stops[position]
        if not 0 <= start <= stop <= self.size:
            raise self.corrupt(position)
        if self.flat:
            check_window(position, stop - start, offset, length)
            return self.values[start + offset:start + offset + length]
        shape = self.shape(position)
        if not shape:
            raise IndexError(f"sample {position} is 0-d: it has no first axis to take a window of")
        check_window(position, shape[0], offset, length)
        row = math.prod(shape[1:])
        return self.values[start + offset * row:start + (offset + length) * row].reshape((length, *shape[1:]))

    def iterate(self, start: int = 0) -> Iterator[np.ndarray[Any, Any]]:
        if self.flat:
            return self._flat_samples(start)
        if len(self.known_ndim_set) != 1:  # samples of several numbers of dimensions (or not known): one by one
            return super().iterate(start)
        return self._shaped_samples(start)

    def _flat_samples(self, start: int) -> Iterator[np.ndarray[Any, Any]]:
        """The 1-D samples from ``start`` on: each a view sliced from the values by two of its chunk's offsets (Python
        ints), each stop the next sample's start. This loop is the per-item pass of a token map (issue 21): no pair
        of offsets is packed and unpacked per sample (``zip``) and no shape looked up, measured 2-6 % faster than
        with ``zip``; a chunk's samples built into a list first (no generator resume per sample, but thousands of
        arrays alive at once) were 15-20 % slower."""
        values = self.values
        for offsets in self.chunks(start):
            bounds = iter(offsets)
            first = next(bounds)
            for stop in bounds:
                yield values[first:stop]
                first = stop

    def _shaped_samples(self, start: int) -> Iterator[np.ndarray[Any, Any]]:
        """The samples from ``start`` on of a map whose samples all have one number of dimensions (not 1): each
        chunk's shapes looked up and checked at once (`_chunk_shapes`)."""
        values = self.values
        position = start
        for offsets in self.chunks(start):
            count = len(offsets) - 1
            shapes = self._chunk_shapes(position, offsets)
            if shapes is None:  # damaged shapes: read one by one, so the error names the sample where it is read
                yield from map(self.get, range(position, position + count))
            else:
                for a, b, shape in zip(offsets, islice(offsets, 1, None), shapes):
                    yield values[a:b].reshape(shape)
            position += count

    def _chunk_shapes(self, position: int, offsets: list[int]) -> Optional[list[list[int]]]:
        """The shapes of the samples from ``position`` on whose element offsets are ``offsets``, each checked to hold
        its elements (`checked_shapes`, one vectorized check for the chunk, where `get` looks each shape up on its
        own, issue 21); None if any is damaged."""
        positions = np.arange(position, position + len(offsets) - 1, dtype=np.int64)
        try:
            shapes: list[list[int]] = self.checked_shapes(positions, np.diff(np.asarray(offsets, dtype=np.int64))
                                                          ).tolist()
        except (CorruptMapError, ValueError):
            return None
        return shapes

    def shapes_at(self, positions: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The shapes of the samples at ``positions`` as a ``(k, ndim)`` int64 array (one ndim for all)."""
        if not len(positions):
            return np.empty((0, 1), dtype=np.int64)
        firsts, ndim = self._shape_starts_at(positions)
        shapes: np.ndarray[Any, Any] = self.dims[firsts[:, None] + np.arange(ndim, dtype=np.int64)]
        negative = (shapes < 0).any(axis=1)
        if negative.any():
            raise self.corrupt_shape(int(positions[int(np.flatnonzero(negative)[0])]))
        return shapes

    def _shape_starts_at(self, positions: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], int]:
        """Where the shapes of the (one or more) samples at ``positions`` start in ``dims``, and their one number of
        dimensions: a CorruptMapError if ``shape_offsets.bin`` gives a sample dimensions outside the committed
        dims or a number of them the header does not list, a ValueError if the samples' numbers differ."""
        shape_offsets = self.shape_offsets
        firsts = shape_offsets[positions]
        ndims = shape_offsets[positions + 1] - firsts
        ndim = int(ndims[0])
        # One test for the usual batch (one listed number of dimensions, all within dims): a listed number is not
        # negative, and neither is a start read as unsigned that is at most len(dims) - ndim.
        if (ndim in self.known_ndim_set or (self.known_ndims is None and ndim >= 0)) and \
                not (ndims != ndim).any() and int(firsts.view(_UNSIGNED_INDEX).max()) <= len(self.dims) - ndim:
            return firsts, ndim
        self._refuse_shape_offsets(positions, firsts, ndims)

    def _refuse_shape_offsets(self, positions: np.ndarray[Any, Any], firsts: np.ndarray[Any, Any],
                              ndims: np.ndarray[Any, Any]) -> NoReturn:
        """Raise the error for shape offsets `_shape_starts_at` refused: damage first (naming the sample), else the
        mixed numbers of dimensions."""
        if (ndims < 0).any() or firsts.min() < 0 or (firsts + ndims).max() > len(self.dims):
            j = int(np.flatnonzero((ndims < 0) | (firsts < 0) | (firsts + ndims > len(self.dims)))[0])
            raise CorruptMapError(f"{self.path / 'shape_offsets.bin'} is corrupt: the shape of sample {positions[j]} "
                                  f"would be dims[{firsts[j]}:{firsts[j] + ndims[j]}], outside the "
                                  f"{len(self.dims)} committed dims")
        known = self.known_ndims
        if known is not None:
            unknown = ~np.isin(ndims, known)
            if unknown.any():
                j = int(np.flatnonzero(unknown)[0])
                raise CorruptMapError(f"{self.path / 'shape_offsets.bin'} is corrupt: sample {positions[j]} would "
                                      f"have {ndims[j]} dimensions, but the header says the map's samples have "
                                      f"{known.tolist()}")
        j = int(np.flatnonzero(ndims != ndims[0])[0])
        raise ValueError(f"samples {positions[0]} and {positions[j]} have different numbers of dimensions "
                         f"({self.shape(int(positions[0]))} and {self.shape(int(positions[j]))})")


class CompressedRaggedView(RaggedView):
    """Arrays whose bytes are each compressed on their own; ``offsets`` count bytes of compressed data."""

    def __init__(self, store: Columns, dtype: Optional[np.dtype[Any]], ndims: Optional[list[int]], codec: Codec):
        super().__init__(store, None, ndims)
        self.dtype = dtype
        self.decompress = codec.decompressor(bytes(store.column("dictionary")) or None)

    def get(self, position: int) -> np.ndarray[Any, Any]:
        start, stop = self.starts[position], self.stops[position]
        if not 0 <= start <= stop <= self.size:
            raise self.corrupt(position)
        try:
            raw = self.decompress(self.values[start:stop])
        except CorruptMapError as e:
            raise damaged_sample(self.path, position, e) from None
        if self.dtype is None or len(raw) % self.dtype.itemsize:
            raise damaged_sample(self.path, position, CorruptMapError(
                f"it decompresses to {len(raw)} bytes, not a whole number of {self.dtype} elements"))
        array = np.frombuffer(raw, dtype=self.dtype)  # read-only
        first, last = self.shape_starts[position], self.shape_stops[position]
        if self.flat or last - first == 1:
            return array
        shape = tuple(self.dim_items[first:last])
        try:
            sample = array.reshape(shape)
        except (ValueError, TypeError):
            raise self.corrupt_shape(position, array.size) from None
        if sample.shape != shape:  # a negative dimension
            raise self.corrupt_shape(position, array.size)
        return sample

    def window(self, position: int, offset: int, length: int) -> np.ndarray[Any, Any]:
        """The window of the decompressed sample: a new (read-only) array, not a view of the map."""
        return window_of(self.get(position), position, offset, length)

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
        self.spans(positions)  # checks the offsets of all of them at once
        return [self.get(p) for p in positions.tolist()]

    def iterate(self, start: int = 0) -> Iterator[np.ndarray[Any, Any]]:
        return map(self.get, range(start, self.length))


_CHECK_CHUNK = 1 << 18
"""Samples whose shapes `RaggedLayout.check_columns` checks at a time (a few MiB of int64 per column)."""
_MAX_SHAPE_PROBLEMS = 5
_MAX_NDIM = 64
"""The most dimensions a NumPy array has (``numpy.ndarray`` refuses a shape of more)."""


def _bad_shapes(offsets: np.ndarray[Any, Any], shape_offsets: np.ndarray[Any, Any], dims: np.ndarray[Any, Any],
                sizes_known: bool, limit: int) -> list[tuple[int, list[int], int]]:
    """``(position in the chunk, recorded shape, elements its offsets give)`` of at most ``limit`` samples of a chunk
    whose shape does not fit (``offsets`` and ``shape_offsets``: the chunk's ``n + 1`` entries, already checked to be
    non-decreasing and within their columns); one vectorized pass over the chunk."""
    sizes = np.diff(np.asarray(offsets, dtype=np.int64))
    bounds = np.asarray(shape_offsets, dtype=np.int64)
    ndims = np.diff(bounds)
    first = int(bounds[0])
    chunk_dims = np.asarray(dims[first:int(bounds[-1])], dtype=np.int64)
    bad = ndims > _MAX_NDIM
    exact, rough = np.ones(len(sizes), dtype=np.int64), np.ones(len(sizes), dtype=np.float64)
    shaped = np.flatnonzero(ndims > 0)  # 0-d samples have no dims: one element
    if len(shaped):
        starts = bounds[:-1][shaped] - first  # strictly increasing: the segments between them are these samples'
        bad[shaped] |= np.minimum.reduceat(chunk_dims, starts) < 0
        exact[shaped] = np.multiply.reduceat(chunk_dims, starts)
        rough[shaped] = np.multiply.reduceat(chunk_dims.astype(np.float64), starts)  # differs when int64 overflowed
    if sizes_known:
        bad |= (exact != sizes) | (rough != sizes)
    found = np.flatnonzero(bad)[:limit].tolist()
    return [(j, chunk_dims[bounds[j] - first:bounds[j + 1] - first].tolist(), int(sizes[j])) for j in found]


class RaggedLayout(Layout):
    """``ragged``: arrays of one dtype and any shapes: elements back to back, element offsets, shapes."""

    kind: ClassVar[str] = "ragged"
    columns: ClassVar[dict[str, str]] = {"data": "|u1", "offsets": "<i8", "shape_offsets": "<i8", "dims": "<i8"}
    initial: ClassVar[dict[str, list[int]]] = {"offsets": [0], "shape_offsets": [0]}

    def attrs(self, dtype: Any = None, codec: Any = None) -> dict[str, Any]:  # type: ignore[override]
        return {"dtype": None if dtype is None else dtype_to_json(storable_dtype(dtype, "dtype")), "ndims": [],
                **codec_attrs(codec)}

    def index_units(self, attrs: dict[str, Any]) -> dict[str, int]:
        dtype = attrs.get("dtype")  # offsets count elements of an uncompressed map, bytes of a compressed one
        return {"": 1 if dtype is None or attrs.get("codec") else int(dtype_from_json(dtype).itemsize)}

    def check_columns(self, columns: Mapping[str, np.ndarray[Any, Any]], attrs: dict[str, Any],
                      prefix: str = "") -> list[str]:
        """Every sample's recorded shape: non-negative dimensions, at most `_MAX_NDIM` of them, and (unless the
        samples are compressed, whose offsets count bytes) as many elements as its offsets give: what every read
        of a damaged ``dims.bin`` would refuse (`RaggedView.corrupt_shape`)."""
        offsets, shape_offsets, dims = (columns.get(prefix + name) for name in ("offsets", "shape_offsets", "dims"))
        if offsets is None or shape_offsets is None or dims is None or len(offsets) < 2:
            return []
        where = f"{prefix}dims.bin (or {prefix}shape_offsets.bin)"
        if len(shape_offsets) != len(offsets):
            return [f"{prefix}shape_offsets.bin holds {len(shape_offsets)} entries, but {prefix}offsets.bin gives "
                    f"{len(offsets) - 1} samples (n + 1 entries needed)"]
        sizes_known = attrs.get("dtype") is not None and not attrs.get("codec")
        problems: list[str] = []
        for start in range(0, len(offsets) - 1, _CHECK_CHUNK):  # bounded memory whatever the map's length
            stop = min(start + _CHECK_CHUNK, len(offsets) - 1)
            for position, shape, size in _bad_shapes(offsets[start:stop + 1], shape_offsets[start:stop + 1], dims,
                                                     sizes_known, _MAX_SHAPE_PROBLEMS - len(problems)):
                shown = tuple(shape) if len(shape) <= 8 else f"of {len(shape)} dimensions"
                if any(d < 0 for d in shape) or len(shape) > _MAX_NDIM:
                    why = "a dimension is negative" if len(shape) <= _MAX_NDIM else \
                        f"NumPy arrays have at most {_MAX_NDIM} dimensions"
                    problems.append(f"{where} is corrupt: sample {start + position} has the shape {shown}: {why}")
                else:
                    elements = math.prod(shape)
                    problems.append(f"{where} is corrupt: sample {start + position} has the shape {shown} of "
                                    f"{elements} elements, but its offsets give it {size} elements")
            if len(problems) >= _MAX_SHAPE_PROBLEMS:
                problems.append(f"{where}: the check stopped after {_MAX_SHAPE_PROBLEMS} damaged samples")
                break
        return problems

    def view(self, store: Columns) -> RaggedView:
        attrs = store.attrs
        codec = self.codec(attrs)
        if codec is not None:
            return CompressedRaggedView(store, _dtype(attrs), attrs.get("ndims"), codec)
        return RaggedView(store, _dtype(attrs), attrs.get("ndims"))

    def sample_bytes(self, batch: Any) -> list[bytes]:
        samples = []
        for sample in batch:
            try:
                samples.append(np.ascontiguousarray(np.asarray(sample)).tobytes())
            except (TypeError, ValueError):
                continue  # a bad sample: encoding refuses it, naming it
        return samples

    def batch(self, samples: Any, lengths: dict[str, int], attrs: dict[str, Any]) -> list[Any]:
        if isinstance(samples, np.ndarray) and samples.ndim < 2:
            raise TypeError(f"extend() takes a sequence of samples, got one array of shape {samples.shape}; to add "
                            f"it as one sample use append(), to add its elements as 0-d samples pass list(array)")
        if isinstance(samples, (str, bytes)):
            raise TypeError(f"extend() takes a sequence of array-like samples, got {type(samples).__name__}")
        return samples if type(samples) is list else list(samples)  # (read only: a list needs no copy)

    def _arrays(self, batch: list[Any], first: int, dtype: Optional[np.dtype[Any]]
                ) -> tuple[list[Any], np.dtype[Any]]:
        """The samples as arrays of one storable dtype, and that dtype (if new: set by the first sample that has a
        dtype of its own, an array or a tensor, or holds values; an empty list has NumPy's default float64, which
        says nothing of the samples, as a records field's inference (`mmap_ninja.kinds.fields`) reads it too)."""
        uniform = uniform_arrays(batch, dtype)
        if uniform is not None:
            return batch, uniform  # the common case, checked without a Python step per sample
        arrays = []
        untyped = 0  # how many empty lists came before the sample that set the dtype
        for k, sample in enumerate(batch):
            array = as_sample(sample, dtype, f"item {first + k}")
            if dtype is None:
                if not (array.size or hasattr(sample, "dtype")):
                    untyped += 1
                    arrays.append(array)
                    continue
                dtype = storable_dtype(array.dtype, f"item {first + k}")
            arrays.append(array)
        if dtype is None:  # only empty lists: NumPy's float64, as np.asarray([]) has
            dtype = storable_dtype(arrays[0].dtype if arrays else np.float64, f"item {first}")
        for k in range(untyped if untyped < len(arrays) else 0):
            arrays[k] = np.empty(arrays[k].shape, dtype)  # (no values: nothing is cast)
        return arrays, dtype

    def encode(self, batch: list[Any], lengths: dict[str, int], attrs: dict[str, Any],
               dictionary: bytes = b"") -> Encoded:
        old_dtype = _dtype(attrs)
        arrays, dtype = self._arrays(batch, self.count(lengths, attrs), old_dtype)
        count = len(arrays)
        ndim_set = ndims_of(arrays)
        if ndim_set == {1}:
            sizes = np.fromiter(map(len, arrays), dtype=np.int64, count=count)
            dims = sizes
            shape_offsets = np.arange(lengths["dims"] + 1, lengths["dims"] + count + 1, dtype=np.int64)
        else:
            sizes = np.fromiter(map(attrgetter("size"), arrays), dtype=np.int64, count=count)
            ndims = np.fromiter(map(attrgetter("ndim"), arrays), dtype=np.int64, count=count)
            dims = np.fromiter(chain.from_iterable(map(attrgetter("shape"), arrays)), dtype=np.int64,
                               count=int(ndims.sum()))
            shape_offsets = np.cumsum(ndims) + lengths["dims"]
        offsets_base = _elements(lengths, old_dtype)
        if attrs.get("codec"):  # offsets count bytes of compressed data
            compressed = _compress_all(attrs, dictionary, [np.ascontiguousarray(a).reshape(-1).view(np.uint8)
                                                           for a in arrays])
            sizes = np.fromiter(map(len, compressed), dtype=np.int64, count=count)
            data: list[Any] = compressed
            offsets_base = lengths["data"]
        elif dtype.kind not in "MmO":
            # The samples' own buffers go to the kernel and the hasher: no joining copy (issue 21); the writer
            # copies a non-contiguous one in C order.
            data = write_pieces(arrays, sizes * dtype.itemsize)
        else:  # a dtype with no buffer format (datetime64)
            data = [raw_bytes(np.ascontiguousarray(a)) for a in arrays]
        columns = {
            "data": data,
            "offsets": np.cumsum(sizes) + offsets_base,
            "shape_offsets": shape_offsets,
            "dims": dims,
        }
        return Encoded(columns, _ragged_attrs(attrs, dtype, old_dtype, ndim_set))

    def encode_flat(self, values: Any, lengths_of_samples: Any, lengths: dict[str, int],
                    attrs: dict[str, Any], dictionary: bytes = b"") -> Encoded:
        """1-D samples given back to back in ``values`` (sample j is the next ``lengths_of_samples[j]``
        elements)."""
        if attrs.get("codec"):  # compressed sample by sample: the general path
            values = as_array(values, "values")
            ends = np.cumsum(check_lengths(lengths_of_samples, len(values))).tolist()
            return self.encode([values[a:b] for a, b in zip([0, *ends], ends)], lengths, attrs, dictionary)
        values = as_array(values, "values")
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {values.shape}")
        sizes = check_lengths(lengths_of_samples, len(values))
        old_dtype = _dtype(attrs)
        dtype = old_dtype or storable_dtype(values.dtype, "values")
        first = self.count(lengths, attrs)
        values = cast(values, dtype, f"items {first}..{first + len(sizes) - 1}")
        columns = {
            "data": [raw_bytes(np.ascontiguousarray(values))],
            "offsets": np.cumsum(sizes) + _elements(lengths, old_dtype),
            "shape_offsets": np.arange(1, len(sizes) + 1, dtype=np.int64) + lengths["dims"],
            "dims": sizes,
        }
        return Encoded(columns, _ragged_attrs(attrs, dtype, old_dtype, {1}))

    def encode_set(self, view: View, attrs: dict[str, Any], position: int, value: Any) -> tuple[str, int, Any]:
        assert isinstance(view, RaggedView)
        _refuse_in_place(attrs, position)
        if view.dtype is None:
            raise ValueError("the map holds no samples")
        array = as_sample(value, view.dtype, f"the new value of item {position}")
        shape = view.shape(position)
        if array.shape != shape:
            raise ValueError(f"item {position} has shape {shape} and the new value {array.shape}; "
                             f"in-place assignment needs the same shape")
        return "data", view.starts[position] * view.dtype.itemsize, raw_bytes(array)


def _elements(lengths: dict[str, int], dtype: Optional[np.dtype[Any]]) -> int:
    """How many elements a ragged map's data column holds (its bytes over the item size)."""
    return 0 if dtype is None else lengths["data"] // dtype.itemsize


def _ragged_attrs(attrs: dict[str, Any], dtype: np.dtype[Any], old_dtype: Optional[np.dtype[Any]],
                  ndim_set: set[int]) -> Optional[dict[str, Any]]:
    """The attributes after appending samples of ``dtype`` with these numbers of dimensions (None: unchanged)."""
    old_ndims = attrs.get("ndims")
    ndims = None if old_ndims is None else sorted(set(old_ndims) | ndim_set)
    if old_dtype is not None and ndims == old_ndims:
        return None
    return {**attrs, "dtype": dtype_to_json(dtype), "ndims": ndims}
