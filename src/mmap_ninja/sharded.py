"""``mmap_ninja.sharded``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.containers.sharded`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.containers.sharded import (
    DEFAULT_MAX_OPEN_FILES,
    DEFAULT_MAX_OPEN_SHARDS,
    FORMAT_VERSION,
    JOURNAL_FILE,
    SHARDS_DIR,
    SHARDS_FILE,
    ShardedMap,
    ShardInfo,
    directory_lock,
    is_sharded,
    merge,
    publish_shards,
    recover_merge,
    shard_schema,
)
from mmap_ninja.errors import (
    CorruptMapError,
    FormatVersionError,
    MapExistsError,
    NotAMapError,
    SchemaMismatchError,
    UnknownFeatureError,
)

__all__ = [
    "DEFAULT_MAX_OPEN_FILES",
    "DEFAULT_MAX_OPEN_SHARDS",
    "FORMAT_VERSION",
    "JOURNAL_FILE",
    "SHARDS_DIR",
    "SHARDS_FILE",
    "CorruptMapError",
    "FormatVersionError",
    "MapExistsError",
    "NotAMapError",
    "SchemaMismatchError",
    "ShardInfo",
    "ShardedMap",
    "UnknownFeatureError",
    "directory_lock",
    "is_sharded",
    "merge",
    "publish_shards",
    "recover_merge",
    "shard_schema",
]
