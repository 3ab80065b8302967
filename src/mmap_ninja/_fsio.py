"""Low-level file writes: whole-buffer positional writes, vectored writes and fsync helpers."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmap_ninja._osfile import fsync_directory, fsync_file, pwrite
from mmap_ninja.errors import CorruptMapError

# Linux writes at most 0x7ffff000 bytes per write call; stay below that and loop.
_MAX_WRITE = 1 << 30
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # buffers per vectored write
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 1024


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op on Windows, see `_osfile`)."""
    fsync_directory(path)


_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)


def _not_regular(path: Path, what: str) -> CorruptMapError:
    return CorruptMapError(f"{path} is {what}, not a regular file of the map: mmap_ninja never writes through a "
                           f"link or into anything a map did not create (a map folder from another source may "
                           f"hold one); remove it, or copy the map")


def check_entry(path: Path) -> None:
    """Refuse a write to ``path`` (a rename over it, a deletion) unless it is missing or a regular file: a map's
    writes never touch a symbolic link's target or anything but the map's own files."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise _not_regular(path, f"a symbolic link (to {os.readlink(path)})")
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, "not a file")


def open_inside(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags, mode)`` for a write to a map's own file: refused with a `CorruptMapError` (and
    nothing created or changed) if ``path`` is a symbolic link or not a regular file. ``O_NOFOLLOW`` where the OS
    has it; elsewhere ``lstat`` first."""
    check_entry(path)  # also keeps a FIFO from blocking the open
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK, errno.EISDIR):  # a link made since the check (FreeBSD: EMLINK)
            raise _not_regular(path, "a symbolic link or a folder") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_regular(path, "not a file")
    return fd


def fsync_tree(path: Path) -> None:
    """fsync every regular file below ``path`` (links are not followed), then every folder, deepest first."""
    for folder, _, files in sorted(os.walk(path), key=lambda walked: -len(walked[0])):
        for name in files:
            file = os.path.join(folder, name)
            if not stat.S_ISREG(os.lstat(file).st_mode):
                continue
            fd = os.open(file, os.O_RDONLY | _NOFOLLOW)
            try:
                fsync_file(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def pwrite_all(fd: int, view: memoryview, offset: int) -> int:
    """Write all of ``view`` at ``offset`` (looping over short writes); returns its size."""
    done = 0
    while done < view.nbytes:
        written = pwrite(fd, view[done:done + _MAX_WRITE], offset + done)
        if written <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        done += written
    return done


def write_all(fd: int, buffers: Sequence[Any], offset: int) -> int:
    """Write ``buffers`` back to back at ``offset`` with as few system calls as possible; returns the bytes
    written. Each buffer is anything that exports the buffer protocol (bytes, a contiguous ndarray, ...)."""
    views = [v for v in (memoryview(b).cast("B") for b in buffers) if v.nbytes]
    total = 0
    i = 0
    while i < len(views):
        group = views[i:i + _IOV_MAX]
        size = sum(v.nbytes for v in group)
        if len(group) > 1 and size <= _MAX_WRITE and hasattr(os, "pwritev"):  # no pwritev: buffer by buffer
            written = os.pwritev(fd, group, offset + total)
            total += written
            if written < size:  # a short vector write: finish this group buffer by buffer from where it stopped
                skip = written
                for v in group:
                    if skip >= v.nbytes:
                        skip -= v.nbytes
                        continue
                    total += pwrite_all(fd, v[skip:], offset + total)
                    skip = 0
            i += len(group)
        else:
            total += pwrite_all(fd, views[i], offset + total)
            i += 1
    return total


def replace_file(path: Path, data: bytes, *, durable: bool) -> None:
    """Atomically make ``path`` hold ``data``: write a temporary file beside it and rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    check_entry(path)  # a rename over a link would not touch its target, but the map must not hold one
    fd = open_inside(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        pwrite_all(fd, memoryview(data), 0)
        if durable:
            fsync_file(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
