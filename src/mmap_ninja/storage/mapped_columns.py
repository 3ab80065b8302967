"""The column files of a map as a reader holds them: each file open read-only from when its header was read, mapped
lazily and remapped only when it has grown, and a snapshot of all of them at one commit (what a layout builds its
view from). `mmap_ninja.storage.store.Store` owns these; nothing here writes.
"""

from __future__ import annotations

import mmap
import os
import stat
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from mmap_ninja.errors import CorruptMapError

__all__ = ["MappedColumn", "Snapshot"]


class MappedColumn:
    """One column file, held open read-only from when its header was read (so a handle keeps reading its own
    files even if the map is replaced: those are unlinked, never truncated), and (lazily) a mapping of it."""

    __slots__ = ("__weakref__", "_file", "dtype", "fd", "mapped", "released", "size")

    def __init__(self, path: Path | str, dtype: np.dtype[Any]):
        self._file = os.fspath(path)  # a str: joining Paths was a tenth of opening a map (issue 21)
        self.dtype = dtype
        self.mapped: np.ndarray[Any, Any] | None = None  # the whole file as items, when it was last mapped
        self.released = False  # its descriptor was closed once mapped (see `release`); opened again if needed
        self.size = -1  # the file's size in bytes when it was last checked (a regular file then), -1: not checked
        try:
            self.fd: int | None = os.open(self._file, os.O_RDONLY)
        except FileNotFoundError:
            self.fd = None  # reported by the size check, with the file's name
        except IsADirectoryError:
            raise CorruptMapError(f"{path} is not a regular file") from None

    def __del__(self) -> None:
        # A handle dropped without close() (an evicted shard, a map in a finished function) releases it too (a
        # __del__, not a weakref.finalize: that cost a tenth of opening a map, issue 21).
        fd = getattr(self, "fd", None)  # None too when __init__ failed
        self.fd = None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)

    @property
    def path(self) -> Path:
        return Path(self._file)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        self.mapped = None
        self.released = False
        if fd is not None:
            os.close(fd)

    def release(self) -> None:
        """Close the column's descriptor: a mapping keeps its file (Python's mmap holds its own descriptor), so a
        read-only handle that does not grow needs only that one. A later mapping (of a column not read yet, such
        as the checksums ``verify_reads`` reads), remap or size check opens the file again by its path."""
        fd, self.fd = self.fd, None
        if fd is not None:
            self.released = True
            with suppress(OSError):
                os.close(fd)

    def descriptor(self) -> int | None:
        """The column's open descriptor (opened again if it was released); None if the file is missing."""
        if self.fd is None and self.released:
            try:
                fd = os.open(self._file, os.O_RDONLY)
            except FileNotFoundError:
                return None
            self.size, self.fd, self.released = -1, fd, False  # maybe another file: its size is checked anew
        return self.fd

    def descriptors(self) -> int:
        """How many descriptors the column holds: its own, and the one of its mapping."""
        mapped = self.mapped
        return (self.fd is not None) + (mapped is not None and mapped.size > 0)

    def view(self, length: int) -> np.ndarray[Any, Any]:
        mapped = self.mapped
        if mapped is None or len(mapped) < length:
            released = self.released
            mapped = self.mapped = self._map(length)
            if released:  # opened again only to map it (a column mapped lazily): the mapping keeps the file
                self.release()
        return mapped[:length]

    def _map(self, length: int) -> np.ndarray[Any, Any]:
        need = length * self.dtype.itemsize
        fd, size = self.descriptor(), self.size  # read once (threads share the column), in this order
        # Enough: map what the open checked the file holds (not its size then: a writer may have cut a tail since).
        fd, size = (fd, need) if fd is not None and size >= need else self.check(need)
        if size < self.dtype.itemsize:
            empty = np.empty(0, dtype=self.dtype)
            empty.flags.writeable = False
            return empty
        mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        # Read-only, as the mapping is. Arrays handed out earlier keep their own (older) mapping alive.
        return np.frombuffer(mapping, dtype=self.dtype, count=size // self.dtype.itemsize)

    def check(self, need: int) -> tuple[int, int]:
        """Check that the file is a regular file of ``need`` bytes or more; its descriptor and size (noted: `size`)."""
        fd = self.descriptor()
        if fd is None:
            raise CorruptMapError(f"{self.path} is missing (the header lists it as a column)")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptMapError(f"{self.path} is not a regular file")
        if info.st_size < need:
            raise CorruptMapError(f"{self.path} is truncated: it holds {info.st_size} bytes, the header commits "
                                  f"{need}")
        self.size = info.st_size
        return fd, info.st_size


class Snapshot:
    """One state of a map's columns (the `Columns` a layout builds a view from)."""

    __slots__ = ("_columns", "attrs", "lengths", "path")

    def __init__(self, path: Path, columns: dict[str, MappedColumn], lengths: dict[str, int], attrs: dict[str, Any]):
        self.path = path
        self._columns = columns
        self.lengths = lengths
        self.attrs = attrs

    def column(self, name: str) -> np.ndarray[Any, Any]:
        return self._columns[name].view(self.lengths[name])
