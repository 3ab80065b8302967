"""A field of a records map as a read-only container of its kind (``rec["label"]``), reading through the records
map's store: it follows the map's writes and refreshes, checks its reads as the map does, and refuses writes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmap_ninja.errors import ReadOnlyMapError
from mmap_ninja.kinds.fields import FieldKind
from mmap_ninja.kinds.maps import MapBase
from mmap_ninja.kinds.records_layout import FieldColumns
from mmap_ninja.storage.checksums import ReadChecker
from mmap_ninja.storage.store import Store

if TYPE_CHECKING:
    from mmap_ninja.kinds.records import RecordsMmap


class FieldStore(FieldColumns):
    """What a field's read-only container reads through: the records map's store, unprefixed. It keeps the
    records map open while the field's container lives."""

    def __init__(self, records: RecordsMmap, store: Store, field: str):
        super().__init__(store, field)
        self._records = records
        self._store = store
        self._seen = store.header
        self.lock_timeout = store.lock_timeout
        self.durable = store.durable

    @property
    def metadata(self) -> dict[str, Any]:
        return self._store.metadata

    @property
    def header(self) -> Any:
        return self._store.header

    def snapshot(self) -> FieldColumns:
        """The field's columns in one state of the records map (see `Store.snapshot`)."""
        return FieldColumns(self._store.snapshot(), self._field)

    def refresh(self) -> bool:
        """See what other handles and processes committed since this handle last looked; True if anything changed."""
        self._records.refresh()
        seen, self._seen = self._seen, self._store.header
        return self._store.header is not seen

    def close(self) -> None:
        """The store belongs to the records map: closing a field's container leaves it open."""

    def release_descriptors(self) -> None:
        """The records map's store's (see `Store.release_descriptors`)."""
        self._store.release_descriptors()

    def descriptors(self) -> int:
        """The records map's store's descriptors (its fields share them)."""
        return self._store.descriptors()


class ReadOnlyField:
    """A field of a records map as a container of its kind: it reads, and refuses every write."""

    _path: Path
    _field: str
    _records: RecordsMmap

    def _writable_store(self) -> Store:
        raise ReadOnlyMapError(f"field {self._field!r} of the records map {self._path} is read-only: write whole "
                               f"rows through the RecordsMmap (append/extend), so that its fields never drift apart")

    def _read_checker(self, snapshot: Any, algorithm: str, length: int) -> ReadChecker:
        # ``snapshot`` is the field's `FieldColumns`: check the field's own columns in the records map's snapshot.
        return ReadChecker(snapshot._parent, algorithm, length, self._verified,  # type: ignore[attr-defined]
                           prefix=snapshot._prefix)

    def __reduce__(self) -> tuple[Any, ...]:
        return open_field, (self._records, self._field)

    def __repr__(self) -> str:
        return (f"{type(self).__mro__[2].__name__} of field {self._field!r} of RecordsMmap({str(self._path)!r}) "
                f"of length {len(self)}")  # type: ignore[arg-type]


_FIELD_CLASSES: dict[str, type[MapBase]] = {}


def field_class(kind: FieldKind) -> type[MapBase]:
    """The read-only container class of a field of ``kind`` (``Field<Kind>Mmap``, made once per kind)."""
    cls = _FIELD_CLASSES.get(kind.name)
    if cls is None:
        base = kind.map_class
        cls = type(f"Field{base.__name__}", (ReadOnlyField, base),
                   {"__doc__": f"A {kind.name} field of a records map (read-only).", "__module__": __name__})
        _FIELD_CLASSES[kind.name] = cls
    return cls


def open_field(records: RecordsMmap, name: str) -> MapBase:
    return records.field(name)
