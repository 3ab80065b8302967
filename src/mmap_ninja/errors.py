"""Every exception mmap_ninja defines, in one module. Those about a map form one tree under `MapError`.

Each one also derives from the builtin exception a caller would catch without knowing mmap_ninja
(``FileNotFoundError``, ``FileExistsError``, ``PermissionError``, ``KeyError``, ``ValueError``, ``TypeError``,
``BlockingIOError``, ``OSError``, ``RuntimeError``), so ``except KeyError`` keeps working where a dict would raise it.
The modules that used to define some of them (``mmap_ninja.storage.checksums.ChecksumMismatchError``,
``mmap_ninja.containers.sharded.SchemaMismatchError``, ...) still export them under their old names.
"""

from __future__ import annotations

__all__ = [
    "CacheOverLimitWarning",
    "ChecksumMismatchError",
    "ClosedMapError",
    "ConversionError",
    "CorruptMapError",
    "FormatVersionError",
    "KindMismatchError",
    "LegacyMapWarning",
    "LockingUnavailableError",
    "MapError",
    "MapExistsError",
    "MapInUseError",
    "MapLockedError",
    "MapMovedError",
    "MissingKeyError",
    "MissingSpecError",
    "NoSuchFieldError",
    "NotAMapError",
    "ReadOnlyMapError",
    "RemoteStorageError",
    "SampleFetchError",
    "SchemaMismatchError",
    "ShardedFolderError",
    "UnfinishedMapError",
    "UnknownFeatureError",
]


class MapError(Exception):
    """Base class of the errors mmap_ninja raises about a map directory.

    Example:

        >>> from mmap_ninja import MapError, MapExistsError, NotAMapError, StringsMmap, open_existing
        >>> StringsMmap.from_strings("taken", ["a"], overwrite=True).close()
        >>> try:
        ...     StringsMmap.from_strings("taken", ["b"])  # no overwrite=True: the map is kept
        ... except MapExistsError as error:
        ...     print(isinstance(error, MapError), isinstance(error, FileExistsError), open_existing("taken")[:])
        True True ['a']
        >>> try:
        ...     open_existing("no_such_map")
        ... except NotAMapError as error:
        ...     print(isinstance(error, FileNotFoundError))
        True
    """


class NotAMapError(MapError, FileNotFoundError):
    """The path does not exist or holds no mmap_ninja map."""


class MapExistsError(MapError, FileExistsError):
    """The path already holds a map (or files mmap_ninja did not write) and the call would not replace it."""


class ReadOnlyMapError(MapError, PermissionError):
    """The map, or this handle of it, does not take writes: ``mode="r"``, a map written by mmap_ninja 0.9.0, an
    unfinished build opened with ``allow_unfinished=True``, a field of a records map, a shard of a sharded map, a
    map at a URL; or the file system refused a write (then ``errno`` and ``filename`` say which)."""


class ClosedMapError(MapError, ValueError):
    """The map (or its store) was closed: ``close()`` or the end of its ``with`` block; reopen it to read again
    (a closed file object raises ``ValueError`` the same way)."""


class MapMovedError(NotAMapError):
    """The map an open handle refers to is no longer at its path: moved (`merge` moves maps into a sharded map's
    ``shards/`` folder) or deleted. The message says where it is now when that can be found."""


class CorruptMapError(MapError, ValueError):
    """A map's header or one of its files is damaged or truncated; the message names the file."""


class ChecksumMismatchError(CorruptMapError):
    """A checked read (``verify_reads=True``) found bytes that do not match their checksum."""


class FormatVersionError(MapError, ValueError):
    """The map was written by a newer version of the format than this mmap_ninja reads (or writes)."""


class UnknownFeatureError(FormatVersionError):
    """The map requires a feature (listed in its header's ``requires``) that this mmap_ninja does not know."""


class MapLockedError(MapError, BlockingIOError):
    """Another writer held the map's lock for longer than ``lock_timeout``."""


class MapInUseError(MapLockedError):
    """A map kept with ``commit="slots"`` cannot be replaced (``overwrite=True``) while a handle, in this process or
    another, still maps its files: a file a reader holds is never deleted or overwritten under it."""


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


class SchemaMismatchError(MapError, ValueError):
    """Maps given to `merge` (or `add_shards`) do not share one kind, dtype, schema and codec."""


class NoSuchFieldError(MapError, KeyError):
    """A records map has no field of that name; the message lists its fields."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class MissingKeyError(MapError, KeyError):
    """No row of a keyed records map (or sharded map) has that key."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class ConversionError(MapError, RuntimeError):
    """The converted map did not read back equal to the source (nothing was published at the destination)."""


class RemoteStorageError(MapError, OSError):
    """Object storage could not be reached or refused a request (no such endpoint, no credentials, no access);
    the message names the URL."""


class SampleFetchError(RuntimeError):
    """Reading one item of the source of a build (``from_indexable``) raised; the message names the index and
    the original error. It is about the caller's data, not a map: not a `MapError`."""


class MissingSpecError(LookupError):
    """A kind registered in `mmap_ninja.kinds.maps.KINDS` has no `KindSpec`, so the conformance tests cannot run on it
    (about the test kit, not a map: not a `MapError`)."""


class CacheOverLimitWarning(ResourceWarning):
    """A block was fetched although the cache is over ``cache_size_limit``: the blocks live readers hold fill it."""


class LegacyMapWarning(UserWarning):
    """A 0.9.0 map shows the traces of an interrupted 0.9.0 write; the reader reads what is complete."""


class LockingUnavailableError(MapError, OSError):
    """This Python has no file-locking facility mmap_ninja can use (no ``fcntl`` module and no ``portalocker``), so
    it cannot write maps safely; reading needs no lock and works."""


# What the Windows-semantics test mode (`mmap_ninja.testing.windows_semantics`) raises where Windows would; exported
# by that module, not by the package.

class WindowsSharingError(PermissionError):
    """What Windows raises for a rename or deletion of a file (or a folder holding one) that is open or mapped:
    ``[WinError 32] The process cannot access the file because it is being used by another process``."""

    winerror = 32


class WindowsMappedFileError(PermissionError):
    """What Windows raises for cutting a file below a mapped section: ``[WinError 1224] The requested operation
    cannot be performed on a file with a user-mapped section open``."""

    winerror = 1224
