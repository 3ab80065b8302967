"""The writes a sharded map refuses: every write method a kind's own map has (`append`, `extend`, ``m[i] = v``,
`transaction`, `set_metadata`) raises `ReadOnlyMapError` on a sharded map, local or at a URL, and on a map read by
blocks, as on a map at a URL, instead of an `AttributeError` or a `TypeError`: a sharded map grows by whole shards
(`ShardedMap.add_shards`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from mmap_ninja.errors import ReadOnlyMapError

__all__ = ["RefusedWrites"]


class RefusedWrites:
    """The write methods of a kind's map, each refused with the container's `_writable_store` error."""

    def _writable_store(self) -> NoReturn:
        whole = getattr(self, "_source", None) or self  # a field's container: the sharded map it is a field of
        url = getattr(whole, "url", None)
        where = url or getattr(whole, "_path", "this sharded map")
        field = getattr(self, "_field", None)
        what = f"field {field!r} of the sharded map {where}" if field is not None else f"{where}, a sharded map,"
        how = ("add that map as a shard of the local sharded map (ShardedMap(path, mode='r+').add_shards([map_path])) "
               "and upload it again" if url else
               "add that map as a shard (ShardedMap(path, mode='r+').add_shards([map_path]))")
        raise ReadOnlyMapError(f"{what} is read-only sample by sample: write the samples to a map of its kind, "
                               f"then {how}")

    def append(self, sample: Any) -> None:
        """Refused: `ReadOnlyMapError` (a sharded map grows by whole shards, `add_shards`)."""
        self._writable_store()

    def extend(self, samples: Iterable[Any], verbose: bool = False) -> None:
        """Refused: `ReadOnlyMapError` (a sharded map grows by whole shards, `add_shards`)."""
        self._writable_store()

    def __setitem__(self, index: Any, value: Any) -> None:
        """Refused: `ReadOnlyMapError` (rewrite the sample in its shard's map, opened by its own path)."""
        self._writable_store()

    def transaction(self) -> Any:
        """Refused: `ReadOnlyMapError` (a sharded map is read-only sample by sample)."""
        self._writable_store()

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Refused: `ReadOnlyMapError` (a sharded map is read-only sample by sample)."""
        self._writable_store()
