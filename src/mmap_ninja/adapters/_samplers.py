"""`ResumableSampler`: ``DistributedSampler``'s contract with an exact, elastic, O(1)-memory resume.

The global stream of epoch ``e`` is ``Order(n, seed=seed, epoch=e, shuffle=shuffle)``: position ``p`` of the
stream holds index ``order[p % n]`` (positions past ``n`` are ``DistributedSampler``'s padding, repeating the
epoch from its start). A pass over the epoch that starts at global position ``base`` on ``world_size`` ranks gives
rank ``r`` the positions ``base + r, base + r + world_size, ...``, as many as ``DistributedSampler`` would give for
the ``n - base`` positions left (padded, or cut with ``drop_last``). From ``base = 0`` that is exactly
``DistributedSampler``'s layout (with another permutation). A saved state is the global position reached
(``base`` plus what this rank handed out times ``world_size``), so it means the same on any number of ranks:
loading it with the same world size continues the identical stream, and with another one re-stripes the remaining
positions over the new ranks.

Nothing of size ``n`` is built: each index is computed from its position (`mmap_ninja.Order`), a chunk at a time.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch.distributed
from torch.utils.data import Sampler

from mmap_ninja.containers.order import (
    ORDER_VERSION,
    Order,
    older_order_message,
    order_version_unchanged,
    refuse_older_order_state,
)

__all__ = ["ResumableSampler", "as_int", "resolve_rank"]

STATE_VERSION = 3  # the order version of its orders: 1 is refused, 2 loaded where its order is 3's (large n)
_STATE_KEYS = ("version", "n", "seed", "shuffle", "drop_last", "epoch", "position")
_CHUNK = 1024  # positions computed at once by a running iterator


def as_int(value: Any, name: str) -> int:
    """``value`` as an int: a float, a bool or a string is refused (never truncated or taken as 0/1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``, taking what is not given from ``torch.distributed`` (0 and 1 without a group)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        initialized = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if initialized else 0)
        world_size = world_size if world_size is not None else (dist.get_world_size() if initialized else 1)
    rank, world_size = as_int(rank, "rank"), as_int(world_size, "world_size")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")
    return rank, world_size


def per_rank(remaining: int, world_size: int, drop_last: bool) -> int:
    """``DistributedSampler``'s count per rank for ``remaining`` positions: padded up, or cut with ``drop_last``."""
    remaining = max(remaining, 0)
    return remaining // world_size if drop_last else math.ceil(remaining / world_size)


def _length_of(data_source: Any) -> int:
    if isinstance(data_source, numbers.Integral) and not isinstance(data_source, bool):
        n = int(data_source)
    elif isinstance(data_source, (bool, np.bool_)) or not hasattr(data_source, "__len__"):
        raise TypeError(f"data_source must be a dataset (with len()) or its length (an int), got {data_source!r} "
                        f"({type(data_source).__name__})")
    else:
        n = len(data_source)
    if n < 0:
        raise ValueError(f"the dataset length must be >= 0, got {n}")
    return n


class ResumableSampler(Sampler[int]):
    """A DDP sampler whose place in an epoch is a small state that resumes exactly, on any number of ranks.

    ``ResumableSampler(data_source, *, rank=None, world_size=None, seed=0, shuffle=True, drop_last=False)`` has
    ``torch.utils.data.DistributedSampler``'s contract: every rank gets ``len(sampler)`` indices per epoch (padded by
    repeating the epoch's first indices, or cut with ``drop_last``), the same ``seed`` and epoch give the same order
    on every rank, and `set_epoch` selects the epoch. ``data_source`` is the dataset or its length; ``rank`` and
    ``world_size`` default to ``torch.distributed``'s (0 and 1 without a process group). The order of an epoch is
    computed per position (`mmap_ninja.Order`): O(1) memory and start-up time whatever the dataset's size.

    It is ``Stateful`` in torchdata's sense, so ``StatefulDataLoader`` saves and restores it:

    - `state_dict` is a small JSON-able dict (the dataset length, seed, shuffle, drop_last, epoch, the global
      position reached, a version). `load_state_dict` continues that epoch on the next ``iter()``, with the same
      world size exactly as an uninterrupted run would, with another one by re-striping the remaining positions.
      The state's seed, shuffle and drop_last replace the sampler's; a state for another dataset length is refused.
      A state of an epoch before the one `set_epoch` chose since the last index handed out starts the chosen epoch
      from its beginning (``StatefulDataLoader`` applies a state at ``iter()``, after the loop's ``set_epoch``: a
      checkpoint taken after epoch ``e``'s loop, resumed with ``set_epoch(e + 1)``, reads epoch ``e + 1``).
    - `state_at` gives the state after a number of consumed samples (for a plain ``DataLoader``, which prefetches
      ahead of what the training loop consumed), and `skip` steps over part of the epoch without reading it.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> lengths = (5, 3, 9, 1, 6)
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in lengths], overwrite=True)
        >>> from mmap_ninja.adapters.torch import ResumableSampler
        >>> sampler = ResumableSampler(docs, rank=0, world_size=2, seed=0)
        >>> sampler.set_epoch(1)
        >>> read = iter(sampler)
        >>> len(sampler), [next(read), next(read)]
        (3, [1, 4])
        >>> state = sampler.state_dict()
        >>> state["epoch"], state["position"]
        (1, 4)
        >>> resumed = ResumableSampler(docs, rank=0, world_size=1, seed=0)  # restarted on one rank
        >>> resumed.load_state_dict(state)
        >>> list(resumed)  # the one index of epoch 1 no rank had read
        [3]
    """

    n: int
    rank: int
    world_size: int
    seed: int
    shuffle: bool
    drop_last: bool
    epoch: int
    _base: int
    _taken: int
    _pending: bool
    _generation: int
    _plan: int
    _live: int | None
    _epoch_set: int | None  # set_epoch's epoch since the last index handed out (see load_state_dict)
    _order: Any  # an Order (a BlockOrder in BlockShuffleSampler): len, epoch, seed and take(positions)

    def __init__(self, data_source: Any, *, rank: int | None = None, world_size: int | None = None, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False):
        self.n = _length_of(data_source)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.epoch = 0
        self._base = 0  # global position where the current (or next, if pending) pass starts
        self._taken = 0  # indices this rank handed out in the current pass
        self._pending = False  # the next iter() continues from _base (after load_state_dict, skip)
        self._generation = 0  # bumped by every iter() and load: an older running iterator stops
        self._plan = 0  # bumped by skip: the running iterator recomputes its chunk
        self._live = None  # the generation of the running iterator, if any
        self._epoch_set = None
        self._order = Order(self.n, seed=self.seed, epoch=0, shuffle=self.shuffle)
        self._order_version = ORDER_VERSION  # pickled: a pickle of another order version is refused

    def __getstate__(self) -> dict[str, Any]:
        # A copy has no running iterator: a skip on it moves the next iter()'s start (see `skip`).
        return {**self.__dict__, "_live": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A pickle of another order version (version 1's has no "_order_version") would give other orders.
        refuse_older_order_state(type(self).__name__, state, self._order_lengths(state),
                                 bool(state.get("shuffle", True)))
        self.__dict__.update(state)

    @staticmethod
    def _order_lengths(state: dict[str, Any]) -> list[int] | None:
        """The lengths of the orders a sampler of this pickled ``state`` computes (its dataset's length)."""
        return [int(state["n"])] if "n" in state else None

    def __len__(self) -> int:
        """Indices per rank in a whole epoch (``DistributedSampler``'s count)."""
        return per_rank(self.n, self.world_size, self.drop_last)

    def __repr__(self) -> str:
        return (f"ResumableSampler(n={self.n}, rank={self.rank}, world_size={self.world_size}, seed={self.seed}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, epoch={self.epoch}, position={self.position})")

    # -- where we are --

    def _count(self) -> int:
        """How many indices this rank hands out in the current pass."""
        return per_rank(self.n - self._base, self.world_size, self.drop_last)

    @property
    def position(self) -> int:
        """The global position reached in the current epoch: ``n`` once the epoch is done."""
        if self._taken >= self._count():
            return self.n
        return self._base + self._taken * self.world_size

    def _set_order(self) -> None:
        if self._order.epoch != self.epoch or self._order.seed != self.seed or self._order.shuffle != self.shuffle:
            self._order = Order(self.n, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from its start; after `load_state_dict` of a state of the same epoch (or a
        `skip`), the loaded position is kept."""
        epoch = as_int(epoch, "epoch")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch_set = epoch
        if epoch == self.epoch and self._pending:
            return
        self.epoch = epoch
        self._base, self._taken, self._pending = 0, 0, False
        self._generation += 1

    # -- iteration --

    def __iter__(self) -> Iterator[int]:
        if not self._pending:
            self._base, self._taken = 0, 0
        self._pending = False
        self._generation += 1
        self._set_order()
        return self._stream(self._generation)

    def _stream(self, generation: int) -> Iterator[int]:
        n, world_size = self.n, self.world_size
        self._live = generation
        self._epoch_set = None  # reading: a later load is not one StatefulDataLoader applies after set_epoch
        try:
            while generation == self._generation:
                count, plan = self._count(), self._plan
                if self._taken >= count:
                    return
                ranks_positions = np.arange(self._taken, min(count, self._taken + _CHUNK), dtype=np.int64)
                positions = (self._base + self.rank + ranks_positions * world_size) % n
                for index in self._order.take(positions).tolist():
                    self._taken += 1
                    yield index
                    if plan != self._plan or generation != self._generation:
                        break  # a skip or a load changed the plan: recompute from the new place
        finally:
            if self._live == generation:
                self._live = None

    # -- state --

    def _state(self, position: int) -> dict[str, Any]:
        return {"version": STATE_VERSION, "n": self.n, "seed": self.seed, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "epoch": self.epoch, "position": int(position)}

    def state_dict(self) -> dict[str, Any]:
        """The place reached: small JSON-able data that `load_state_dict` continues from on any world size."""
        return self._state(self.position)

    def state_at(self, samples_consumed: int) -> dict[str, Any]:
        """The state after this rank's training loop consumed ``samples_consumed`` indices of the current pass
        (counted from the epoch's start, or from the loaded position after `load_state_dict`).

        For a plain ``DataLoader``: its workers run ahead of the loop, so `state_dict` would count prefetched
        batches; the loop knows what it consumed.
        """
        samples_consumed = as_int(samples_consumed, "samples_consumed")
        count = self._count()
        if not 0 <= samples_consumed <= count:
            raise ValueError(f"samples_consumed must be in [0, {count}] (this rank's pass has {count} indices), "
                             f"got {samples_consumed}")
        if samples_consumed == count:
            return self._state(self.n)
        return self._state(self._base + samples_consumed * self.world_size)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch saved in ``state`` on the next ``iter()`` (from any world size and rank)."""
        if not isinstance(state, dict):
            raise TypeError(f"ResumableSampler.load_state_dict needs a dict, got {type(state).__name__}")
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"not a ResumableSampler state: missing {', '.join(missing)} (got keys {sorted(state)})")
        if "block_bytes" in state:
            raise ValueError("this is a BlockShuffleSampler state: its positions are in the block order's stream, not "
                             "this sampler's, so it would repeat and skip samples; load it into a BlockShuffleSampler")
        for key in ("n", "position", "epoch", "seed"):
            as_int(state[key], f"ResumableSampler state's {key!r}")
        for key in ("shuffle", "drop_last"):
            if not isinstance(state[key], (bool, np.bool_)):
                raise TypeError(f"ResumableSampler state's {key!r} must be a bool, got {state[key]!r}")
        version = state["version"]
        if version == 1 or (version == 2 and not order_version_unchanged(2, [int(state["n"])], bool(state["shuffle"]))):
            raise ValueError(older_order_message("ResumableSampler", version))
        if not isinstance(version, int) or not 2 <= version <= STATE_VERSION:
            raise ValueError(f"ResumableSampler state version {version!r} is not supported (this mmap_ninja reads "
                             f"versions 2 to {STATE_VERSION}); upgrade mmap_ninja to load it")
        if int(state["n"]) != self.n:
            raise ValueError(f"this ResumableSampler state was saved for a dataset of {int(state['n'])} samples, "
                             f"but this sampler's dataset has {self.n}")
        position, epoch = int(state["position"]), int(state["epoch"])
        if position < 0 or epoch < 0:
            raise ValueError(f"ResumableSampler state has a negative position or epoch: {state}")
        self.seed, self.shuffle, self.drop_last = int(state["seed"]), bool(state["shuffle"]), bool(state["drop_last"])
        chosen = getattr(self, "_epoch_set", None)
        if chosen is not None and chosen > epoch:
            # set_epoch chose a later epoch since the last read: StatefulDataLoader applies a state at iter(), after
            # the training loop's set_epoch, so the state's epoch is over and the chosen one starts at its beginning.
            epoch, position = chosen, 0
        self.epoch = epoch
        self._base, self._taken, self._pending = min(position, self.n), 0, True
        self._generation += 1
        self._set_order()

    def skip(self, num_samples: int) -> None:
        """Step over the next ``num_samples`` positions of the epoch's global stream without reading them (every
        rank calls it with the same number); past the epoch's end the epoch is done. A running iterator continues
        after them; otherwise the next ``iter()`` does."""
        num_samples = as_int(num_samples, "num_samples")
        if num_samples < 0:
            raise ValueError(f"skip needs num_samples >= 0, got {num_samples}")
        self._base, self._taken = min(self.position + num_samples, self.n), 0
        self._plan += 1
        if self._live != self._generation:
            self._pending = True
