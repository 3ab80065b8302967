"""The rest of a kind's read API on a sharded map: what a single map of the shards' kind answers, a sharded map
answers the same, read from the shards.

- ``to_arrow()``: every shard's own ``to_arrow`` (sharing its buffers), joined without a copy: a
  ``pyarrow.ChunkedArray`` with one chunk per shard, or for records shards one ``pyarrow.Table``.
- Methods of one sample (``shape(i)`` of ragged and images maps, ``raw(i)`` and ``format(i)`` of images maps)
  ask the shard holding sample ``i``; methods of many samples (``shapes(indices)``, ``decoded_shapes(indices)``)
  ask each shard once for its rows and join them in the order asked.
- Properties: ``ndims`` (ragged: the union of the shards' own, each read from its header), ``formats`` (images:
  every shard's, in the order they first appear), ``decoder`` (images: the shards' decoder, with the read options
  given), ``key`` (records: the key field's name), and for numpy samples ``shape`` ``(len(m), *sample_shape)``,
  ``sample_shape``, ``ndim``, ``size``, ``itemsize`` and ``nbytes``, from ``shards.json`` without opening a shard.
  NumPy's array methods (``sum``, ``mean``, ...) are not offered: they would join every shard into memory;
  ``m[:]`` is that array.
- Write methods of the kind (``extend_flat``, ``extend_utf8``, ``add_field``) raise `ReadOnlyMapError`, as
  ``append`` and ``extend`` do (`mmap_ninja.containers.sharded_writes`).

Each is there only when the shards' kind has it: on a sharded map of strings ``hasattr(m, "shapes")`` is False, as
on a `StringsMmap`, and reading it raises AttributeError naming the kind.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from typing import Any, Callable, NoReturn, Optional

import numpy as np

from mmap_ninja.kinds.arraylike import ReadOnlyArrayMixin
from mmap_ninja.kinds.maps import MapBase, resolve_index, resolve_positions

__all__ = ["KIND_FACE_NAMES", "KindFace"]


class _OfTheKind:
    """An attribute a sharded map has only when its shards' kind (``_cls``) has one of that name: reading it gives
    ``make(sharded_map)``; on a sharded map of another kind it raises AttributeError, so ``hasattr`` answers as
    for a single map of the kind."""

    def __init__(self, make: Callable[[Any], Any], doc: str):
        self.make = make
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self
        kind_class = instance._cls
        if getattr(kind_class, self.name, None) is None:
            raise AttributeError(f"{type(instance).__name__} of {instance.kind!r} shards has no attribute "
                                 f"{self.name!r}: maps of that kind ({kind_class.__name__}) have none")
        return self.make(instance)


def _of_one_sample(name: str) -> Callable[[Any], Callable[..., Any]]:
    """``m.name(index, ...)``: the shard holding sample ``index`` answers for its own position."""

    def make(sharded: Any) -> Callable[..., Any]:
        def of_one_sample(index: Any, *args: Any, **kwargs: Any) -> Any:
            position = resolve_index(index, len(sharded))
            starts = sharded._starts
            k = bisect_right(starts, position) - 1
            return getattr(sharded._shard(k), name)(position - starts[k], *args, **kwargs)

        of_one_sample.__doc__ = getattr(sharded._cls, name).__doc__
        return of_one_sample

    return make


def _of_samples(name: str) -> Callable[[Any], Callable[..., Any]]:
    """``m.name(indices=slice(None), ...)``: one call per shard the samples lie in, its rows joined in order."""

    def make(sharded: Any) -> Callable[..., np.ndarray[Any, Any]]:
        def of_samples(indices: Any = slice(None), *args: Any, **kwargs: Any) -> np.ndarray[Any, Any]:
            positions = resolve_positions(indices, len(sharded))
            parts = [(rows, getattr(sharded._shard(k), name)(local, *args, **kwargs))
                     for k, rows, local in sharded._groups(positions)]
            if not parts:  # no samples asked: the shards' own empty answer (its dtype and width)
                if not sharded.shards:
                    raise ValueError(f"{sharded.path} holds no shards, so no samples to give {name}() of")
                return getattr(sharded._shard(0), name)(positions, *args, **kwargs)  # type: ignore[no-any-return]
            if len(parts) == 1:
                return parts[0][1]  # type: ignore[no-any-return]
            first = parts[0][1]
            joined = np.empty((len(positions), *first.shape[1:]), dtype=first.dtype)
            for rows, part in parts:
                if part.shape[1:] != first.shape[1:]:
                    raise ValueError(f"{name}() of {sharded.path}: its shards' samples have {first.shape[1]} and "
                                     f"{part.shape[1]} dimensions; ask for the samples of one shard at a time")
                joined[rows] = part
            return joined

        of_samples.__doc__ = getattr(sharded._cls, name).__doc__
        return of_samples

    return make


def _refused(name: str) -> Callable[[Any], Callable[..., NoReturn]]:
    def make(sharded: Any) -> Callable[..., NoReturn]:
        def refused(*args: Any, **kwargs: Any) -> NoReturn:
            sharded._writable_store()
            raise AssertionError("unreachable")  # pragma: no cover - _writable_store always raises

        refused.__doc__ = f"Refused: `ReadOnlyMapError` (a sharded map grows by whole shards, `add_shards`): {name}."
        return refused

    return make


def _to_arrow(sharded: Any) -> Callable[[], Any]:
    def to_arrow() -> Any:
        """Every shard's ``to_arrow()`` (its own buffers, no copy) joined: a ``pyarrow.ChunkedArray`` with one
        chunk per shard, or one ``pyarrow.Table`` for records shards."""
        import pyarrow as pa

        parts = [sharded._shard(k).to_arrow() for k in range(len(sharded.shards))]
        if not parts:
            raise ValueError(f"{sharded.path} holds no shards, so no Arrow type to give an empty array of")
        if isinstance(parts[0], pa.Table):
            return pa.concat_tables(parts)
        chunks = [chunk for part in parts for chunk in (part.chunks if isinstance(part, pa.ChunkedArray) else [part])]
        return pa.chunked_array(chunks, type=parts[0].type)

    return to_arrow


def _formats(sharded: Any) -> list[str]:
    seen: dict[str, None] = {}
    for k, info in enumerate(sharded.shards):
        if info.length:
            seen.update(dict.fromkeys(sharded._shard(k).formats))
    return list(seen)


def _ndims(sharded: Any) -> Optional[list[int]]:
    """Ragged samples: the sorted numbers of dimensions the shards' samples have (each shard's header keeps its
    own), or None when a shard written before format 2.0 does not know its own."""
    found: set[int] = set()
    for k, info in enumerate(sharded.shards):
        if info.length:
            ndims = sharded._shard(k).ndims
            if ndims is None:
                return None
            found.update(ndims)
    return sorted(found)


def _decoder(sharded: Any) -> Any:
    if not sharded.shards:
        raise ValueError(f"{sharded.path} holds no shards, so no decoder: the shards' images map makes it")
    return sharded._shard(0).decoder  # every shard is opened with the same read options


def _sample_shape(sharded: Any) -> tuple[int, ...]:
    return tuple(sharded.attrs.get("sample_shape") or ())


def _array_shape(sharded: Any) -> tuple[int, ...]:
    return (len(sharded), *_sample_shape(sharded))


def _shape(sharded: Any) -> Any:
    """NumPy samples: the array's shape, as `NumpyMmap.shape`; ragged and images: the method of one sample."""
    if issubclass(sharded._cls, ReadOnlyArrayMixin):
        return _array_shape(sharded)
    return _of_one_sample("shape")(sharded)


def _key(sharded: Any) -> Optional[str]:
    key = sharded._cls.layout.key(sharded.attrs)
    if key is None and sharded.shards:  # (shards.json keeps the schema the shards share, not their key)
        return sharded._shard(0).key  # type: ignore[no-any-return]
    return None if key is None else str(key[0])


class KindFace:
    """What `ShardedMap` adds of its shards' kind's API (see the module's docstring)."""

    _cls: type[MapBase]
    _groups: Callable[[np.ndarray[Any, Any]], Iterator[tuple[int, np.ndarray[Any, Any], np.ndarray[Any, Any]]]]
    _shard: Callable[[int], MapBase]

    to_arrow = _OfTheKind(_to_arrow, "The map as Arrow data: the shards' own ``to_arrow``, joined without a copy.")
    shape = _OfTheKind(_shape, "NumPy samples: ``(len(m), *sample_shape)``, as `NumpyMmap.shape`. Ragged and "
                              "images: ``shape(index)``, the shape of one sample, read from its shard's index.")
    shapes = _OfTheKind(_of_samples("shapes"), "The shapes of the samples at ``indices`` (default: all).")
    decoded_shapes = _OfTheKind(_of_samples("decoded_shapes"),
                                "The shapes reads of the images at ``indices`` give with this handle's options.")
    raw = _OfTheKind(_of_one_sample("raw"), "The encoded bytes of image ``index`` (a memoryview, no copy).")
    format = _OfTheKind(_of_one_sample("format"), "The Pillow format name of image ``index``.")
    ndims = _OfTheKind(_ndims, "Ragged samples: the sorted numbers of dimensions the shards' samples have "
                               "(``[]`` while empty), or None when a shard's header does not keep them.")
    formats = _OfTheKind(_formats, "The formats the shards' images are in, in the order they first appear.")
    decoder = _OfTheKind(_decoder, "The decoder the shards use (their ``channels``, ``fast`` and ``decoder`` options).")
    key = _OfTheKind(_key, "The name of the key field the shards were built with (see `index_of`), or None.")
    extend_flat = _OfTheKind(_refused("extend_flat"), "Refused: `ReadOnlyMapError`.")
    extend_utf8 = _OfTheKind(_refused("extend_utf8"), "Refused: `ReadOnlyMapError`.")
    add_field = _OfTheKind(_refused("add_field"), "Refused: `ReadOnlyMapError`.")
    # NumPy samples: the array's description, from shards.json.
    sample_shape = _OfTheKind(_sample_shape, "The shape of one sample.")
    ndim = _OfTheKind(lambda m: 1 + len(_sample_shape(m)), "The number of dimensions, the rows' axis included.")
    size = _OfTheKind(lambda m: int(np.prod(_array_shape(m))), "The number of elements.")
    itemsize = _OfTheKind(lambda m: m.dtype.itemsize, "The size of one element in bytes.")
    nbytes = _OfTheKind(lambda m: int(np.prod(_array_shape(m))) * m.dtype.itemsize, "The elements' size in bytes.")


KIND_FACE_NAMES = frozenset(name for name, value in vars(KindFace).items() if isinstance(value, _OfTheKind))
"""The attributes `KindFace` gives a sharded map: a map that is itself of the kind (one read by blocks) takes the
kind's own instead."""
