"""A DDP sampler for sharded maps that keeps each rank on whole shards (locality on node-local disks).

`ShardAwareSampler` is not `mmap_ninja.adapters.torch.RankSampler` (formerly ``ShardedSampler``): that one
splits the indices of any dataset between ranks exactly as ``torch.utils.data.DistributedSampler`` does; this one
knows the shards of a `ShardedMap` and gives each rank whole shards first. Both give every rank the same number
of samples, padding by repeating indices (``drop_last=False``) or dropping some (``drop_last=True``) exactly as
much as ``DistributedSampler`` does.

This module imports ``torch``; ``import mmap_ninja`` does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np

from mmap_ninja.extras import missing_extra

try:
    import torch.distributed
    from torch.utils.data import Sampler
except ImportError as error:
    raise missing_extra(error, "mmap_ninja.adapters.shards") from None

__all__ = ["ShardAwareSampler", "shard_aware_indices"]


def _per_rank(n: int, world_size: int, drop_last: bool) -> int:
    """``DistributedSampler``'s number of samples per rank."""
    if drop_last and n % world_size:
        return math.ceil((n - world_size) / world_size)
    return math.ceil(n / world_size)


def shard_aware_indices(shard_lengths: Sequence[int], *, rank: int, world_size: int, epoch: int = 0, seed: int = 0,
                        shuffle: bool = True, drop_last: bool = False) -> np.ndarray[Any, Any]:
    """The indices rank ``rank`` of ``world_size`` reads in ``epoch``, for a sharded map whose shards hold
    ``shard_lengths`` samples (in order), as an int64 array.

    Every rank computes the same plan from ``(seed, epoch)``: the shards (in a seeded random order with
    ``shuffle``) go whole, one by one, to the rank with the fewest samples so far that still has room for the
    shard below its share; the samples of the shards that fit nowhere are then dealt out (shuffled) to fill every
    rank to exactly its share, padded by repeating them from the start, or cut, as ``DistributedSampler`` does.
    A rank reads its whole shards first (each shard's samples shuffled within it), then its share of the rest.
    """
    rank, world_size = int(rank), int(world_size)
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")
    lengths = np.asarray(shard_lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError("shard_lengths must be a sequence of non-negative lengths")
    starts = np.concatenate([[0], np.cumsum(lengths)])
    n = int(starts[-1])
    share = _per_rank(n, world_size, drop_last)
    rng = np.random.default_rng([int(seed), int(epoch)])
    shard_order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))

    loads = [0] * world_size
    owned: list[list[int]] = [[] for _ in range(world_size)]
    leftover_shards: list[int] = []
    for k in shard_order.tolist():
        size = int(lengths[k])
        if size == 0:
            continue
        fits = [r for r in range(world_size) if loads[r] + size <= share]
        if not fits:
            leftover_shards.append(k)
            continue
        target = min(fits, key=lambda r: (loads[r], r))
        owned[target].append(k)
        loads[target] += size

    def samples_of(k: int) -> np.ndarray[Any, Any]:
        block = np.arange(starts[k], starts[k + 1], dtype=np.int64)
        return rng.permutation(block) if shuffle else block

    # Every rank draws the same random numbers in the same order, whichever rank it is.
    blocks = [[samples_of(k) for k in owned[r]] for r in range(world_size)]
    rest = (np.concatenate([samples_of(k) for k in leftover_shards]) if leftover_shards
            else np.empty(0, dtype=np.int64))
    if shuffle:
        rest = rng.permutation(rest)
    needed = share * world_size - sum(loads)
    if needed > len(rest):  # padding: repeat from the start, of the rest or (if none is left) of everything
        source = rest if len(rest) else np.concatenate([np.concatenate(b) for b in blocks if b] or
                                                       [np.empty(0, dtype=np.int64)])
        rest = np.resize(source, needed) if len(source) else rest
    else:
        rest = rest[:needed]
    cut = np.cumsum([0] + [share - loads[r] for r in range(world_size)])
    mine = [*blocks[rank], rest[cut[rank]:cut[rank + 1]]]
    return np.concatenate(mine).astype(np.int64, copy=False)


class ShardAwareSampler(Sampler[int]):
    """A sampler giving rank ``rank`` of ``world_size`` its `shard_aware_indices` of a `ShardedMap` (or of
    anything with ``shard_starts``) in each epoch; call `set_epoch` before each epoch, as with
    ``DistributedSampler``. Every rank gets ``len(sampler)`` samples, as many as ``DistributedSampler`` gives.
    ``rank`` and ``world_size`` default to ``torch.distributed``'s when a process group is initialized, else to
    0 and 1."""

    def __init__(self, sharded_map: Any, rank: Optional[int] = None, world_size: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if rank is None or world_size is None:
            dist = torch.distributed
            initialized = dist.is_available() and dist.is_initialized()
            rank = rank if rank is not None else (dist.get_rank() if initialized else 0)
            world_size = world_size if world_size is not None else (dist.get_world_size() if initialized else 1)
        starts = list(sharded_map.shard_starts)
        self.shard_lengths = [b - a for a, b in zip(starts, starts[1:])]
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.epoch = 0
        shard_aware_indices([], rank=self.rank, world_size=self.world_size)  # checks rank and world_size
        self.num_samples = _per_rank(sum(self.shard_lengths), self.world_size, drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (the same on every rank for the same ``seed``)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray[Any, Any]:
        """This rank's indices of the current epoch, as an int64 array."""
        return shard_aware_indices(self.shard_lengths, rank=self.rank, world_size=self.world_size, epoch=self.epoch,
                                   seed=self.seed, shuffle=self.shuffle, drop_last=self.drop_last)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
