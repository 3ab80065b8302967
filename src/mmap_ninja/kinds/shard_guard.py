"""What a single map's class knows of sharded maps: the folder of a sharded map is not a map of its own (opening
it names what it holds), and a map that a sharded map lists as a shard is read-only (a write would make the sharded
map refuse it). `mmap_ninja.containers.sharded` builds on `mmap_ninja.kinds.maps`, so it cannot be imported here: it
registers its
reader of ``shards.json`` with `register_sharded_reader` when imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from mmap_ninja.errors import MapError, ReadOnlyMapError, ShardedFolderError
from mmap_ninja.storage.format import SHARDS_FILE

__all__ = ["read_sharded", "refuse_shard", "register_sharded_reader", "sharded_folder_error", "sharded_owner"]

_sharded_reader: Optional[Callable[[Path], tuple[str, list[Path]]]] = None


def register_sharded_reader(reader: Callable[[Path], tuple[str, list[Path]]]) -> None:
    """Called by `mmap_ninja.containers.sharded` (which builds on `mmap_ninja.kinds.maps`, so it cannot be imported
    here) with the
    function reading a sharded folder's ``shards.json``: its kind and its shards' folders. A single map's class
    uses it to name what a sharded folder holds, and to refuse writes to a shard."""
    global _sharded_reader
    _sharded_reader = reader


def read_sharded(directory: Path) -> tuple[str, list[Path]]:
    """The kind and the shards' folders of the sharded map in ``directory``."""
    if _sharded_reader is None:  # `import mmap_ninja` imports mmap_ninja.containers.sharded, which registers it
        raise RuntimeError("mmap_ninja.containers.sharded has not registered its reader of shards.json")
    return _sharded_reader(directory)


def sharded_folder_error(path: Path, kind: str, class_name: str) -> ShardedFolderError:
    """The error of opening the folder ``path`` of a sharded map with the class ``class_name`` of single maps of
    kind ``kind``."""
    held_kind, shard_paths = read_sharded(path)
    shards = len(shard_paths)
    what = f"a sharded map of {shards} {held_kind!r} shard{'s' if shards != 1 else ''}"
    if held_kind != kind:
        what += f", not a {kind!r} map"
    return ShardedFolderError(f"{path} holds {what} (as from_dask and merge build); a {class_name} opens one "
                              f"single map: open it with mmap_ninja.ShardedMap({str(path)!r}) or "
                              f"mmap_ninja.open_existing({str(path)!r})")


def sharded_owner(path: Path) -> Optional[Path]:
    """The sharded map whose ``shards.json`` lists the map in ``path`` as one of its shards (``path``'s parent or
    grandparent folder, as ``merge`` and ``from_dask`` place them), or None."""
    for ancestor in (path.parent, path.parent.parent):
        if not (ancestor / SHARDS_FILE).is_file():
            continue
        try:
            listed = read_sharded(ancestor)[1]
        except (MapError, OSError, ValueError):
            continue  # a damaged top header is verify's to report; it does not make this map a shard
        if path in listed:
            return ancestor
    return None


def refuse_shard(path: Path) -> None:
    """Refuse to write to (or build over) a map that a sharded map lists as a shard: its ``shards.json`` records
    the shard's length and id, so any write would make the sharded map refuse to read it."""
    owner = sharded_owner(path)
    if owner is not None:
        raise ReadOnlyMapError(f"{path} is a shard of the sharded map {owner} (its {SHARDS_FILE} records the shard's "
                               f"length and id), so it is read-only here: a write would break that map; add samples "
                               f"as new shards with ShardedMap({str(owner)!r}).add_shards(...)")
