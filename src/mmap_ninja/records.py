"""``mmap_ninja.records``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.records`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import MissingKeyError, NoSuchFieldError
from mmap_ninja.kinds.records import (
    FEATURE,
    IMAGES_FEATURE,
    Field,
    RecordsLayout,
    RecordsMmap,
    infer_schema,
    parse_schema,
)

__all__ = [
    "FEATURE",
    "IMAGES_FEATURE",
    "Field",
    "MissingKeyError",
    "NoSuchFieldError",
    "RecordsLayout",
    "RecordsMmap",
    "infer_schema",
    "parse_schema",
]
