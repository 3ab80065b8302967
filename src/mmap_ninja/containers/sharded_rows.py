"""NumPy's indexing of the samples of a sharded map whose shards are array-like (`NumpyMmap`, or a records map's
numpy field): ``m[a:b]``, a list, a range or a mask of positions give one array of the samples, as `NumpyMmap`
does, instead of a list of them.

A slice gives a read-only array (the shard's own view when the slice lies in one shard, else a read-only copy
joined from the shards), a list, a range or a mask a fresh copy (each shard's ``get_batch``, joined), in the stored
dtype; ``m[rows, j]`` indexes within the samples as NumPy does, and ``m[..., j]`` is ``m[:, ..., j]``.
`ShardedMap`, the sharded maps at a URL and the maps read by blocks all index through `array_rows`.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from mmap_ninja.kinds.maps import resolve_positions

__all__ = ["NOT_ROWS", "array_rows"]

NOT_ROWS: Any = object()
"""What `array_rows` answers for an index it does not read (another NumPy index, or a map with ``wrapper_fn``)."""


def array_rows(sharded: Any, index: Any) -> Any:
    """``sharded[index]`` as `NumpyMmap` answers it, for ``sharded`` a `ShardedMap` of array-like shards; `NOT_ROWS`
    when ``index`` is neither a position nor rows (a slice, list, range or 1-d array, optionally followed by
    indexes within the samples), or when the map applies a ``wrapper_fn`` (its samples may no longer stack)."""
    if sharded.wrapper_fn is not None:
        return NOT_ROWS
    first, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
    if first is Ellipsis:  # NumPy's m[..., j]: the rows' axis, unless the indexes after it fill every axis
        if _axes_indexed(rest) >= sharded.ndim:
            return array_rows(sharded, rest if len(rest) != 1 else rest[0])
        first, rest = slice(None), index if isinstance(index, tuple) else (index,)
    if isinstance(first, (bool, np.bool_)):
        return NOT_ROWS
    try:
        position = operator.index(first)
    except TypeError:
        position = None
    if position is not None:
        sample = sharded[position]
        return sample[rest] if rest else sample
    if (isinstance(first, np.ndarray) and first.ndim != 1) or not isinstance(first, (slice, list, range, np.ndarray)):
        return NOT_ROWS
    positions = resolve_positions(first, len(sharded))
    if not sharded.shards:  # no shard: no dtype or sample shape to give an empty array
        return NOT_ROWS
    batch = _slice_rows(sharded, first, positions) if isinstance(first, slice) else sharded.get_batch(positions)
    return batch[(slice(None), *rest)] if rest else batch


def _axes_indexed(indexes: tuple[Any, ...]) -> int:
    """How many axes NumPy's ``indexes`` (without an Ellipsis) consume: one each, a boolean array its dimensions,
    ``None`` (a new axis) none."""
    return sum(0 if item is None else (item.ndim if isinstance(item, np.ndarray) and item.dtype == bool else 1)
               for item in indexes)


def _slice_rows(sharded: Any, rows: slice, positions: np.ndarray[Any, Any]) -> Any:
    """The samples of slice ``rows`` (at ``positions``): the shard's own read-only slice when they lie in one
    shard, else a read-only array joined from the shards."""
    starts = sharded.shard_starts
    if len(positions):
        k = int(np.searchsorted(starts, positions[0], side="right")) - 1
        local = positions - starts[k]
        if int(local.min()) >= 0 and int(local.max()) < starts[k + 1] - starts[k]:
            step = rows.indices(len(sharded))[2]
            stop = int(local[-1]) + step
            return sharded._shard(k)[int(local[0]):(stop if stop >= 0 else None):step]
    batch = sharded.get_batch(positions)
    batch.flags.writeable = False  # as a slice of one map: a read-only array
    return batch
