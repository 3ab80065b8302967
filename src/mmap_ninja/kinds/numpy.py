"""Same-shape samples: `NumpyMmap`, an appendable memory-mapped ndarray, and the ``np_*`` functions.

Samples are stored one after another, each in the map's order: ``order="F"`` keeps every sample
Fortran-contiguous (the map as a whole is sample-major, which is what lets it grow at the end).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, Optional, Union, overload

import numpy as np
import numpy.typing as npt

from mmap_ninja.kinds.arraylike import ReadOnlyArrayMixin
from mmap_ninja.kinds.batch import check_out, pad_scalar
from mmap_ninja.kinds.casting import as_array, cast
from mmap_ninja.kinds.fields import Field, FieldKind, register_field_kind
from mmap_ninja.kinds.layouts import NumpyLayout, View, shaped
from mmap_ninja.kinds.legacy import is_legacy_map
from mmap_ninja.kinds.maps import MapBase, SampleIndex, SampleIndices, resolve_positions
from mmap_ninja.storage.format import SHARDS_FILE, dtype_from_json, read_header
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike, absolute

__all__ = ["NumpyMmap", "append", "extend", "extend_dir", "from_generator", "from_ndarray", "open_existing"]


class NumpyMmap(ReadOnlyArrayMixin, MapBase):
    """An ndarray of shape ``(n, *sample_shape)`` on disk that can grow along its first axis.

    Indexing is NumPy's own (any index NumPy accepts) and returns read-only views of the mapping;
    ``np.asarray(m)`` is the whole array without a copy. Open with ``NumpyMmap(path)`` or
    `np_open_existing`; create with `np_from_ndarray` or `np_from_generator`.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import NumpyMmap, np_from_ndarray
        >>> grid = np_from_ndarray("grid", np.arange(6, dtype=np.int32).reshape(3, 2), overwrite=True)
        >>> grid.extend(np.array([[6, 7]], dtype=np.int32))
        >>> grid.shape, grid[1:3]
        ((4, 2), array([[2, 3],
               [4, 5]], dtype=int32))
        >>> NumpyMmap("grid")[-1]
        array([6, 7], dtype=int32)
    """

    layout = NumpyLayout()
    plain_reads = True  # m[i] is NumPy's row i, as the view's get(i) (which verify_reads checks too)

    # -------------------------------------------------------------- the ndarray face

    @property
    def array(self) -> np.ndarray[Any, Any]:
        """The whole map as a read-only ndarray over the mapping (no copy). With ``verify_reads=True`` every
        committed byte is checked first (each checksum record once per handle), as for ``np.asarray(m)`` and
        the NumPy operators and functions, which read through it."""
        return self._whole("array")  # type: ignore[no-any-return]

    def _described_array(self) -> np.ndarray[Any, Any]:
        array = self._view.array  # dtype, shape, nbytes, ...: no value is read, nothing to check
        if not isinstance(array, np.ndarray):
            return self._readable_array()  # raises the closed-map error
        return array

    @property
    def sample_shape(self) -> Optional[tuple[int, ...]]:
        """The shape of one sample (the map's shape without its first axis); None before the first write."""
        return self._view.sample_shape  # type: ignore[no-any-return]

    @property
    def order(self) -> str:
        """The memory order of the samples: ``"C"`` or ``"F"``."""
        order: str = self._view.order or "C"
        return order

    def _readable_array(self) -> np.ndarray[Any, Any]:
        array = super()._readable_array()
        if self.wrapper_fn is None:
            return array
        # With a wrapper_fn, NumPy sees what reading gives: every sample wrapped (a new array).
        return np.asarray([self._wrap(sample) for sample in array]) if len(array) else array

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray[Any, Any]:
        if self.wrapper_fn is None:
            return super().__array__(dtype, copy)
        wrapped = self._readable_array()
        return wrapped if dtype is None else wrapped.astype(dtype)

    @overload
    def __getitem__(self, index: SampleIndex) -> Any: ...  # a sample: an array, or a NumPy scalar
    @overload
    def __getitem__(self, index: tuple[Any, ...]) -> Any: ...  # m[i, j]: NumPy's indexing within samples
    @overload
    def __getitem__(self, index: SampleIndices) -> npt.NDArray[Any]: ...
    def __getitem__(self, index: Any) -> Any:
        view = self._view
        if self._verify_reads:
            self._check_rows(index, view)
        result = view.array[index]
        if self.wrapper_fn is None:
            return result
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            return self._wrap(result)
        return [self._wrap(sample) for sample in result]

    def _check_rows(self, index: Any, view: Any) -> None:
        """verify_reads=True: check the samples (rows) an index reads from ``view`` (whatever NumPy index it is)."""
        checker = self._checker(view)
        if checker is None:
            return
        length = view.length
        first = index[0] if isinstance(index, tuple) and index else index
        if isinstance(first, (int, np.integer)) and not isinstance(first, (bool, np.bool_)):
            rows: Any = [int(first) % max(length, 1)]
        else:
            rows = np.arange(length)[first]
        checker.check_many(rows)

    def __iter__(self) -> Iterator[Any]:
        view = self._view
        if self._verify_reads:
            self._check_rows(slice(None), view)
        array = view.array
        if self.wrapper_fn is None:
            return iter(array)
        return (self._wrap(sample) for sample in array)

    def get_batch(self, indices: Any, *, pad_value: Any = None, out: Optional[np.ndarray[Any, Any]] = None) -> Any:
        """The samples at ``indices`` as one new array of shape ``(k, *sample_shape)`` (one vectorized
        gather), written into ``out=`` if given (same dtype, C-contiguous, writable). With a ``pad_value``
        returns ``(batch, lengths)`` like `RaggedMmap.get_batch`: nothing needs padding unless ``out`` is
        larger than the samples in some dimension, where the rest is filled with ``pad_value``."""
        view = self._view
        array, sample_shape, dtype = view.array, view.sample_shape, view.dtype
        positions = resolve_positions(indices, view.length)
        checker = self._checker(view)
        if checker is not None:
            checker.check_many(positions)
        k = len(positions)
        if dtype is None:
            raise ValueError("the map holds no samples and has no dtype yet")
        shape = (k, *sample_shape)
        if pad_value is None:
            out = np.empty(shape, dtype) if out is None else check_out(out, shape, dtype)
            if k:
                np.take(array, positions, axis=0, out=out)
            return out
        pad = pad_scalar(pad_value, dtype)
        lengths = (np.full(k, sample_shape[0], dtype=np.int64) if len(sample_shape) == 1
                   else np.tile(np.asarray(sample_shape, dtype=np.int64), (k, 1)))
        if out is None or out.shape == shape:
            return self.get_batch(positions, out=out), lengths
        check_out(out, shape, dtype, at_least=True)
        corner = (slice(None), *(slice(0, s) for s in sample_shape))
        out[corner] = array[positions]
        for axis, size in enumerate(sample_shape):  # pad each cell outside the corner once
            if size < out.shape[axis + 1]:
                out[(slice(None), *corner[1:axis + 1], slice(size, None))] = pad
        return out, lengths

    def __setitem__(self, index: Any, value: Any) -> None:
        """In-place assignment with NumPy's semantics; values are cast only if none changes (see `MapBase`)."""
        if self._mode == "r+" and self._store is None and self._legacy is None:
            raise IndexError(self._out_of_range(index, 0))  # before the write would create the map
        store = self._writable_store()
        with store.transaction():
            view = self._rebuild()
            if view.dtype is None:
                raise IndexError("the map holds no samples")
            writable = shaped(store.writable_view("data"), view.dtype, view.sample_shape, view.order)
            writable[index] = cast(as_array(value, "the assigned value", view.dtype), view.dtype, "the assigned value")
            del writable
            rows = _rows_touched(index, view.length)
            if np.size(rows):  # the samples the assignment touched: their checksums are recomputed
                sample_bytes = view.array[0].nbytes
                store.rehash("data", int(np.min(rows)) * sample_bytes, (int(np.max(rows)) + 1) * sample_bytes)
            if store.durable:
                store.flush()

    # -------------------------------------------------------------- growing

    def append(self, sample: npt.ArrayLike) -> None:
        """Add one sample (an array of the map's sample shape)."""
        self.extend(np.expand_dims(as_array(sample, "the sample"), 0))


def _rows_touched(index: Any, length: int) -> np.ndarray[Any, Any]:
    """The samples (rows) a NumPy index into a ``(length, ...)`` array selects; all of them when that cannot be
    told (checksums are then recomputed for the whole map, which is correct, only slower)."""
    first = index[0] if isinstance(index, tuple) and index else index
    try:
        if isinstance(first, np.ndarray) and first.dtype == bool and first.ndim > 1:  # a mask over whole samples
            return np.flatnonzero(first.reshape(first.shape[0], -1).any(axis=1))
        return np.atleast_1d(np.arange(length)[first])
    except (IndexError, TypeError, ValueError):
        return np.arange(length)


NpTarget = Union[NumpyMmap, PathLike]


def from_ndarray(out_dir: PathLike, arr: Any, *, overwrite: bool = False, durable: bool = False,
                 metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                 wrapper_fn: Optional[Callable[[Any], Any]] = None,
                 lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, commit: Optional[str] = None) -> NumpyMmap:
    """Store ``arr`` (its first axis indexes the samples) as a new map; returns it open (``commit`` as in
    `MapBase.build`).

    The dtype is kept exactly (byte order, structured fields, fixed-width strings); a Fortran-ordered
    ``arr`` is stored with every sample in Fortran order.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_from_ndarray
        >>> embeddings = np_from_ndarray("embeddings", np.zeros((4, 3), dtype=np.float16), overwrite=True)
        >>> embeddings.shape, embeddings.dtype
        ((4, 3), dtype('float16'))
    """
    arr = as_array(arr, "the array")
    if arr.ndim == 0:
        raise ValueError("from_ndarray() needs an array with at least one dimension (its first axis indexes samples)")
    order = "F" if arr.ndim > 2 and np.isfortran(arr) else "C"
    return NumpyMmap._build(out_dir, [arr], overwrite=overwrite, durable=durable, metadata=metadata, mode=mode,
                            wrapper_fn=wrapper_fn, lock_timeout=lock_timeout, dtype=arr.dtype,
                            sample_shape=arr.shape[1:], order=order, commit=commit)


def from_generator(out_dir: PathLike, sample_generator: Iterable[Any], batch_size: Optional[int] = None,
                   verbose: bool = False, **options: Any) -> NumpyMmap:
    """Build a map from an iterable of same-shape samples, committing every ``batch_size`` of them (default
    `NumpyMmap.default_batch_size`).

    The first sample fixes the shape and dtype, unless ``dtype=`` and/or ``sample_shape=`` are given (then the
    samples are checked, and cast without changing a value, to them). Other options as `MapBase.from_generator`.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_from_generator
        >>> squares = np_from_generator("squares", (np.full(2, i * i) for i in range(4)), batch_size=2, overwrite=True)
        >>> squares[:, 0]
        array([0, 1, 4, 9])
    """
    return NumpyMmap.from_generator(out_dir, sample_generator, batch_size, verbose, **options)


def open_existing(out_dir: PathLike, mode: str = "r+", *, wrapper_fn: Optional[Callable[[Any], Any]] = None,
                  copy_before_wrapper_fn: bool = True, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                  durable: bool = False, allow_unfinished: bool = False, verify_reads: bool = False) -> NumpyMmap:
    """Open the same-shape map in ``out_dir`` (one written by mmap_ninja 0.9.0 too); a `NotAMapError` if there is
    none.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_from_ndarray, np_open_existing
        >>> np_from_ndarray("labels", np.array([3, 1, 2]), overwrite=True).close()
        >>> labels = np_open_existing("labels")
        >>> labels[:], len(labels)
        (array([3, 1, 2]), 3)
    """
    directory = absolute(out_dir)
    if not is_legacy_map(directory) and not (directory / SHARDS_FILE).is_file():  # NumpyMmap names a sharded map
        read_header(directory)  # refuse a missing map rather than start an empty one
    return NumpyMmap(out_dir, wrapper_fn, mode, copy_before_wrapper_fn=copy_before_wrapper_fn,
                     lock_timeout=lock_timeout, durable=durable, allow_unfinished=allow_unfinished,
                     verify_reads=verify_reads)


def extend(np_mmap: NpTarget, arr: Any, **writer_options: Any) -> None:
    """Append the samples ``arr`` (shape ``(k, *sample_shape)``) to a map, given as an open map or a path.

    For a path, ``writer_options`` (``durable=``, ``lock_timeout=``) apply to the handle opened for the call.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_extend, np_from_ndarray
        >>> counts = np_from_ndarray("counts", np.array([1, 2]), overwrite=True)
        >>> np_extend(counts, np.array([3, 4]))
        >>> counts[:]
        array([1, 2, 3, 4])
    """
    if isinstance(np_mmap, NumpyMmap):
        np_mmap.extend(arr)
    else:
        extend_dir(np_mmap, arr, **writer_options)


def extend_dir(out_dir: PathLike, arr: Any, *, durable: bool = False,
               lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT) -> None:
    """Append the samples ``arr`` to the map in ``out_dir`` (a handle is opened for the call and closed).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_extend_dir, np_from_ndarray, np_open_existing
        >>> np_from_ndarray("steps", np.array([1, 2]), overwrite=True).close()
        >>> np_extend_dir("steps", np.array([3]))
        >>> np_open_existing("steps")[:]
        array([1, 2, 3])
    """
    with open_existing(out_dir, durable=durable, lock_timeout=lock_timeout) as target:
        target.extend(arr)


def append(np_mmap: NpTarget, sample: Any, **writer_options: Any) -> None:
    """Append one sample to a map, given as an open map or a path (see `extend` for ``writer_options``).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_append, np_from_ndarray
        >>> points = np_from_ndarray("points", np.zeros((1, 2)), overwrite=True)
        >>> np_append(points, np.array([1.0, 2.0]))
        >>> points.shape, points[1]
        ((2, 2), array([1., 2.]))
    """
    extend(np_mmap, np.expand_dims(as_array(sample, "the sample"), 0), **writer_options)


class NumpyField(FieldKind):
    """Arrays of one fixed shape and dtype as a field of a records map; with shape ``()`` a scalar field (labels,
    scores, times), whose integer values may key the rows. Batches are one array, gathered at once."""

    name = "numpy"
    takes_dtype = True
    fixed_size_rows = True

    @property
    def map_class(self) -> type[NumpyMmap]:
        return NumpyMmap

    def check(self, field: Field) -> None:
        if field.dtype is None or field.shape is None:
            raise TypeError("a numpy field needs a dtype and a shape (() for a scalar field)")
        shape = tuple(operator.index(s) for s in field.shape)
        if any(s <= 0 for s in shape):
            raise ValueError(f"a numpy field's shape must hold positive sizes, got {shape}")
        object.__setattr__(field, "shape", shape)
        if field.codec is not None:
            raise TypeError("numpy fields are not compressed; use a ragged field for a codec")

    def layout_attrs(self, field: Field) -> dict[str, Any]:
        attrs = self.layout.attrs(dtype=field.dtype, sample_shape=field.shape, order="C")
        return attrs if field.timezone is None else {**attrs, "timezone": field.timezone}

    def from_attrs(self, attrs: dict[str, Any]) -> Field:
        return Field(self.name, dtype_from_json(attrs["dtype"]), tuple(attrs["sample_shape"]),
                     timezone=attrs.get("timezone"))

    def describe(self, field: Field) -> str:
        if field.is_scalar:
            return f"a scalar of dtype {field.dtype}"
        return f"an array of shape {field.shape} and dtype {field.dtype}"

    def can_be_key(self, field: Field) -> bool:
        return field.is_scalar and field.dtype is not None and field.dtype.kind in "iu"

    def check_values(self, name: str, field: Field, values: Any, first: int) -> Any:
        shape = field.shape
        if isinstance(values, np.ndarray):
            if values.ndim < 1 or values.shape[1:] != shape:
                raise ValueError(f"field {name!r}: a column of shape {values.shape} cannot hold rows of shape "
                                 f"{shape}")
            return values
        if shape == ():
            types = set(map(type, values))
            if (bool in types or np.bool_ in types) and field.dtype is not None and field.dtype.kind != "b":
                k = next(k for k, value in enumerate(values) if isinstance(value, (bool, np.bool_)))
                raise TypeError(f"row {first + k}, field {name!r}: expected {field.describe()}, got the bool "
                                f"{bool(values[k])}, which would be stored as {int(values[k])} (declare the field "
                                f"bool, or give {field.dtype.name} values)")
            if all(issubclass(t, _SCALAR_TYPES) for t in types):
                return values
        for k, value in enumerate(values):
            if value is None or isinstance(value, (str, bytes, Mapping)) or np.shape(value) != shape:
                got = type(value).__name__ if np.ndim(value) == 0 or isinstance(value, (str, bytes)) \
                    else f"shape {np.shape(value)}"
                raise (TypeError if np.ndim(value) == 0 and shape == () else ValueError)(
                    f"row {first + k}, field {name!r}: expected {field.describe()}, got {got}")
        return values

    def locate_encode_error(self, name: str, values: Any, attrs: dict[str, Any], first: int) -> None:
        dtype = dtype_from_json(attrs["dtype"])
        for k, value in enumerate(values):
            where = f"row {first + k}, field {name!r}"
            cast(as_array(value, where, dtype), dtype, where)

    def read_batch(self, view: View, positions: np.ndarray[Any, Any], pad_value: Any, decoder: Any) -> Any:
        return np.take(view.array, positions, axis=0)  # type: ignore[attr-defined]

    def to_arrow(self, container: Any, field: Field) -> Any:
        import pyarrow as pa

        array = container.array
        zone = field.timezone  # UTC times given in this zone: Arrow's timestamp(unit, tz)
        value_type = None if zone is None else pa.timestamp(np.datetime_data(array.dtype)[0], tz=zone)
        if array.ndim == 1:
            return pa.array(array, type=value_type)
        arrow = pa.array(array.reshape(-1), type=value_type)
        for size in array.shape[:0:-1]:
            arrow = pa.FixedSizeListArray.from_arrays(arrow, size)
        return arrow


_SCALAR_TYPES = (bool, int, float, complex, np.generic)
register_field_kind(NumpyField())
