"""``mmap_ninja.legacy``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.legacy`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import CorruptMapError, LegacyMapWarning, NotAMapError
from mmap_ninja.kinds.legacy import (
    NATIVE_HEADER_FILE,
    TYPE_FILE,
    ZSTD_DICT_FILE,
    ZSTD_LEVEL_FILE,
    LegacyMap,
    LegacyNumpy,
    LegacyRagged,
    LegacyStrings,
    LegacyView,
    PathLike,
    is_legacy_map,
    legacy_write_refusal,
    open_legacy,
    open_np_dir,
    parse_dtype,
)

__all__ = [
    "NATIVE_HEADER_FILE",
    "TYPE_FILE",
    "ZSTD_DICT_FILE",
    "ZSTD_LEVEL_FILE",
    "CorruptMapError",
    "LegacyMap",
    "LegacyMapWarning",
    "LegacyNumpy",
    "LegacyRagged",
    "LegacyStrings",
    "LegacyView",
    "NotAMapError",
    "PathLike",
    "is_legacy_map",
    "legacy_write_refusal",
    "open_legacy",
    "open_np_dir",
    "parse_dtype",
]
