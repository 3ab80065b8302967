"""Local paths of maps: `absolute` (made absolute once, links kept), `resolved` (a map's root, its links resolved
once when the map is opened or created) and `is_url` (a URL is never a local path)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Union

__all__ = ["PathLike", "absolute", "is_url", "resolved"]

PathLike = Union[str, "os.PathLike[str]"]

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL with a scheme (``s3://...``, ``memory://...``, ``file://...``): a string only."""
    return isinstance(path, str) and _URL.match(path) is not None


def absolute(path: PathLike) -> Path:
    """``path`` made absolute once, so that a later ``os.chdir`` changes nothing (symlinks are kept). A URL is
    refused: every local reader and writer comes here, and would otherwise make a folder named ``s3:``."""
    if is_url(path):
        raise ValueError(f"{path} is a URL, not a local path: maps are written in a local directory and published "
                         f"with mmap_ninja.upload(path, url); mmap_ninja.open_existing(url) reads one")
    if isinstance(path, Path) and path.is_absolute() and ".." not in path.parts:
        return path  # already what abspath would make of it (a Path has no "." parts nor repeated slashes)
    return Path(os.path.abspath(os.fspath(path)))


def resolved(path: PathLike) -> Path:
    """``path`` made absolute with every symbolic link in it resolved (``os.path.realpath``): a map's root, resolved
    once when the map is opened or created. The root may be a link (the data on another disk, a link switched
    between versions); the handle keeps to the folder it resolved, whatever the link names later, and the checks
    of its writes (no link, nothing but the map's own files) apply inside that folder. A URL is refused as by
    `absolute`."""
    full = absolute(path)
    name = os.fspath(full)
    found = _resolved_by_kernel(name)
    if found is None:
        return Path(os.path.realpath(name))
    return full if found == name else Path(found)  # (no link on the way: the Path it was given)


_PROC_FD = "/proc/self/fd/"
_DELETED = " (deleted)"
_PATH_FLAGS = getattr(os, "O_PATH", 0) | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _resolved_by_kernel(full: str) -> str | None:
    """The folder ``full`` (absolute, no ``..``) names, as the kernel resolved it: the directory opened with
    ``O_PATH`` (no read access needed, nothing read) and its name read back from ``/proc/self/fd``: three system calls
    where ``os.path.realpath`` makes one ``lstat`` per component of the path in Python (issue 21: a tenth of opening
    a map). None where that is not available or not certain (not Linux, no ``/proc``, no such folder yet, a folder
    removed meanwhile): the caller asks ``os.path.realpath`` then, which gives the same answer slower."""
    if not _PATH_FLAGS & getattr(os, "O_PATH", 0):
        return None
    try:
        fd = os.open(full, _PATH_FLAGS)
    except OSError:
        return None  # missing (a map about to be created), a file, a loop of links: realpath says what it makes of it
    try:
        found = os.readlink(_PROC_FD + str(fd))
    except OSError:
        return None
    finally:
        os.close(fd)
    if not found.startswith("/") or found.endswith(_DELETED):
        return None  # not a path of this process's file system, or a folder unlinked since it was opened
    return found
