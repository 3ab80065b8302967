"""Low-level file writes: whole-buffer positional writes, vectored writes and fsync helpers."""

from __future__ import annotations

import errno
import os
import stat
import sys
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter
from pathlib import Path
from typing import Any, Optional

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.storage._osfile import fsync_directory, fsync_file, pwrite

# One system call writes at most this many bytes (Linux stops at 0x7ffff000 anyway). Bounded well below that: one
# vectored write of a whole 257 MB batch ran at 0.35-4 GB/s under writeback pressure (issue 21). On Linux 6.18 (ext4,
# whose page cache takes folios as large as a write) new pages cost 3x the kernel time in writes of 1 MiB or more per
# call than in writes of 512 KiB or less: 130 MB of token sequences took 0.2-0.28 s of system time written 2 MiB
# per call and 0.05-0.1 s 256 KiB per call; 220 MB of images 0.19-0.43 s (one call of all of them, or 32 MiB calls,
# at times) against 0.06-0.08 s. A few hundred more calls for such a build cost about a millisecond.
_MAX_WRITE = 256 << 10
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # buffers per vectored write
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 1024
_NBYTES = attrgetter("nbytes")


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a no-op on Windows, see `_osfile`)."""
    fsync_directory(path)


_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_FOR_FSYNC = os.O_RDWR if sys.platform == "win32" else os.O_RDONLY  # FlushFileBuffers needs write access


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
            fd = os.open(file, _FOR_FSYNC | _NOFOLLOW)
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


class SizedBuffers(list):  # type: ignore[type-arg]
    """A list of buffers that knows each one's size in bytes (``nbytes``), as an encoder computed them."""

    def __init__(self, buffers: Sequence[Any], nbytes: list[int]):
        super().__init__(buffers)
        self.nbytes = nbytes


def byte_sizes(buffers: Sequence[Any]) -> list[int]:
    """The size in bytes of each buffer (anything exporting the buffer protocol), without a Python step per
    buffer for the common lists of ndarrays or of bytes."""
    if isinstance(buffers, SizedBuffers):
        return buffers.nbytes
    try:
        return list(map(_NBYTES, buffers))  # ndarrays, memoryviews
    except AttributeError:
        pass
    if set(map(type, buffers)) <= {bytes, bytearray}:
        return list(map(len, buffers))
    return [memoryview(b).nbytes for b in buffers]


def write_all(fd: int, buffers: Sequence[Any], offset: int, sizes: Optional[Sequence[int]] = None) -> int:
    """Write ``buffers`` back to back at ``offset``; returns the bytes written. Each buffer is anything that
    exports the buffer protocol (bytes, an ndarray, ...); a C-contiguous one goes to the kernel as it is, with no
    copy. Vectored writes take up to ``_IOV_MAX`` buffers and about ``_MAX_WRITE`` bytes each; a buffer larger
    than that is written alone, in pieces of ``_MAX_WRITE``. ``sizes``: each buffer's byte size, if known.

    A buffer that is not C-contiguous is written as a C-order copy, and when ``buffers`` is a list the copy
    replaces it there, so that hashing ``buffers`` afterwards sees exactly the bytes written."""
    if sizes is None:
        sizes = byte_sizes(buffers)
    count = len(sizes)
    ends = list(accumulate(sizes))
    total = 0
    i = 0
    vectored = hasattr(os, "pwritev")  # none on Windows: buffer by buffer
    while i < count:
        # The longest run from i that fits in one call (at least one buffer).
        stop = bisect_right(ends, total + _MAX_WRITE, i, min(count, i + _IOV_MAX))
        if stop <= i + 1 or not vectored:
            total += pwrite_all(fd, _bytes_view(buffers, i), offset + total)
            i += 1
            continue
        group = buffers[i:stop]
        try:
            written = os.pwritev(fd, group, offset + total)  # takes every buffer before writing anything
        except (BufferError, ValueError):  # a non-contiguous buffer (NumPy's is a ValueError): C-order copies
            group = [_bytes_view(buffers, k) for k in range(i, stop)]
            written = os.pwritev(fd, group, offset + total)
        size = ends[stop - 1] - total
        total += written
        if written < size:  # a short vector write: finish this group buffer by buffer from where it stopped
            skip = written
            for k in range(i, stop):
                if skip >= sizes[k]:
                    skip -= sizes[k]
                    continue
                total += pwrite_all(fd, _bytes_view(buffers, k)[skip:], offset + total)
                skip = 0
        i = stop
    return total


def _bytes_view(buffers: Sequence[Any], k: int) -> memoryview:
    """Buffer ``k`` as bytes (a C-order copy, put back into a list ``buffers``, if it is not C-contiguous)."""
    view = memoryview(buffers[k])
    if not view.c_contiguous:
        copy = view.tobytes()
        if isinstance(buffers, list):
            buffers[k] = copy
        return memoryview(copy)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
