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

from mmap_ninja.adapters._samplers import as_int

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

    Example:

        >>> from mmap_ninja.adapters.shards import shard_aware_indices
        >>> shard_lengths = [3, 2]  # samples 0-2 in shard 0, 3-4 in shard 1
        >>> shard_aware_indices(shard_lengths, rank=0, world_size=2, seed=0)
        array([2, 0, 1])
        >>> shard_aware_indices(shard_lengths, rank=1, world_size=2, seed=0)
        array([4, 3, 2])
    """
    rank, world_size = int(rank), int(world_size)
    _check_rank(rank, world_size)
    lengths = np.asarray(shard_lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError("shard_lengths must be a sequence of non-negative lengths")
    starts = np.concatenate([[0], np.cumsum(lengths)])
    pieces = [np.arange(starts[k], starts[k + 1], dtype=np.int64) for k in range(len(lengths))]
    rng = np.random.default_rng([int(seed), int(epoch)])
    return _plan(pieces, world_size, rng, shuffle, drop_last)[rank]


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")


def _plan(pieces: Sequence[np.ndarray[Any, Any]], world_size: int, rng: np.random.Generator, shuffle: bool,
          drop_last: bool) -> list[np.ndarray[Any, Any]]:
    """Every rank's indices: ``pieces`` (each shard's samples to read) placed whole where they fit, the rest dealt
    out (see `shard_aware_indices`)."""
    n = sum(len(piece) for piece in pieces)
    share = _per_rank(n, world_size, drop_last)
    shard_order = rng.permutation(len(pieces)) if shuffle else np.arange(len(pieces))

    loads = [0] * world_size
    owned: list[list[int]] = [[] for _ in range(world_size)]
    leftover_shards: list[int] = []
    for k in shard_order.tolist():
        size = len(pieces[k])
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
        return rng.permutation(pieces[k]) if shuffle else pieces[k]

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
    return [np.concatenate([*blocks[r], rest[cut[r]:cut[r + 1]]]).astype(np.int64, copy=False)
            for r in range(world_size)]


def _staged_plan(shard_lengths: Sequence[int], stages: Sequence[tuple[int, ...]], *, epoch: int, seed: int,
                 shuffle: bool, drop_last: bool) -> list[np.ndarray[Any, Any]]:
    """The plan of the last of ``stages`` (``(world_size, taken)`` or ``(world_size, taken, extra)`` each: every
    rank read ``taken`` samples of its plan, and the ranks below ``extra`` one more): the first is the epoch's plan;
    each later one re-plans, on its world size, the samples no rank of the earlier stages had read (grouped by
    shard)."""
    lengths = np.asarray(shard_lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    pieces = [np.arange(starts[k], starts[k + 1], dtype=np.int64) for k in range(len(lengths))]
    plans = _plan(pieces, stages[0][0], np.random.default_rng([int(seed), int(epoch)]), shuffle, drop_last)
    remaining = np.arange(int(starts[-1]), dtype=np.int64)
    for number, (world_size, *_) in enumerate(stages[1:], start=1):
        taken, extra = stages[number - 1][1], (stages[number - 1][2:] or (0,))[0]
        read = (np.concatenate([plan[:taken + (rank < extra)] for rank, plan in enumerate(plans)]) if plans
                else np.empty(0, dtype=np.int64))
        remaining = np.setdiff1d(remaining, read)
        shard_of = np.searchsorted(starts, remaining, side="right") - 1
        bounds = np.searchsorted(shard_of, np.arange(len(lengths) + 1))
        pieces = [remaining[bounds[k]:bounds[k + 1]] for k in range(len(lengths))]
        plans = _plan(pieces, world_size, np.random.default_rng([int(seed), int(epoch), number]), shuffle, drop_last)
    return plans


class ShardAwareSampler(Sampler[int]):
    """A sampler giving rank ``rank`` of ``world_size`` its `shard_aware_indices` of a `ShardedMap` (or of
    anything with ``shard_starts``) in each epoch; call `set_epoch` before each epoch, as with
    ``DistributedSampler``. Every rank gets ``len(sampler)`` samples, as many as ``DistributedSampler`` gives.
    ``rank`` and ``world_size`` default to ``torch.distributed``'s when a process group is initialized, else to
    0 and 1.

    It is ``Stateful`` (torchdata's protocol), like `mmap_ninja.adapters.torch.ResumableSampler`: `state_dict` is
    JSON-able (the epoch and, per world size the epoch ran on, how many samples each rank had read);
    `load_state_dict` continues that epoch on the next ``iter()``. With the same world size the rest is exactly
    what an uninterrupted run reads; with another one the samples no rank has read yet are planned again on the new
    ranks (whole shards' remainders first, so locality is kept as far as possible): each of them once, the same
    count on every rank (padded or cut as ``DistributedSampler`` does). `state_at` gives the state after a number of
    consumed samples, for a plain ``DataLoader``. A state of an epoch before the one `set_epoch` chose since the last
    sample handed out starts the chosen epoch from its beginning (``StatefulDataLoader`` applies a state after the
    loop's ``set_epoch``), as `ResumableSampler` does.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import merge, np_from_ndarray
        >>> np_from_ndarray("part0", np.arange(3), overwrite=True).close()
        >>> np_from_ndarray("part1", np.arange(3, 5), overwrite=True).close()
        >>> sharded = merge("sharded", ["part0", "part1"])
        >>> from mmap_ninja.adapters.shards import ShardAwareSampler
        >>> sampler = ShardAwareSampler(sharded, rank=0, world_size=2, seed=0)
        >>> sampler.set_epoch(0)
        >>> len(sampler), list(sampler)  # whole shards go to each rank: fewer shards opened per worker
        (3, [2, 0, 1])
    """

    def __init__(self, sharded_map: Any, rank: Optional[int] = None, world_size: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        if rank is None or world_size is None:
            dist = torch.distributed
            initialized = dist.is_available() and dist.is_initialized()
            rank = rank if rank is not None else (dist.get_rank() if initialized else 0)
            world_size = world_size if world_size is not None else (dist.get_world_size() if initialized else 1)
        starts = list(sharded_map.shard_starts)
        self.shard_lengths = [b - a for a, b in zip(starts, starts[1:])]
        self.rank = as_int(rank, "rank")
        self.world_size = as_int(world_size, "world_size")
        self.shuffle = shuffle
        self.seed = as_int(seed, "seed")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds NumPy's generator), got {self.seed}")
        self.drop_last = drop_last
        self.epoch = 0
        _check_rank(self.rank, self.world_size)
        self.n = sum(self.shard_lengths)
        self.num_samples = _per_rank(self.n, self.world_size, drop_last)
        # (world size, samples per rank read[, ranks that read one more]): the last has two items
        self._stages: list[tuple[int, ...]] = [(self.world_size, 0)]
        self._live_generation: Optional[int] = None  # the generation of the running iterator, if any
        self._pending = False
        self._pass_start = 0  # where in its plan this rank's current pass started (the loaded place, or 0)
        self._generation = 0
        self._skips = 0  # bumped by skip: a running iterator recomputes its plan
        self._epoch_set: Optional[int] = None  # set_epoch's epoch since the last index handed out

    def __getstate__(self) -> dict[str, Any]:
        # A copy has no running iterator: a skip on it moves the next iter()'s start (see `skip`).
        return {**self.__dict__, "_live_generation": None}

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (the same on every rank for the same ``seed``); after `load_state_dict` of a
        state of that epoch, the loaded place is kept."""
        epoch = as_int(epoch, "epoch")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch_set = epoch
        if epoch == self.epoch and self._pending:
            return
        self.epoch = epoch
        self._stages, self._pending = [(self.world_size, 0)], False
        self._generation += 1

    def _plan(self) -> np.ndarray[Any, Any]:
        return _staged_plan(self.shard_lengths, self._stages, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle,
                            drop_last=self.drop_last)[self.rank]

    def indices(self) -> np.ndarray[Any, Any]:
        """This rank's indices of the current epoch (of its current plan, after an elastic resume), as int64."""
        return self._plan()

    def __iter__(self) -> Iterator[int]:
        if not self._pending:
            self._stages = [(self.world_size, 0)]
        self._pending = False
        self._pass_start = self._stages[-1][1]
        self._generation += 1
        return self._stream(self._generation)

    def _stream(self, generation: int) -> Iterator[int]:
        self._live_generation = generation
        self._epoch_set = None  # reading: see load_state_dict
        try:
            while generation == self._generation:
                plan, skips = self._plan(), self._skips
                for index in plan[self._stages[-1][1]:].tolist():
                    world_size, taken = self._stages[-1]
                    self._stages[-1] = (world_size, taken + 1)
                    yield index
                    if generation != self._generation or skips != self._skips:
                        break  # a load or a skip changed the place: recompute the plan from there
                else:
                    return
        finally:
            if self._live_generation == generation:
                self._live_generation = None

    def __len__(self) -> int:
        return self.num_samples

    def _state(self, stages: Sequence[tuple[int, ...]]) -> dict[str, Any]:
        version = 2 if any(len(stage) > 2 for stage in stages) else 1  # a skip's partial step needs version 2
        return {"version": version, "n": self.n, "seed": self.seed, "shuffle": bool(self.shuffle),
                "drop_last": bool(self.drop_last), "epoch": self.epoch, "stages": [list(stage) for stage in stages]}

    def state_dict(self) -> dict[str, Any]:
        """The place reached in the epoch: JSON-able; `load_state_dict` continues from it on any world size."""
        return self._state(self._stages)

    def state_at(self, samples_consumed: int) -> dict[str, Any]:
        """The state after this rank consumed ``samples_consumed`` samples of its current plan (from the epoch's
        start, or from the loaded place after `load_state_dict`)."""
        world_size, taken = self._stages[-1]
        start = taken if self._pending else self._pass_start
        plan_length = len(self._plan())
        samples_consumed = as_int(samples_consumed, "samples_consumed")
        if not 0 <= start + samples_consumed <= plan_length:
            raise ValueError(f"samples_consumed must be in [0, {plan_length - start}], got {samples_consumed}")
        return self._state([*self._stages[:-1], (world_size, start + samples_consumed)])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch saved in ``state`` on the next ``iter()``, on this sampler's world size."""
        if not isinstance(state, dict):
            raise TypeError(f"ShardAwareSampler.load_state_dict needs a dict, got {type(state).__name__}")
        missing = [key for key in ("version", "n", "seed", "shuffle", "drop_last", "epoch", "stages")
                   if key not in state]
        if missing:
            raise ValueError(f"not a ShardAwareSampler state: missing {', '.join(missing)}")
        if state["version"] not in (1, 2):
            raise ValueError(f"ShardAwareSampler state version {state['version']!r} is not supported (1 and 2 are)")
        for key in ("n", "seed", "epoch"):
            as_int(state[key], f"ShardAwareSampler state's {key!r}")
        if state["epoch"] < 0 or state["seed"] < 0:
            raise ValueError(f"ShardAwareSampler state has a negative epoch or seed: {state['epoch']}, {state['seed']}")
        if int(state["n"]) != self.n:
            raise ValueError(f"this ShardAwareSampler state was saved for a dataset of {int(state['n'])} samples, "
                             f"but this sampler's sharded map has {self.n}")
        try:
            stages = [tuple(as_int(item, "a stage's count") for item in stage) for stage in state["stages"]]
        except (TypeError, ValueError):
            raise ValueError(f"ShardAwareSampler state has bad stages: {state['stages']!r}") from None
        if not stages or any(len(stage) not in (2, 3) or stage[0] < 1 or min(stage[1:]) < 0
                             or (len(stage) == 3 and stage[2] >= stage[0]) for stage in stages) or len(stages[-1]) != 2:
            raise ValueError(f"ShardAwareSampler state has bad stages: {state['stages']!r}")
        self.seed, self.shuffle, self.drop_last = int(state["seed"]), bool(state["shuffle"]), bool(state["drop_last"])
        chosen = getattr(self, "_epoch_set", None)
        if chosen is not None and chosen > int(state["epoch"]):
            # set_epoch chose a later epoch since the last read: StatefulDataLoader applies a state at iter(), after
            # the training loop's set_epoch, so the state's epoch is over and the chosen one starts at its beginning.
            self.epoch, self._stages, self._pending = chosen, [(self.world_size, 0)], True
            self._generation += 1
            return
        self.epoch = int(state["epoch"])
        if stages[-1][0] != self.world_size:
            stages.append((self.world_size, 0))
        self._stages, self._pending = stages, True
        self._generation += 1

    def skip(self, num_samples: int) -> None:
        """Step over the next ``num_samples`` samples of the epoch's global stream without reading them (every
        rank calls it with the same number); past the epoch's end the epoch is done. A running iterator continues
        after them; otherwise the next ``iter()`` does.

        The global stream interleaves the ranks' plans: its step ``t`` is sample ``t`` of rank 0, of rank 1, ...,
        so a skip of a multiple of ``world_size`` steps every rank over the same count of its plan and the rest is
        exactly what an uninterrupted run reads after them. Otherwise the ranks below the remainder step over one
        more, and the samples no rank has read or skipped are planned again on the same ranks (each once, equal
        counts, shard locality kept as in an elastic resume).
        """
        num_samples = as_int(num_samples, "num_samples")
        if num_samples < 0:
            raise ValueError(f"skip needs num_samples >= 0, got {num_samples}")
        world_size, taken = self._stages[-1]
        plan_length = len(self._plan())
        steps, extra = divmod(taken * world_size + num_samples, world_size)
        if steps >= plan_length:
            steps, extra = plan_length, 0
        stages: list[tuple[int, ...]] = list(self._stages[:-1])
        if extra:
            stages += [(world_size, steps, extra), (world_size, 0)]
        else:
            stages.append((world_size, steps))
        self._stages = stages
        self._skips += 1
        if self._live_generation != self._generation:
            self._pending = True
