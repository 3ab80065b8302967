"""The bytes on disk and the commit protocol: the header and its slots, checksum records, mapped columns, `Store`
(lock, transactions, publishing), file operations per OS, locks, the merge journal. Imports nothing of mmap_ninja
but `errors`.

``from mmap_ninja.storage import Store`` (the path of earlier releases) keeps working: this package
re-exports `mmap_ninja.storage.store`, the module of `Store` (and the exceptions it re-exported)."""

from mmap_ninja.errors import (
    ClosedMapError,
    CorruptMapError,
    FormatVersionError,
    KindMismatchError,
    MapExistsError,
    NotAMapError,
    ReadOnlyMapError,
)
from mmap_ninja.storage.store import (
    CHECKSUMS,
    COLUMN_SUFFIX,
    DEFAULT_LOCK_TIMEOUT,
    DERIVED_PREFIX,
    LOCK_FILE,
    PathLike,
    Store,
    absolute,
    check_lock_timeout,
    fsync_dir,
    fsync_tree,
    is_derived,
    is_url,
    lock_directory,
    resolved,
)

__all__ = [
    "CHECKSUMS",
    "COLUMN_SUFFIX",
    "DEFAULT_LOCK_TIMEOUT",
    "DERIVED_PREFIX",
    "LOCK_FILE",
    "ClosedMapError",
    "CorruptMapError",
    "FormatVersionError",
    "KindMismatchError",
    "MapExistsError",
    "NotAMapError",
    "PathLike",
    "ReadOnlyMapError",
    "Store",
    "absolute",
    "check_lock_timeout",
    "fsync_dir",
    "fsync_tree",
    "is_derived",
    "is_url",
    "lock_directory",
    "resolved",
]
