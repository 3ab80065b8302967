"""Fields of a records map: `Field` (what a field holds), the schema rules, and the registry of field kinds.

A records map stores each field as the columns of an existing kind (strings, ragged, numpy, images). Everything
a records map must know about one kind of field is a `FieldKind`, registered once by the kind's own module
(`mmap_ninja.kinds.strings`, `mmap_ninja.kinds.ragged`, `mmap_ninja.kinds.numpy`, `mmap_ninja.kinds.images`): which
options a `Field` of
that kind takes, its layout attributes, how a batch of values is checked, how a batch of rows is read, how it
becomes an Arrow array. `RecordsMmap`, `verify` and the adapters ask the registry (`field_kind`) instead of
naming kinds, so a new kind of field is one module that registers a `FieldKind`, plus a spec for the test kit.

Schema inference (when no ``schema=`` is given) looks at the first batch: ``str`` values make a strings field;
Python and NumPy scalars (bool, int, float, complex) and 0-d arrays a scalar field whose dtype is NumPy's for all
of the first batch's values (``[1, 2.5]`` gives float64); arrays and lists of one or more dimensions a *ragged*
field, even when the first batch's shapes agree (one batch cannot tell that later rows keep that shape; declare
``("numpy", dtype, shape)`` for a fixed shape). Building from a dict of columns, an ndarray column of two or more
dimensions makes a fixed-shape numpy field, a 1-D ndarray column of ``str`` (``np.array(["a", "b"])``) a strings
field and any other 1-D ndarray column a scalar field of its dtype. Images fields are never inferred.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np

from mmap_ninja.kinds.casting import as_array, storable_dtype
from mmap_ninja.kinds.codecs import codec_from_option, codec_from_spec
from mmap_ninja.kinds.layouts import Layout, View
from mmap_ninja.storage.format import dtype_from_json

__all__ = ["Field", "FieldKind", "check_field_name", "field_kind", "field_kinds", "infer_schema", "parse_schema",
           "register_field_kind"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SCALAR_TYPES = (bool, int, float, complex, np.generic)
_INFER_ROWS = 1024  # how many rows of a dict of columns schema inference looks at


class FieldKind:
    """Everything a records map needs to know about one kind of field; one instance per kind, registered with
    `register_field_kind` by the module that defines the kind.

    The class attributes say which options a `Field` of this kind takes; the methods are the hooks a records map
    calls. The defaults suit a kind whose samples are arrays of any shape (ragged)."""

    name: ClassVar[str]
    """The kind's name, as headers and `Field.kind` spell it."""
    takes_dtype: ClassVar[bool] = False
    takes_codec: ClassVar[bool] = False
    holds_images: ClassVar[bool] = False  # takes baseline_jpeg= and an encoding
    records_feature: ClassVar[Optional[str]] = None
    """A feature a records map with such a field lists in ``requires`` (beyond what the field's layout needs)."""
    fixed_size_rows: ClassVar[bool] = False
    """Whether every sample has the same bytes count (a new field's default is then written by repetition)."""
    default_quality: ClassVar[Optional[int]] = None
    """For a kind holding encoded images: the quality of its lossy encodings when none is given."""

    @property
    def map_class(self) -> type[Any]:
        """The kind's container class (`StringsMmap`, ...): a field's read-only container is one."""
        raise NotImplementedError

    @property
    def layout(self) -> Layout:
        """The layout storing one field of this kind (its columns, prefixed by the field's name)."""
        layout: Layout = self.map_class.layout
        return layout

    # ------------------------------------------------------------------------------------ the field's options

    def check(self, field: Field) -> None:
        """Raise ``TypeError``/``ValueError`` for options this kind refuses (the shared ones are checked by
        `Field`); may normalize fields with ``object.__setattr__``."""
        if field.shape is not None:
            raise TypeError(f"a {self.name} field has no fixed shape (only numpy fields do)")
        if field.dtype is not None and not self.takes_dtype:
            raise TypeError(f"a {self.name} field has no dtype")
        if field.codec is not None and not self.takes_codec:
            raise TypeError(f"{self.name} fields are not compressed")

    def layout_attrs(self, field: Field) -> dict[str, Any]:
        """The field's attributes as the kind's layout keeps them."""
        raise NotImplementedError

    def from_attrs(self, attrs: dict[str, Any]) -> Field:
        """The field a header's attributes describe."""
        spec = attrs.get("codec")
        dtype = None if attrs.get("dtype") is None else dtype_from_json(attrs["dtype"])
        return Field(self.name, dtype, codec=codec_from_spec(spec) if spec else None)

    def describe(self, field: Field) -> str:
        """A short description of what a value of the field is, as error messages and ``info`` show it."""
        raise NotImplementedError

    def can_be_key(self, field: Field) -> bool:
        """Whether the field's values may key the rows (`RecordsMmap.index_of`)."""
        return False

    keys_are_str: ClassVar[bool] = False
    """Whether a key field of this kind holds ``str`` (else integers)."""

    # ------------------------------------------------------------------------------------ writing

    def check_values(self, name: str, field: Field, values: Any, first: int) -> Any:
        """``values`` (one batch of the field, row ``first`` first) if each is a value the field can hold, else
        an error naming the row and the field. The layout casts and checks further when it encodes them."""
        for k, value in enumerate(values):
            if value is None or isinstance(value, (str, bytes, Mapping)):
                raise TypeError(f"row {first + k}, field {name!r}: expected {field.describe()}, got "
                                f"{type(value).__name__}")
        return values

    def locate_encode_error(self, name: str, values: Any, attrs: dict[str, Any], first: int) -> None:
        """Raise, naming the row, the error the layout gave for a whole batch of the field (when the layout
        checks a batch at once and cannot name the row itself); return if no row can be blamed."""

    # ------------------------------------------------------------------------------------ reading

    def read_batch(self, view: View, positions: np.ndarray[Any, Any], pad_value: Any, decoder: Any) -> Any:
        """The field's values at ``positions`` as one batch (see `RecordsMmap.get_batch`): an array (or a list
        of ``str``), or ``(batch, lengths)`` when ``pad_value`` is not None and the kind pads its samples."""
        raise NotImplementedError

    def pads(self) -> bool:
        """Whether the kind's batches are padded when `RecordsMmap.get_batch` gets ``pad_value``."""
        return False

    def to_arrow(self, container: Any, field: Field) -> Any:
        """The field (its read-only container) as a ``pyarrow`` array, sharing its buffers where it can."""
        raise NotImplementedError


_FIELD_KINDS: dict[str, FieldKind] = {}


def register_field_kind(kind: FieldKind) -> FieldKind:
    """Make ``kind`` usable as a records field (a kind module calls it once, when imported)."""
    _FIELD_KINDS[kind.name] = kind
    return kind


def field_kind(name: str) -> FieldKind:
    """The registered `FieldKind` called ``name``; a ``ValueError`` naming the known ones otherwise."""
    try:
        return _FIELD_KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"a field's kind is one of {sorted(_FIELD_KINDS)}, got {name!r}") from None


def field_kinds() -> tuple[str, ...]:
    """The names of the registered field kinds."""
    return tuple(_FIELD_KINDS)


@dataclass(frozen=True)
class Field:
    """One field of a records map: its ``kind`` (``"strings"``, ``"ragged"``, ``"numpy"`` or ``"images"``), its
    ``dtype`` (ragged: None lets the first value decide; numpy: required), its ``shape`` (numpy only; ``()`` for a
    scalar field), its ``codec`` (strings and ragged only: ``"zstd"``, ``"lz4"`` or a `mmap_ninja.kinds.codecs.Codec`)
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
        kind = field_kind(self.kind)
        if self.dtype is not None:
            object.__setattr__(self, "dtype", storable_dtype(self.dtype, "the field's dtype"))
        kind.check(self)
        if not isinstance(self.baseline_jpeg, bool):
            raise TypeError(f"baseline_jpeg must be True or False, got {self.baseline_jpeg!r}")
        if self.baseline_jpeg and not kind.holds_images:
            raise TypeError(f"baseline_jpeg is an option of images fields, not of {self.kind} fields")
        if self.encoding and not kind.holds_images:
            raise TypeError(f"an encoding is an option of images fields, not of {self.kind} fields")
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
    def images(cls, baseline_jpeg: bool = False, format: Optional[str] = None, quality: Optional[int] = None,
               lossless: bool = False) -> Field:
        """Encoded images, stored as given (files, bytes) or encoded once (arrays, PIL images: PNG, lossless,
        unless ``format="jpeg"`` or ``"webp"`` at ``quality`` (default 95) asks for lossy encoding; see
        `ImagesMmap.from_generator`), decoded on read (see `ImagesMmap`). ``baseline_jpeg=True`` stores
        progressive JPEGs as baseline ones with the same coefficients: the same pixels, decoded 2-3x faster (see
        `ImagesMmap.from_files`)."""
        default_quality = field_kind("images").default_quality
        if format is None and quality in (None, default_quality) and not lossless:
            return cls("images", baseline_jpeg=baseline_jpeg)
        encoding = (None if format is None else format.upper().replace("JPG", "JPEG") if isinstance(format, str)
                    else format, default_quality if quality is None else quality, lossless)
        return cls("images", baseline_jpeg=baseline_jpeg, encoding=encoding)

    @property
    def is_scalar(self) -> bool:
        """Whether each row holds one value (a NumPy field of shape ``()``)."""
        return self.shape == ()

    def layout_attrs(self) -> dict[str, Any]:
        """The field's attributes as its kind's layout keeps them."""
        return field_kind(self.kind).layout_attrs(self)

    @classmethod
    def from_attrs(cls, kind: str, attrs: dict[str, Any]) -> Field:
        """The field a header describes (``attrs`` as its kind's layout keeps them)."""
        return field_kind(kind).from_attrs(attrs)

    def describe(self) -> str:
        """A short description of the field, as ``info`` and error messages show it."""
        return field_kind(self.kind).describe(self)


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


def is_field_name(name: Any) -> bool:
    """Whether ``name`` can name a field (see `check_field_name`)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def parse_schema(schema: Mapping[str, Any]) -> dict[str, Field]:
    """``schema`` (field name -> a `Field`, ``"strings"``, ``"ragged"``, ``("ragged", dtype[, codec])``,
    ``("numpy", dtype, shape)``, ``("scalar", dtype)``, or a scalar type such as ``int`` or ``np.float32``) as
    fields, in order.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja.kinds.fields import parse_schema
        >>> parse_schema({"text": "strings", "label": int})["label"].describe()
        'a scalar of dtype int64'
    """
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
    docstring for the rules.

    Example:

        >>> from mmap_ninja.kinds.fields import infer_schema
        >>> {name: f.describe() for name, f in infer_schema([{"text": "a", "label": 1, "ids": [1, 2]}]).items()}
        {'text': 'str', 'label': 'a scalar of dtype int64', 'ids': 'an array of int64'}
    """
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
