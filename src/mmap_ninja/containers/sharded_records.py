"""The records API of a sharded map whose shards are records maps (what `merge` and ``from_dask`` build from
`RecordsMmap` maps): ``fields``, ``schema``, ``columns(indices)`` and ``m["field"]``, as one records map offers.

``m["field"]`` is a read-only sharded container of that field: a `mmap_ninja.containers.sharded.ShardedMap` whose shards
are
the field containers of the records shards (``shard["field"]``), so it reads, batches, iterates and pickles as
every sharded map does. `ShardedMap` takes these methods from `RecordsFace`; on a sharded map of another kind
they raise AttributeError (``hasattr(m, "fields")`` is False there, as for a single map of that kind).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable, Optional

import numpy as np

from mmap_ninja.kinds.maps import MapBase, resolve_positions

__all__ = ["RecordsFace"]


class RecordsFace:
    """What a sharded map of records maps adds (see the module's docstring). The sharded map provides the
    attributes below; `project` makes the field's sharded container."""

    _cls: type[MapBase]
    _header: Any
    _length: int
    _field: Optional[str]
    path: Any
    _groups: Callable[[np.ndarray[Any, Any]], Iterator[tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]]]
    _shard: Callable[[int], MapBase]

    def project(self, name: str) -> Any:
        raise NotImplementedError

    def _records_schema(self) -> dict[str, Any]:
        schema_of = getattr(self._cls.layout, "schema", None)
        if schema_of is None or self._field is not None:
            raise AttributeError(f"{self.path} is a sharded map of {self._cls.__name__} shards, which have no "
                                 f"fields; only a sharded map of records maps has")
        schema: dict[str, Any] = schema_of(self._header.attrs)
        return schema

    @property
    def schema(self) -> dict[str, Any]:
        """Field name -> `mmap_ninja.kinds.records.Field`, in order: the schema every shard shares."""
        return self._records_schema()

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, in order."""
        return tuple(self._records_schema())

    def columns(self, indices: Any) -> dict[str, list[Any]]:
        """The rows at ``indices`` (a slice, indices or a mask) as a dict of lists, field -> values, as
        `RecordsMmap.columns` gives them (each shard's rows read with one ``columns`` call)."""
        names = self.fields
        positions = resolve_positions(indices, self._length)
        joined: dict[str, list[Any]] = {name: [None] * len(positions) for name in names}
        for k, rows, local in self._groups(positions) if len(positions) else ():
            part = self._shard(k).columns(local)  # type: ignore[attr-defined]
            if len(rows) == len(positions):
                return {name: list(part[name]) for name in names}
            for name in names:
                column = joined[name]
                for row, value in zip(rows.tolist(), part[name]):
                    column[row] = value
        return joined

    def field(self, name: str) -> Any:
        """Field ``name`` as a read-only sharded container of its kind across the shards (same as ``m[name]``)."""
        try:
            fields = self.fields
        except AttributeError as e:  # m["name"] on a sharded map of another kind: as a single map of it refuses
            raise TypeError(f"a map is indexed by positions, not by the str {name!r}: {e}") from None
        if name not in fields:
            raise KeyError(f"{self.path} has no field {name!r}; its fields are {list(fields)}")
        return self.project(name)
