"""A map at a URL read by blocks as an instance of its kind's class: `block_class` (made once per kind).

``open_existing(url, fetch="blocks")`` on a `RaggedMmap` gives a ``RemoteBlockRaggedMmap``: a `RemoteBlockMap` (a
read-only `ShardedMap` whose shards are the map's blocks) and a `RaggedMmap` both, so ``isinstance`` and
``open_existing(url, kind=RaggedMmap)`` hold under every fetch mode. Its reads are the sharded map's (each through
the block's own container, with the handle's read options); the kind's other methods are the kind's own:

- a method of one sample (its first argument is ``index``: ``shape(i)``, ``raw(i)``, ``format(i)``) asks the block
  holding the sample, and one of many (``indices``: ``shapes``, ``decoded_shapes``) asks each block it touches and
  joins their answers in order;
- what reads the whole map (``values``, ``offsets``, ``array``, NumPy's operators and functions, ``to_arrow``) reads
  it downloaded whole, once, into the same cache (a `RemoteMap` of the kind, opened with the same options);
- what the header tells (``codec``, ``ndims``, ``key``, ``metadata``) needs no request;
- every write is refused naming the URL, before anything is fetched;
- an array-like kind (`NumpyMmap`) keeps NumPy's indexing: ``m[a:b]``, a list or a mask give one array of the
  samples (read from their blocks), ``m[i, j]`` indexes within sample ``i``; other NumPy indexes read the whole map.
"""

from __future__ import annotations

import inspect
from bisect import bisect_right
from typing import Any, Callable, Optional, cast

import numpy as np

from mmap_ninja.adapters._block_map import RemoteBlockMap
from mmap_ninja.containers.sharded import ShardedMap
from mmap_ninja.containers.sharded_kind import KIND_FACE_NAMES
from mmap_ninja.containers.sharded_rows import NOT_ROWS, array_rows
from mmap_ninja.errors import ReadOnlyMapError
from mmap_ninja.kinds.arraylike import ReadOnlyArrayMixin
from mmap_ninja.kinds.maps import MapBase, resolve_index, resolve_positions

__all__ = ["block_class"]

_BLOCK_CLASSES: dict[type[MapBase], type[RemoteBlockMap]] = {}
_SHARDED_ONLY = ("max_open_shards", "max_open_files")
_KIND_OPTIONAL = ("get_batch", "window", "index_of")
"""The methods a sharded map has for every kind (refusing the call when its shards' kind has none), which a map read
by blocks has only when its kind's class has them (``hasattr(m, "get_batch")`` answers as for the kind's maps)."""


class _Absent:
    """An attribute the kind's class does not have: reading it raises AttributeError, as on the kind's own maps."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        kind = owner.__name__ if owner is not None else type(instance).__name__
        raise AttributeError(f"{kind!r} object has no attribute {self.name!r} (its kind's maps have none)")


def block_class(kind_class: type[MapBase]) -> type[RemoteBlockMap]:
    """The class of a map of ``kind_class`` at a URL read by blocks: `RemoteBlockMap` and ``kind_class`` both.

    Example:

        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters._block_map import RemoteBlockMap
        >>> made = block_class(RaggedMmap)
        >>> made.__name__, issubclass(made, RemoteBlockMap), issubclass(made, RaggedMmap)
        ('RemoteBlockRaggedMmap', True, True)
    """
    made = _BLOCK_CLASSES.get(kind_class)
    if made is None:
        name = f"RemoteBlock{kind_class.__name__}"
        namespace: dict[str, Any] = {
            "__module__": __name__, "__qualname__": name,
            "__doc__": f"A {kind_class.__name__} at a URL read by blocks (see `mmap_ninja.adapters._block_kinds`).",
            "_kind_class": kind_class, "_mode": "r", "_legacy": None,
            "_view": property(_whole_view), "_view_attrs": _view_attrs, "_writable_store": _writable_store,
            "_whole": _whole, "_checker": _checker, "_check_all": _check_all, "flush": _flush, "close": _close,
            "_verify_reads": property(_verify_reads),
        }
        for optional in (*_KIND_OPTIONAL, *KIND_FACE_NAMES):
            if not hasattr(kind_class, optional):
                namespace[optional] = _Absent(optional)
        if hasattr(kind_class, "get_batch"):
            namespace["get_batch"] = _get_batch
        if issubclass(kind_class, ReadOnlyArrayMixin):
            namespace["__getitem__"] = _array_indexing(kind_class.__getitem__)
        if hasattr(kind_class, "to_arrow"):
            namespace["to_arrow"] = _to_arrow
        if hasattr(kind_class, "fields"):
            namespace["project"] = _project
        if hasattr(kind_class, "index_of"):  # a key index numbers the whole map's rows: no block holds it (rows are
            # read by blocks, lookups from the map downloaded whole)
            namespace["index_of"] = _index_of
            namespace["__contains__"] = _contains
        for klass in kind_class.__mro__:
            if klass is MapBase or not issubclass(klass, MapBase):
                continue
            for attribute, value in vars(klass).items():
                # The kind's own attributes, not the sharded map's versions of them (KIND_FACE_NAMES): this map is
                # of the kind itself.
                of_the_kind = attribute in KIND_FACE_NAMES
                if attribute in namespace or attribute.startswith("__") or (hasattr(RemoteBlockMap, attribute)
                                                                            and not of_the_kind):
                    continue
                if attribute.startswith("_"):
                    if not callable(value) and not hasattr(value, "__get__"):  # per-handle state (a decoder)
                        namespace[attribute] = _state_property(attribute, value)
                    continue
                if not inspect.isfunction(value):
                    if of_the_kind and not isinstance(value, (classmethod, staticmethod)):
                        namespace[attribute] = value
                    continue  # properties run as the kind's; classmethods (builders) are the kind's
                first = list(inspect.signature(value).parameters)[1:2]
                if first == ["index"]:
                    namespace[attribute] = _of_one_sample(attribute, value)
                elif first == ["indices"]:
                    namespace[attribute] = _of_samples(attribute, value)
                elif of_the_kind:
                    namespace[attribute] = value
        made = _BLOCK_CLASSES[kind_class] = cast("type[RemoteBlockMap]",
                                                 type(name, (RemoteBlockMap, kind_class), namespace))
    return made


def _whole_map(self: Any) -> Any:
    """The map downloaded whole into the cache (on first use), as a `RemoteMap` of the kind with this handle's
    options: what reads of whole columns read."""
    whole = self.__dict__.get("_whole_remote")
    if whole is None:
        from mmap_ninja.adapters.remote import remote_class

        options = {k: v for k, v in self._options.items() if k not in _SHARDED_ONLY}
        settings = {**self._settings, "fetch": "whole"}
        made = remote_class(self._kind_class)(self._remote, self._cache, self._raw, self.header, None, settings,
                                              options)
        whole = self.__dict__.setdefault("_whole_remote", made)
    return whole


def _whole_view(self: Any) -> Any:
    return _whole_map(self)._view


def _verify_reads(self: Any) -> bool:
    return bool(self._options.get("verify_reads", False))


def _array_indexing(kind_getitem: Callable[..., Any]) -> Callable[..., Any]:
    """``__getitem__`` of an array-like kind read by blocks: NumPy's indexing, as the kind's (see the module)."""

    def __getitem__(self: Any, index: Any) -> Any:
        if type(index) is int:
            return ShardedMap.__getitem__(self, index)
        rows = array_rows(self, index)  # NumPy's indexing of the samples, as a local sharded map's
        if rows is not NOT_ROWS:
            return rows
        if self.wrapper_fn is not None and isinstance(index, (slice, list, range, np.ndarray)):
            return ShardedMap.__getitems__(self, index)
        return kind_getitem(self, index)  # another NumPy index: the kind's, over the map downloaded whole

    __getitem__.__doc__ = kind_getitem.__doc__
    return __getitem__


class _ArrayField(ShardedMap):
    """A NumPy field of a records map read by blocks (``m["label"]``): NumPy's indexing, as the local map's field
    (a `NumpyMmap`) gives, so a slice, a list or a mask reads one array."""

    __getitem__ = _array_indexing(ShardedMap.__getitem__)


class _ArrowField(ShardedMap):
    """A field of a records map read by blocks whose local field has ``to_arrow`` (strings, ragged)."""

    def to_arrow(self) -> Any:
        """The field of the map downloaded whole, as the local field's ``to_arrow`` gives it."""
        return _whole_map(self._source).field(self._field).to_arrow()


def _project(self: Any, name: str) -> ShardedMap:
    """Field ``name`` of a records map read by blocks: the sharded field container, indexed as the kind's field
    and with its ``to_arrow`` when the kind's field has one."""
    projected = ShardedMap.project(self, name)
    if issubclass(projected._cls, ReadOnlyArrayMixin):
        projected.__class__ = _ArrayField
    elif hasattr(projected._cls, "to_arrow"):
        projected.__class__ = _ArrowField
    return projected


def _index_of(self: Any, key: Any) -> int:
    """The row whose key field holds ``key``, as the kind's ``index_of``, from the map downloaded whole (on the
    first lookup): the key index is written in place without checksum records, so its slots could not be checked
    block by block (a damaged empty slot would read as a missing key); the whole download is checked."""
    return int(_whole_map(self).index_of(key))


def _contains(self: Any, key: Any) -> bool:
    """Whether a row has the key ``key`` (a map built with ``key=<field>``), from the map downloaded whole (see
    ``index_of``)."""
    return key in _whole_map(self)


def _view_attrs(self: Any) -> dict[str, Any]:
    return dict(self.header.attrs)


def _whole(self: Any, name: str) -> Any:
    return _whole_map(self)._whole(name)


def _checker(self: Any, view: Any) -> Any:
    return _whole_map(self)._checker(view)


def _check_all(self: Any, view: Any) -> None:
    _whole_map(self)._check_all(view)


def _get_batch(self: Any, indices: Any, *args: Any, **options: Any) -> Any:
    """The sharded map's ``get_batch`` (each block's own, joined); a map with no blocks (no samples) answers as the
    kind's empty map does, from the map downloaded whole (its dtype and sample shape)."""
    if not self.shards:
        return _whole_map(self).get_batch(indices, *args, **options)
    return ShardedMap.get_batch(self, indices, *args, **options)


def _to_arrow(self: Any) -> Any:
    """The map downloaded whole, as the kind's ``to_arrow`` gives it (see the kind's class)."""
    return _whole_map(self).to_arrow()


def _writable_store(self: Any) -> Any:
    raise ReadOnlyMapError(f"{self.url} is a map at a URL, read-only: build or change the map locally and publish it "
                           f"with mmap_ninja.upload(path, url)")


def _flush(self: Any) -> None:
    """Nothing to flush: a map at a URL is read-only."""


def _close(self: Any) -> None:
    """Close the open blocks (and the whole download, if one was made) and release the cache entries."""
    RemoteBlockMap.close(self)
    whole = self.__dict__.get("_whole_remote")
    if whole is not None:
        whole.close()


def _state_property(name: str, default: Any) -> property:
    """A kind's per-handle state (an images map's decoder) as the blocks hold it (they are opened with this handle's
    options); the class default for a map without blocks."""

    def get(self: Any) -> Any:
        if name in self.__dict__:
            return self.__dict__[name]
        source = next(iter(list(self._open.values())), None)
        if source is None and self._header.shards:
            source = self._shard(0)
        return default if source is None else source.__dict__.get(name, default)

    def put(self: Any, value: Any) -> None:
        self.__dict__[name] = value

    return property(get, put)


def _of_one_sample(name: str, kind_method: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Any, index: Any, *args: Any, **kwargs: Any) -> Any:
        position = resolve_index(index, len(self))
        starts = self._starts
        k = bisect_right(starts, position) - 1
        return getattr(self._shard(k), name)(position - starts[k], *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = kind_method.__doc__
    return method


def _of_samples(name: str, kind_method: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Any, indices: Any = slice(None), *args: Any, **kwargs: Any) -> Any:
        positions = resolve_positions(indices, len(self))
        parts = [(rows, getattr(self._shard(k), name)(local, *args, **kwargs))
                 for k, rows, local in self._groups(positions)]
        if not parts:  # no samples: what the kind gives for none
            source = self._shard(0) if self._header.shards else _whole_map(self)
            return getattr(source, name)(positions, *args, **kwargs)
        return _joined(name, parts, len(positions))

    method.__name__ = method.__qualname__ = name
    method.__doc__ = kind_method.__doc__
    return method


def _joined(name: str, parts: list[tuple[np.ndarray[Any, Any], Any]], count: int) -> Any:
    """The answers of several blocks for their samples (``parts``: ``(rows, answer)``) as one, in order."""
    first = parts[0][1]
    if len(parts) == 1:
        return first
    if isinstance(first, np.ndarray):
        for _, part in parts:
            if part.shape[1:] != first.shape[1:]:
                raise ValueError(f"{name}: the samples have different numbers of dimensions ({first.shape[1:]} and "
                                 f"{part.shape[1:]})")
        out = np.empty((count, *first.shape[1:]), dtype=first.dtype)
        for rows, part in parts:
            out[rows] = part
        return out
    joined: list[Optional[Any]] = [None] * count
    for rows, part in parts:
        for row, value in zip(rows.tolist(), part):
            joined[row] = value
    return joined
