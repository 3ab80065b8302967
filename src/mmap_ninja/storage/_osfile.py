"""The three file operations that differ between Linux, macOS and Windows: a positional write, an fsync that
reaches the disk, and a directory fsync.

- `pwrite`: ``os.pwrite`` where it exists (POSIX); elsewhere (Windows) a seek and a write, serialized by a lock
  within the process, so threads writing through one descriptor never interleave their seeks. On Windows a
  descriptor from ``os.open`` translates ``\n`` to ``\r\n`` unless opened with ``O_BINARY``; `pwrite` switches it
  to binary mode first, so every byte is written as given.
- `fsync_file`: ``os.fsync`` on Linux and Windows (``FlushFileBuffers``). On macOS ``fsync`` only hands the data
  to the drive, whose cache may lose it at a power cut; ``fcntl(F_FULLFSYNC)`` asks the drive to write its cache
  out, so it is used there, falling back to ``fsync`` on file systems that refuse it (some network and FUSE ones).
- `fsync_directory`: opening a directory and fsyncing it makes renames and new names in it durable on POSIX. On
  Windows a directory cannot be opened with ``os.open``, and NTFS journals its metadata (renames included), so
  it is a no-op there.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["DIRECTORY_FSYNC", "FULL_FSYNC", "HELD_FILES_PINNED", "fsync_directory", "fsync_file", "fsync_path",
           "pwrite"]

#: Whether `fsync_directory` does anything here (False on Windows).
DIRECTORY_FSYNC: bool = sys.platform != "win32"

#: Whether a file that is open or mapped cannot be renamed or deleted here, nor a folder holding one renamed
#: (Windows). The test kit's Windows-semantics mode sets it on Linux, so that the code written for Windows runs
#: there too.
HELD_FILES_PINNED: bool = sys.platform == "win32"


def _full_fsync_command() -> Optional[int]:
    if sys.platform != "darwin":
        return None
    try:
        import fcntl
    except ImportError:
        return None
    command: Optional[int] = getattr(fcntl, "F_FULLFSYNC", None)
    return command


_F_FULLFSYNC = _full_fsync_command()
#: Whether `fsync_file` asks the drive to write its cache out (``F_FULLFSYNC``, macOS).
FULL_FSYNC: bool = _F_FULLFSYNC is not None

_seek_and_write = threading.Lock()


def pwrite(fd: int, data: Any, offset: int) -> int:
    """Write ``data`` (any buffer) at ``offset`` of ``fd`` without moving other writers' positions; returns the
    bytes written (possibly fewer than given, as ``os.pwrite``)."""
    positional: Optional[Callable[[int, Any, int], int]] = getattr(os, "pwrite", None)
    if positional is not None:
        return positional(fd, data, offset)
    with _seek_and_write:
        _binary_mode(fd)
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


def _binary_mode(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)


def fsync_file(fd: int) -> None:
    """Make what was written to ``fd`` durable: ``F_FULLFSYNC`` on macOS (``fsync`` where the file system refuses
    it), ``fsync`` elsewhere."""
    if sys.platform == "darwin" and _F_FULLFSYNC is not None:
        import fcntl

        try:
            fcntl.fcntl(fd, _F_FULLFSYNC)
            return
        except OSError:
            pass
    os.fsync(fd)


def fsync_path(path: Path) -> None:
    """`fsync_file` on the file at ``path``, opened read-only on POSIX and for writing on Windows (whose
    ``FlushFileBuffers`` refuses a handle without write access)."""
    fd = os.open(path, os.O_RDWR if sys.platform == "win32" else os.O_RDONLY)
    try:
        fsync_file(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make a rename or a new name in the directory ``path`` durable (a no-op on Windows: see the module)."""
    if not DIRECTORY_FSYNC:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
