"""``mmap_ninja.sharded_map``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.containers.sharded_map`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.containers.sharded_map import (
    DEFAULT_MAX_OPEN_FILES,
    DEFAULT_MAX_OPEN_SHARDS,
    ShardedMap,
    register_merge,
)
from mmap_ninja.errors import CorruptMapError, MissingKeyError, NotAMapError, ReadOnlyMapError, UnknownFeatureError

__all__ = [
    "DEFAULT_MAX_OPEN_FILES",
    "DEFAULT_MAX_OPEN_SHARDS",
    "CorruptMapError",
    "MissingKeyError",
    "NotAMapError",
    "ReadOnlyMapError",
    "ShardedMap",
    "UnknownFeatureError",
    "register_merge",
]

# What pickles of earlier releases name (``__reduce__`` reconstructors); not public API.
from mmap_ninja.containers.sharded_map import _field_of as _field_of
from mmap_ninja.containers.sharded_map import _reopen as _reopen
