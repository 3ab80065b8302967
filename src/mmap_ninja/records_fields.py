"""``mmap_ninja.records_fields``, kept as an import path (pickles of a records map's field containers, ``rec["label"]``,
name its ``open_field``): it re-exports `mmap_ninja.kinds.records_fields`, where the code lives (ARCHITECTURE.md,
"Layers as folders")."""

from mmap_ninja.kinds.records_fields import FieldStore, ReadOnlyField, field_class, open_field

__all__ = ["FieldStore", "ReadOnlyField", "field_class", "open_field"]
