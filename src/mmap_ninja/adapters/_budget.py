"""`TokenBudgetBatchSampler`: batches of whole documents under a token budget, grouped by length, resumable.
Re-exported by `mmap_ninja.adapters.torch`.

An epoch's order is `mmap_ninja.Order` (a pure function of seed and epoch, nothing materialized), cut into pools of
``pool_size`` consecutive positions. Each pool is planned on its own, from its samples' lengths (read from the map's
offsets): sorted by length, cut greedily into batches whose padded size (longest times count) stays within
``max_tokens``, the number of batches made a multiple of ``world_size`` (by halving the largest batches; a pool
too small to split is padded with repeated batches, or dropped with ``drop_last``), and runs of ``world_size``
neighbouring batches shuffled as units. Rank ``r`` takes batch ``j * world_size + r`` of each pool, so every rank
gets the same number of batches, and the batches of one step have similar lengths on every rank. Memory is one
pool's plan; nothing of the dataset's size is built.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

import numpy as np
from torch.utils.data import Sampler

from mmap_ninja.adapters._samplers import resolve_rank
from mmap_ninja.containers.order import (
    ORDER_VERSION,
    Order,
    older_order_message,
    order_version_unchanged,
    refuse_older_order_state,
)

__all__ = ["PaddingReport", "TokenBudgetBatchSampler"]

STATE_VERSION = 3  # the order version of its orders: 1 is refused, 2 loaded where its order is 3's (large n)
DEFAULT_POOL_SIZE = 1 << 16
# Lengths are checked against max_tokens this many at a time (bounded memory at construction).
_SCAN_CHUNK = 1 << 20


class PaddingReport(NamedTuple):
    """The tokens of one epoch's batches (every rank's): real ones, and real plus padding.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> lengths = (5, 3, 9, 1, 6)
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in lengths], overwrite=True)
        >>> from mmap_ninja.adapters.torch import TokenBudgetBatchSampler
        >>> report = TokenBudgetBatchSampler(docs, max_tokens=16, rank=0, world_size=1, seed=0).padding_report()
        >>> report
        PaddingReport(batches=3, real_tokens=24, padded_tokens=30)
    """

    batches: int
    real_tokens: int
    padded_tokens: int

    @property
    def padding_share(self) -> float:
        """pad ÷ (pad + real tokens): the share of a padded batch that is padding."""
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of whole samples of ``tokens`` (a `RaggedMmap` of token sequences without a codec, or a sharded map
    of them) whose padded size, longest sample times batch size, is at most ``max_tokens``; pass it as a
    DataLoader's ``batch_sampler``.

    - Similar lengths are grouped within pools of ``pool_size`` samples drawn from the epoch's `mmap_ninja.Order`
      (``seed``, ``epoch``, ``shuffle``), so memory is bounded by the pool, not by the dataset. Lengths are read
      from the map's offsets without a copy; an empty sample counts as one token.
    - A sample longer than ``max_tokens`` is refused at construction (a ValueError naming it; one pass over the
      offsets, a chunk at a time).
    - Every rank gets the same number of batches in every epoch, by construction: each pool's batch count is a
      multiple of ``world_size`` (``rank`` and ``world_size`` default to ``torch.distributed``'s, else 0 and 1).
      Splitting a batch never adds padding. Only a pool with fewer samples than ranks left needs more: it is padded
      with repeated batches, or with ``drop_last=True`` those batches are dropped.
    - ``set_epoch(e)`` before each epoch; `skip` steps over batches without reading them; `padding_report` gives an
      epoch's padding share.
    - ``state_dict()`` / ``load_state_dict(state)`` (torchdata's ``Stateful``, so ``StatefulDataLoader`` saves
      and restores it): the state is small JSON data (the pool reached and how many of its batches were handed out);
      a loaded state continues the same epoch exactly, with the same or another ``world_size`` (the rest of the
      current pool is planned again for the new number of ranks, so each sample still comes once). A state of
      another map length, ``max_tokens`` or ``pool_size`` is refused, naming both values. ``set_epoch(e)`` after
      loading a state of epoch ``e`` keeps the loaded position; a state older than the epoch last given to
      ``set_epoch`` (StatefulDataLoader applies its state when the next iteration starts, after the training loop
      set the next epoch) leaves that epoch to start from its beginning.

    ``len()`` is the number of batches this rank gets in a whole epoch (computed once per epoch by planning every
    pool: O(n) time, one pool of memory).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> lengths = (5, 3, 9, 1, 6)
        >>> docs = RaggedMmap.from_lists("docs", [np.arange(n, dtype=np.int32) for n in lengths], overwrite=True)
        >>> from mmap_ninja.adapters.torch import TokenBudgetBatchSampler
        >>> budget = TokenBudgetBatchSampler(docs, max_tokens=16, rank=0, world_size=1, seed=0)
        >>> len(budget), list(budget)  # longest sample x batch size <= 16
        (3, [[2], [3, 1, 0], [4]])
        >>> f"{budget.padding_report().padding_share:.0%}"
        '20%'
    """

    def __init__(self, tokens: Any, max_tokens: int, *, rank: Optional[int] = None, world_size: Optional[int] = None,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = False, pool_size: int = DEFAULT_POOL_SIZE):
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.max_tokens = _integer("max_tokens", max_tokens, 1)
        self.pool_size = _integer("pool_size", pool_size, 1)
        self.seed, self.shuffle, self.drop_last = _integer("seed", seed, None), bool(shuffle), bool(drop_last)
        self.tokens = tokens
        self._lengths = _Lengths(tokens)
        self.n = self._lengths.n
        self._refuse_long_samples()
        self.epoch = 0
        self._pool = 0
        self._history: list[list[int]] = []  # [[world_size, batches handed out], ...] of the current pool's plans
        self._pending = False  # a loaded state, for the next __iter__
        self._epoch_set: Optional[int] = None  # the last set_epoch
        self._len_cache: dict[tuple[int, ...], int] = {}
        self._order_version = ORDER_VERSION  # pickled: a pickle of another order version is refused

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A pickle of another order version (version 1's has no "_order_version") would give other orders.
        refuse_older_order_state(type(self).__name__, state, [int(state["n"])] if "n" in state else None,
                                 bool(state.get("shuffle", True)))
        self.__dict__.update(state)

    def _refuse_long_samples(self) -> None:
        for first in range(0, self.n, _SCAN_CHUNK):
            lengths = self._lengths.of(np.arange(first, min(first + _SCAN_CHUNK, self.n), dtype=np.int64))
            too_long = np.flatnonzero(lengths > self.max_tokens)
            if too_long.size:
                j = int(too_long[0])
                raise ValueError(f"sample {first + j} of {_name(self.tokens)} has {int(lengths[j])} tokens, more than "
                                 f"max_tokens={self.max_tokens}: it fits in no batch (raise max_tokens or cut it)")

    # ------------------------------------------------------------------ planning

    @property
    def pools(self) -> int:
        """How many pools an epoch has."""
        return -(-self.n // self.pool_size)

    def _order(self) -> Order:
        return Order(self.n, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)

    def _pool_samples(self, order: Order, pool: int) -> np.ndarray:
        first = pool * self.pool_size
        return order.take(np.arange(first, min(first + self.pool_size, self.n), dtype=np.int64))

    def _plan(self, samples: np.ndarray, world_size: int, pool: int, depth: int) -> list[np.ndarray]:
        """The batches of ``samples`` for ``world_size`` ranks: a list of index arrays, a multiple of world_size."""
        lengths = np.maximum(self._lengths.of(samples), 1)
        by_length = np.argsort(lengths, kind="stable")
        samples, lengths = samples[by_length], lengths[by_length]
        cuts, count, budget = [0], 0, self.max_tokens
        for j, length in enumerate(lengths.tolist()):  # ascending: the new sample is the batch's longest
            if (count + 1) * length > budget:
                cuts.append(j)
                count = 0
            count += 1
        cuts.append(len(samples))
        batches = [samples[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
        while len(batches) % world_size:
            biggest = max(range(len(batches)), key=lambda k: len(batches[k]))
            batch = batches[biggest]
            if len(batch) > 1:  # halving a batch keeps it within the budget and adds no padding
                batches[biggest:biggest + 1] = [batch[:len(batch) // 2], batch[len(batch) // 2:]]
            elif self.drop_last:
                del batches[len(batches) - len(batches) % world_size:]
            else:
                batches += batches[:world_size - len(batches) % world_size]
        if self.shuffle and len(batches) > world_size:
            rng = np.random.default_rng([self.seed % (1 << 64), self.epoch, pool, depth])
            groups = rng.permutation(len(batches) // world_size)
            batches = [batches[g * world_size + r] for g in groups.tolist() for r in range(world_size)]
        return batches

    def _current_plan(self, order: Order) -> list[np.ndarray]:
        """The plan of the current pool for this world size, replaying its history (appending a new plan of the
        rest of the pool when the world size changed)."""
        history = self._history
        if not history:
            history.append([self.world_size, 0])
        pool = self._pool
        plan = self._plan(self._pool_samples(order, pool), history[0][0], pool, 0)
        for depth in range(1, len(history)):
            plan = self._plan(_rest(plan, history[depth - 1][1]), history[depth][0], pool, depth)
        if history[-1][0] != self.world_size:
            plan = self._plan(_rest(plan, history[-1][1]), self.world_size, pool, len(history))
            history.append([self.world_size, 0])
        return plan

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[list[int]]:
        # The start is taken now, not at the first batch: a loaded state is used by the one iterator made next.
        if not self._pending:
            self._pool, self._history = 0, []
        self._pending = False
        return self._batches()

    def _batches(self) -> Iterator[list[int]]:
        order = self._order()
        world_size, rank = self.world_size, self.rank
        while self._pool < self.pools:
            plan = self._current_plan(order)
            entry = self._history[-1]
            for j in range(entry[1] + rank, len(plan), world_size):
                entry[1] = j - rank + world_size
                yield plan[j].tolist()
            self._pool, self._history = self._pool + 1, []

    def __len__(self) -> int:
        key = (self.epoch, self.world_size, self.seed, self.shuffle, self.drop_last)
        if key not in self._len_cache:
            order = self._order()
            self._len_cache = {key: sum(len(self._plan(self._pool_samples(order, p), self.world_size, p, 0))
                                        for p in range(self.pools)) // self.world_size}
        return self._len_cache[key]

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order from the next iteration on (a loaded state of the same epoch keeps its place)."""
        epoch = _integer("epoch", epoch, 0)
        self._epoch_set = epoch
        if epoch != self.epoch:
            self.epoch, self._pool, self._history, self._pending = epoch, 0, [], False

    def skip(self, num_batches: int) -> None:
        """Step over this rank's next ``num_batches`` batches of the epoch (every rank calls it with the same
        number, so ``num_batches * world_size`` batches of the global stream go unread; after a loss spike, say),
        from the place reached or loaded. It takes effect at the next ``iter()``; past the epoch's end the epoch
        is done."""
        left = _integer("num_batches", num_batches, 0)
        order = self._order()
        if not self._pending and not self._history:  # not started: from the epoch's start
            self._pool = 0
        while left and self._pool < self.pools:
            plan = self._current_plan(order)
            entry = self._history[-1]
            here = (len(plan) - entry[1]) // self.world_size
            if left < here:
                entry[1] += left * self.world_size
                break
            left -= here
            self._pool, self._history = self._pool + 1, []
        self._pending = True

    def padding_report(self, epoch: Optional[int] = None) -> PaddingReport:
        """The batches and tokens of a whole epoch (default: the current one), every rank's, planned for this world
        size: pad ÷ (pad + real) is its ``padding_share``. Plans every pool (O(n) time, one pool of memory)."""
        saved = self.epoch
        self.epoch = saved if epoch is None else _integer("epoch", epoch, 0)
        try:
            order = self._order()
            batches = real = padded = 0
            for pool in range(self.pools):
                for batch in self._plan(self._pool_samples(order, pool), self.world_size, pool, 0):
                    lengths = self._lengths.of(batch)
                    batches += 1
                    real += int(lengths.sum())
                    padded += int(max(int(lengths.max()), 1)) * len(batch)
            return PaddingReport(batches, real, padded)
        finally:
            self.epoch = saved

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Where this sampler is: small JSON-able data (see the class docstring)."""
        history = self._history or [[self.world_size, 0]]
        return {"version": STATE_VERSION, "n": self.n, "max_tokens": self.max_tokens, "pool_size": self.pool_size,
                "seed": self.seed, "shuffle": self.shuffle, "drop_last": self.drop_last, "epoch": self.epoch,
                "pool": self._pool, "history": [list(entry) for entry in history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from `state_dict`, on this or another world size) at the next iteration."""
        version = state.get("version") if isinstance(state, dict) else None
        if version == 1 or (version == 2 and not order_version_unchanged(2, [self.n], bool(state.get("shuffle")))):
            raise ValueError(older_order_message("TokenBudgetBatchSampler", version))
        if not isinstance(state, dict) or version not in (2, STATE_VERSION):
            raise ValueError(f"not a TokenBudgetBatchSampler state of version 2 or {STATE_VERSION}: {state!r:.200}")
        for key in ("n", "max_tokens", "pool_size"):
            if state[key] != getattr(self, key):
                what = "samples" if key == "n" else key
                raise ValueError(f"the state was saved for {key}={state[key]} ({what}), this sampler has "
                                 f"{key}={getattr(self, key)}")
        history = [[_integer("history world_size", w, 1), _integer("history position", c, 0)]
                   for w, c in state["history"]]
        self.seed, self.shuffle, self.drop_last = int(state["seed"]), bool(state["shuffle"]), bool(state["drop_last"])
        epoch = _integer("epoch", state["epoch"], 0)
        if self._epoch_set is not None and self._epoch_set > epoch:
            # set_epoch chose a later epoch than the state's (StatefulDataLoader applies a state when the next
            # iteration starts, after the training loop's set_epoch): that epoch starts from its beginning.
            self._pool, self._history, self._pending = 0, [], False
            return
        self.epoch, self._pool = epoch, _integer("pool", state["pool"], 0)
        self._history = history
        self._pending = True


class _Lengths:
    """Sample lengths read from a token map's offsets (no copy): a `RaggedMmap` (or a remote one), or a sharded map
    of them (each shard's own offsets, looked up by shard)."""

    def __init__(self, tokens: Any):
        offsets = getattr(tokens, "offsets", None)
        _refuse_codec(tokens)
        if offsets is not None:
            self._shards = [np.asarray(offsets)]
            self._starts = np.zeros(2, dtype=np.int64)
            self.n = self._starts[1] = len(offsets) - 1
        elif hasattr(tokens, "shard_starts") and hasattr(tokens, "shard"):
            starts = tokens.shard_starts
            self._shards = [self._shard_offsets(tokens, k) if starts[k + 1] > starts[k] else np.zeros(1, np.int64)
                            for k in range(len(starts) - 1)]
            self._starts = np.asarray(starts, dtype=np.int64)
            self.n = int(starts[-1])
        else:
            raise TypeError(f"TokenBudgetBatchSampler needs a RaggedMmap of token sequences (with offsets) or a "
                            f"sharded map of them, got {type(tokens).__name__}")

    @staticmethod
    def _shard_offsets(tokens: Any, k: int) -> np.ndarray:
        shard = tokens.shard(k)
        _refuse_codec(shard)
        return np.asarray(shard.offsets)

    def of(self, samples: np.ndarray) -> np.ndarray:
        """The lengths of ``samples`` (global indices), int64."""
        if len(self._shards) == 1:
            offsets = self._shards[0]
            return np.asarray(offsets[samples + 1] - offsets[samples], dtype=np.int64)
        shard_of = np.searchsorted(self._starts, samples, side="right") - 1
        lengths = np.empty(len(samples), dtype=np.int64)
        for k in np.unique(shard_of).tolist():
            rows = np.flatnonzero(shard_of == k)
            local, offsets = samples[rows] - self._starts[k], self._shards[k]
            lengths[rows] = offsets[local + 1] - offsets[local]
        return lengths


def _refuse_codec(tokens: Any) -> None:
    if getattr(tokens, "codec", None) is not None:
        raise TypeError(f"{_name(tokens)} has the codec {tokens.codec!r}: its offsets count compressed bytes, not "
                        f"tokens, so TokenBudgetBatchSampler cannot read the lengths from them")


def _rest(plan: list[np.ndarray], handed_out: int) -> np.ndarray:
    """The samples of the batches of ``plan`` not handed out yet."""
    rest = plan[handed_out:]
    return np.concatenate(rest) if rest else np.empty(0, np.int64)


def _integer(name: str, value: Any, minimum: Optional[int]) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    number = operator.index(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    return number


def _name(tokens: Any) -> str:
    return str(getattr(tokens, "path", None) or getattr(tokens, "url", None) or type(tokens).__name__)

