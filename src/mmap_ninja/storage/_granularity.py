"""Finer-grained checksum records (FORMAT.md, "Finer-grained checksum records"): one write's records split near a
fixed byte size, so that a reader fetching a block of a column (a remote map read by ranged requests) can check it
without fetching more than the records around it.

A map records the size it splits at as ``checksums.granularity`` in its header (an optional key: the record layout
is unchanged, so older readers and ``verify`` read such maps as they are). `Store` calls `checksum_records` for
every column a write grows; a write no larger than the granularity keeps its single record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any, Callable

import numpy as np

from mmap_ninja.storage.checksums import column_id

__all__ = ["DEFAULT_GRANULARITY", "checksum_records", "split_points"]

DEFAULT_GRANULARITY = 8 << 20
"""The checksum granularity of new maps, in bytes (a remote reader's default block is the same size)."""

# A column whose items index another one: its values are sample boundaries in that column (in items).
_INDEXES = {"data": "offsets", "dims": "shape_offsets"}

Record = tuple[int, int, int, int, int]


def _flat(buffer: Any) -> np.ndarray[Any, Any]:
    """The bytes of ``buffer`` as a flat uint8 array, without a copy when it is contiguous."""
    try:
        return np.frombuffer(buffer, dtype=np.uint8)
    except (ValueError, BufferError, TypeError):
        return np.ascontiguousarray(buffer).view(np.uint8).reshape(-1)


def _boundaries(name: str, start: int, nbytes: int, itemsize: int, new_items: Mapping[str, Sequence[Any]],
                attrs: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """Byte positions (relative to the write's start, strictly inside it) where a sample of this write starts,
    as far as the write tells: an indexed column's boundaries come from its index's new items, a column of a
    fixed number of items per sample from the number of samples the write adds; otherwise item boundaries."""
    prefix, _, base = name.rpartition(".")
    prefix = prefix + "." if prefix else ""
    index = _INDEXES.get(base)
    if index is not None and prefix + index in new_items:
        ends = np.concatenate([_flat(b) for b in new_items[prefix + index]] or [np.empty(0, np.uint8)])
        ends = ends.view("<i8").astype(np.int64)
        # An index counts the samples' elements, which may be wider than the column's items (ragged data is bytes).
        unit = (start + nbytes) // int(ends[-1]) if len(ends) and ends[-1] > 0 else itemsize
        positions = ends * unit - start
        return positions[(positions > 0) & (positions < nbytes)]
    samples = None
    for candidate in ("offsets", "shape_offsets"):
        buffers = new_items.get(prefix + candidate)
        if buffers is not None:
            samples = sum(_flat(b).nbytes for b in buffers) // 8
            break
    stride = nbytes // samples if samples and nbytes % samples == 0 else itemsize
    shape = attrs.get("sample_shape")
    if name == "data" and isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape):
        with suppress(KeyError, TypeError, ValueError):  # a numpy map: rows of the sample shape, in its dtype
            stride = np.dtype(attrs["dtype"]).itemsize * int(np.prod(shape))
    stride = max(stride, itemsize)
    return np.arange(stride, nbytes, stride, dtype=np.int64)


def split_points(boundaries: np.ndarray[Any, Any], nbytes: int, granularity: int, start: int = 0) -> list[int]:
    """Where to cut ``nbytes`` bytes written at byte ``start`` of a column into pieces near ``granularity`` bytes:
    for every multiple of it in the column (so that blocks of a multiple of it start where records do), the first
    boundary at or after it (relative to ``start``; sorted, without duplicates, strictly between 0 and ``nbytes``)."""
    if not len(boundaries):
        return []
    first = (start // granularity + 1) * granularity
    targets = np.arange(first, start + nbytes, granularity, dtype=np.int64) - start
    found = np.searchsorted(boundaries, targets, side="left")
    found = found[found < len(boundaries)]
    return sorted(set(boundaries[found].tolist()))


def checksum_records(name: str, start: int, buffers: Sequence[Any], sizes: Sequence[int], itemsize: int,
                     hash_buffers: Callable[[Any], int], granularity: int | None,
                     new_items: Mapping[str, Sequence[Any]], attrs: Mapping[str, Any]) -> list[Record]:
    """The checksum records of one write of ``buffers`` (``sizes`` bytes each) to column ``name`` at byte
    ``start``: a single record, or (with a ``granularity``) records cut at the first sample boundary at or after
    every multiple of it in the column (a write crossing none keeps one record), each hashing its own bytes
    (``attrs``: the map's, for a numpy map's sample shape)."""
    nbytes = int(sum(sizes))
    key = column_id(name)
    if granularity is None or not nbytes or start // granularity == (start + nbytes - 1) // granularity:
        return [(key, 0, start, start + nbytes, hash_buffers(buffers))]  # no multiple of the granularity inside
    cuts = split_points(_boundaries(name, start, nbytes, itemsize, new_items, attrs), nbytes, granularity, start)
    if not cuts:
        return [(key, 0, start, start + nbytes, hash_buffers(buffers))]
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    lows, highs = np.array([0, *cuts], dtype=np.int64), np.array([*cuts, nbytes], dtype=np.int64)
    # The buffers holding each record's first and last byte; those two are cut, the ones between hashed as they are
    # (no Python step per buffer: a batch of 10,000 documents spent 0.13 s walking them one by one).
    firsts = np.searchsorted(ends, lows, side="right").tolist()
    lasts = np.searchsorted(ends, highs - 1, side="right").tolist()
    begins = np.concatenate([[0], ends[:-1]]).tolist()
    records: list[Record] = []
    for low, high, first, last in zip(lows.tolist(), highs.tolist(), firsts, lasts):
        head = _flat(buffers[first])
        if first == last:
            pieces = [head[low - begins[first]:high - begins[first]]]
        else:
            tail = _flat(buffers[last])
            pieces = [head[low - begins[first]:], *buffers[first + 1:last], tail[:high - begins[last]]]
        records.append((key, 0, start + low, start + high, hash_buffers(pieces)))
    return records
