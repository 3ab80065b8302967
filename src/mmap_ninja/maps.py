"""``mmap_ninja.maps``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.maps`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import (
    ClosedMapError,
    CorruptMapError,
    KindMismatchError,
    MapError,
    NotAMapError,
    ReadOnlyMapError,
    ShardedFolderError,
    UnfinishedMapError,
)
from mmap_ninja.kinds.maps import KINDS, M, MapBase, SampleIndex, SampleIndices, resolve_index, resolve_positions

__all__ = [
    "KINDS",
    "ClosedMapError",
    "CorruptMapError",
    "KindMismatchError",
    "M",
    "MapBase",
    "MapError",
    "NotAMapError",
    "ReadOnlyMapError",
    "SampleIndex",
    "SampleIndices",
    "ShardedFolderError",
    "UnfinishedMapError",
    "resolve_index",
    "resolve_positions",
]

# What pickles of earlier releases name (``__reduce__`` reconstructors); not public API.
from mmap_ninja.kinds.maps import _reopen as _reopen
