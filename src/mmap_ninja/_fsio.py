"""Low-level file writes: whole-buffer positional writes, vectored writes and fsync helpers."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmap_ninja._osfile import fsync_directory, fsync_file, pwrite

# Linux writes at most 0x7ffff000 bytes per write call; stay below that and loop.
_MAX_WRITE = 1 << 30
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # buffers per vectored write
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 1024


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op on Windows, see `_osfile`)."""
    fsync_directory(path)


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        pwrite_all(fd, memoryview(data), 0)
        if durable:
            fsync_file(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
