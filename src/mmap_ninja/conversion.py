"""``mmap_ninja.conversion``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.tools.conversion`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import ConversionError, MapExistsError
from mmap_ninja.tools.conversion import (
    ARROW_SUFFIXES,
    IMAGE_SUFFIXES,
    JSON_LINES_SUFFIXES,
    PARQUET_SUFFIXES,
    Converted,
    convert,
    source_kind,
)

__all__ = [
    "ARROW_SUFFIXES",
    "IMAGE_SUFFIXES",
    "JSON_LINES_SUFFIXES",
    "PARQUET_SUFFIXES",
    "ConversionError",
    "Converted",
    "MapExistsError",
    "convert",
    "source_kind",
]
