"""Records maps from tabular data read batch by batch: a Hugging Face ``datasets.Dataset`` and Parquet files.

The schema comes from the Arrow types (never from the values), one field per column:

| Arrow type | field |
|:--|:--|
| integers, floats, booleans | scalar field of the same NumPy dtype |
| ``string``, ``large_string`` (dictionary-encoded too) | strings field |
| ``list`` / ``large_list`` of numbers or booleans | ragged field of the values' dtype |
| nested ``fixed_size_list`` of numbers or booleans | numpy field of that shape |
| Hugging Face ``Array2D`` ... ``Array5D`` of a fixed shape | numpy field of that shape |
| ``binary`` / ``large_binary`` | ragged uint8 field (the bytes) |
| ``timestamp(unit, tz)`` | scalar ``datetime64[unit]`` field in UTC, the zone kept in the field (`Field.timezone`) |
| ``date32`` / ``date64`` | scalar ``datetime64[D]`` field |
| ``duration(unit)`` | scalar ``timedelta64[unit]`` field |
| ``struct<bytes: binary, path: string>`` (Hugging Face ``Image()``) | images field: the encoded bytes as they are |

Rows are read ``batch_size`` at a time and each batch is committed before the next is read, so memory stays
bounded by a batch whatever the size of the input. Numeric columns reach the map as NumPy views of the Arrow
buffers (no copy before the write); list columns as views into their values. An ``Image()`` value that holds a
path and no bytes (a dataset built from local files) is read from that file, unchanged; nothing is decoded or
re-encoded. A Hugging Face ``ClassLabel`` column becomes an int64 scalar field, its names kept in the metadata
as ``{"class_labels": {field: [names]}}`` (from a Parquet file
that ``datasets`` wrote too, through the features it keeps in the file's schema metadata).

Null values are refused, never cast: a ValueError names the row (in the input's order) and the field. A problem
in the first batch leaves nothing on disk; a later one leaves the map as an unfinished build (as every
``from_generator`` does; build again with ``overwrite=True``).

Uses pyarrow (and, for `records_from_huggingface`, the ``datasets`` package the dataset comes from).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmap_ninja.extras import missing_extra

try:
    import pyarrow as pa
except ImportError as error:
    raise missing_extra(error, "mmap_ninja.adapters.ingest (from_parquet, from_huggingface)") from None

from mmap_ninja import Field, RecordsMmap
from mmap_ninja.adapters.tables import arrow_time_field, arrow_time_values
from mmap_ninja.kinds.batch import check_batch_size
from mmap_ninja.kinds.keys import check_unique
from mmap_ninja.storage.store import PathLike

__all__ = ["arrow_field", "records_from_batches", "records_from_huggingface", "records_from_parquet"]

DEFAULT_BATCH_SIZE = 1024


def _is_image_struct(arrow_type: pa.DataType) -> bool:
    if not pa.types.is_struct(arrow_type):
        return False
    names = {arrow_type.field(i).name: arrow_type.field(i).type for i in range(arrow_type.num_fields)}
    return set(names) == {"bytes", "path"} and (pa.types.is_binary(names["bytes"])
                                                or pa.types.is_large_binary(names["bytes"]))


def _is_number(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
                or pa.types.is_boolean(arrow_type))


def _is_string(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))


def _numpy_dtype(arrow_type: pa.DataType) -> np.dtype[Any]:
    dtype: np.dtype[Any] = np.dtype(arrow_type.to_pandas_dtype())
    return dtype


def arrow_field(name: str, arrow_type: pa.DataType) -> Field:
    """The records field a column of this Arrow type becomes (see the module docstring); a TypeError naming the
    field for a type with no field kind.

    Example:

        >>> import pyarrow as pa
        >>> from mmap_ninja.adapters.ingest import arrow_field
        >>> arrow_field("tokens", pa.list_(pa.int32())).kind, arrow_field("label", pa.int64()).shape
        ('ragged', ())
    """
    if _is_number(arrow_type):
        return Field.scalar(_numpy_dtype(arrow_type))
    time_field = arrow_time_field(arrow_type)  # the rule every tabular reader shares (adapters/tables.py)
    if time_field is not None:
        return time_field
    if _is_string(arrow_type):
        return Field.strings()
    if _is_image_struct(arrow_type):
        return Field.images()
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return Field.ragged(np.uint8)
    if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and _is_number(arrow_type.value_type):
        return Field.ragged(_numpy_dtype(arrow_type.value_type))
    shape_of_array = _array_feature_shape(arrow_type)
    if shape_of_array is not None:
        inner = arrow_type.storage_type
        while pa.types.is_list(inner) or pa.types.is_large_list(inner):
            inner = inner.value_type
        if _is_number(inner):
            return Field.numpy(_numpy_dtype(inner), shape_of_array)
    if pa.types.is_fixed_size_list(arrow_type):
        shape = []
        inner = arrow_type
        while pa.types.is_fixed_size_list(inner):
            shape.append(inner.list_size)
            inner = inner.value_type
        if _is_number(inner):
            return Field.numpy(_numpy_dtype(inner), shape)
    raise TypeError(f"field {name!r} has Arrow type {arrow_type}, which no records field holds (numbers, dates, "
                    f"timestamps, durations, strings, lists of numbers, fixed-size lists, binary and image structs "
                    f"do); drop or convert the column")


def _array_feature_shape(arrow_type: pa.DataType) -> Optional[tuple[int, ...]]:
    """The fixed shape of a Hugging Face ``Array2D`` ... ``Array5D`` column (an extension type over nested lists
    with a ``shape``), or None for another type or a shape with a dynamic (None) size."""
    if not isinstance(arrow_type, pa.ExtensionType):
        return None
    shape = getattr(arrow_type, "shape", None)
    if not isinstance(shape, tuple) or not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        return None
    inner, depth = arrow_type.storage_type, 0
    while pa.types.is_list(inner) or pa.types.is_large_list(inner):
        inner, depth = inner.value_type, depth + 1
    return shape if depth == len(shape) else None


# ---------------------------------------------------------------------------------------------------- columns

def _null_error(name: str, row: int, what: str = "is null") -> ValueError:
    return ValueError(f"row {row}, field {name!r} {what}; a records map holds no missing values (fill or drop "
                      f"them first)")


def _first_null(array: pa.Array) -> int:
    return int(np.flatnonzero(~array.is_valid().to_numpy(zero_copy_only=False))[0])


def _check_nulls(name: str, array: pa.Array, first: int) -> None:
    if array.null_count:
        raise _null_error(name, first + _first_null(array))


def _list_values(name: str, array: pa.Array, first: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The values of a (null-free) list array, back to back, and its n + 1 offsets into them (from 0)."""
    offsets = array.offsets.to_numpy().astype(np.int64)  # honours the slice; indexes the unsliced child
    values = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    if values.null_count:
        row = int(np.searchsorted(offsets - offsets[0], _first_null(values), side="right")) - 1
        raise _null_error(name, first + row, "holds a null value in its list")
    return values.to_numpy(zero_copy_only=False), offsets - offsets[0]


def _binary_values(array: pa.Array) -> list[np.ndarray[Any, Any]]:
    """Each value of a null-free binary array as a uint8 view of the Arrow buffer (no copy)."""
    if not pa.types.is_large_binary(array.type):
        array = array.cast(pa.large_binary())
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[array.offset:array.offset + len(array) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
    bounds = offsets.tolist()
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _image_values(name: str, array: pa.Array, first: int) -> list[Any]:
    """An image struct column as encoded bytes (views of the Arrow buffer) or, where a row has no bytes, the
    path of its file."""
    _check_nulls(name, array, first)
    encoded = array.field("bytes")
    paths = array.field("path")
    if encoded.null_count == 0:
        return _binary_values(encoded)
    present = encoded.is_valid().to_numpy(zero_copy_only=False)
    with_path = paths.is_valid().to_numpy(zero_copy_only=False)
    missing = np.flatnonzero(~present & ~with_path)
    if len(missing):
        raise _null_error(name, first + int(missing[0]), "has neither bytes nor a path")
    filled = _binary_values(encoded.fill_null(b""))
    path_list = paths.to_pylist()
    return [filled[k] if present[k] else Path(path_list[k]) for k in range(len(array))]


def _column(name: str, field: Field, array: pa.Array, first: int) -> Any:
    """One Arrow column of a batch as what `RecordsMmap.extend` takes for ``field``."""
    if field.kind == "images":
        return _image_values(name, array, first)
    _check_nulls(name, array, first)
    if field.kind == "strings":
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        return array.to_pylist()
    if field.kind == "numpy" and field.shape == ():
        if field.dtype is not None and field.dtype.kind in "mM":
            return arrow_time_values(name, array, first)
        return array.to_numpy(zero_copy_only=False)
    if field.kind == "numpy":
        values = array.storage if isinstance(array, pa.ExtensionArray) else array  # an Array2D's nested lists
        while pa.types.is_fixed_size_list(values.type) or pa.types.is_list(values.type) or pa.types.is_large_list(
                values.type):
            values = values.flatten()  # honours the slice
        if values.null_count:
            row = _first_null(values) // int(np.prod(field.shape or ()))
            raise _null_error(name, first + row, "holds a null value in its array")
        size = int(np.prod(field.shape or ()))
        if len(values) != len(array) * size:  # an Array feature's nested lists of the wrong sizes
            raise ValueError(f"rows {first}..{first + len(array) - 1}, field {name!r}: {len(values)} values, "
                             f"expected {size} per row (shape {field.shape})")
        return values.to_numpy(zero_copy_only=False).reshape(len(array), *(field.shape or ()))
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        return _binary_values(array)
    values, offsets = _list_values(name, array, first)
    bounds = offsets.tolist()
    return [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _columns(schema: dict[str, Field], batch: pa.RecordBatch, first: int) -> dict[str, Any]:
    return {name: _column(name, field, batch.column(name), first) for name, field in schema.items()}


# ---------------------------------------------------------------------------------------------------- building

def records_from_batches(out_dir: PathLike, arrow_schema: pa.Schema, batches: Iterable[pa.RecordBatch], *,
                         key: Optional[str] = None, overwrite: bool = False, durable: bool = False,
                         metadata: Optional[dict[str, Any]] = None, codec: Any = None) -> RecordsMmap:
    """Build a `RecordsMmap` from Arrow record batches of ``arrow_schema``, committing each batch (see the module
    docstring for the fields and the null rule). ``key`` names the key field (see `RecordsMmap.index_of`).
    ``codec`` (``"zstd"``, ``"lz4"``, a `mmap_ninja.kinds.codecs.Codec`) compresses every strings and ragged field. The
    first batch is converted (and its keys checked) before anything is created.

    Example:

        >>> import pyarrow as pa
        >>> from mmap_ninja.adapters.ingest import records_from_batches
        >>> table = pa.table({"text": ["a", "b"], "label": [1, 2]})
        >>> rec = records_from_batches("from_batches", table.schema, table.to_batches(max_chunksize=1), overwrite=True)
        >>> rec[1]
        {'text': 'b', 'label': np.int64(2)}
    """
    schema = {field.name: arrow_field(field.name, field.type) for field in arrow_schema}
    if codec is not None:
        schema = {name: replace(f, codec=codec) if f.kind in ("strings", "ragged") else f
                  for name, f in schema.items()}
    if not schema:
        raise ValueError("the table has no columns; a records map needs at least one field")
    RecordsMmap.layout.attrs(schema=schema, key=key)  # a key naming no field, or a float one, fails here
    pending = iter(batches)
    first_batch = next(pending, None)
    converted: Iterator[tuple[dict[str, Any], int]] = iter(())
    if first_batch is not None:
        first_columns = _columns(schema, first_batch, 0)
        if key is not None:
            check_unique(first_columns[key], 0, key, schema[key].kind == "strings")
        converted = iter([(first_columns, first_batch.num_rows)])
    options: dict[str, Any] = {} if key is None else {"key": key}
    with RecordsMmap.build(out_dir, schema=schema, overwrite=overwrite, durable=durable,
                           metadata=metadata, **options) as target:
        for columns, count in chain(converted, _convert(schema, pending, first_batch)):
            if count:
                target.extend(columns)
    return target


def _convert(schema: dict[str, Field], batches: Iterator[pa.RecordBatch], first_batch: Optional[pa.RecordBatch]
             ) -> Iterator[tuple[dict[str, Any], int]]:
    first = 0 if first_batch is None else first_batch.num_rows
    for batch in batches:
        yield _columns(schema, batch, first), batch.num_rows
        first += batch.num_rows


def _record_batches(tables: Iterable[pa.Table]) -> Iterator[pa.RecordBatch]:
    for table in tables:
        yield from table.to_batches()


def records_from_huggingface(out_dir: PathLike, dataset: Any, *, batch_size: int = DEFAULT_BATCH_SIZE,
                             columns: Optional[Sequence[str]] = None, key: Optional[str] = None,
                             overwrite: bool = False, durable: bool = False,
                             metadata: Optional[dict[str, Any]] = None) -> RecordsMmap:
    """Build a `RecordsMmap` from a Hugging Face ``datasets.Dataset`` (in its row order, ``select`` and
    ``shuffle`` included), ``batch_size`` rows per commit. ``columns`` picks and orders the fields (default:
    all). ``Image()`` columns become images fields holding the encoded bytes unchanged; ``ClassLabel`` names go
    to the metadata (see the module docstring). ``key`` names the key field (see `RecordsMmap.index_of`).

    Example:

        >>> import datasets
        >>> from mmap_ninja.adapters.ingest import records_from_huggingface
        >>> dataset = datasets.Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]})
        >>> rec = records_from_huggingface("from_hf", dataset, overwrite=True)
        >>> rec[1]
        {'text': 'y', 'label': np.int64(1)}
    """
    if type(dataset).__name__ != "Dataset" or not (type(dataset).__module__ or "").startswith("datasets"):
        raise TypeError(f"from_huggingface() takes a datasets.Dataset (an IterableDataset or DatasetDict: pick or "
                        f"materialize a split first), got {type(dataset).__name__}")
    batch_size = check_batch_size(batch_size)
    if columns is not None:
        dataset = dataset.select_columns(_check_columns(columns, list(dataset.column_names)))
    class_labels = {name: list(feature.names) for name, feature in dataset.features.items()
                    if type(feature).__name__ == "ClassLabel"}
    info = dict(metadata or {})
    if class_labels:
        info["class_labels"] = class_labels
    tables = dataset.with_format("arrow").iter(batch_size=batch_size)
    arrow_schema = dataset.data.schema if columns is None else pa.schema([dataset.data.schema.field(c)
                                                                          for c in dataset.column_names])
    return records_from_batches(out_dir, arrow_schema, _record_batches(tables), key=key, overwrite=overwrite,
                                durable=durable, metadata=info or None)


def records_from_parquet(out_dir: PathLike, path: PathLike, *, batch_size: int = DEFAULT_BATCH_SIZE,
                         columns: Optional[Sequence[str]] = None, key: Optional[str] = None,
                         overwrite: bool = False, durable: bool = False,
                         metadata: Optional[dict[str, Any]] = None) -> RecordsMmap:
    """Build a `RecordsMmap` from the Parquet file at ``path``, reading ``batch_size`` rows at a time (memory
    bounded by a batch). ``columns`` picks the fields (default: every column). A column whose row-group
    statistics count nulls is refused before anything is written. ``key`` names the key field (see
    `RecordsMmap.index_of`).

    Example:

        >>> import pyarrow as pa
        >>> import pyarrow.parquet as pq
        >>> from mmap_ninja.adapters.ingest import records_from_parquet
        >>> pq.write_table(pa.table({"text": ["a", "b"], "label": [1, 2]}), "table.parquet")
        >>> rec = records_from_parquet("from_parquet", "table.parquet", key="text", overwrite=True)
        >>> len(rec), rec.index_of("b")
        (2, 1)
    """
    import pyarrow.parquet as pq

    batch_size = check_batch_size(batch_size)
    source = pq.ParquetFile(str(path), pre_buffer=False)  # pre-buffering reads ahead without bound
    arrow_schema = source.schema_arrow
    if columns is not None:
        columns = _check_columns(columns, list(arrow_schema.names))
        arrow_schema = pa.schema([arrow_schema.field(c) for c in columns])
    _check_statistics(source, arrow_schema, path)
    info = dict(metadata or {})
    class_labels = _hf_class_labels(source.schema_arrow.metadata, arrow_schema.names)
    if class_labels:
        info["class_labels"] = class_labels
    batches = _parquet_batches(source, batch_size, None if columns is None else list(columns))
    return records_from_batches(out_dir, arrow_schema, batches, key=key, overwrite=overwrite, durable=durable,
                                metadata=info or None)


def _check_columns(columns: Any, available: list[str]) -> list[str]:
    """``columns`` as a list of distinct names the data has; an error saying what is wrong otherwise."""
    if isinstance(columns, str):
        raise TypeError(f"columns is a list of column names; got the str {columns!r} (for one column pass "
                        f"columns=[{columns!r}])")
    names = list(columns)
    for k, name in enumerate(names):
        if name in names[:k]:
            raise ValueError(f"columns names {name!r} twice; a records map's fields have distinct names")
        if name not in available:
            raise ValueError(f"columns names {name!r}, which the data does not have (its columns: {available})")
    return names


def _parquet_batches(source: Any, batch_size: int, columns: Optional[list[str]]) -> Iterator[pa.RecordBatch]:
    """The file's rows in batches, one row group at a time (reading the whole file through one reader lets
    pyarrow hold more and more of it: 290 MB of a 340 MB file in a test, against 16 MB this way)."""
    for group in range(source.metadata.num_row_groups):
        yield from source.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)


def _hf_class_labels(schema_metadata: Optional[dict[bytes, bytes]], names: list[str]) -> dict[str, list[str]]:
    """The ``ClassLabel`` names a Parquet file written by ``datasets`` records in its schema metadata."""
    import json

    try:
        features = json.loads((schema_metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError, TypeError):
        return {}
    if not isinstance(features, dict):
        return {}
    return {name: list(spec["names"]) for name, spec in features.items()
            if name in names and isinstance(spec, dict) and spec.get("_type") == "ClassLabel"
            and isinstance(spec.get("names"), list)}


def _check_statistics(source: Any, arrow_schema: pa.Schema, path: PathLike) -> None:
    """Refuse, before reading any data, a top-level column whose row-group statistics count nulls."""
    metadata = source.metadata
    wanted = set(arrow_schema.names)
    first = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            name = column.path_in_schema
            stats = column.statistics
            if name in wanted and stats is not None and stats.has_null_count and stats.null_count:
                raise ValueError(f"field {name!r} of {path} holds {stats.null_count} null(s) in rows {first}.."
                                 f"{first + group.num_rows - 1}; a records map holds no missing values (fill or "
                                 f"drop them first)")
        first += group.num_rows
