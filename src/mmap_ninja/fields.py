"""``mmap_ninja.fields``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.fields`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.kinds.fields import (
    Field,
    FieldKind,
    check_field_name,
    field_kind,
    field_kinds,
    infer_schema,
    is_field_name,
    parse_schema,
    register_field_kind,
)

__all__ = [
    "Field",
    "FieldKind",
    "check_field_name",
    "field_kind",
    "field_kinds",
    "infer_schema",
    "is_field_name",
    "parse_schema",
    "register_field_kind",
]
