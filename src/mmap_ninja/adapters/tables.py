"""Records maps from tables held in memory (`RecordsMmap.from_arrow`, `RecordsMmap.from_pandas`), and the rules
every tabular reader shares (these two, `RecordsMmap.from_parquet`, `RecordsMmap.from_huggingface` and
`mmap_ninja.convert` of Parquet, Arrow and Hugging Face sources):

- **times**: a timestamp column is stored as ``datetime64`` at its own unit (s, ms, us or ns), in UTC; a
  time-zone-aware column keeps its zone in the field's attributes (`Field.timezone`) and `RecordsMmap.to_arrow`
  gives it back (Arrow's ``timestamp(unit, tz)``, whose values are UTC too). A date column (Arrow ``date32`` /
  ``date64``, or Python ``datetime.date`` objects in pandas) is stored as ``datetime64[D]``; a duration as
  ``timedelta64`` at its unit.
- **binary** columns (Arrow ``binary`` / ``large_binary``, pandas columns of ``bytes``) become ragged uint8
  fields, one array of the bytes per row.
- **missing values** are refused, naming the row, the field and the missing value (``None``, ``NaN``, ``NaT``,
  ``<NA>``); ``fill_null={field: value}`` stores a value in their place, which must be a value of the field's
  type exactly (`mmap_ninja.kinds.casting`'s rule: 2.9 into an integer field, 1e300 into a float32 one or -1 into a
  uint8 one are refused naming the field).

Imports pyarrow only for Arrow input; pandas input needs only pandas.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Callable, Optional

import numpy as np

from mmap_ninja.kinds.casting import as_sample
from mmap_ninja.kinds.records import Field, infer_schema
from mmap_ninja.storage.store import PathLike

__all__ = ["arrow_time_field", "arrow_time_values", "check_fill", "records_from_arrow", "records_from_pandas"]

_DAY_MS = 86_400_000


# ---------------------------------------------------------------------------------------------- times


def arrow_time_field(arrow_type: Any) -> Optional[Field]:
    """The field of an Arrow timestamp, date or duration type (see the module docstring), or None."""
    import pyarrow.types as pt

    if pt.is_timestamp(arrow_type):
        return Field.scalar(np.dtype(f"datetime64[{arrow_type.unit}]"), timezone=arrow_type.tz or None)
    if pt.is_date(arrow_type):
        return Field.scalar(np.dtype("datetime64[D]"))
    if pt.is_duration(arrow_type):
        return Field.scalar(np.dtype(f"timedelta64[{arrow_type.unit}]"))
    return None


def arrow_time_values(name: str, array: Any, first: int) -> np.ndarray[Any, Any]:
    """A null-free Arrow timestamp, date or duration array as the values its field stores: UTC ``datetime64`` at
    its unit, ``datetime64[D]`` for dates (a ``date64`` value that is not a whole day is refused, naming its row),
    ``timedelta64`` at its unit."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_date64(array.type):
        milliseconds: np.ndarray[Any, Any] = array.cast(pa.int64()).to_numpy(zero_copy_only=False)
        partial = np.flatnonzero(milliseconds % _DAY_MS)
        if len(partial):
            raise ValueError(f"row {first + int(partial[0])}, field {name!r} holds the date64 value "
                             f"{int(milliseconds[partial[0]])} ms, which is not a whole day; a date field stores "
                             f"datetime64[D] (cast the column to a timestamp to keep the time of day)")
        days: np.ndarray[Any, Any] = (milliseconds // _DAY_MS).astype("datetime64[D]")
        return days
    if pt.is_timestamp(array.type) and array.type.tz:
        array = array.cast(pa.timestamp(array.type.unit))  # the same UTC values, without the zone
    values: np.ndarray[Any, Any] = array.to_numpy(zero_copy_only=False)
    field = arrow_time_field(array.type)
    assert field is not None and field.dtype is not None
    return values.astype(field.dtype, copy=False)


def _pandas_zone(tz: Any) -> str:
    """A pandas time zone as Arrow names it: an IANA name (``"Europe/Paris"``, ``"UTC"``) or an offset
    (``"+01:00"``)."""
    if isinstance(tz, datetime.timezone) and tz != datetime.timezone.utc:
        offset = tz.utcoffset(None)
        minutes = int(offset.total_seconds() // 60)
        sign = "-" if minutes < 0 else "+"
        return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)  # zoneinfo, pytz
    return str(key) if key else str(tz)


# ---------------------------------------------------------------------------------------------- missing values


def check_fill(fill_null: Optional[Mapping[str, Any]], names: list[str]) -> dict[str, Any]:
    """``fill_null`` as a dict naming only fields of the data; an error otherwise."""
    if fill_null is None:
        return {}
    if not isinstance(fill_null, Mapping):
        raise TypeError(f"fill_null must be a dict of field -> value, got {type(fill_null).__name__}")
    unknown = [name for name in fill_null if name not in names]
    if unknown:
        raise ValueError(f"fill_null names a field {unknown[0]!r} that the data does not have (its columns: "
                         f"{names})")
    return dict(fill_null)


def _checked_number(name: str, value: Any, dtype: np.dtype[Any]) -> Any:
    """``value`` as a Python number of ``dtype`` if it is one exactly (the casting rule); an error naming the
    field otherwise."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"field {name!r}: cannot fill its nulls with {value!r}: the field holds {dtype} numbers")
    if isinstance(value, (bool, np.bool_)) and dtype.kind != "b":
        raise TypeError(f"field {name!r}: cannot fill its nulls with the bool {bool(value)}: the field holds {dtype} "
                        f"numbers (give a {dtype} value)")
    try:
        checked = as_sample(value, dtype, f"the fill_null value of field {name!r}")
    except OverflowError as e:
        raise ValueError(f"the fill_null value of field {name!r} ({value!r}) does not fit {dtype}: {e}") from None
    if checked.shape != ():
        raise TypeError(f"field {name!r}: the fill_null value must be one {dtype} number, got {value!r}")
    return checked.item()


def _fill_arrow(array: Any, name: str, value: Any) -> Any:
    """``array`` with its nulls replaced by ``value``, which must be a value of the array's type exactly."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.types as pt

    kind = array.type
    if pt.is_integer(kind) or pt.is_floating(kind) or pt.is_boolean(kind):
        value = _checked_number(name, value, np.dtype(kind.to_pandas_dtype()))
    elif (pt.is_string(kind) or pt.is_large_string(kind)) and not isinstance(value, str):
        raise TypeError(f"field {name!r}: cannot fill its nulls with {value!r}: the field holds str")
    try:
        scalar = pa.scalar(value, type=kind)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"field {name!r}: cannot fill its nulls with {value!r} (its type is {kind}): {e}") from None
    if scalar.as_py() != value and not (isinstance(value, float) and value != value):  # (NaN is never equal)
        raise ValueError(f"field {name!r}: the fill_null value {value!r} would be stored as {scalar.as_py()!r} "
                         f"(its type is {kind}); give a value of that type")
    return pc.fill_null(array, scalar)


def _refuse_nulls(array: Any, name: str, rows: Callable[[int], int], what: str) -> None:
    """Raise naming the row of ``array``'s first null (``rows`` maps an item of ``array`` to its row)."""
    nulls = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    row = rows(int(np.flatnonzero(nulls)[0]))
    raise ValueError(f"row {row}, field {name!r} {what}; records fields cannot hold missing values: pass "
                     f"fill_null={{{name!r}: value}} to store a value in their place")


# ---------------------------------------------------------------------------------------------- Arrow


def _arrow_holds(kind: Any) -> bool:
    """Whether a column of this Arrow type can become a field (see `records_from_arrow`)."""
    import pyarrow.types as pt

    def number(t: Any) -> bool:
        return bool(pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t) or pt.is_timestamp(t)
                    or pt.is_date(t) or pt.is_duration(t))  # NumPy has no time-of-day or interval type

    if pt.is_dictionary(kind):
        kind = kind.value_type
    if number(kind) or pt.is_string(kind) or pt.is_large_string(kind) or pt.is_binary(kind) \
            or pt.is_large_binary(kind):
        return True
    if pt.is_list(kind) or pt.is_large_list(kind):
        return number(kind.value_type)
    while pt.is_fixed_size_list(kind):
        kind = kind.value_type
    return number(kind)


def _flat_values(array: Any, name: str) -> np.ndarray[Any, Any]:
    """The values of a null-free flat Arrow array (times by the time rule; a refused date names the item)."""
    import pyarrow.types as pt

    if pt.is_timestamp(array.type) or pt.is_date(array.type) or pt.is_duration(array.type):
        return arrow_time_values(name, array, 0)
    values: np.ndarray[Any, Any] = array.to_numpy(zero_copy_only=False)
    return values


def _arrow_column(column: Any, name: str, fill: dict[str, Any]) -> Any:
    """An Arrow column as what `from_dict` takes: a 1-D or N-D ndarray, a list of str or a list of arrays;
    nulls refused (naming the row) or filled as ``fill`` says."""
    import pyarrow as pa
    import pyarrow.types as pt

    kind = column.type
    if not _arrow_holds(kind):
        raise TypeError(f"field {name!r} has Arrow type {kind}, which no records field holds (numbers, dates, "
                        f"timestamps, durations, strings, binary, lists and fixed-size lists of numbers do); drop "
                        f"or convert the column")
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pt.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    nested = pt.is_fixed_size_list(kind) or pt.is_list(kind) or pt.is_large_list(kind)
    if array.null_count:
        if name not in fill or nested:
            _refuse_nulls(array, name, lambda i: i, "is null")
        array = _fill_arrow(array, name, fill[name])
    if pt.is_string(kind) or pt.is_large_string(kind):
        return array.to_pylist()
    if pt.is_binary(kind) or pt.is_large_binary(kind):
        return [np.frombuffer(value, dtype=np.uint8) for value in array.to_pylist()]
    if pt.is_fixed_size_list(kind):
        shape = []
        while pt.is_fixed_size_list(array.type):
            shape.append(array.type.list_size)
            array = array.flatten()
        if array.null_count:
            size = int(np.prod(shape))
            if name not in fill:
                _refuse_nulls(array, name, lambda i: i // size, "holds a null element")
            array = _fill_arrow(array, name, fill[name])
        return _flat_values(array, name).reshape(-1, *shape)
    if pt.is_list(kind) or pt.is_large_list(kind):
        offsets = array.offsets.to_numpy()
        flat = array.flatten()
        if flat.null_count:
            if name not in fill:
                starts = offsets - offsets[0]
                _refuse_nulls(flat, name, lambda i: int(np.searchsorted(starts, i, side="right")) - 1,
                              "holds a null element")
            flat = _fill_arrow(flat, name, fill[name])
        values = _flat_values(flat, name)
        base = offsets[0]
        return [values[a - base:b - base] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return _flat_values(array, name)


def records_from_arrow(cls: Any, out_dir: PathLike, table: Any, fill_null: Optional[Mapping[str, Any]],
                       options: dict[str, Any]) -> Any:
    """`RecordsMmap.from_arrow` (see there and the module docstring)."""
    import pyarrow.types as pt

    fill = check_fill(fill_null, list(table.column_names))
    columns = {}
    fields: dict[str, Field] = {}
    for name in table.column_names:
        column = table.column(name)
        columns[name] = _arrow_column(column, name, fill)
        kind = column.type.value_type if pt.is_dictionary(column.type) else column.type
        time_field = arrow_time_field(kind)
        if time_field is not None:
            fields[name] = time_field
        elif _is_binary(kind):
            fields[name] = Field.ragged(np.uint8)
    return cls.from_dict(out_dir, columns, **_with_fields(columns, fields, options))


def _is_binary(kind: Any) -> bool:
    import pyarrow.types as pt

    return bool(pt.is_binary(kind) or pt.is_large_binary(kind))


def _with_fields(columns: dict[str, Any], fields: dict[str, Field], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a ``schema`` that gives ``fields`` their field (a zone, a uint8 field for bytes) and the
    other columns the field `infer_schema` gives them, unless the caller passed a schema."""
    if not fields or options.get("schema") is not None or not columns:
        return options
    rest = {name: column for name, column in columns.items() if name not in fields}
    inferred = infer_schema(rest) if rest and len(next(iter(rest.values()))) else {}
    schema = {name: fields[name] if name in fields else inferred.get(name) for name in columns}
    if any(field is None for field in schema.values()):  # empty columns: their fields come from the rows, later
        return options
    return {**options, "schema": schema}


# ---------------------------------------------------------------------------------------------- pandas


def _describe_missing(value: Any, dtype: Any) -> str:
    """How a missing value is named in an error: ``None`` (which pandas keeps as NaN in a string column), ``NaN``,
    ``NaT``, ``<NA>``."""
    if value is None:
        return "None"
    if isinstance(value, float) and value != value:
        return "None" if getattr(dtype, "kind", "O") in "OSUT" or str(dtype) in ("str", "string") else "NaN"
    text = str(value)
    return text if text in ("NaT", "<NA>") else repr(value)


def _fill_pandas(series: Any, field: str, value: Any) -> Any:
    dtype = series.dtype
    numeric = getattr(dtype, "numpy_dtype", None)  # a nullable Int64, UInt8, boolean or Float32 column
    if numeric is not None and np.dtype(numeric).kind in "biuf":
        value = _checked_number(field, value, np.dtype(numeric))
    try:
        return series.fillna(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"field {field!r}: cannot fill its missing values with {value!r}: {e}") from None


def _with_named_index(frame: Any) -> Any:
    """``frame`` with its named index levels moved into leading columns (as ``pyarrow.Table.from_pandas`` and
    Hugging Face's ``Dataset.from_pandas`` keep an index that is not a default ``RangeIndex``); an unnamed index
    (the default ``0..n-1``, or the positions left by filtering) is not data and is dropped."""
    named = [name for name in frame.index.names if name is not None]
    if not named:
        return frame
    taken = [name for name in named if name in frame.columns]
    if taken:
        raise ValueError(f"the DataFrame's index {taken[0]!r} has the name of one of its columns; from_pandas keeps "
                         f"a named index as a field: rename it (frame.rename_axis('other')) or drop it "
                         f"(frame.reset_index(drop=True))")
    return frame.reset_index(level=named)


def records_from_pandas(cls: Any, out_dir: PathLike, frame: Any, fill_null: Optional[Mapping[str, Any]],
                        options: dict[str, Any]) -> Any:
    """`RecordsMmap.from_pandas` (see there and the module docstring)."""
    frame = _with_named_index(frame)
    names = [str(name) for name in frame.columns]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # a dict of columns would keep only the last of them
        raise ValueError(f"the DataFrame has two columns named {repeated[0]!r}; a records map's fields have "
                         f"distinct names (rename one of them)")
    fill = check_fill(fill_null, names)
    columns: dict[str, Any] = {}
    fields: dict[str, Field] = {}
    for position, name in enumerate(frame.columns):
        series = frame.iloc[:, position]
        field = str(name)
        dtype = series.dtype
        arrow_type = getattr(dtype, "pyarrow_dtype", None)
        if arrow_type is not None:  # a pyarrow-backed column (pd.ArrowDtype): the Arrow rules, zones and dates too
            import pyarrow as pa

            columns[field] = _arrow_column(pa.array(series), field, fill)
            special = arrow_time_field(arrow_type) or (Field.ragged(np.uint8) if _is_binary(arrow_type) else None)
            if special is not None:
                fields[field] = special
            continue
        if not (isinstance(dtype, np.dtype) and dtype.kind in "fc"):  # elsewhere NaN means missing
            missing = np.asarray(series.isna(), dtype=bool)
            if missing.any():
                if field not in fill:
                    row = int(np.flatnonzero(missing)[0])
                    label = series.index[row]
                    label = label.item() if isinstance(label, np.generic) else label
                    raise ValueError(f"row {row}, field {field!r} is missing "
                                     f"({_describe_missing(series.iloc[row], dtype)}, index label {label!r}); "
                                     f"records fields cannot hold missing values: pass "
                                     f"fill_null={{{field!r}: value}} to store a value in their place")
                series = _fill_pandas(series, field, fill[field])
                dtype = series.dtype
        tz = getattr(dtype, "tz", None)
        if tz is not None:  # UTC values at the column's unit; the zone in the field
            unit = getattr(dtype, "unit", "ns")
            values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype=f"datetime64[{unit}]")
            columns[field] = values
            fields[field] = Field.scalar(values.dtype, timezone=_pandas_zone(tz))
        elif getattr(dtype, "kind", "O") in "biufcmM":  # dates and times as datetime64 / timedelta64, as Arrow's
            columns[field] = series.to_numpy(dtype=getattr(dtype, "numpy_dtype", None))
        else:
            values_list = series.tolist()
            if values_list and all(isinstance(v, (bytes, bytearray)) for v in values_list):
                columns[field] = [np.frombuffer(bytes(v), dtype=np.uint8) for v in values_list]
                fields[field] = Field.ragged(np.uint8)
            elif values_list and all(type(v) is datetime.date for v in values_list):
                columns[field] = np.array(values_list, dtype="datetime64[D]")
            else:
                columns[field] = values_list
    return cls.from_dict(out_dir, columns, **_with_fields(columns, fields, options))
