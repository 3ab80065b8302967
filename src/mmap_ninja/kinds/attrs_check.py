"""Type checks of a header's ``attrs``, like the checks `format.parse_header` makes of the top-level keys.

A header is a file in a folder that may come from anyone: every attribute a reader uses is checked to be of the
type FORMAT.md gives it before a layout reads it, so a hostile or damaged header gives a `CorruptMapError` saying
which attribute is wrong, never a ``TypeError`` or ``KeyError`` from deep inside a reader.
"""

from __future__ import annotations

from typing import Any

from mmap_ninja.errors import CorruptMapError

__all__ = ["check_attrs"]

_MAX_NDIM = 64  # NumPy's limit
_CODEC_INT_PARAMS = ("level", "dictionary_size", "train_samples", "train_window")


def _is_int(value: Any) -> bool:
    return type(value) is int


def _refuse(where: str, key: str, value: Any, expected: str) -> CorruptMapError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return CorruptMapError(f"'attrs{where}.{key}' must be {expected}, got {shown}")


def _check_dtype(where: str, key: str, value: Any, nullable: bool = True) -> None:
    from mmap_ninja.storage.format import dtype_from_json

    if value is None and nullable:
        return
    try:
        dtype = dtype_from_json(value)
    except Exception:  # NumPy raises TypeError, ValueError, KeyError, ... for what is not a dtype
        raise _refuse(where, key, value, "a NumPy dtype description") from None
    if dtype.hasobject or dtype.itemsize == 0:
        raise _refuse(where, key, value, "a dtype of fixed, non-zero size without Python objects")


def _check_shape(where: str, key: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) > _MAX_NDIM or not all(_is_int(v) and v >= 0 for v in value):
        raise _refuse(where, key, value, "a list of non-negative integers")


def _check_codec(where: str, value: Any) -> None:
    if value is None:
        return
    from mmap_ninja.kinds.codecs import CODECS

    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise _refuse(where, "codec", value, "an object with a codec 'name'")
    if value["name"] not in CODECS:
        raise _refuse(where, "codec.name", value["name"], f"one of {sorted(CODECS)}")
    for param, given in value.items():
        if param in _CODEC_INT_PARAMS and not _is_int(given):
            raise _refuse(where, f"codec.{param}", given, "an integer")
        if param == "checksum" and not isinstance(given, bool):
            raise _refuse(where, "codec.checksum", given, "true or false")
    from mmap_ninja.kinds.codecs import codec_from_spec

    try:
        codec_from_spec(value)
    except (TypeError, ValueError) as e:
        raise CorruptMapError(f"'attrs{where}.codec' is not a codec this mmap_ninja can read: {e}") from None


def check_attrs(kind: str, attrs: Any, where: str = "") -> None:
    """Check the attributes a reader of ``kind`` uses; a `CorruptMapError` naming the first wrong one.
    Attributes of kinds this code does not know, and keys it does not use, are left alone."""
    if not isinstance(attrs, dict):
        raise CorruptMapError(f"'attrs{where}' must be an object, got {type(attrs).__name__}")
    if kind in ("strings", "ragged"):
        _check_codec(where, attrs.get("codec"))
        if "trained" in attrs and not isinstance(attrs["trained"], bool):
            raise _refuse(where, "trained", attrs["trained"], "true or false")
    if kind == "ragged":
        _check_dtype(where, "dtype", attrs.get("dtype"))
        ndims = attrs.get("ndims")
        if ndims is not None and (not isinstance(ndims, list) or
                                  not all(_is_int(n) and 0 <= n <= _MAX_NDIM for n in ndims)):
            raise _refuse(where, "ndims", ndims, f"a list of numbers of dimensions (0 to {_MAX_NDIM})")
    elif kind == "numpy":
        for key in ("dtype", "expect_dtype"):
            _check_dtype(where, key, attrs.get(key))
        for key in ("sample_shape", "expect_sample_shape"):
            _check_shape(where, key, attrs.get(key))
        if attrs.get("order") not in (None, "C", "F"):
            raise _refuse(where, "order", attrs.get("order"), '"C" or "F"')
    elif kind == "images":
        formats = attrs.get("formats", [])
        if not isinstance(formats, list) or len(formats) > 256 or not all(isinstance(f, str) for f in formats):
            raise _refuse(where, "formats", formats, "a list of at most 256 format names")
        if not isinstance(attrs.get("encode", {}), dict):
            raise _refuse(where, "encode", attrs.get("encode"), "an object")
    elif kind == "records":
        fields = attrs.get("fields")
        if not isinstance(fields, dict):
            raise _refuse(where, "fields", fields, "an object of fields")
        for name, spec in fields.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str) or \
                    not isinstance(spec.get("attrs"), dict):
                raise _refuse(where, f"fields.{name}", spec, "an object with a 'kind' and 'attrs'")
            check_attrs(spec["kind"], spec["attrs"], f"{where}.fields.{name}.attrs")
        index = attrs.get("key")
        if index is not None:
            table = index.get("table") if isinstance(index, dict) else None
            named = index.get("field") if isinstance(index, dict) else None
            if not isinstance(named, str) or named not in fields or not isinstance(table, list) or \
                    len(table) != 2 or not all(_is_int(t) and t >= 0 for t in table):
                raise _refuse(where, "key", index, "an object naming a field, with a 'table' [start, capacity]")
