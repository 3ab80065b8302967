"""The errors a map handle raises about what it finds on disk when it opens or writes: a map folder that moved
(`moved_error`, which finds where by the files this process maps) and an unfinished build (`unfinished_error`,
which tells one still under way from an interrupted one). Kept apart from `mmap_ninja.storage.store`, which raises them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mmap_ninja.errors import MapError, MapMovedError, UnfinishedMapError
from mmap_ninja.storage.dirs import LOCK_FILE, is_held
from mmap_ninja.storage.format import Header, read_header

__all__ = ["moved_error", "unfinished_error"]

_COLUMN_SUFFIX = ".bin"


def moved_error(path: Path, map_id: Optional[str]) -> MapMovedError:
    """The error for a handle whose map directory ``path`` is gone: moved (by `merge`, into a sharded map) or
    deleted; it names the new place when this process still maps a file of the map with header id ``map_id``."""
    found = _mapped_elsewhere(path, map_id)
    where = f"it is now at {found}; open it there (or open the sharded map that holds it)" if found is not None \
        else "merge() moves maps into a sharded map's shards/ folder: open the sharded map (or the map where it is now)"
    return MapMovedError(f"the map this handle opened at {path} was moved or deleted (the folder no longer exists); "
                         f"{where}")


def _mapped_elsewhere(path: Path, map_id: Optional[str]) -> Optional[Path]:
    """Where the map with header id ``map_id`` is now, found among the files this process maps (Linux names a
    mapped file by its current path, after renames); None when unknown."""
    if map_id is None:
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            folders = {Path(line.split(None, 5)[5].strip()).parent for line in maps
                       if line.rstrip().endswith(_COLUMN_SUFFIX) and len(line.split(None, 5)) == 6}
    except OSError:
        return None
    for folder in sorted(folders):
        if folder == path:
            continue
        try:
            if read_header(folder).id == map_id:
                return folder
        except (MapError, OSError):
            continue
    return None


def _being_built(path: Path) -> bool:
    """Whether a live process holds the writer lock of ``path`` (a build in progress, not an interrupted one)."""
    return is_held(path / LOCK_FILE, exclusively=True)  # no locks here: cannot tell, say no


def unfinished_error(path: Path, header: Header) -> UnfinishedMapError:
    in_progress = _being_built(path)
    state = ("is still being built by another process" if in_progress
             else "is an unfinished build: the from_* call that made it was interrupted or failed")
    error = UnfinishedMapError(
        f"{path} {state}. Re-running the build replaces it (no overwrite=True needed); to read what it committed "
        f"so far, open it with allow_unfinished=True")
    error.in_progress = in_progress
    return error
