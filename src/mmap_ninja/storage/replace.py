"""Replacing a finished map by a new build (``overwrite=True``) without losing it to a build that fails.

The new map is built aside, in a guarded stage beside the old one (``.<name>.replacing-<id>``), and takes the old
map's name only once it is complete: a build that raises (a bad sample, a generator that fails, Ctrl-C) or a
process killed while building leaves the old map exactly as it was (a killed build's stage is swept by the next
replacement of that map). The names are swapped in one step where the system can (Linux ``renameat2`` with
``RENAME_EXCHANGE``, macOS ``renamex_np`` with ``RENAME_SWAP``), else by two renames (the old map aside first);
then the old map's files are deleted (unlinked, never truncated: processes that map them keep reading them).
The old map's writer lock is held from the start of the build to the swap, so a write to the old map waits for it
(then raises `MapLockedError`, as against a build in place) and is never acknowledged and then lost; a writer that
was waiting for that lock finds it is no longer the map's (`dirs.lock_directory` checks the lock file it holds is
the one at the path) and takes the new map's.

Replaced in place instead, as FORMAT.md describes (its files unlinked before the new ones are made): a slot map
(``commit.slots``: Windows' default, where a folder whose files a reader holds cannot be renamed), a map whose
folder holds files it did not write (they stay where they are), and an unfinished build.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import sys
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any, Optional

from mmap_ninja.errors import CorruptMapError, FormatVersionError, NotAMapError
from mmap_ninja.storage._fsio import fsync_dir, fsync_tree
from mmap_ninja.storage.dirs import LOCK_FILE, Stage, foreign_names, lock_directory, release, stage, sweep
from mmap_ninja.storage.format import HEADER_FILE, read_header
from mmap_ninja.storage.header_slots import FEATURE as SLOTS

__all__ = ["Replacement", "replacement_stage", "swap_in"]

_REPLACING = ".replacing-"  # a stage building a map's replacement: .<name>.replacing-<12 hex digits>
_REPLACED = ".replaced-"  # the old map, renamed aside for a two-rename swap


class Replacement:
    """A replacement in progress: the stage its new map is built in, and the old map's writer lock, held from the
    start (a write to the old map waits for it, as for a build in place, and is never lost to the swap) until
    `swap_in` or `discard`."""

    def __init__(self, staged: Stage, lock_fd: int):
        self.staged = staged
        self.lock_fd: Optional[int] = lock_fd

    @property
    def path(self) -> Path:
        """Where the new map is built."""
        return self.staged.path

    def discard(self) -> None:
        """The build failed: delete the stage and release the old map, untouched."""
        self.staged.discard()
        self._release()

    def _release(self) -> None:
        fd, self.lock_fd = self.lock_fd, None
        if fd is not None:
            release(fd)


def replacement_stage(path: Path, lock_timeout: Optional[float]) -> Optional[Replacement]:
    """A replacement of the finished map at ``path``: its writer lock taken (waiting up to ``lock_timeout``
    seconds) and a guarded stage made beside it; or None when the map is replaced in place (see the module's
    docstring), when there is nothing to keep, or when its folder's parent cannot take the stage. Sweeps the
    stages of killed replacements of this map first."""
    try:
        header = read_header(path)
    except (NotAMapError, CorruptMapError, FormatVersionError, NotADirectoryError):
        return None  # nothing to keep, or a map `Store.create` refuses to replace (it says why)
    if header.building or SLOTS in header.requires:
        return None
    own = {LOCK_FILE, HEADER_FILE, HEADER_FILE + ".tmp", *(header.file_of(name) for name in header.columns)}
    if foreign_names(path, own):
        return None
    lock_fd = lock_directory(path, lock_timeout)
    try:
        if read_header(path).id != header.id:  # replaced meanwhile by another writer: decide again
            release(lock_fd)
            return replacement_stage(path, lock_timeout)
        try:
            sweep(path.parent, lambda entry: entry.startswith(f".{path.name}{_REPLACING}"), guarded=True)
            staged = stage(path, _REPLACING, guarded=True, make=True)
        except PermissionError:
            release(lock_fd)
            return None  # a folder whose parent is read-only: replaced in place, inside it
    except BaseException:
        with suppress(OSError):
            release(lock_fd)
        raise
    return Replacement(staged, lock_fd)


def swap_in(replacement: Replacement, *, durable: bool) -> None:
    """Give the complete map built in the replacement's stage its destination's name, in place of the old map
    (whose writer lock the replacement holds), then delete the old map and release the stage and the lock."""
    staged = replacement.staged
    destination = staged.destination
    if durable:
        fsync_tree(staged.path)
    try:
        if _exchange(staged.path, destination):
            old = staged.path
        else:
            old = destination.parent / f".{destination.name}{_REPLACED}{uuid.uuid4().hex[:12]}"
            os.rename(destination, old)
            os.rename(staged.path, destination)
        if durable:
            fsync_dir(destination.parent)
    finally:
        replacement._release()  # writers waiting for the old map's lock find it is no longer the map's, and retry
    shutil.rmtree(old, ignore_errors=True)
    staged.release()


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # Linux renameat2
_RENAME_SWAP = 2  # macOS renamex_np
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EXDEV, getattr(errno, "ENOTSUP", errno.EINVAL)}


def _exchange(first: Path, second: Path) -> bool:
    """Swap the names of two folders in one step; False where this system or file system cannot."""
    function = _swap_function()
    if function is None:
        return False
    if sys.platform == "darwin":
        result = function(os.fsencode(first), os.fsencode(second), _RENAME_SWAP)
    else:
        result = function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in _UNSUPPORTED:
        return False
    raise OSError(error, f"cannot swap {first} and {second}: {os.strerror(error)}")


_swap: list[Any] = []


def _swap_function() -> Any:
    if not _swap:
        function = None
        with suppress(OSError, AttributeError, TypeError):
            if sys.platform.startswith("linux") or sys.platform == "darwin":
                libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
                if sys.platform == "darwin":
                    function = libc.renamex_np
                    function.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
                else:
                    function = libc.renameat2
                    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                         ctypes.c_uint]
                function.restype = ctypes.c_int
        _swap.append(function)
    return _swap[0]
