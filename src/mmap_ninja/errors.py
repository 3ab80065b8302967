"""Every error mmap_ninja raises about a map, in one tree under `MapError`.

Each one also derives from the builtin exception a caller would catch without knowing mmap_ninja
(``FileNotFoundError``, ``ValueError``, ``TypeError``, ``BlockingIOError``).
"""

from __future__ import annotations

__all__ = [
    "CorruptMapError",
    "FormatVersionError",
    "KindMismatchError",
    "MapError",
    "MapLockedError",
    "NotAMapError",
    "ShardedFolderError",
    "UnfinishedMapError",
    "UnknownFeatureError",
]


class MapError(Exception):
    """Base class of the errors mmap_ninja raises about a map directory."""


class NotAMapError(MapError, FileNotFoundError):
    """The path does not exist or holds no mmap_ninja map."""


class CorruptMapError(MapError, ValueError):
    """A map's header or one of its files is damaged or truncated; the message names the file."""


class FormatVersionError(MapError, ValueError):
    """The map was written by a newer version of the format than this mmap_ninja reads (or writes)."""


class UnknownFeatureError(FormatVersionError):
    """The map requires a feature (listed in its header's ``requires``) that this mmap_ninja does not know."""


class MapLockedError(MapError, BlockingIOError):
    """Another writer held the map's lock for longer than ``lock_timeout``."""


class UnfinishedMapError(MapError, ValueError):
    """The map is a build that has not finished: its ``from_*`` call was interrupted or failed, or (``in_progress``)
    is still running in another process."""

    in_progress: bool = False


class KindMismatchError(MapError, TypeError):
    """The directory holds a map of another kind than the class opening it (or it was replaced by one)."""


class ShardedFolderError(KindMismatchError):
    """The class of a single map (``RaggedMmap(path)``, ...) was given the folder of a sharded map (one holding
    ``shards.json``, as ``from_dask`` and ``merge`` build): open it with ``ShardedMap(path)`` or
    ``open_existing(path)``."""
