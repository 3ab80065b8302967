"""``mmap_ninja.checksums``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.storage.checksums`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import ChecksumMismatchError
from mmap_ninja.storage.checksums import (
    ALGORITHMS,
    RECORD_DTYPE,
    CheckedView,
    Hasher,
    ReadChecker,
    column_id,
    default_algorithm,
    hasher,
)

__all__ = [
    "ALGORITHMS",
    "RECORD_DTYPE",
    "CheckedView",
    "ChecksumMismatchError",
    "Hasher",
    "ReadChecker",
    "column_id",
    "default_algorithm",
    "hasher",
]
