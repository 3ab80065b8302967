"""The layout of a records map: its fields' columns side by side, a batch of rows checked and encoded field by
field, and the view that reads a row as a dict.

Each field is stored as the columns of its own kind, prefixed by its name (``label.data``, ``text.offsets``); the
header's ``attrs`` hold the schema, ``{"fields": {name: {"kind": ..., "attrs": {that kind's attrs}}}}``. Everything
kind-specific is asked of the field's `mmap_ninja.kinds.fields.FieldKind`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.kinds import keys as _keys
from mmap_ninja.kinds.fields import Field, field_kind, field_kinds, is_field_name, parse_schema
from mmap_ninja.kinds.layouts import Columns, Encoded, Layout, View
from mmap_ninja.storage.format import HEADER_FILE, register_feature

__all__ = ["FEATURE", "FieldColumns", "RecordsBatch", "RecordsLayout", "RecordsView"]

FEATURE = "records"
"""The name a records map lists in its header's ``requires``."""
register_feature(FEATURE)
register_feature(_keys.FEATURE)


class FieldColumns:
    """The columns of one field of a records map, presented without the field's prefix (``label.data`` as
    ``data``), with the field's own attributes: what the field's layout reads and views."""

    def __init__(self, parent: Columns, field: str):
        self._parent = parent
        self._field = field
        self._prefix = field + "."

    @property
    def path(self) -> Path:
        return self._parent.path

    @property
    def attrs(self) -> dict[str, Any]:
        fields = self._parent.attrs.get("fields", {})
        attrs: dict[str, Any] = fields[self._field]["attrs"]
        return attrs

    def column(self, name: str) -> np.ndarray[Any, Any]:
        return self._parent.column(self._prefix + name)


class RecordsBatch:
    """A validated batch of rows as one column of values per field (each as its field's layout batches it)."""

    __slots__ = ("columns", "length")

    def __init__(self, columns: dict[str, Any], length: int):
        self.columns = columns
        self.length = length

    def __len__(self) -> int:
        return self.length


class RecordsView(View):
    """A snapshot of every field; a row is a dict of the fields' samples."""

    def __init__(self, store: Columns, fields: list[tuple[str, str, Layout]]):
        self.columns = store
        self.names = tuple(name for name, _, _ in fields)
        self.kinds = {name: kind for name, kind, _ in fields}
        self.views: dict[str, View] = {name: layout.view(FieldColumns(store, name)) for name, _, layout in fields}
        counts = {name: view.length for name, view in self.views.items()}
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{name}: {count}" for name, count in counts.items())
            raise CorruptMapError(f"{store.path / HEADER_FILE} is damaged: the fields of the records map have "
                                  f"different lengths ({shown})")
        self.length = next(iter(counts.values()), 0)
        self._getters = tuple((name, view.get) for name, view in self.views.items())

    def get(self, position: int) -> dict[str, Any]:
        return {name: get(position) for name, get in self._getters}

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[Any]:
        names = self.names
        columns = [self.views[name].get_many(positions) for name in names]
        return [dict(zip(names, values)) for values in zip(*columns)]

    def columns_at(self, positions: np.ndarray[Any, Any]) -> dict[str, list[Any]]:
        return {name: view.get_many(positions) for name, view in self.views.items()}

    def iterate(self, start: int = 0) -> Iterator[Any]:
        names = self.names
        return (dict(zip(names, values)) for values in zip(*(v.iterate(start) for v in self.views.values())))


def _field_message(name: str, message: str) -> str:
    """A field layout's error as the records map says it: ``item 11: ...`` (item i is row i) as ``row 11, field
    'label': ...``."""
    found = re.match(r"item (\d+)\b:? ?(.*)", message, flags=re.S)
    return f"row {found[1]}, field {name!r}: {found[2]}" if found else f"field {name!r}: {message}"


def _as_error(error: Exception, message: str) -> Exception:
    return TypeError(message) if isinstance(error, TypeError) else ValueError(message)


class RecordsLayout(Layout):
    """``records``: rows of named fields, each field stored as the columns of its own kind, prefixed by its name."""

    kind: ClassVar[str] = "records"
    columns: ClassVar[dict[str, str]] = {}
    initial: ClassVar[dict[str, list[int]]] = {}

    def attrs(self, schema: Any = None, key: Optional[str] = None) -> dict[str, Any]:  # type: ignore[override]
        if schema is None:  # an empty handle: no map, no fields yet
            if key is not None:
                raise TypeError("a key needs a schema")
            return {"fields": {}}
        fields = parse_schema(schema)
        attrs: dict[str, Any] = {"fields": {name: {"kind": f.kind, "attrs": f.layout_attrs()}
                                            for name, f in fields.items()}}
        if key is not None:
            if key not in fields:
                raise ValueError(f"key={key!r} names no field (the fields: {list(fields)})")
            field = fields[key]
            if not field_kind(field.kind).can_be_key(field):
                raise TypeError(f"key field {key!r} is {field.describe()}; a key field holds str or integer "
                                f"scalars")
            attrs["key"] = _keys.key_attrs(key)
        return attrs

    def key(self, attrs: dict[str, Any]) -> Optional[tuple[str, bool]]:
        """(key field, whether it holds strings), or None for a map without a key."""
        spec = attrs.get("key")
        if spec is None:
            return None
        kinds = {name: kind for name, kind, _ in self.fields(attrs)}
        if (not isinstance(spec, dict) or spec.get("field") not in kinds
                or not isinstance(spec.get("table"), list) or len(spec["table"]) != 2):
            raise CorruptMapError(f"a records map's key is not valid: {spec!r}")
        field = spec["field"]
        return field, field_kind(kinds[field]).keys_are_str

    def without_derived(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Without the key: its index (``derived-key.slots``) numbers the rows of the whole map."""
        return {name: value for name, value in attrs.items() if name != "key"}

    def fields(self, attrs: dict[str, Any]) -> list[tuple[str, str, Layout]]:
        """(name, kind, layout) of every field, in order; a CorruptMapError for a schema that is not valid."""
        fields = attrs.get("fields")
        if not isinstance(fields, dict):
            raise CorruptMapError(f"a records map's attrs need a 'fields' object, got {fields!r}")
        result = []
        for name, spec in fields.items():
            if (not is_field_name(name) or not isinstance(spec, dict) or spec.get("kind") not in field_kinds()
                    or not isinstance(spec.get("attrs"), dict)):
                raise CorruptMapError(f"a records map's field {name!r} is not valid: {spec!r}")
            result.append((name, spec["kind"], field_kind(spec["kind"]).layout))
        return result

    def schema(self, attrs: dict[str, Any]) -> dict[str, Field]:
        return {name: Field.from_attrs(kind, attrs["fields"][name]["attrs"]) for name, kind, _ in self.fields(attrs)}

    @staticmethod
    def field_lengths(name: str, lengths: dict[str, int]) -> dict[str, int]:
        prefix = name + "."
        return {column[len(prefix):]: length for column, length in lengths.items() if column.startswith(prefix)}

    def columns_for(self, attrs: dict[str, Any]) -> dict[str, str]:
        columns = {f"{name}.{column}": dtype for name, _, layout in self.fields(attrs)
                   for column, dtype in layout.columns_for(attrs["fields"][name]["attrs"]).items()}
        if self.key(attrs) is not None:
            columns[_keys.SLOTS] = "<i8"
        return columns

    def index_units(self, attrs: dict[str, Any]) -> dict[str, int]:
        return {f"{name}.{prefix}": unit for name, _, layout in self.fields(attrs)
                for prefix, unit in layout.index_units(attrs["fields"][name]["attrs"]).items()}

    def check_columns(self, columns: Mapping[str, np.ndarray[Any, Any]], attrs: dict[str, Any],
                      prefix: str = "") -> list[str]:
        """Each field's columns, checked by its kind's layout."""
        return [problem for name, _, layout in self.fields(attrs)
                for problem in layout.check_columns(columns, attrs["fields"][name]["attrs"], f"{prefix}{name}.")]

    def initial_for(self, attrs: dict[str, Any]) -> dict[str, list[int]]:
        """The items each column of a new map with these attributes starts with (the offsets' leading 0)."""
        return {f"{name}.{column}": items for name, _, layout in self.fields(attrs)
                for column, items in layout.initial.items()}

    def shared_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The fields in order, each with its kind and its layout's `Layout.shared_attrs` (a ragged field's
        ``ndims`` are the rows' fact, not the schema)."""
        return {"fields": {name: {"kind": kind, "attrs": layout.shared_attrs(attrs["fields"][name]["attrs"])}
                           for name, kind, layout in self.fields(attrs)}}

    def requires(self, attrs: dict[str, Any]) -> list[str]:
        fields = self.fields(attrs)
        needed = {feature for name, _, layout in fields for feature in layout.requires(attrs["fields"][name]["attrs"])}
        needed.update(feature for _, kind, _ in fields if (feature := field_kind(kind).records_feature))
        if self.key(attrs) is not None:
            needed.add(_keys.FEATURE)
        return [FEATURE, *sorted(needed)]

    def count(self, lengths: dict[str, int], attrs: dict[str, Any]) -> int:
        fields = self.fields(attrs)
        if not fields:
            return 0
        name, _, layout = fields[0]
        return layout.count(self.field_lengths(name, lengths), attrs["fields"][name]["attrs"])

    def view(self, columns: Columns) -> RecordsView:
        return RecordsView(columns, self.fields(columns.attrs))

    def empty_lengths(self, attrs: dict[str, Any]) -> dict[str, int]:
        """The column lengths of a new map with these attributes."""
        initial = self.initial_for(attrs)
        return {column: len(initial.get(column, [])) for column in self.columns_for(attrs)}

    # -------------------------------------------------------------- batches

    def batch(self, samples: Any, lengths: dict[str, int], attrs: dict[str, Any]) -> RecordsBatch:
        """Rows (an iterable of dicts) or columns (a dict of equal-length sequences) as a `RecordsBatch`, every
        row checked: a missing or extra field, or a value of the wrong type or shape, raises an error naming the
        row (its index in the map) and the field, before anything is written."""
        if isinstance(samples, RecordsBatch):
            return samples
        fields = self.fields(attrs)
        names = [name for name, _, _ in fields]
        first = self.count(lengths, attrs)
        if isinstance(samples, Mapping):
            columns, length = self._from_columns(samples, names)
        elif isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
            raise TypeError(f"extend() takes rows (an iterable of dicts) or a dict of columns, got "
                            f"{type(samples).__name__}")
        else:
            rows = list(samples)
            self._check_keys(rows, names, first)
            columns, length = {name: [row[name] for row in rows] for name in names}, len(rows)
        schema = self.schema(attrs)
        batched = {}
        for name, _, layout in fields:
            values = field_kind(schema[name].kind).check_values(name, schema[name], columns[name], first)
            field_attrs = attrs["fields"][name]["attrs"]
            try:
                batched[name] = layout.batch(values, self.field_lengths(name, lengths), field_attrs)
            except (TypeError, ValueError) as e:
                raise _as_error(e, _field_message(name, str(e))) from None
        return RecordsBatch(batched, length)

    @staticmethod
    def _check_keys(rows: list[Any], names: list[str], first: int) -> None:
        expected = set(names)
        for k, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"row {first + k} is {type(row).__name__}; a row is a dict with the fields "
                                f"{names} (to add one row use append(row))")
            if row.keys() != expected:
                missing = [name for name in names if name not in row]
                if missing:
                    raise ValueError(f"row {first + k} has no field {missing[0]!r} (the map's fields: {names})")
                extra = [key for key in row if key not in expected]
                raise ValueError(f"row {first + k} has a field {extra[0]!r} that the map does not have (its "
                                 f"fields: {names})")

    @staticmethod
    def _from_columns(columns: Mapping[str, Any], names: list[str]) -> tuple[dict[str, Any], int]:
        missing = [name for name in names if name not in columns]
        if missing:
            raise ValueError(f"the columns have no field {missing[0]!r} (the map's fields: {names})")
        extra = [key for key in columns if key not in names]
        if extra:
            raise ValueError(f"the columns have a field {extra[0]!r} that the map does not have (its fields: "
                             f"{names})")
        result: dict[str, Any] = {}
        for name in names:
            column = columns[name]
            if (isinstance(column, (str, bytes)) or (isinstance(column, np.ndarray) and column.ndim == 0)
                    or not isinstance(column, Iterable)):
                raise TypeError(f"column {name!r} is a single value ({type(column).__name__}); extend() takes rows "
                                f"(a list of dicts) or a dict of columns (equal-length sequences); to add one row "
                                f"use append(row)")
            if not hasattr(column, "__len__"):
                column = list(column)
            result[name] = column
        sizes = {name: len(column) for name, column in result.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{name}: {size}" for name, size in sizes.items())
            raise ValueError(f"the columns have different lengths ({shown}); every field needs one value per row")
        return result, next(iter(sizes.values()), 0)

    # -------------------------------------------------------------- encoding

    def encode(self, batch: Any, lengths: dict[str, int], attrs: dict[str, Any], dictionary: bytes = b"",
               dictionaries: Optional[dict[str, bytes]] = None) -> Encoded:
        """Every field's column buffers for ``batch`` (a `RecordsBatch`), prefixed with the field's name, in one
        `Encoded`: appended and published together. ``dictionaries`` gives compressed fields' trained
        dictionaries by field name."""
        batch = self.batch(batch, lengths, attrs)
        first = self.count(lengths, attrs)
        columns: dict[str, Any] = {}
        new_fields: Optional[dict[str, Any]] = None
        for name, kind, layout in self.fields(attrs):
            field_attrs = attrs["fields"][name]["attrs"]
            values = batch.columns[name]
            try:
                encoded = layout.encode(values, self.field_lengths(name, lengths), field_attrs,
                                        (dictionaries or {}).get(name, b""))
            except (TypeError, ValueError) as e:
                field_kind(kind).locate_encode_error(name, values, field_attrs, first)
                raise _as_error(e, _field_message(name, str(e))) from None
            for column, buffers in encoded.columns.items():
                columns[f"{name}.{column}"] = buffers
            if encoded.attrs is not None:
                new_fields = dict(attrs["fields"]) if new_fields is None else new_fields
                new_fields[name] = {"kind": kind, "attrs": encoded.attrs}
        return Encoded(columns, None if new_fields is None else {**attrs, "fields": new_fields})
