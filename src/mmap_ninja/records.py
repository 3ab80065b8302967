"""`RecordsMmap`: a map whose samples are rows of named fields (a text, its tokens and a label), every field
stored as a column group of an existing kind and all of them committed together.

A records map is a layout made of the other kinds' layouts. Field ``label`` of kind numpy keeps its bytes in the
column ``label.data``, field ``text`` of kind strings in ``text.data`` and ``text.offsets``, and so on: the
store's columns are the fields' columns with the field name and a dot in front. The header's ``attrs`` hold the
schema, ``{"fields": {name: {"kind": ..., "attrs": {that kind's attrs}}}}``, and ``requires`` lists
``"records"`` so that a reader that does not know this kind refuses the map instead of misreading it.

One commit (one header) publishes a batch of rows in every field at once, so after any crash every field has
the same number of rows: they can never drift apart. `rec["label"]` is a read-only container of the field's own
kind (`NumpyMmap`, `StringsMmap`, `RaggedMmap`) over the same files; rows are only ever written whole, through
the `RecordsMmap`.

Field kinds (see `Field`):

- ``strings``: ``str`` values (optionally compressed with a codec);
- ``ragged``: arrays of one dtype and any shapes (token sequences, images), optionally compressed;
- ``numpy``: arrays of one fixed shape and dtype; with shape ``()`` a *scalar* field (labels, scores), read back
  as NumPy scalars;
- ``images``: encoded images (JPEG, PNG, ... bytes kept as given, or arrays encoded once), the columns of
  `ImagesMmap`'s layout; read back decoded into ``(H, W, C)`` uint8 arrays (``rec["image"].raw(i)`` gives the
  bytes). Never inferred: declare ``Field.images()`` (or ``"images"``).

Schema inference (when no ``schema=`` is given) looks at the first batch: ``str`` values make a strings field;
Python and NumPy scalars (bool, int, float, complex) and 0-d arrays a scalar field whose dtype is NumPy's for all
of the first batch's values (``[1, 2.5]`` gives float64); arrays and lists of one or more dimensions a *ragged*
field, even when the first batch's shapes agree (one batch cannot tell that later rows keep that shape; declare
``("numpy", dtype, shape)`` for a fixed shape). Building from a dict of columns (`from_dict`), an ndarray column of
two or more dimensions makes a fixed-shape numpy field, a 1-D ndarray column of ``str`` (``np.array(["a", "b"])``)
a strings field and any other 1-D ndarray column a scalar field of its dtype.
"""

from __future__ import annotations

import operator
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, TypeVar, overload

import numpy as np

from mmap_ninja import _batching
from mmap_ninja import keys as _keys
from mmap_ninja.batch import assemble, check_batch_size, join_batches
from mmap_ninja.casting import as_array, cast, storable_dtype
from mmap_ninja.checksums import ReadChecker
from mmap_ninja.codecs import codec_from_option, codec_from_spec
from mmap_ninja.errors import CorruptMapError, MissingKeyError, NoSuchFieldError, ReadOnlyMapError
from mmap_ninja.format import HEADER_FILE, dtype_from_json, register_feature
from mmap_ninja.image_decoding import DEFAULT_DECODER, Decoder
from mmap_ninja.images import DEFAULT_QUALITY, ImagesMmap, ImagesView, decode_batch
from mmap_ninja.ingest import build_image_folder
from mmap_ninja.layouts import (
    Columns,
    CompressedRaggedView,
    Encoded,
    Layout,
    NumpyView,
    RaggedView,
    StringsView,
    View,
)
from mmap_ninja.maps import MapBase, SampleIndex, SampleIndices, _length_or_none, resolve_positions
from mmap_ninja.numpy import NumpyMmap
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.storage import DEFAULT_LOCK_TIMEOUT, PathLike, Store
from mmap_ninja.string import StringsMmap

__all__ = ["FEATURE", "Field", "RecordsLayout", "RecordsMmap", "infer_schema", "parse_schema"]

FEATURE = "records"
"""The name a records map lists in its header's ``requires``."""
register_feature(FEATURE)
register_feature(_keys.FEATURE)
IMAGES_FEATURE = "records.images"
"""Listed in ``requires`` by a records map with an images field (a reader knowing only the first field kinds
refuses it by name instead of calling its schema corrupt)."""
register_feature(IMAGES_FEATURE)

DEFAULT_BATCH_SIZE = 16_384  # from_dict's default rows per commit
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_FIELD_LAYOUTS: dict[str, Layout] = {"strings": StringsMmap.layout, "ragged": RaggedMmap.layout,
                                     "numpy": NumpyMmap.layout, "images": ImagesMmap.layout}
_SCALAR_TYPES = (bool, int, float, complex, np.generic)
_INFER_ROWS = 1024  # how many rows of a dict of columns schema inference looks at
_DEFAULT_CHUNK = 8192  # rows of a new field's default encoded at a time

R = TypeVar("R", bound="RecordsMmap")


# ---------------------------------------------------------------------------------------------------- schema

@dataclass(frozen=True)
class Field:
    """One field of a records map: its ``kind`` (``"strings"``, ``"ragged"``, ``"numpy"`` or ``"images"``), its
    ``dtype`` (ragged: None lets the first value decide; numpy: required), its ``shape`` (numpy only; ``()`` for a
    scalar field), its ``codec`` (strings and ragged only: ``"zstd"``, ``"lz4"`` or a `mmap_ninja.codecs.Codec`)
    and, for images, ``baseline_jpeg`` (see `ImagesMmap.from_files`) and ``encoding``, how arrays and PIL images
    are encoded: ``(format, quality, lossless)``, or ``()`` for the default (PNG, lossless). A ``datetime64``
    numpy field holds UTC times; its ``timezone`` (an IANA name such as ``"Europe/Paris"`` or an offset such as
    ``"+01:00"``) is the zone they were given in, kept for `RecordsMmap.to_arrow`
    (``Field.scalar("datetime64[us]", timezone="UTC")``).

    Use the constructors: ``Field.strings()``, ``Field.ragged(np.int32)``, ``Field.numpy(np.float32, (768,))``,
    ``Field.scalar(np.int64)``, ``Field.images()``.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import Field, RecordsMmap
        >>> schema = {"text": Field.strings(), "vec": Field.numpy(np.float32, (2,)), "label": Field.scalar(np.int64)}
        >>> rows = [{"text": "hi", "vec": np.ones(2, np.float32), "label": 3}]
        >>> rec = RecordsMmap.from_generator("fields", rows, batch_size=8, schema=schema, overwrite=True)
        >>> schema["vec"].kind, schema["vec"].shape, rec[0]["vec"]
        ('numpy', (2,), array([1., 1.], dtype=float32))
    """

    kind: str
    dtype: Optional[np.dtype[Any]] = None
    shape: Optional[tuple[int, ...]] = None
    codec: Any = None
    baseline_jpeg: bool = False
    timezone: Optional[str] = None
    encoding: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _FIELD_LAYOUTS:
            raise ValueError(f"a field's kind is one of {sorted(_FIELD_LAYOUTS)}, got {self.kind!r}")
        if self.dtype is not None:
            object.__setattr__(self, "dtype", storable_dtype(self.dtype, "the field's dtype"))
        if self.kind == "numpy":
            if self.dtype is None or self.shape is None:
                raise TypeError("a numpy field needs a dtype and a shape (() for a scalar field)")
            shape = tuple(operator.index(s) for s in self.shape)
            if any(s <= 0 for s in shape):
                raise ValueError(f"a numpy field's shape must hold positive sizes, got {shape}")
            object.__setattr__(self, "shape", shape)
            if self.codec is not None:
                raise TypeError("numpy fields are not compressed; use a ragged field for a codec")
        elif self.shape is not None:
            raise TypeError(f"a {self.kind} field has no fixed shape (only numpy fields do)")
        if self.kind in ("strings", "images") and self.dtype is not None:
            raise TypeError(f"a {self.kind} field has no dtype")
        if self.kind == "images" and self.codec is not None:
            raise TypeError("an images field keeps the images' own encoding and takes no codec")
        if not isinstance(self.baseline_jpeg, bool):
            raise TypeError(f"baseline_jpeg must be True or False, got {self.baseline_jpeg!r}")
        if self.baseline_jpeg and self.kind != "images":
            raise TypeError(f"baseline_jpeg is an option of images fields, not of {self.kind} fields")
        if self.encoding:
            if self.kind != "images":
                raise TypeError(f"an encoding is an option of images fields, not of {self.kind} fields")
            format_name, quality, lossless = self.encoding
            ImagesMmap.layout.attrs(format=format_name, quality=quality, lossless=lossless)  # checks them
        codec_from_option(self.codec)  # an unknown codec fails here
        if self.timezone is not None and (not isinstance(self.timezone, str) or not self.timezone
                                          or self.dtype is None or self.dtype.kind != "M"):
            raise TypeError(f"timezone= is the zone of a datetime64 field's times, a non-empty str; got "
                            f"{self.timezone!r} for a {self.kind} field of dtype {self.dtype}")

    @classmethod
    def strings(cls, codec: Any = None) -> Field:
        """A field of strings (optionally compressed with ``codec``)."""
        return cls("strings", codec=codec)

    @classmethod
    def ragged(cls, dtype: Any = None, codec: Any = None) -> Field:
        """A field of arrays of one dtype and any shapes (optionally compressed with ``codec``)."""
        return cls("ragged", None if dtype is None else np.dtype(dtype), codec=codec)

    @classmethod
    def numpy(cls, dtype: Any, shape: Sequence[int]) -> Field:
        """A field of arrays of one dtype and one ``shape`` (a scalar field when ``shape`` is ``()``)."""
        return cls("numpy", np.dtype(dtype), tuple(shape))

    @classmethod
    def scalar(cls, dtype: Any, timezone: Optional[str] = None) -> Field:
        """A field of one value of ``dtype`` per row (a label, a score, a timestamp; ``timezone``: see `Field`)."""
        return cls("numpy", np.dtype(dtype), (), timezone=timezone)

    @classmethod
    def images(cls, baseline_jpeg: bool = False, format: Optional[str] = None, quality: int = DEFAULT_QUALITY,
               lossless: bool = False) -> Field:
        """Encoded images, stored as given (files, bytes) or encoded once (arrays, PIL images: PNG, lossless,
        unless ``format="jpeg"`` or ``"webp"`` at ``quality`` asks for lossy encoding; see
        `ImagesMmap.from_generator`), decoded on read (see `ImagesMmap`). ``baseline_jpeg=True`` stores
        progressive JPEGs as baseline ones with the same coefficients: the same pixels, decoded 2-3x faster (see
        `ImagesMmap.from_files`)."""
        if format is None and quality == DEFAULT_QUALITY and not lossless:
            return cls("images", baseline_jpeg=baseline_jpeg)
        encoding = (None if format is None else format.upper().replace("JPG", "JPEG") if isinstance(format, str)
                    else format, quality, lossless)
        return cls("images", baseline_jpeg=baseline_jpeg, encoding=encoding)

    @property
    def is_scalar(self) -> bool:
        """Whether each row holds one value (a NumPy field of shape ``()``)."""
        return self.kind == "numpy" and self.shape == ()

    def layout_attrs(self) -> dict[str, Any]:
        """The field's attributes as its kind's layout keeps them."""
        layout = _FIELD_LAYOUTS[self.kind]
        if self.kind == "strings":
            return layout.attrs(codec=self.codec)
        if self.kind == "ragged":
            return layout.attrs(dtype=self.dtype, codec=self.codec)
        if self.kind == "images":
            format_name, quality, lossless = self.encoding or (None, DEFAULT_QUALITY, False)
            return layout.attrs(baseline_jpeg=self.baseline_jpeg, format=format_name, quality=quality,
                                lossless=lossless)
        attrs = layout.attrs(dtype=self.dtype, sample_shape=self.shape, order="C")
        return attrs if self.timezone is None else {**attrs, "timezone": self.timezone}

    @classmethod
    def from_attrs(cls, kind: str, attrs: dict[str, Any]) -> Field:
        """The field a header describes (``attrs`` as its kind's layout keeps them)."""
        spec = attrs.get("codec")
        codec = codec_from_spec(spec) if spec else None
        dtype = None if attrs.get("dtype") is None else dtype_from_json(attrs["dtype"])
        if kind == "numpy":
            return cls(kind, dtype, tuple(attrs["sample_shape"]), timezone=attrs.get("timezone"))
        if kind == "images":
            encode = attrs.get("encode") or {}
            return cls.images(bool(encode.get("baseline_jpeg", False)),
                              None if encode.get("format") in (None, "PNG") else encode["format"],
                              int(encode.get("quality", DEFAULT_QUALITY)),
                              bool(encode.get("lossless", False)) and encode.get("quality") != 100)
        return cls(kind, dtype, codec=codec)

    def describe(self) -> str:
        """A short description of the field, as ``info`` and error messages show it."""
        if self.kind == "strings":
            return "str"
        if self.kind == "ragged":
            return "an array" + ("" if self.dtype is None else f" of {self.dtype}")
        if self.kind == "images":
            return "an image (encoded bytes, a pathlib.Path, a uint8 array or a PIL image)"
        if self.is_scalar:
            return f"a scalar of dtype {self.dtype}"
        return f"an array of shape {self.shape} and dtype {self.dtype}"


def _field_from_spec(name: str, spec: Any) -> Field:
    """A field from the short forms ``schema=`` accepts (see `parse_schema`)."""
    if isinstance(spec, Field):
        return spec
    if spec in ("strings", str):
        return Field.strings()
    if isinstance(spec, str) and spec == "ragged":
        return Field.ragged()
    if isinstance(spec, str) and spec == "images":
        return Field.images()
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        kind, *rest = spec
        if kind == "strings" and len(rest) <= 1:
            return Field.strings(*rest)
        if kind == "ragged" and len(rest) <= 2:
            return Field.ragged(*rest)
        if kind == "numpy" and len(rest) == 2:
            return Field.numpy(*rest)
        if kind == "scalar" and len(rest) == 1:
            return Field.scalar(rest[0])
    if spec in (int, float, bool, complex) or isinstance(spec, np.dtype) or (
            isinstance(spec, type) and issubclass(spec, np.generic)):
        return Field.scalar(spec)
    raise TypeError(f"field {name!r}: cannot read the schema entry {spec!r}; use a Field, \"strings\", \"ragged\", "
                    f"\"images\", "
                    f"(\"ragged\", dtype), (\"numpy\", dtype, shape), (\"scalar\", dtype) or a scalar type "
                    f"(int, float, bool, np.int32, ...)")


def check_field_name(name: Any) -> str:
    """``name`` if it can name a field: an ASCII identifier of at most 64 characters (it becomes part of file
    names, ``<name>.<column>.bin``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"field names must be ASCII identifiers of at most 64 characters (letters, digits and "
                         f"'_', not starting with a digit), got {name!r}")
    return name


def parse_schema(schema: Mapping[str, Any]) -> dict[str, Field]:
    """``schema`` (field name -> a `Field`, ``"strings"``, ``"ragged"``, ``("ragged", dtype[, codec])``,
    ``("numpy", dtype, shape)``, ``("scalar", dtype)``, or a scalar type such as ``int`` or ``np.float32``) as
    fields, in order."""
    if not isinstance(schema, Mapping):
        raise TypeError(f"schema must be a dict of field name -> field, got {type(schema).__name__}")
    if not schema:
        raise ValueError("a records map needs at least one field")
    fields: dict[str, Field] = {}
    folded: dict[str, str] = {}
    for name, spec in schema.items():
        check_field_name(name)
        other = folded.setdefault(name.lower(), name)
        if other != name:  # their files would collide on case-insensitive file systems
            raise ValueError(f"fields {other!r} and {name!r} differ only by case")
        fields[name] = _field_from_spec(name, spec)
    return fields


def _infer_field(name: str, values: list[Any]) -> Field:
    """The field the values of the first rows suggest (see the module docstring)."""
    first = values[0]
    where = f"row 0, field {name!r}"
    if isinstance(first, str):
        return Field.strings()
    if first is None:
        raise TypeError(f"{where} is None; records fields cannot hold missing values (give schema= and a value)")
    if isinstance(first, (bytes, bytearray, memoryview)):
        raise TypeError(f"{where} is {type(first).__name__}; store bytes as a ragged uint8 field "
                        f"(np.frombuffer(value, np.uint8))")
    if isinstance(first, Mapping):
        raise TypeError(f"{where} is a dict; fields hold str, scalars or arrays")
    array = as_array(first, where)
    like = [v for v in values if not isinstance(v, (str, bytes, Mapping)) and v is not None]
    if array.ndim == 0:
        scalars = [v for v in like if isinstance(v, _SCALAR_TYPES) or np.ndim(v) == 0]
        try:
            dtype = as_array(scalars, where).dtype
        except (TypeError, ValueError):
            dtype = array.dtype
        return Field.scalar(storable_dtype(dtype, where))
    arrays = [as_array(v, where) for v in like[:_INFER_ROWS]]
    # An empty list has NumPy's default float64 dtype, which says nothing of the field: only arrays, and lists
    # that hold values, decide (a field of empty lists alone is float64, as NumPy makes them).
    telling = [a.dtype for v, a in zip(like, arrays) if isinstance(v, np.ndarray) or a.size] or [array.dtype]
    try:
        dtype = np.result_type(*telling)
    except (TypeError, ValueError):
        dtype = array.dtype
    return Field.ragged(storable_dtype(dtype, where))


def infer_schema(rows: Any) -> dict[str, Field]:
    """The schema the first rows (a list of dicts) or columns (a dict of sequences) suggest: see the module
    docstring for the rules."""
    if isinstance(rows, Mapping):
        fields: dict[str, Field] = {}
        for name, column in rows.items():
            check_field_name(name)
            if isinstance(column, np.ndarray) and column.ndim == 1 and column.dtype.kind == "U":
                fields[name] = Field.strings()  # not a fixed-width field that a longer str would not fit
                continue
            if isinstance(column, np.ndarray) and column.ndim >= 1 and column.dtype.kind != "O":
                dtype = storable_dtype(column.dtype, f"column {name!r}")
                fields[name] = Field.numpy(dtype, column.shape[1:])
                continue
            if (isinstance(column, (str, bytes)) or not hasattr(column, "__len__")
                    or (isinstance(column, np.ndarray) and column.ndim == 0)):
                raise TypeError(f"column {name!r} is a single value ({type(column).__name__}); a column is a "
                                f"sequence of values")
            if not len(column):
                raise ValueError(f"column {name!r} is empty: no value to infer its kind from; pass schema=")
            fields[name] = _infer_field(name, list(column[:_INFER_ROWS]))
        return parse_schema(fields)
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to infer the schema from; pass schema=")
    if not isinstance(rows[0], Mapping):
        raise TypeError(f"row 0 is {type(rows[0]).__name__}; a records map's rows are dicts of field -> value")
    return parse_schema({name: _infer_field(name, [row[name] for row in rows
                                                   if isinstance(row, Mapping) and name in row])
                         for name in rows[0]})


# ---------------------------------------------------------------------------------------------------- layout

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
            if not (field.kind == "strings" or (field.is_scalar and field.dtype is not None
                                                and field.dtype.kind in "iu")):
                raise TypeError(f"key field {key!r} is {field.describe()}; a key field holds str or integer "
                                f"scalars")
            attrs["key"] = _keys.key_attrs(key)
        return attrs

    def key(self, attrs: dict[str, Any]) -> Optional[tuple[str, bool]]:
        """(key field, whether it holds strings), or None for a map without a key."""
        spec = attrs.get("key")
        if spec is None:
            return None
        fields = attrs.get("fields", {})
        if (not isinstance(spec, dict) or spec.get("field") not in fields
                or not isinstance(spec.get("table"), list) or len(spec["table"]) != 2):
            raise CorruptMapError(f"a records map's key is not valid: {spec!r}")
        field = spec["field"]
        return field, fields[field]["kind"] == "strings"

    def fields(self, attrs: dict[str, Any]) -> list[tuple[str, str, Layout]]:
        """(name, kind, layout) of every field, in order; a CorruptMapError for a schema that is not valid."""
        fields = attrs.get("fields")
        if not isinstance(fields, dict):
            raise CorruptMapError(f"a records map's attrs need a 'fields' object, got {fields!r}")
        result = []
        for name, spec in fields.items():
            if (not isinstance(name, str) or not _NAME.fullmatch(name) or not isinstance(spec, dict)
                    or spec.get("kind") not in _FIELD_LAYOUTS or not isinstance(spec.get("attrs"), dict)):
                raise CorruptMapError(f"a records map's field {name!r} is not valid: {spec!r}")
            result.append((name, spec["kind"], _FIELD_LAYOUTS[spec["kind"]]))
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
        if any(kind == "images" for _, kind, _ in fields):
            needed.add(IMAGES_FEATURE)
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
            values = _check_values(name, schema[name], columns[name], first)
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
                if kind == "numpy":
                    _locate_numpy_error(name, values, field_attrs, first)
                raise _as_error(e, _field_message(name, str(e))) from None
            for column, buffers in encoded.columns.items():
                columns[f"{name}.{column}"] = buffers
            if encoded.attrs is not None:
                new_fields = dict(attrs["fields"]) if new_fields is None else new_fields
                new_fields[name] = {"kind": kind, "attrs": encoded.attrs}
        return Encoded(columns, None if new_fields is None else {**attrs, "fields": new_fields})


def _check_values(name: str, field: Field, values: Any, first: int) -> Any:
    """Raise, naming the row and the field, for a value of the wrong type or shape; returns ``values``."""
    if field.kind == "strings":
        if isinstance(values, np.ndarray) or set(map(type, values)) - {str}:
            for k, value in enumerate(values):
                if not isinstance(value, str):
                    raise TypeError(f"row {first + k}, field {name!r}: expected str, got {type(value).__name__}")
        return values
    if field.kind == "numpy":
        shape = field.shape
        if isinstance(values, np.ndarray):
            if values.ndim < 1 or values.shape[1:] != shape:
                raise ValueError(f"field {name!r}: a column of shape {values.shape} cannot hold rows of shape "
                                 f"{shape}")
            return values
        if shape == () and all(issubclass(t, _SCALAR_TYPES) for t in set(map(type, values))):
            return values
        for k, value in enumerate(values):
            if value is None or isinstance(value, (str, bytes, Mapping)) or np.shape(value) != shape:
                got = type(value).__name__ if np.ndim(value) == 0 or isinstance(value, (str, bytes)) \
                    else f"shape {np.shape(value)}"
                raise (TypeError if np.ndim(value) == 0 and shape == () else ValueError)(
                    f"row {first + k}, field {name!r}: expected {field.describe()}, got {got}")
        return values
    if field.kind == "images":
        for k, value in enumerate(values):
            if value is None or isinstance(value, (str, Mapping)):
                raise TypeError(f"row {first + k}, field {name!r}: expected {field.describe()}, got "
                                f"{type(value).__name__}")
        return values
    for k, value in enumerate(values):
        if value is None or isinstance(value, (str, bytes, Mapping)):
            raise TypeError(f"row {first + k}, field {name!r}: expected {field.describe()}, got "
                            f"{type(value).__name__}")
    return values


def _locate_numpy_error(name: str, values: Any, attrs: dict[str, Any], first: int) -> None:
    """Raise the error of the first row of a numpy field that cannot be stored, naming that row."""
    dtype = dtype_from_json(attrs["dtype"])
    for k, value in enumerate(values):
        cast(as_array(value, f"row {first + k}, field {name!r}", dtype), dtype, f"row {first + k}, field {name!r}")


# ---------------------------------------------------------------------------------------------------- fields

class _FieldStore(FieldColumns):
    """What a field's read-only container reads through: the records map's store, unprefixed. It keeps the
    records map open while the field's container lives."""

    def __init__(self, records: RecordsMmap, store: Store, field: str):
        super().__init__(store, field)
        self._records = records
        self._store = store
        self._seen = store.header
        self.lock_timeout = store.lock_timeout
        self.durable = store.durable

    @property
    def metadata(self) -> dict[str, Any]:
        return self._store.metadata

    @property
    def header(self) -> Any:
        return self._store.header

    def snapshot(self) -> FieldColumns:
        """The field's columns in one state of the records map (see `Store.snapshot`)."""
        return FieldColumns(self._store.snapshot(), self._field)

    def refresh(self) -> bool:
        """See what other handles and processes committed since this handle last looked; True if anything changed."""
        self._records.refresh()
        seen, self._seen = self._seen, self._store.header
        return self._store.header is not seen

    def close(self) -> None:
        """The store belongs to the records map: closing a field's container leaves it open."""

    def release_descriptors(self) -> None:
        """The records map's store's (see `Store.release_descriptors`)."""
        self._store.release_descriptors()

    def descriptors(self) -> int:
        """The records map's store's descriptors (its fields share them)."""
        return self._store.descriptors()


class _ReadOnlyField:
    """A field of a records map as a container of its kind: it reads, and refuses every write."""

    _path: Path
    _field: str
    _records: RecordsMmap

    def _writable_store(self) -> Store:
        raise ReadOnlyMapError(f"field {self._field!r} of the records map {self._path} is read-only: write whole "
                               f"rows through the RecordsMmap (append/extend), so that its fields never drift apart")

    def _read_checker(self, snapshot: Any, algorithm: str, length: int) -> ReadChecker:
        # ``snapshot`` is the field's `FieldColumns`: check the field's own columns in the records map's snapshot.
        return ReadChecker(snapshot._parent, algorithm, length, self._verified,  # type: ignore[attr-defined]
                           prefix=snapshot._prefix)

    def __reduce__(self) -> tuple[Any, ...]:
        return _open_field, (self._records, self._field)

    def __repr__(self) -> str:
        return (f"{type(self).__mro__[2].__name__} of field {self._field!r} of RecordsMmap({str(self._path)!r}) "
                f"of length {len(self)}")  # type: ignore[arg-type]


class FieldStringsMmap(_ReadOnlyField, StringsMmap):
    """A strings field of a records map (read-only)."""


class FieldRaggedMmap(_ReadOnlyField, RaggedMmap):
    """A ragged field of a records map (read-only)."""


class FieldNumpyMmap(_ReadOnlyField, NumpyMmap):
    """A numpy field of a records map (read-only)."""


class FieldImagesMmap(_ReadOnlyField, ImagesMmap):
    """An images field of a records map (read-only)."""


_FIELD_CLASSES: dict[str, type[MapBase]] = {"strings": FieldStringsMmap, "ragged": FieldRaggedMmap,
                                            "numpy": FieldNumpyMmap, "images": FieldImagesMmap}


def _open_field(records: RecordsMmap, name: str) -> MapBase:
    return records.field(name)


# ---------------------------------------------------------------------------------------------------- the map

class RecordsMmap(MapBase):
    """A map whose samples are rows of named fields, every field committed with the others.

    ``rec[i]`` is a dict of the row's values as each field's kind reads them: ``str`` for strings fields, a
    read-only view for array fields, a NumPy scalar for scalar fields. ``rec["label"]`` is the field as a
    read-only container of its kind over the same files (`NumpyMmap`, `StringsMmap`, `RaggedMmap`).
    ``rec[2:5]`` (or a list of indices, or a boolean mask) gives a list of row dicts, as every map gives a list of
    its samples (a Hugging Face ``Dataset`` gives a dict of lists there: here `columns` does, and `get_batch`
    gives a dict of batched arrays).

    Build with `from_generator` (rows as dicts), `from_dict` (columns) or `from_indexable`; grow with `append`
    (one row) and `extend` (rows, or a dict of columns), each one commit. The schema is inferred from the first
    batch (see the module docstring) or given as ``schema=``. See `MapBase` for opening, modes and the writer model.

    ``draft=(height, width)`` (a reading option, kept when pickled) decodes the JPEGs of images fields at the
    smallest DCT scale that keeps them at least that size, in rows, `get_batch` and the fields' containers (see
    `ImagesMmap`); ``get_batch(..., draft=...)`` overrides it for one call.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RecordsMmap
        >>> rows = ({"text": f"doc {i}", "tokens": np.arange(i % 3, dtype=np.int32), "label": i % 2} for i in range(5))
        >>> rec = RecordsMmap.from_generator("rows", rows, batch_size=2, overwrite=True)
        >>> rec[2]
        {'text': 'doc 2', 'tokens': array([0, 1], dtype=int32), 'label': np.int64(0)}
        >>> rec["label"][:]
        array([0, 1, 0, 1, 0])
        >>> files = RecordsMmap.from_dict("files", {"path": ["a.jpg", "b.jpg"], "label": np.array([3, 5])}, key="path",
        ...                               overwrite=True)
        >>> files.index_of("b.jpg"), "c.jpg" in files
        (1, False)
    """

    layout: ClassVar[RecordsLayout] = RecordsLayout()
    default_batch_size = DEFAULT_BATCH_SIZE

    if TYPE_CHECKING:  # the type a checker sees; at run time iteration is MapBase's
        def __iter__(self) -> Iterator[dict[str, Any]]: ...
    plain_reads = True  # rec[i] is the view's row i (``__getitem__`` adds only rec["field"])
    _images_decoder: Decoder = DEFAULT_DECODER

    # -------------------------------------------------------------- opening

    def __init__(self, out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: str = "r+", *,
                 copy_before_wrapper_fn: bool = True, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                 durable: bool = False, allow_unfinished: bool = False, verify_reads: bool = False,
                 draft: Optional[tuple[int, int]] = None):
        if draft is not None:
            self._images_decoder = Decoder(draft=draft)  # checked before the map is opened
        super().__init__(out_dir, wrapper_fn, mode, copy_before_wrapper_fn=copy_before_wrapper_fn,
                         lock_timeout=lock_timeout, durable=durable, allow_unfinished=allow_unfinished,
                         verify_reads=verify_reads)

    def _new_view(self, columns: Any) -> Any:
        view = super()._new_view(columns)
        decoder = self._images_decoder
        if decoder is not DEFAULT_DECODER:
            for field_view in view.views.values():
                if isinstance(field_view, ImagesView):
                    field_view.decoder = decoder  # before the view is published
        return view

    def __reduce__(self) -> tuple[Any, ...]:
        reopen, (cls, path, options) = super().__reduce__()
        if self._images_decoder.draft is not None:
            options = {**options, "draft": self._images_decoder.draft}
        return reopen, (cls, path, options)

    # -------------------------------------------------------------- reading

    @property
    def schema(self) -> dict[str, Field]:
        """Field name -> `Field`, in order (empty for a handle on a map not created yet)."""
        return self.layout.schema(self._view_attrs() or {"fields": {}})

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(self._view.names)

    @overload
    def __getitem__(self, index: SampleIndex) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: str) -> MapBase: ...
    @overload
    def __getitem__(self, index: SampleIndices) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: Any) -> Any:
        view = self._view
        if type(index) is int:  # the common case first
            length = view.length
            position = index + length if index < 0 else index
            if not 0 <= position < length:
                raise IndexError(self._out_of_range(index, length))
            row = view.get(position)
            return row if self.wrapper_fn is None else self._wrap(row)
        if isinstance(index, str):
            return self.field(index)
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("a map cannot be indexed by a boolean scalar; use a boolean mask of the map's length")
        try:
            position = operator.index(index)
        except TypeError:
            if isinstance(index, (list, tuple)) and index and isinstance(index[0], str):
                raise TypeError(f"a records map is indexed by rows; for one field use rec[{index[0]!r}], for "
                                f"several rec.get_batch(indices, fields={list(index)!r}) or rec.columns(indices)"
                                ) from None
            return self.__getitems__(index)
        return self[position]

    def columns(self, indices: Any) -> dict[str, list[Any]]:
        """The rows at ``indices`` (a slice, indices or a mask) as a dict of lists, field -> values, as a Hugging
        Face ``Dataset`` gives ``ds[2:5]``."""
        view = self._view
        columns: dict[str, list[Any]] = view.columns_at(resolve_positions(indices, view.length))
        return columns

    def field(self, name: str) -> MapBase:
        """Field ``name`` as a read-only container of its kind over the map's files (same as ``rec[name]``).
        It shows the map as this handle sees it; its ``refresh()`` refreshes this handle too."""
        view = self._view
        if name not in view.kinds:
            raise NoSuchFieldError(f"{self._path} has no field {name!r}; its fields are {list(view.names)}")
        store = self._store
        assert store is not None  # a map with a field exists
        cls = _FIELD_CLASSES[view.kinds[name]]
        verified = self._verified if self._verify_reads else None  # checked as this handle checks its reads
        container = cls._attach(_FieldStore(self, store, name), mode="r",  # type: ignore[arg-type]
                                verified=verified)
        container._field = name  # type: ignore[attr-defined]
        container._records = self  # type: ignore[attr-defined]
        if isinstance(container, ImagesMmap) and self._images_decoder is not DEFAULT_DECODER:
            container._use_decoder(self._images_decoder)
        refs = self.__dict__.setdefault("_fields_given", [])
        refs.append(weakref.ref(container))
        if len(refs) >= self.__dict__.get("_fields_prune_at", 64):  # drop dead ones now and then: amortized O(1)
            refs[:] = [ref for ref in refs if ref() is not None]
            self.__dict__["_fields_prune_at"] = max(64, 2 * len(refs))
        return container

    def _field_containers(self) -> list[MapBase]:
        """The live field containers this handle gave out: they follow its writes and refreshes."""
        refs: list[weakref.ref[MapBase]] = self.__dict__.setdefault("_fields_given", [])
        alive = [c for c in (r() for r in refs) if c is not None and not c.closed]
        if len(alive) < len(refs):
            refs[:] = [weakref.ref(c) for c in alive]
        return alive

    def _invalidate(self) -> None:
        super()._invalidate()
        for container in self._field_containers():
            container._invalidate()

    def refresh(self) -> int:
        """See the rows other handles and processes committed since this handle last looked (its field containers
        too); returns how many rows appeared."""
        appeared = super().refresh()
        for container in self._field_containers():
            container._rebuild()
        return appeared

    def get_batch(self, indices: Any, fields: Optional[Sequence[str]] = None, pad_value: Any = None,
                  draft: Any = None) -> Any:
        """The rows at ``indices`` as a dict of field -> batch: a new array of shape ``(k, *shape)`` for array and
        scalar fields, a list of ``str`` for strings fields.

        Ragged fields are stacked, and must then share one shape, unless ``pad_value`` is given (one value for
        every ragged field, or a dict of field -> value): then the result is ``(batch, lengths)``, the padded
        fields' samples padded as `RaggedMmap.get_batch` pads them and ``lengths`` a dict of their lengths
        (``(k,)`` for 1-D samples, ``(k, ndim)`` shapes otherwise). Images fields are decoded into one
        ``(k, H, W, C)`` uint8 array and follow the same rule (their lengths are the ``(k, 3)`` shapes).
        ``fields`` picks the fields to read. ``draft`` overrides the handle's (see the class; ``False``: full
        decoding) for this call: the images' shapes are then the decoded ones.
        """
        decoder = self._images_decoder if draft is None else self._images_decoder.with_draft(draft)
        view = self._view
        positions = resolve_positions(indices, view.length)
        if isinstance(fields, str):
            raise TypeError(f"fields is a list of field names; got the str {fields!r} (for one field pass "
                            f"fields=[{fields!r}])")
        names = view.names if fields is None else tuple(fields)
        for name in names:
            if name not in view.kinds:
                raise NoSuchFieldError(f"{self._path} has no field {name!r}; its fields are {list(view.names)}")
        checker = self._checker(view)
        if checker is not None:  # the batch is gathered from the fields' columns: check the bytes it reads first
            checker.check_many(positions, names)
        if isinstance(pad_value, Mapping):
            for name in pad_value:
                if name not in view.kinds:
                    raise NoSuchFieldError(f"pad_value names no field {name!r} of {self._path}; its fields are "
                                           f"{list(view.names)}")
        batch: dict[str, Any] = {}
        lengths: dict[str, Any] = {}
        for name in names:
            field_view = view.views[name]
            if isinstance(field_view, StringsView):
                batch[name] = field_view.get_many(positions)
            elif isinstance(field_view, NumpyView):
                batch[name] = np.take(field_view.array, positions, axis=0)
            else:
                pad = pad_value.get(name) if isinstance(pad_value, Mapping) else pad_value
                try:
                    if isinstance(field_view, ImagesView):
                        result = decode_batch(field_view, positions, decoder, pad_value=pad)
                    else:
                        assert isinstance(field_view, RaggedView)
                        result = _ragged_batch(field_view, positions, pad)
                except ValueError as e:
                    if type(e) is not ValueError:  # damage and checksum errors keep their own type
                        raise
                    raise ValueError(f"field {name!r}: {e}") from None
                if pad is None:
                    batch[name] = result
                else:
                    batch[name], lengths[name] = result
        return batch if pad_value is None else (batch, lengths)

    @classmethod
    def combine_batches(cls, parts: list[tuple[np.ndarray[Any, Any], Any]], positions: np.ndarray[Any, Any],
                        arguments: dict[str, Any]) -> Any:
        """Join row batches field by field (see `MapBase.combine_batches`): strings fields' lists row by row,
        the others as arrays, padded where the parts padded them."""
        padded = arguments.get("pad_value") is not None
        pad_values = arguments.get("pad_value")
        batch: dict[str, Any] = {}
        lengths: dict[str, Any] = {}
        first, first_lengths = parts[0][1] if padded else (parts[0][1], {})
        for name, column in first.items():
            if isinstance(column, list):
                joined: list[Any] = [None] * len(positions)
                for rows, part in parts:
                    for row, value in zip(rows.tolist(), (part[0] if padded else part)[name]):
                        joined[row] = value
                batch[name] = joined
            elif name in first_lengths:
                pad = pad_values.get(name) if isinstance(pad_values, Mapping) else pad_values
                batch[name], lengths[name] = join_batches(
                    [(rows, (part[0][name], part[1][name])) for rows, part in parts], positions, pad, None)
            else:
                batch[name] = join_batches([(rows, (part[0] if padded else part)[name]) for rows, part in parts],
                                           positions, None, None)
        return (batch, lengths) if padded else batch

    def to_arrow(self) -> Any:
        """The map as a ``pyarrow.Table``, one column per field: zero-copy for uncompressed strings, 1-D numeric
        ragged and numeric numpy fields, and images fields (``large_binary``, the encoded bytes; needs pyarrow); a
        ``datetime64`` field with a `Field.timezone` as ``timestamp(unit, tz)``;
        compressed fields are decompressed into new buffers. A ragged field of samples with other than one
        dimension cannot be converted (Arrow's lists hold one): the error names the field."""
        import pyarrow as pa

        from mmap_ninja.adapters.arrow import ragged_to_arrow, strings_to_arrow

        self._check_all(self._view)  # verify_reads: the table shares the columns' bytes, check all of them first
        arrays = {}
        schema = self.schema
        for name in self.fields:
            container = self.field(name)
            if schema[name].codec is not None:  # no buffers of the values to share: decompress
                try:
                    arrays[name] = _compressed_to_arrow(container, schema[name])
                except (TypeError, ValueError) as e:
                    raise _as_error(e, f"field {name!r}: {e}") from None
                continue
            if isinstance(container, NumpyMmap):
                array = container.array
                zone = schema[name].timezone  # UTC times given in this zone: Arrow's timestamp(unit, tz)
                value_type = None if zone is None else pa.timestamp(np.datetime_data(array.dtype)[0], tz=zone)
                if array.ndim == 1:
                    arrays[name] = pa.array(array, type=value_type)
                else:
                    arrow = pa.array(array.reshape(-1), type=value_type)
                    for size in array.shape[:0:-1]:
                        arrow = pa.FixedSizeListArray.from_arrays(arrow, size)
                    arrays[name] = arrow
            elif isinstance(container, StringsMmap):
                arrays[name] = strings_to_arrow(container)
            elif isinstance(container, ImagesMmap):
                arrays[name] = _images_to_arrow(container._view)
            else:
                try:
                    arrays[name] = ragged_to_arrow(container)
                except (TypeError, ValueError) as e:
                    raise _as_error(e, f"field {name!r}: {e}") from None
        return pa.table(arrays)

    # -------------------------------------------------------------- writing

    def _writable_store(self) -> Store:
        if self._mode == "r+" and self._store is None:
            raise ValueError(f"no records map exists at {self._path} yet: its schema comes from its first rows; "
                             f"create it with extend(rows), append(row), RecordsMmap.from_generator or from_dict")
        return super()._writable_store()

    def extend(self, samples: Any, verbose: bool = False) -> None:
        """Add rows at the end, all or none, in one commit: an iterable of dicts (field -> value), or a dict of
        columns (field -> equal-length sequence of values). Every row is checked against the schema before
        anything is written; an error names the row and the field. On a handle with no map yet, the first
        call that gives rows creates the map with the schema these rows suggest (no rows: nothing is written)."""
        if self._mode == "r+" and self._store is None and self._legacy is None:
            layout = self.layout
            samples = samples if isinstance(samples, Mapping) else list(samples)
            if isinstance(samples, Mapping):
                no_rows = bool(samples) and all(hasattr(c, "__len__") and not isinstance(c, (str, bytes))
                                                and getattr(c, "ndim", 1) >= 1 and not len(c) for c in samples.values())
            else:
                no_rows = not samples
            if no_rows:  # no rows: nothing to write, and nothing to give the map its schema yet
                return
            schema = infer_schema(samples)
            attrs = layout.attrs(schema=schema)
            empty = layout.empty_lengths(attrs)
            layout.encode(layout.batch(samples, empty, attrs), empty, attrs)  # a refused first batch creates nothing
            if self._deferred is not None:  # the first write of a transaction block: the block owns the new map
                self._deferred.enter_context(self._creating(schema))
            else:  # created at once (readers racing it see an empty map, as with the other kinds), then written
                store = Store.create(self._path, layout.kind, layout.columns_for(attrs), attrs,
                                     initial=layout.initial_for(attrs), requires=layout.requires(attrs),
                                     durable=self._durable, lock_timeout=self._lock_timeout, join_existing=True)
                self._store = store
                self._check_kind(store)
        self._write(samples)

    def _write(self, samples: Any) -> None:
        layout = self.layout
        store = self._writable_store()
        try:
            with store.transaction():
                batch = layout.batch(samples, store.lengths, store.attrs)
                if len(batch):
                    self._train_fields(store, batch)
                    first = layout.count(store.lengths, store.attrs)
                    columns, new_attrs = layout.encode(batch, store.lengths, store.attrs,
                                                       dictionaries=_dictionaries(store, layout))
                    key = layout.key(store.attrs)
                    store.append(columns, new_attrs)
                    if key is not None:
                        self._index_keys(store, batch, first, key)
        finally:
            self._invalidate()

    def _index_keys(self, store: Store, batch: RecordsBatch, first: int, key: tuple[str, bool]) -> None:
        field, strings = key
        attrs = store.attrs
        kind = attrs["fields"][field]["kind"]
        existing = _FIELD_LAYOUTS[kind].view(FieldColumns(store.snapshot(), field))
        values = batch.columns[field]
        if not strings:
            values = np.asarray(values, dtype=dtype_from_json(attrs["fields"][field]["attrs"]["dtype"]))
        _keys.insert_keys(store, attrs, values, first, existing.get, strings)

    def add_field(self, name: str, field: Any, default: Any) -> None:
        """Add the field ``name`` (a `Field` or a short form ``schema=`` takes, see `parse_schema`) to the map,
        holding ``default`` in every existing row; later rows must give it a value. The default is written once
        for each existing row (O(n)) and published with the new field in one commit: a crash midway leaves the
        map without the field. Other handles see the field after ``refresh()``. A field that needs a feature the
        map does not list in its ``requires`` (a codec; images, in a map without an images field) cannot be added:
        build the map with it."""
        check_field_name(name)
        spec = _field_from_spec(name, field)
        if self._mode == "r+" and self._store is None and self._legacy is None:
            raise ValueError(f"no records map exists at {self._path} yet: add fields by giving rows that have them")
        store = self._writable_store()
        layout = _FIELD_LAYOUTS[spec.kind]
        try:
            with store.transaction():
                attrs = store.attrs
                fields = attrs["fields"]
                for other in fields:
                    if other.lower() == name.lower():
                        raise ValueError(f"{self._path} already has a field {other!r}" + (
                            "" if other == name else f", which differs from {name!r} only by case"))
                field_attrs = spec.layout_attrs()
                needed = self.layout.requires({**attrs, "fields": {**fields, name: {"kind": spec.kind,
                                                                                     "attrs": field_attrs}}})
                missing = [feature for feature in needed if feature not in store.header.requires]
                if missing:  # a commit keeps the map's requires: an older reader must not meet this field
                    raise TypeError(f"field {name!r} ({spec.kind}{', compressed' if spec.codec else ''}) needs the "
                                    f"feature(s) {missing}, which this map does not list in its requires; a field "
                                    f"that needs a new feature cannot be added: build the map with it")
                empty = {column: len(layout.initial.get(column, [])) for column in layout.columns_for(field_attrs)}
                try:  # the default must be a value of the field, checked before anything is written
                    _check_values(name, spec, [default], 0)
                    layout.encode(layout.batch([default], empty, field_attrs), empty, field_attrs)
                except (TypeError, ValueError) as e:
                    reason = re.sub(r"^(row 0, )?field '\w+': |^item 0: ", "", str(e))
                    raise _as_error(e, f"field {name!r}: the default {default!r} cannot be stored: "
                                       f"{reason}") from None
                count = self.layout.count(store.lengths, attrs)
                store.add_columns({f"{name}.{column}": dtype
                                   for column, dtype in layout.columns_for(field_attrs).items()})
                store.append({f"{name}.{column}": [np.asarray(items, dtype=layout.columns_for(field_attrs)[column])]
                              for column, items in layout.initial.items()})
                lengths = dict(empty)
                if spec.kind == "numpy" and count:  # fixed-size rows: the default's bytes, repeated
                    one = layout.encode(layout.batch([default], empty, field_attrs), empty, field_attrs)
                    row = b"".join(bytes(memoryview(b).cast("B")) for b in one.columns["data"])
                    chunk = row * min(_DEFAULT_CHUNK, count)
                    for begin in range(0, count, _DEFAULT_CHUNK):
                        rows = min(_DEFAULT_CHUNK, count - begin)
                        store.append({f"{name}.data": [memoryview(chunk)[:rows * len(row)]]})
                    count = 0
                for begin in range(0, count, _DEFAULT_CHUNK):
                    values = [default] * min(_DEFAULT_CHUNK, count - begin)
                    encoded = layout.encode(layout.batch(values, lengths, field_attrs), lengths, field_attrs)
                    store.append({f"{name}.{column}": buffers for column, buffers in encoded.columns.items()})
                    if encoded.attrs is not None:
                        field_attrs = encoded.attrs
                    lengths = self.layout.field_lengths(name, store.lengths)
                new_fields = {**fields, name: {"kind": spec.kind, "attrs": field_attrs}}
                store.append({}, {**attrs, "fields": new_fields})
        finally:
            self._invalidate()

    # -------------------------------------------------------------- keys

    @property
    def key(self) -> Optional[str]:
        """The name of the key field (see `index_of`), or None."""
        key = self.layout.key(self._view_attrs() or {"fields": {}})
        return None if key is None else key[0]

    def _key_index(self) -> _keys.KeyIndex:
        view = self._view
        length = view.length  # builds the view of a handle that wrote (a placeholder until then)
        view = self._view
        cached = self.__dict__.get("_key_cache")
        if cached is not None and cached[0] is view:
            index: _keys.KeyIndex = cached[1]
            return index
        columns = view.columns
        key = self.layout.key(columns.attrs)
        if key is None:
            raise TypeError(f"{self._path} has no key field; build it with key=<field> (from_generator, "
                            f"from_dict, ...) to look rows up by key")
        field, strings = key
        table = columns.attrs["key"]["table"]
        index = _keys.KeyIndex(field, strings, table, columns.column(_keys.SLOTS), view.views[field].get, length)
        self.__dict__["_key_cache"] = (view, index)
        return index

    def index_of(self, key: Any) -> int:
        """The row whose key field holds ``key`` (the map was built with ``key=<field>``); a KeyError naming the
        key if no row has it. O(1): a probe of the on-disk hash index, reading one or two rows' keys."""
        index = self._key_index()
        row = index.find(index.check(key))
        if row is None:
            rows = f"{index.length} row{'' if index.length == 1 else 's'}"
            raise MissingKeyError(f"no row of {self._path} has the key {key!r} (field {index.field!r}; {rows} seen by "
                                  f"this handle: refresh() shows rows other handles added since)")
        return row

    def __contains__(self, key: Any) -> bool:
        """Whether a row has the key ``key`` (a map built with ``key=<field>``)."""
        index = self._key_index()
        try:
            checked = index.check(key)
        except TypeError:
            return False
        return index.find(checked) is not None

    _deferred: Optional[ExitStack] = None

    @contextmanager
    def _creating(self, schema: dict[str, Field]) -> Iterator[None]:
        """Create the map (marked unfinished and locked) for the block's writes: published with them, complete,
        in one commit if the block ends well; removed again, leaving the directory as it was, if it raises."""
        missing = []  # the directories the creation makes, to remove again
        parent = self._path
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        layout = self.layout
        attrs = layout.attrs(schema=schema)
        store = Store.create(self._path, layout.kind, layout.columns_for(attrs), attrs,
                             initial=layout.initial_for(attrs), requires=layout.requires(attrs), building=True,
                             durable=self._durable, lock_timeout=self._lock_timeout, join_existing=True)
        self._store = store
        self._check_kind(store)
        if not store.header.building:  # a racing process created the map first: write to it as to any map
            yield
            return
        store.hold_creation()
        try:
            yield
        except BaseException:
            store.end_creation(ok=False)
            self._store = None
            for directory in missing:
                try:
                    directory.rmdir()
                except OSError:
                    break
            raise
        finally:
            self._invalidate()
        store.end_creation(ok=True)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """See `MapBase.transaction`. On a handle with no map yet, the block's first write creates the map (its
        rows give the schema) and the block holds the lock from there on (other processes find the map being
        built until the block ends); if the block raises, the new map is removed again and nothing is left on
        disk. (A block nested in such a block before the map exists is
        part of the outer one: it is undone only with it.)"""
        if self._mode == "r" or self._store is not None or self._legacy is not None:
            with super().transaction():
                yield
            return
        if self._deferred is not None:
            yield
            return
        with ExitStack() as stack:
            self._deferred = stack
            try:
                yield
            finally:
                self._deferred = None
                self._invalidate()

    def append(self, sample: Mapping[str, Any]) -> None:
        """Add one row (a dict of field -> value) at the end (one commit)."""
        if not isinstance(sample, Mapping):
            raise TypeError(f"append() takes one row, a dict of field -> value; got {type(sample).__name__}")
        self.extend([sample])

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError("rows of a records map cannot be assigned in place")

    def _train_fields(self, store: Store, batch: RecordsBatch) -> None:
        """Train the dictionary of every compressed field that wants one and has none yet, on this batch."""
        attrs = store.attrs
        new_fields = None
        for name, _, layout in self.layout.fields(attrs):
            field_attrs = attrs["fields"][name]["attrs"]
            codec = layout.codec(field_attrs)
            if codec is None or field_attrs.get("trained", True):
                continue
            values = batch.columns[name]
            if len(values) > codec.train_samples:  # a random draw (seeded: reproducible)
                chosen = np.random.default_rng(0).choice(len(values), codec.train_samples, replace=False)
                values = [values[i] for i in np.sort(chosen).tolist()]
            dictionary = codec.train(layout.sample_bytes(values)) or b""
            new_fields = dict(attrs["fields"]) if new_fields is None else new_fields
            new_fields[name] = {"kind": attrs["fields"][name]["kind"], "attrs": {**field_attrs, "trained": True}}
            store.append({f"{name}.dictionary": [dictionary]}, {**attrs, "fields": new_fields})

    # -------------------------------------------------------------- building

    @classmethod
    @contextmanager
    def build(cls: type[R], out_dir: PathLike, *, overwrite: bool = False, durable: bool = False,
              metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
              wrapper_fn: Optional[Callable[[Any], Any]] = None,
              lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> Iterator[R]:
        """Create a records map with ``schema=`` and give it to the block to fill (see `MapBase.build`)."""
        if options.get("schema") is None:
            raise TypeError("building a records map needs schema= (field name -> field)")
        with super().build(out_dir, overwrite=overwrite, durable=durable, metadata=metadata, mode=mode,
                           wrapper_fn=wrapper_fn, lock_timeout=lock_timeout, **options) as target:
            yield target

    @classmethod
    def _build_batches(cls: type[R], out_dir: PathLike, batches: Iterable[Any], schema: Optional[Mapping[str, Any]],
                       key: Optional[str] = None, **build_options: Any) -> R:
        """Build from batches (lists of rows or dicts of columns); the schema is inferred from the first batch
        unless given, and the first batch is checked before anything is created."""
        pending = iter(batches)
        first = next(pending, None)
        if schema is not None:
            fields = parse_schema(schema)
        elif first is None:
            raise ValueError("no rows to infer the schema from; pass schema=")
        else:
            first = first if isinstance(first, Mapping) else list(first)
            fields = infer_schema(first)
        attrs = cls.layout.attrs(schema=fields, key=key)  # a bad key fails here, before anything is created
        if first is not None:
            empty = cls.layout.empty_lengths(attrs)
            first = cls.layout.batch(first, empty, attrs)
            cls.layout.encode(first, empty, attrs)  # a value only encoding refuses must create nothing either
            if key is not None:
                _keys.check_unique(first.columns[key], 0, key, attrs["fields"][key]["kind"] == "strings")
            pending = chain([first], pending)
        options = {} if key is None else {"key": key}
        return cls._build(out_dir, pending, schema=fields, **options, **build_options)

    @classmethod
    def from_generator(cls: type[R], out_dir: PathLike, sample_generator: Iterable[Any],
                       batch_size: Optional[int] = None, verbose: bool = False, *,
                       schema: Optional[Mapping[str, Any]] = None,
                       key: Optional[str] = None, overwrite: bool = False, durable: bool = False,
                       metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                       wrapper_fn: Optional[Callable[[Any], Any]] = None,
                       lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> R:
        """Build a map from rows (dicts of field -> value), committing every ``batch_size`` rows; returns it open.

        ``schema`` (see `parse_schema`) defaults to what the first batch suggests. ``key`` names a field (str or
        integer scalars) whose values are unique and indexed on disk: see `index_of`. Every row is checked: an
        error names the row and the field (or the key repeated); a bad row in the first batch leaves nothing on
        disk, a later one leaves an unfinished build (see `MapBase.from_generator`).
        """
        cls._check_options(options, "from_generator")
        batch_size = check_batch_size(cls.default_batch_size if batch_size is None else batch_size)
        rows: Iterable[Any] = sample_generator
        if verbose:
            from tqdm.auto import tqdm

            rows = tqdm(rows, total=_length_or_none(sample_generator), desc=cls.__name__, unit=" rows")
        return cls._build_batches(out_dir, _batching.batches(rows, batch_size), schema, key, overwrite=overwrite,
                                  durable=durable, metadata=metadata, mode=mode, wrapper_fn=wrapper_fn,
                                  lock_timeout=lock_timeout)

    @classmethod
    def from_indexable(cls: type[R], out_dir: PathLike, indexable: Any, batch_size: Optional[int] = None,
                       n_jobs: Optional[int] = None, verbose: bool = False, *,
                       schema: Optional[Mapping[str, Any]] = None, key: Optional[str] = None,
                       overwrite: bool = False, durable: bool = False,
                       metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                       wrapper_fn: Optional[Callable[[Any], Any]] = None,
                       lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, **options: Any) -> R:
        """Build a map from the rows ``indexable[0]``, ``indexable[1]``, ... (see `MapBase.from_indexable`;
        ``n_jobs`` worker processes read them)."""
        from mmap_ninja import parallel

        cls._check_options(options, "from_indexable")
        batch_size = check_batch_size(cls.default_batch_size if batch_size is None else batch_size)
        batches = parallel.indexed_batches(indexable, batch_size, n_jobs, verbose, cls.__name__)
        return cls._build_batches(out_dir, batches, schema, key, overwrite=overwrite, durable=durable,
                                  metadata=metadata, mode=mode, wrapper_fn=wrapper_fn, lock_timeout=lock_timeout)

    @classmethod
    def from_dict(cls: type[R], out_dir: PathLike, columns: Mapping[str, Any], *,
                  schema: Optional[Mapping[str, Any]] = None, key: Optional[str] = None,
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  overwrite: bool = False, durable: bool = False, metadata: Optional[dict[str, Any]] = None,
                  mode: str = "r+", wrapper_fn: Optional[Callable[[Any], Any]] = None,
                  lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT) -> R:
        """Build a map from columns: field name -> a sequence of values, all of one length (an ndarray column
        is stored as a numpy field, see the module docstring). Committed every ``batch_size`` rows."""
        if not isinstance(columns, Mapping):
            raise TypeError(f"from_dict() takes a dict of field -> column, got {type(columns).__name__}")
        batch_size = check_batch_size(batch_size)
        checked = dict(columns)
        for name, column in checked.items():
            check_field_name(name)
            if isinstance(column, (str, bytes)) or not isinstance(column, Iterable):
                raise TypeError(f"column {name!r} is {type(column).__name__}; a column is a sequence of values")
            if not hasattr(column, "__getitem__") or not hasattr(column, "__len__"):
                checked[name] = list(column)
        sizes = {name: len(column) for name, column in checked.items()}
        if len(set(sizes.values())) > 1:
            shown = ", ".join(f"{name}: {size}" for name, size in sizes.items())
            raise ValueError(f"the columns have different lengths ({shown}); every field needs one value per row")
        n = next(iter(sizes.values()), 0)
        if schema is None and checked:
            schema = infer_schema(checked)
        batches = ({name: column[start:start + batch_size] for name, column in checked.items()}
                   for start in range(0, n, batch_size))
        return cls._build_batches(out_dir, batches, schema, key, overwrite=overwrite, durable=durable,
                                  metadata=metadata, mode=mode, wrapper_fn=wrapper_fn, lock_timeout=lock_timeout)

    @classmethod
    def from_pandas(cls: type[R], out_dir: PathLike, frame: Any, *, fill_null: Optional[Mapping[str, Any]] = None,
                    **options: Any) -> R:
        """Build a map from a pandas ``DataFrame`` (one field per column; numeric, ``datetime64`` and
        ``timedelta64`` columns become scalar fields, object columns of ``str`` strings fields, of arrays ragged
        fields, of ``bytes`` ragged uint8 fields, of ``datetime.date`` ``datetime64[D]`` fields; time-zone-aware
        timestamps are stored in UTC with their zone in the field, see `mmap_ninja.adapters.tables`). Options as
        `from_dict`.

        A missing value (``None``, ``pd.NA``, ``NaT``; NaN in a float column is a value, not missing) is refused
        with an error naming its row, field and value, so a nullable integer column is never turned into floats:
        ``fill_null={"label": -1}`` stores ``-1`` in its place instead (a value of the field's type exactly)."""
        from mmap_ninja.adapters.tables import records_from_pandas

        return records_from_pandas(cls, out_dir, frame, fill_null, options)  # type: ignore[no-any-return]

    @classmethod
    def from_arrow(cls: type[R], out_dir: PathLike, table: Any, *, fill_null: Optional[Mapping[str, Any]] = None,
                   **options: Any) -> R:
        """Build a map from a ``pyarrow.Table`` (one field per column; numeric columns become scalar fields,
        string columns strings fields, binary columns ragged uint8 fields, list columns ragged fields, fixed-size
        lists fixed-shape fields; timestamps UTC ``datetime64`` at their unit with their zone in the field, dates
        ``datetime64[D]``, see `mmap_ninja.adapters.tables`). Options as `from_dict`.

        A null (a row's value, or an element of a row's list) is refused with an error naming its row and
        field, never cast (an int column with a null would otherwise become floats with NaN):
        ``fill_null={"label": -1}`` stores ``-1`` in place of the field's nulls (of its list elements, for a
        list column); the value must be one of the field's type exactly (2.9 into an integer field is
        refused)."""
        from mmap_ninja.adapters.tables import records_from_arrow

        return records_from_arrow(cls, out_dir, table, fill_null, options)  # type: ignore[no-any-return]

    @classmethod
    def from_image_folder(cls, out_dir: PathLike, root: PathLike, *, batch_size: int = 256, verbose: bool = False,
                          extensions: Optional[Sequence[str]] = None, key: Optional[str] = None,
                          overwrite: bool = False, durable: bool = False, metadata: Optional[dict[str, Any]] = None,
                          baseline_jpeg: bool = False) -> RecordsMmap:
        """Build a map with the fields ``image`` (each file's bytes, not re-encoded), ``label`` (int64 class
        index) and ``path`` (relative to ``root``) from ``root/<class>/<file>``; the class names, sorted as
        torchvision's ``ImageFolder`` sorts them, are the metadata's ``"classes"``; ``key="path"`` indexes the rows
        by path (`index_of`). See `mmap_ninja.ingest.from_image_folder`."""
        schema = {"image": Field.images(baseline_jpeg), "label": Field.scalar(np.int64), "path": Field.strings()}
        return build_image_folder(cls, out_dir, root, schema, batch_size=batch_size, verbose=verbose,
                                  extensions=extensions, key=key, overwrite=overwrite, durable=durable,
                                  metadata=metadata)

    @classmethod
    def from_huggingface(cls, out_dir: PathLike, dataset: Any, **options: Any) -> RecordsMmap:
        """Build a map from a Hugging Face ``datasets.Dataset``, batch by batch (``Image()`` columns keep their
        encoded bytes as images fields). See `mmap_ninja.adapters.ingest.records_from_huggingface`."""
        from mmap_ninja.adapters.ingest import records_from_huggingface

        return records_from_huggingface(out_dir, dataset, **options)

    @classmethod
    def from_parquet(cls, out_dir: PathLike, path: PathLike, **options: Any) -> RecordsMmap:
        """Build a map from a Parquet file, read batch by batch (memory bounded by the batch size). See
        `mmap_ninja.adapters.ingest.records_from_parquet`."""
        from mmap_ninja.adapters.ingest import records_from_parquet

        return records_from_parquet(out_dir, path, **options)


def _ragged_batch(view: RaggedView, positions: np.ndarray[Any, Any], pad_value: Any) -> Any:
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
    return assemble(view.values, starts, sizes, view.checked_shapes(positions, sizes), positions, pad_value, None)


def _compressed_to_arrow(container: Any, field: Field) -> Any:
    """A compressed strings or ragged field as a new Arrow array (``large_string``, ``large_list``)."""
    import pyarrow as pa

    samples = container[:]
    if field.kind == "strings":
        return pa.array(samples, type=pa.large_string())
    bad = next((k for k, sample in enumerate(samples) if sample.ndim != 1), None)
    if bad is not None:
        raise ValueError(f"to_arrow() needs 1-D samples, but sample {bad} has shape {samples[bad].shape}; Arrow's "
                         f"large_list holds one dimension")
    dtype = container.dtype if container.dtype is not None else np.dtype(np.float64)
    sizes = np.fromiter((len(sample) for sample in samples), dtype=np.int64, count=len(samples))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    values = np.concatenate(samples) if samples else np.empty(0, dtype)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.astype(dtype.newbyteorder("="))))


def _images_to_arrow(view: ImagesView) -> Any:
    """The encoded images as a ``large_binary`` array over the mapped data and offsets (no copy)."""
    import pyarrow as pa

    offsets = view.offsets
    if len(offsets) and (offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] > view.size):
        raise view.corrupt("(to_arrow)")
    return pa.Array.from_buffers(pa.large_binary(), view.length,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(view.values)])


def _dictionaries(store: Store, layout: RecordsLayout) -> dict[str, bytes]:
    """The trained dictionaries of the compressed fields, by field name."""
    columns = store.header.columns
    return {name: bytes(store.column(f"{name}.dictionary")) for name, _, _ in layout.fields(store.attrs)
            if f"{name}.dictionary" in columns}
