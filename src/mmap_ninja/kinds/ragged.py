"""`RaggedMmap`: a memory-mapped list of arrays of one dtype and any shapes (images, token sequences, ...)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional, overload

import numpy as np
import numpy.typing as npt

from mmap_ninja.kinds.batch import assemble, check_samples_iterable
from mmap_ninja.kinds.fields import Field, FieldKind, register_field_kind
from mmap_ninja.kinds.layouts import View
from mmap_ninja.kinds.maps import MapBase, SampleIndex, SampleIndices, _dictionary, resolve_index, resolve_positions
from mmap_ninja.kinds.ragged_layout import CompressedRaggedView, RaggedLayout, RaggedView, window_of
from mmap_ninja.kinds.strings import _refuse_compressed
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike

__all__ = ["RaggedMmap", "RaggedMmmap"]

# from_lists' default: its samples are in memory already, so a batch costs little more than its commit.
DEFAULT_BATCH_SIZE = 16_384


class RaggedMmap(MapBase):
    """A list of ndarrays on disk, each with its own shape (and number of dimensions); one dtype for all.

    ``m[i]`` is a read-only view into the mapping with the sample's shape, made without copying.
    The dtype is set by ``dtype=`` or by the first sample (an empty list, NumPy's float64, is passed over for the
    first sample that holds values or is an array: ``[[], [True]]`` is a bool map); later samples are cast to it
    only when no value changes (storing 300 in a uint8 map raises). Create with `from_lists`, `from_generator` or
    `from_indexable`; open with ``RaggedMmap(path)`` (see `MapBase` for the modes and the writer model).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> rag = RaggedMmap.from_lists("ragged", [np.arange(3), np.ones((2, 2), dtype=int)], overwrite=True)
        >>> rag[0], rag[1].shape, rag.dtype
        (array([0, 1, 2]), (2, 2), dtype('int64'))
        >>> rag.extend([np.arange(5)])
        >>> len(rag), rag[-1]
        (3, array([0, 1, 2, 3, 4]))
    """

    layout = RaggedLayout()
    default_batch_size = DEFAULT_BATCH_SIZE

    if TYPE_CHECKING:  # the types a checker sees; at run time these are MapBase's (its read fast path unchanged)
        @overload
        def __getitem__(self, index: SampleIndex) -> npt.NDArray[Any]: ...
        @overload
        def __getitem__(self, index: SampleIndices) -> list[npt.NDArray[Any]]: ...
        def __getitem__(self, index: Any) -> Any: ...
        def __iter__(self) -> Iterator[npt.NDArray[Any]]: ...
        def append(self, sample: npt.ArrayLike) -> None: ...
        def extend(self, samples: Iterable[npt.ArrayLike], verbose: bool = False) -> None: ...

    @property
    def dtype(self) -> Optional[np.dtype[Any]]:
        """The samples' dtype (None while the map is empty and no dtype was given)."""
        return self._view.dtype  # type: ignore[no-any-return]

    @property
    def values(self) -> np.ndarray[Any, Any]:
        """Every sample's elements back to back (read-only, 1-D): Arrow's list ``values``. A compressed map has
        no such array (TypeError). With ``verify_reads=True`` every committed byte is checked first (each checksum
        record once per handle)."""
        _refuse_compressed(self, "values")
        return self._whole("values")  # type: ignore[no-any-return]

    @property
    def offsets(self) -> np.ndarray[Any, Any]:
        """The n + 1 element offsets (read-only int64): sample i's elements are ``values[offsets[i]:offsets[i+1]]``.
        With ``verify_reads=True`` every committed byte of the map is checked first, as for ``values``."""
        return self._whole("offsets")  # type: ignore[no-any-return]

    @property
    def ndims(self) -> Optional[list[int]]:
        """The sorted numbers of dimensions the samples have (``[1]`` for token sequences, ``[]`` while empty),
        from the header: None for a map written before format 2.0 kept it (its samples may have any)."""
        ndims = self._view_attrs().get("ndims")
        return None if ndims is None else [int(n) for n in ndims]

    def shape(self, index: int) -> tuple[int, ...]:
        """The shape of sample ``index``, without touching its data."""
        view = self._view
        return view.shape(resolve_index(index, view.length))  # type: ignore[no-any-return]

    def shapes(self, indices: Any = slice(None)) -> np.ndarray[Any, Any]:
        """The shapes of the samples at ``indices`` (default: all) as a ``(k, ndim)`` int64 array, read
        from the index without touching the data; a ValueError if their numbers of dimensions differ."""
        view = self._view
        return view.shapes_at(resolve_positions(indices, view.length))  # type: ignore[no-any-return]

    def window(self, index: int, offset: int, length: int) -> np.ndarray[Any, Any]:
        """Elements ``[offset, offset + length)`` of sample ``index`` (along the first axis of an N-d sample):
        Megatron's ``get(i, offset, length)``.

        The result is a read-only view into the mapping, made without copying and without touching the rest of
        the sample; for a map with a codec (and a 0.9.0 map) the sample is decompressed (read) whole and the
        window is a slice of that copy. A window that does not lie within the sample raises IndexError naming
        the sample's length; a negative ``length`` raises ValueError. ``wrapper_fn`` is not applied.
        """
        view = self._view
        position = resolve_index(index, view.length)
        offset, length = operator.index(offset), operator.index(length)
        window = getattr(view, "window", None)
        if window is None:  # a 0.9.0 map: read the sample, then slice it
            return window_of(view.get(position), position, offset, length)
        return window(position, offset, length)  # type: ignore[no-any-return]

    def get_batch(self, indices: Any, *, pad_value: Any = None, out: Optional[np.ndarray[Any, Any]] = None) -> Any:
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
        view = self._view
        positions = resolve_positions(indices, view.length)
        if view.dtype is None:
            raise ValueError("the map holds no samples and has no dtype yet")
        if isinstance(view, CompressedRaggedView) or not isinstance(view, RaggedView):
            # Compressed (or a 0.9.0 map): decode each sample, then stack or pad them as usual.
            samples = view.get_many(positions)
            sizes = np.fromiter((s.size for s in samples), dtype=np.int64, count=len(samples))
            values = np.concatenate([s.reshape(-1) for s in samples]) if samples else np.empty(0, view.dtype)
            starts = np.cumsum(sizes) - sizes
        else:
            values, starts = view.values, view.offsets[positions]
            sizes = view.offsets[positions + 1] - starts
            if len(positions) and ((sizes < 0).any() or starts.min() < 0 or (starts + sizes).max() > view.size):
                raise view.corrupt(positions[:5].tolist())
        return assemble(values, starts, sizes, view.checked_shapes(positions, sizes), positions, pad_value, out)

    def extend_flat(self, values: Any, lengths: Any) -> None:
        """Append ``len(lengths)`` 1-D samples given back to back in ``values`` (one commit).

        Sample j is the next ``lengths[j]`` elements of ``values``: the shape of a tokenizer's output or of
        Arrow's list arrays, stored without splitting it into one array per sample first.
        """
        store = self._writable_store()
        try:
            with store.transaction():
                self._train(store, [])  # no samples to train a codec's dictionary on: compress without one
                columns, attrs = self.layout.encode_flat(values, lengths, store.lengths, store.attrs,
                                                         _dictionary(store))
                store.append(columns, attrs)
        finally:
            self._invalidate()

    def to_arrow(self) -> Any:
        """The map as a ``pyarrow.LargeListArray`` whose buffers are the map's own ``offsets`` and
        ``values`` (no copy; needs pyarrow and 1-D samples of a numeric dtype). A compressed map is refused."""
        _refuse_compressed(self, "to_arrow()")
        self._check_all(self._view)  # verify_reads: the array shares the map's bytes, check all of them first
        from mmap_ninja.adapters.arrow import ragged_to_arrow

        return ragged_to_arrow(self)

    @classmethod
    def from_arrow(cls, out_dir: PathLike, array: Any, *, dtype: Any = None, batch_size: Optional[int] = None,
                   overwrite: bool = False, durable: bool = False) -> RaggedMmap:
        """Build a map of 1-D samples from an Arrow list array (``list``, ``large_list`` or
        ``fixed_size_list`` of numbers), a chunked array, or a Hugging Face ``datasets`` column.
        Options: ``dtype``, ``batch_size``, ``overwrite``, ``durable``. Returns the map open."""
        from mmap_ninja.adapters.arrow import ragged_from_arrow

        sized = {} if batch_size is None else {"batch_size": batch_size}  # None: the Arrow builders' own default
        return ragged_from_arrow(cls, out_dir, array, dtype=dtype, overwrite=overwrite,  # type: ignore[no-any-return]
                                 durable=durable, **sized)

    @classmethod
    def from_lists(cls, out_dir: PathLike, lists: Iterable[Any], dtype: Any = None, mode: str = "r+",
                   wrapper_fn: Optional[Callable[[Any], Any]] = None, verbose: bool = False, *, codec: Any = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, overwrite: bool = False, durable: bool = False,
                   metadata: Optional[dict[str, Any]] = None,
                   lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, commit: Optional[str] = None) -> RaggedMmap:
        """Build a map from a sequence of array-likes (committed every ``batch_size`` samples), in 0.9.0's
        argument order. ``codec="zstd"``/``"lz4"`` compresses every sample on its own; ``commit`` as in
        `MapBase.build`."""
        check_samples_iterable(lists, "RaggedMmap.from_lists")
        if isinstance(mode, bool):  # an older call of ours: from_lists(out_dir, lists, dtype, verbose)
            mode, verbose = "r+", mode
        return cls.from_generator(out_dir, lists, batch_size, verbose, overwrite=overwrite, durable=durable,
                                  metadata=metadata, mode=mode, wrapper_fn=wrapper_fn, lock_timeout=lock_timeout,
                                  dtype=dtype, codec=codec, commit=commit)


RaggedMmmap = RaggedMmap  # the spelling used in the original README


class RaggedField(FieldKind):
    """Arrays of one dtype and any shapes as a field of a records map, optionally compressed; batches are stacked,
    or padded when `RecordsMmap.get_batch` gets ``pad_value``."""

    name = "ragged"
    takes_dtype = True
    takes_codec = True

    @property
    def map_class(self) -> type[RaggedMmap]:
        return RaggedMmap

    def layout_attrs(self, field: Field) -> dict[str, Any]:
        return self.layout.attrs(dtype=field.dtype, codec=field.codec)

    def describe(self, field: Field) -> str:
        return "an array" + ("" if field.dtype is None else f" of {field.dtype}")

    def pads(self) -> bool:
        return True

    def read_batch(self, view: View, positions: np.ndarray[Any, Any], pad_value: Any, decoder: Any) -> Any:
        assert isinstance(view, RaggedView)
        if view.dtype is None:
            raise ValueError("the field holds no samples and has no dtype yet")
        if isinstance(view, CompressedRaggedView):
            samples = view.get_many(positions)
            sizes = np.fromiter((s.size for s in samples), dtype=np.int64, count=len(samples))
            values = np.concatenate([s.reshape(-1) for s in samples]) if samples else np.empty(0, view.dtype)
            shapes = view.checked_shapes(positions, sizes)
            return assemble(values, np.cumsum(sizes) - sizes, sizes, shapes, positions, pad_value, None)
        starts = view.offsets[positions]
        sizes = view.offsets[positions + 1] - starts
        if len(positions) and ((sizes < 0).any() or starts.min() < 0 or (starts + sizes).max() > view.size):
            raise view.corrupt(positions[:5].tolist())
        return assemble(view.values, starts, sizes, view.checked_shapes(positions, sizes), positions, pad_value,
                        None)

    def to_arrow(self, container: Any, field: Field) -> Any:
        if field.codec is None:
            from mmap_ninja.adapters.arrow import ragged_to_arrow

            return ragged_to_arrow(container)
        import pyarrow as pa  # no buffers of the values to share: decompress into new ones

        samples = container[:]
        bad = next((k for k, sample in enumerate(samples) if sample.ndim != 1), None)
        if bad is not None:
            raise ValueError(f"to_arrow() needs 1-D samples, but sample {bad} has shape {samples[bad].shape}; "
                             f"Arrow's large_list holds one dimension")
        dtype = container.dtype if container.dtype is not None else np.dtype(np.float64)
        sizes = np.fromiter((len(sample) for sample in samples), dtype=np.int64, count=len(samples))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        values = np.concatenate(samples) if samples else np.empty(0, dtype)
        return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.astype(dtype.newbyteorder("="))))


register_field_kind(RaggedField())
