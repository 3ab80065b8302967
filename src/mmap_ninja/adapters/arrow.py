"""Apache Arrow interchange without copies on the way out.

The maps' variable-size layout *is* Arrow's large layout: ``StringsMmap`` stores a ``large_string`` column
(UTF-8 bytes plus n + 1 int64 offsets from 0) and a 1-D ``RaggedMmap`` a ``large_list`` one (values plus
the same offsets). `strings_to_arrow` and `ragged_to_arrow` therefore wrap the memory-mapped arrays in
``pyarrow`` buffers (``pa.py_buffer``) and build arrays on them: nothing is copied or read, and the arrays
keep the mapping alive for as long as they live (even after the map is closed).

`strings_from_arrow` and `ragged_from_arrow` build maps from Arrow arrays, chunked arrays, one-column
tables, or Hugging Face ``datasets`` columns / one-column datasets, writing the Arrow buffers straight
into the map's files in batches (no string is decoded, no sample becomes a Python object). They also take
dictionary-encoded strings (from Parquet or pandas categoricals; decoded one batch at a time) and list views
(``list_view`` / ``large_list_view``, whose lists are read by their own offsets and sizes). The adapters use
only the public API of mmap_ninja.

Usually reached through ``StringsMmap.to_arrow()``, ``StringsMmap.from_arrow(...)``, ``RaggedMmap.to_arrow()``
and ``RaggedMmap.from_arrow(...)``, which import this module (and so pyarrow) only when called.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mmap_ninja.extras import missing_extra

try:
    import pyarrow as pa
except ImportError as error:
    raise missing_extra(error, "mmap_ninja.adapters.arrow (to_arrow, from_arrow)") from None

from mmap_ninja.kinds.batch import check_batch_size, gather_index
from mmap_ninja.kinds.casting import storable_dtype
from mmap_ninja.storage.store import PathLike

DEFAULT_BATCH_SIZE = 65_536  # rows per commit when building from Arrow

__all__ = ["arrow_chunks", "ragged_from_arrow", "ragged_to_arrow", "strings_from_arrow", "strings_to_arrow"]


# ------------------------------------------------------------------------------------------------ out


def strings_to_arrow(strings_map: Any) -> pa.LargeStringArray:
    """``StringsMmap`` -> ``pyarrow.LargeStringArray`` over the map's own buffers (zero-copy).

    Example:

        >>> from mmap_ninja import StringsMmap
        >>> from mmap_ninja.adapters.arrow import strings_to_arrow
        >>> texts = StringsMmap.from_strings("texts", ["a", "bc"], overwrite=True)
        >>> strings_to_arrow(texts).to_pylist()
        ['a', 'bc']
    """
    offsets, values = strings_map.offsets, strings_map.values
    return pa.Array.from_buffers(pa.large_string(), len(offsets) - 1,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(values)], null_count=0)


def ragged_to_arrow(ragged_map: Any) -> pa.LargeListArray:
    """1-D ``RaggedMmap`` -> ``pyarrow.LargeListArray`` over the map's own buffers.

    Zero-copy for native-endian integer and float dtypes; a bool map's values are copied (Arrow packs
    booleans into bits). Samples with other than one dimension, or other dtypes, raise.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.arrow import ragged_to_arrow
        >>> tokens = RaggedMmap.from_lists("tokens", [np.arange(2), np.arange(3)], overwrite=True)
        >>> ragged_to_arrow(tokens).to_pylist()
        [[0, 1], [0, 1, 2]]
    """
    dtype = ragged_map.dtype
    n = len(ragged_map)
    if dtype is None:
        raise ValueError(f"{ragged_map.path}: the map holds no samples and has no dtype yet")
    try:
        ndim = ragged_map.shapes().shape[1] if n else 1
    except ValueError as e:
        raise ValueError(f"to_arrow() needs 1-D samples (Arrow's large_list holds one dimension): {e}") from None
    if ndim != 1:
        raise ValueError(f"to_arrow() needs 1-D samples, but the samples have {ndim} dimensions "
                         f"(sample 0 has shape {ragged_map.shape(0)}); Arrow's large_list holds one dimension")
    values = ragged_map.values
    if dtype.kind == "b":
        value_array = pa.array(values, type=pa.bool_())  # a copy: Arrow packs booleans into bits
    elif dtype.kind in "iuf" and dtype.isnative:
        value_type = pa.from_numpy_dtype(dtype)
        value_array = pa.Array.from_buffers(value_type, len(values), [None, pa.py_buffer(values)], null_count=0)
    elif dtype.kind in "iuf":
        value_array = pa.array(values.astype(dtype.newbyteorder("=")))  # a copy into native byte order
    else:
        raise TypeError(f"to_arrow() supports numeric and bool samples, not dtype {dtype}")
    return pa.Array.from_buffers(pa.large_list(value_array.type), n,
                                 [None, pa.py_buffer(ragged_map.offsets)], null_count=0, children=[value_array])


# ------------------------------------------------------------------------------------------------ in


def arrow_chunks(data: Any) -> list[pa.Array]:
    """The Arrow arrays behind ``data``: an Array, a ChunkedArray, a one-column Table or RecordBatch, a
    Hugging Face ``datasets`` column (``ds["text"]``) or one-column ``datasets.Dataset``, or anything with
    ``__arrow_array__``.

    Example:

        >>> import pyarrow as pa
        >>> from mmap_ninja.adapters.arrow import arrow_chunks
        >>> [chunk.to_pylist() for chunk in arrow_chunks(pa.chunked_array([["a"], ["b", "c"]]))]
        [['a'], ['b', 'c']]
    """
    if isinstance(data, pa.ChunkedArray):
        return list(data.chunks)
    if isinstance(data, pa.Array):
        return [data]
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        if data.num_columns != 1:
            raise ValueError(f"from_arrow() takes one column; this table has {data.num_columns} "
                             f"({', '.join(data.column_names)}): pass table.column(name)")
        return arrow_chunks(data.column(0))
    module = type(data).__module__ or ""
    if module.startswith("datasets."):
        return arrow_chunks(_hf_table(data))
    if hasattr(data, "__arrow_array__"):
        return arrow_chunks(data.__arrow_array__())
    raise TypeError(f"from_arrow() takes a pyarrow Array, ChunkedArray or one-column Table, or a Hugging Face "
                    f"datasets column; got {type(data).__name__}")


def _hf_table(data: Any) -> pa.Table:
    """A Hugging Face ``Column`` or one-column ``Dataset`` as a pyarrow Table (in the dataset's row order;
    zero-copy unless the dataset has an indices mapping from select/shuffle)."""
    name = type(data).__name__
    if name == "Column":
        source = data.source
        if type(source).__name__ != "Dataset":
            raise TypeError("from_arrow() takes a top-level datasets column (dataset['name']), not a nested one")
        dataset = source.select_columns([data.column_name])
    elif name == "Dataset":
        dataset = data
        if len(dataset.column_names) != 1:
            raise ValueError(f"from_arrow() takes one column; this dataset has {dataset.column_names}: "
                             f"pass dataset['name']")
    else:
        raise TypeError(f"from_arrow() does not know how to read a datasets.{name}")
    table = dataset.with_format("arrow")[:]
    return pa.table({table.column_names[0]: table.column(0)}) if not isinstance(table, pa.Table) else table


def _check_no_nulls(array: pa.Array, first: int, what: str) -> None:
    if array.null_count:
        bad = first + int(np.flatnonzero(~array.is_valid().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"from_arrow(): item {bad} is null; a map has no nulls ({what})")


def _pieces(chunks: list[pa.Array], batch_size: int) -> Iterator[tuple[int, pa.Array]]:
    first = 0
    for chunk in chunks:
        for start in range(0, len(chunk), batch_size):
            piece = chunk.slice(start, batch_size)
            yield first + start, piece
        first += len(chunk)


def _is_string_type(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
                or getattr(pa.types, "is_string_view", lambda _: False)(arrow_type))


def strings_from_arrow(cls: Any, out_dir: PathLike, data: Any, *, batch_size: int = DEFAULT_BATCH_SIZE,
                       overwrite: bool = False, durable: bool = False) -> Any:
    """Build a ``StringsMmap`` from Arrow ``string`` / ``large_string`` / ``string_view`` data, or
    dictionary-encoded strings (Parquet's and pandas categoricals'; each chunk may have its own dictionary),
    which are decoded batch by batch. ``large_string`` buffers are written as they are; other types are
    converted to it one batch at a time.

    Example:

        >>> import pyarrow as pa
        >>> from mmap_ninja import StringsMmap
        >>> from mmap_ninja.adapters.arrow import strings_from_arrow
        >>> texts = strings_from_arrow(StringsMmap, "texts", pa.array(["x", "y"]).dictionary_encode(), overwrite=True)
        >>> texts[:]
        ['x', 'y']
    """
    batch_size = check_batch_size(batch_size)
    chunks = arrow_chunks(data)
    for chunk in chunks:
        arrow_type = chunk.type
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if not _is_string_type(arrow_type):
            raise TypeError(f"StringsMmap.from_arrow() takes string data, got Arrow type {chunk.type}")
    with cls.build(out_dir, overwrite=overwrite, durable=durable) as target:
        for first, piece in _pieces(chunks, batch_size):
            if pa.types.is_dictionary(piece.type):
                # Decode with a large_string dictionary (pyarrow cannot decode every value type directly).
                dictionary = piece.dictionary.cast(pa.large_string())
                piece = pa.DictionaryArray.from_arrays(piece.indices, dictionary).dictionary_decode()
            elif not pa.types.is_large_string(piece.type):
                piece = piece.cast(pa.large_string())
            _check_no_nulls(piece, first, "strings")
            buffers = piece.buffers()
            offsets = np.frombuffer(buffers[1], dtype=np.int64)[piece.offset:piece.offset + len(piece) + 1]
            data_buffer = buffers[2] if buffers[2] is not None else b""
            utf8 = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]]
            target.extend_utf8(utf8, np.diff(offsets))
    return target


def _is_list_view_type(arrow_type: pa.DataType) -> bool:
    is_list_view = getattr(pa.types, "is_list_view", lambda _: False)  # pyarrow >= 16
    is_large_list_view = getattr(pa.types, "is_large_list_view", lambda _: False)
    return bool(is_list_view(arrow_type) or is_large_list_view(arrow_type))


def _gather_list_view(piece: Any, first: int) -> tuple[np.ndarray, np.ndarray]:
    """The values of a (sliced, null-free) list-view array's lists, back to back, and their sizes.

    A list view's lists are ``values[offsets[j]:offsets[j] + sizes[j]]`` in any order, possibly overlapping,
    so each is read by its own offset and size (pyarrow's cast to ``large_list`` assumes ordered offsets).
    """
    starts = piece.offsets.to_numpy().astype(np.int64)  # both honour the slice
    sizes = piece.sizes.to_numpy().astype(np.int64)
    used = sizes > 0
    if not used.any():
        return np.empty(0, dtype=piece.type.value_type.to_pandas_dtype()), sizes
    low, high = int(starts[used].min()), int((starts + sizes)[used].max())
    values = piece.values.slice(low, high - low)  # only the range the lists read
    index = gather_index(np.where(used, starts - low, 0), sizes)
    if values.null_count:
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        if not valid[index].all():
            raise ValueError(f"from_arrow(): items {first}..{first + len(piece) - 1} hold null values")
        values = values.fill_null(False if pa.types.is_boolean(values.type) else 0)
    return values.to_numpy(zero_copy_only=False)[index], sizes


def ragged_from_arrow(cls: Any, out_dir: PathLike, data: Any, *, dtype: Any = None,
                      batch_size: int = DEFAULT_BATCH_SIZE, overwrite: bool = False, durable: bool = False) -> Any:
    """Build a ``RaggedMmap`` of 1-D samples from Arrow ``list`` / ``large_list`` / ``fixed_size_list`` /
    ``list_view`` / ``large_list_view`` data of integers, floats or booleans. ``dtype=`` stores another dtype
    (only if no value changes, see `mmap_ninja.kinds.casting`). ``large_list`` values are read without a copy;
    list views, whose lists may be out of order or overlap, are gathered list by list (by offset and size).

    Example:

        >>> import pyarrow as pa
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.arrow import ragged_from_arrow
        >>> tokens = ragged_from_arrow(RaggedMmap, "tokens", pa.array([[1, 2], [3]]), overwrite=True)
        >>> tokens[0], tokens.dtype, len(tokens)
        (array([1, 2]), dtype('int64'), 2)
    """
    batch_size = check_batch_size(batch_size)
    chunks = arrow_chunks(data)
    value_type: pa.DataType | None = None
    for chunk in chunks:
        t = chunk.type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
                or _is_list_view_type(t)):
            raise TypeError(f"RaggedMmap.from_arrow() takes list data, got Arrow type {t}")
        vt = t.value_type
        if not (pa.types.is_integer(vt) or pa.types.is_floating(vt) or pa.types.is_boolean(vt)):
            raise TypeError(f"RaggedMmap.from_arrow() takes lists of numbers or booleans, got Arrow type {t}")
        if value_type is not None and vt != value_type:
            raise TypeError(f"the chunks hold different value types ({value_type} and {vt})")
        value_type = vt
    source_dtype = np.dtype(value_type.to_pandas_dtype()) if value_type is not None else None
    target_dtype = storable_dtype(dtype if dtype is not None else source_dtype or np.float64, "dtype")
    with cls.build(out_dir, overwrite=overwrite, durable=durable, dtype=target_dtype) as target:
        for first, piece in _pieces(chunks, batch_size):
            _check_no_nulls(piece, first, "lists")
            if _is_list_view_type(piece.type):
                values, sizes = _gather_list_view(piece, first)
                target.extend_flat(values, sizes)
                continue
            if not pa.types.is_large_list(piece.type):
                piece = piece.cast(pa.large_list(value_type))
            offsets = piece.offsets.to_numpy()  # honours the slice; indexes the unsliced child
            values = piece.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
            if values.null_count:
                raise ValueError(f"from_arrow(): items {first}..{first + len(piece) - 1} hold null values")
            target.extend_flat(values.to_numpy(zero_copy_only=False), np.diff(offsets))
    return target
