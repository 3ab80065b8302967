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
    return Path(os.path.realpath(absolute(path)))
