"""The write path's per-batch work without a Python step per sample (issue 21): cutting samples into batches,
recognising the common batch (every sample an ndarray of the map's dtype, every string encodable) with loops that
run in C, and choosing what goes to the writer: the samples' own buffers, or small samples joined into pieces.

Each check answers only "is this batch the common case"; when it is not, the layout checks sample by sample and its
error names the first bad sample, so the fast path never changes what is accepted or how a refusal reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from operator import attrgetter, countOf
from typing import Any, Optional

import numpy as np

from mmap_ninja.kinds.casting import storable_dtype
from mmap_ninja.storage._fsio import SizedBuffers

__all__ = ["batches", "ndims_of", "uniform_arrays", "utf8_all", "write_pieces"]

# Samples this small on average are joined into pieces of at most _PIECE bytes before they are written: below
# it, a kernel vectored write and a hash update per sample cost more than the joining copy (1M int32 token
# sequences of 1-64 tokens: 0.33 s of pwritev of the samples' buffers against 0.13 s of join + 0.17 s of pwrite).
# Larger samples go to the writer and the hasher as they are, with no copy.
_JOIN_MEAN_BELOW = 1024
_PIECE = 16 << 20
_DTYPE = attrgetter("dtype")
_NDIM = attrgetter("ndim")


def batches(samples: Iterable[Any], batch_size: int) -> Iterator[list[Any]]:
    """``samples`` in lists of ``batch_size`` (the last one shorter): slices of a list or tuple, else taken from
    its iterator (both in C: no Python step per sample)."""
    if type(samples) in (list, tuple):
        sequence: Any = samples
        for start in range(0, len(sequence), batch_size):
            batch = sequence[start:start + batch_size]
            yield batch if type(batch) is list else list(batch)
        return
    iterator = iter(samples)
    batch = list(islice(iterator, batch_size))
    while batch:
        yield batch
        batch = list(islice(iterator, batch_size))


def uniform_arrays(batch: list[Any], dtype: Optional[np.dtype[Any]]) -> Optional[np.dtype[Any]]:
    """The dtype every sample of ``batch`` has, if each is an ``np.ndarray`` (not a subclass) of ``dtype`` (or,
    for None, of the first sample's dtype, when that one can be stored); None otherwise."""
    count = len(batch)
    if not count or countOf(map(type, batch), np.ndarray) != count:
        return None
    if dtype is None:
        try:
            dtype = storable_dtype(batch[0].dtype, "item")
        except TypeError:
            return None
    return dtype if countOf(map(_DTYPE, batch), dtype) == count else None


def ndims_of(arrays: list[Any]) -> set[int]:
    """The numbers of dimensions of ``arrays`` (one pass for the common batch of 1-D samples)."""
    if countOf(map(_NDIM, arrays), 1) == len(arrays):
        return {1} if arrays else set()
    return set(map(_NDIM, arrays))


def utf8_all(texts: list[Any]) -> Optional[list[bytes]]:
    """Every item of ``texts`` as UTF-8 (``str`` subclasses included), or None if one is no ``str`` or holds a
    character UTF-8 cannot encode (a lone surrogate)."""
    try:
        return list(map(str.encode, texts))
    except (TypeError, UnicodeEncodeError):
        return None


def write_pieces(buffers: list[Any], nbytes: np.ndarray[Any, Any]) -> SizedBuffers:
    """What to append for samples whose buffers are ``buffers`` (``nbytes`` bytes each, an int64 array): their
    own buffers, or, for small samples, their bytes joined into a few pieces (same bytes, fewer calls)."""
    count = len(buffers)
    total = int(nbytes.sum())
    if count < 2 or total >= _JOIN_MEAN_BELOW * count:
        return SizedBuffers(buffers, nbytes.tolist())
    if total <= _PIECE:  # one piece (the usual batch): no cuts to find, no slice of the list
        try:
            return SizedBuffers([b"".join(buffers)], [total])
        except (BufferError, TypeError, ValueError):
            return SizedBuffers(buffers, nbytes.tolist())
    ends = np.cumsum(nbytes)
    cuts = [0]
    while cuts[-1] < count:  # each piece: at least one sample, at most about _PIECE bytes
        done = int(ends[cuts[-1] - 1]) if cuts[-1] else 0
        cuts.append(max(cuts[-1] + 1, int(np.searchsorted(ends, done + _PIECE, side="right"))))
    try:
        pieces = [b"".join(buffers[a:b]) for a, b in zip(cuts, cuts[1:])]
    except (BufferError, TypeError, ValueError):  # a non-contiguous sample: the writer copies it in C order
        return SizedBuffers(buffers, nbytes.tolist())
    return SizedBuffers(pieces, [len(piece) for piece in pieces])
