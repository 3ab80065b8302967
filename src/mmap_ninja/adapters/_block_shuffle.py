"""`BlockShuffleSampler`: a resumable DDP sampler reading the data block by block (`mmap_ninja.containers.block_order`).

Epoch ``e`` is `mmap_ninja.containers.block_order.BlockOrder` over the map's blocks with one part per rank: the blocks
in a
shuffled order, cut into ``world_size`` contiguous runs of whole blocks balanced by sample count, each run read by
one rank, its samples shuffled within windows of ``window_blocks`` of its own blocks. So each block is read by one
rank per epoch, and ranks on separate nodes (separate caches) together fetch the data once.

Every rank yields the same count: the longest run's length, a shorter run padded by re-reading its own last samples
(its most recent blocks), or with ``drop_last`` the shortest run's length (the rest of longer runs dropped). The
padding is at most about one block per rank (`padding` gives the epoch's count). When that deal would leave a rank
without blocks (fewer blocks than ranks), the epoch's one-part order is striped instead: equal contiguous runs of its
stream, ``ceil(n / world_size)`` indices per rank (``floor`` with ``drop_last``), as ``DistributedSampler`` deals.

The place in an epoch is the position ``P`` in the *interleaved* stream (entry ``k * world_size + r`` is rank
``r``'s ``k``-th index). A state loaded on the same world size at a position all ranks reached together continues
exactly; on another world size (or at a position the ranks reached unevenly) the samples no rank has read (padding
excluded) are re-planned: their positions, in stream order, are cut into equal contiguous runs over the new ranks
(as ``DistributedSampler`` pads or cuts), each read once. Such a state lists those remaining position ranges.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from typing import Any, Optional

import numpy as np

from mmap_ninja.adapters._samplers import _CHUNK, STATE_VERSION, ResumableSampler, as_int
from mmap_ninja.containers.block_order import (
    DEFAULT_WINDOW_BLOCKS,
    BlockLayout,
    BlockOrder,
    block_layout,
    block_order_lengths,
    block_orders_unchanged,
)
from mmap_ninja.containers.order import older_order_message

__all__ = ["BlockShuffleSampler"]


def _pieces(queue: np.ndarray, starts: np.ndarray, cut_from: int, cut_to: int) -> list[list[int]]:
    """The stream position ranges ``[start, end)`` holding queue places ``cut_from:cut_to`` (``starts`` is the
    cumulative place where each range of ``queue`` begins)."""
    pieces: list[list[int]] = []
    for (start, end), place in zip(queue.tolist(), starts.tolist()):
        low, high = max(cut_from - place, 0), min(cut_to - place, end - start)
        if low < high:
            if pieces and pieces[-1][1] == start + low:
                pieces[-1][1] = start + high
            else:
                pieces.append([start + low, start + high])
    return pieces


class BlockShuffleSampler(ResumableSampler):
    """A DDP sampler that shuffles blocks of the stored data and the samples within a window of a few blocks.

    ``BlockShuffleSampler(map, block_bytes=None, *, window_blocks=8, seed=0, rank=None, world_size=None,
    drop_last=False)``: block ``k`` holds the samples whose first byte in the map's largest data column lies in
    ``[k·block_bytes, (k+1)·block_bytes)`` (``None``: the map's ``fetch_block_size``, the block a remote map
    fetches, else 8 MiB); see `mmap_ninja.containers.block_order.block_layout` for local, sharded and blended maps. Each
    epoch
    (`set_epoch`) reads every block once, in an order keyed by ``(seed, epoch)``, and shuffles the samples of each
    ``window_blocks`` consecutive blocks of that order together: a larger window mixes more and keeps more blocks
    in use at once (`mmap_ninja.shuffle_quality` measures both).

    With ``world_size`` ranks the shuffled blocks are dealt as contiguous runs of whole blocks balanced by sample
    count (`mmap_ninja.containers.block_order.BlockOrder` with ``parts=world_size``): each block is read by one rank per
    epoch,
    and a rank's windows hold only its own blocks. Every rank gets ``len(sampler)`` indices: the longest run's
    length, a shorter run padded by re-reading its own last samples, or with ``drop_last`` the shortest run's
    length; `padding` counts the epoch's repeated indices (negative: dropped ones). When a rank would get no block
    (fewer blocks than ranks, or a few large ones), the epoch is dealt as ``DistributedSampler`` deals: its
    one-part block order is cut into equal contiguous runs, ``ceil(n / world_size)`` shuffled indices per rank
    (``floor`` with ``drop_last``), each sample once apart from the padding.

    `state_dict` / `load_state_dict` / `state_at` / `skip` are `ResumableSampler`'s, over the interleaved stream of
    the ranks (position ``k * world_size + r`` is rank ``r``'s ``k``-th index). The same world size resumes exactly
    from a position every rank reached together; another world size (or an uneven position, or a `skip` of a number
    that is not a multiple of the world size) re-plans the samples no rank read, padding excluded, as equal
    contiguous runs over the ranks. The state is small JSON: ``ResumableSampler``'s keys plus ``block_bytes``,
    ``blocks``, ``window_blocks``, ``world_size`` and ``parts``, and after a re-plan the ``queue`` of remaining
    position ranges (a state of another layout is refused, naming both).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_from_ndarray
        >>> from mmap_ninja.adapters.torch import BlockShuffleSampler
        >>> rows = np_from_ndarray("block_rows", np.zeros((12, 4), dtype=np.int64), overwrite=True)  # 32-byte rows
        >>> sampler = BlockShuffleSampler(rows, block_bytes=128, window_blocks=1, seed=0)  # blocks of 4 rows
        >>> stream = list(sampler)
        >>> sorted(stream) == list(range(12)), [sorted({i // 4 for i in stream[k:k + 4]}) for k in (0, 4, 8)]
        (True, [[2], [1], [0]])
        >>> sampler.state_dict()["blocks"], sampler.state_dict()["position"]
        (3, 12)
    """

    layout: BlockLayout
    window_blocks: int
    _order: BlockOrder
    _queue: np.ndarray  # (ranges, 2) stream position ranges still to deal out in this epoch
    _queue_starts: np.ndarray  # where each range begins among the queue's places
    _cuts: np.ndarray  # rank r's run is queue places _cuts[r]:_cuts[r + 1]
    _length: int  # indices per rank in this deal (padded or cut)

    def __init__(self, map: Any, block_bytes: Optional[int] = None, *, window_blocks: int = DEFAULT_WINDOW_BLOCKS,
                 seed: int = 0, rank: Optional[int] = None, world_size: Optional[int] = None, drop_last: bool = False):
        if isinstance(window_blocks, bool) or not isinstance(window_blocks, numbers.Integral) or window_blocks < 1:
            raise ValueError(f"window_blocks must be a positive int, got {window_blocks!r}")
        layout = map if isinstance(map, BlockLayout) else block_layout(map, block_bytes)
        self.layout = layout
        self.window_blocks = int(window_blocks)
        super().__init__(len(layout), rank=rank, world_size=world_size, seed=seed, shuffle=True, drop_last=drop_last)
        self._fresh_deal()

    @property
    def block_bytes(self) -> int:
        """The block size in bytes."""
        return self.layout.block_bytes

    def __repr__(self) -> str:
        return (f"BlockShuffleSampler(n={self.n}, blocks={self.layout.num_blocks}, block_bytes={self.block_bytes}, "
                f"window_blocks={self.window_blocks}, rank={self.rank}, world_size={self.world_size}, "
                f"seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch}, position={self.position})")

    # -- the deal: which stream positions each rank reads --

    def _deal(self, order: BlockOrder, queue: np.ndarray, cuts: Optional[np.ndarray]) -> None:
        self._order = order
        self._queue = np.asarray(queue, dtype=np.int64).reshape(-1, 2)
        lengths = self._queue[:, 1] - self._queue[:, 0]
        self._queue_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        total, world_size = int(lengths.sum()), self.world_size
        if cuts is None:  # equal contiguous runs, as DistributedSampler counts
            cuts = (np.arange(world_size + 1, dtype=np.int64) * total) // world_size
        self._cuts = np.asarray(cuts, dtype=np.int64)
        runs = np.diff(self._cuts)
        self._length = int(runs.min() if self.drop_last else runs.max()) if total else 0

    def _fresh_deal(self) -> None:
        """The epoch from its start: rank r reads part r of a BlockOrder with one part per rank. When that leaves
        a rank without blocks (fewer blocks than ranks, or a few large blocks), the epoch's one-part order is
        striped instead: equal contiguous runs of its stream, as ``DistributedSampler`` deals its permutation."""
        order = BlockOrder(self.layout, window_blocks=self.window_blocks, seed=self.seed, epoch=self.epoch,
                           parts=self.world_size)
        whole = np.array([[0, self.n]], dtype=np.int64)
        if self.world_size > 1 and self.n and (np.diff(order.part_bounds) == 0).any():
            # A dealt-out queue over a one-part order: its state records the queue, so it resumes as such.
            self._deal(order.with_parts(1), whole, None)
        else:
            self._deal(order, whole, order.part_bounds)

    @staticmethod
    def _order_lengths(state: dict[str, Any]) -> list[int] | None:
        layout = state.get("layout")
        return block_order_lengths(layout) if isinstance(layout, BlockLayout) else None

    def _set_order(self) -> None:
        if self._order.epoch != self.epoch or self._order.seed != self.seed:
            self._fresh_deal()

    def _replanned(self) -> bool:
        """Whether the current deal is a re-plan (of what remained at a load) rather than the epoch's own."""
        return self._order.parts != self.world_size or self._queue.tolist() != [[0, self.n]]

    @property
    def padding(self) -> int:
        """Padded (repeated) indices of all ranks together in the current deal (with ``drop_last``: minus the
        indices dropped)."""
        return self._length * self.world_size - int(self._cuts[-1])

    def __len__(self) -> int:
        """Indices per rank in a whole epoch (the same on every rank)."""
        return self._length

    def _total(self) -> int:
        return self._length * self.world_size

    def _count(self) -> int:
        return self._length - self._base // self.world_size

    @property
    def position(self) -> int:
        """The position reached in the epoch's interleaved stream: ``len(self) * world_size`` once done."""
        if self._taken >= self._count():
            return self._total()
        return self._base + self._taken * self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from its start; after `load_state_dict` of a state of the same epoch (or a
        `skip`), the loaded position is kept."""
        pending = self._pending and as_int(epoch, "epoch") == self.epoch
        super().set_epoch(epoch)
        if not pending:
            self._fresh_deal()

    def __iter__(self) -> Iterator[int]:
        if not self._pending:
            self._base, self._taken = 0, 0
            if self._order.epoch != self.epoch or self._order.seed != self.seed or self._replanned():
                self._fresh_deal()
        self._pending = False
        self._generation += 1
        return self._stream(self._generation)

    def _indices(self, rank: int, steps: np.ndarray) -> np.ndarray:
        """Rank ``rank``'s indices at its steps ``steps`` (ints in ``range(len(self))``)."""
        low, high = int(self._cuts[rank]), int(self._cuts[rank + 1])
        run = high - low
        total = int(self._cuts[-1])
        if run == 0 and total and self._replanned():
            # a striped deal of fewer samples than ranks (or a re-plan of fewer than are left): pad, as
            # DistributedSampler does, from the deal's first places (shuffled)
            which = np.searchsorted(self._queue_starts, steps % total, side="right") - 1
            padded: np.ndarray = self._order.take(self._queue[which, 0] + (steps % total - self._queue_starts[which]))
            return padded
        if run == 0:  # a state saved by mmap_ninja before striping: a rank without blocks repeats one block
            first = int(self._queue[0, 0])
            block = int(self.layout.block_of(self._order.take(np.array([first]))[0:1])[0])
            a, b = int(self.layout.bounds[block]), int(self.layout.bounds[block + 1])
            stored = a + steps % (b - a)
            return stored if self.layout.members is None else self.layout.members[stored]
        pad = steps - run
        if self._length - run <= run:  # padding re-reads the run's last samples (its most recent blocks)
            places = np.where(pad < 0, low + steps, high - (self._length - run) + pad)
        else:
            places = low + steps % run
        which = np.searchsorted(self._queue_starts, places, side="right") - 1
        positions = self._queue[which, 0] + (places - self._queue_starts[which])
        result: np.ndarray = self._order.take(positions)
        return result

    def _stream(self, generation: int) -> Iterator[int]:
        self._live = generation
        self._epoch_set = None  # reading: see ResumableSampler.load_state_dict
        try:
            while generation == self._generation:
                count, plan = self._count(), self._plan
                if self._taken >= count:
                    return
                first = self._base // self.world_size + self._taken
                steps = np.arange(first, first + min(count - self._taken, _CHUNK), dtype=np.int64)
                for index in self._indices(self.rank, steps).tolist():
                    self._taken += 1
                    yield index
                    if plan != self._plan or generation != self._generation:
                        break  # a skip or a load changed the plan: recompute from the new place
        finally:
            if self._live == generation:
                self._live = None

    # -- state --

    def _state(self, position: int) -> dict[str, Any]:
        state = {"version": STATE_VERSION, "n": self.n, "seed": self.seed, "shuffle": True,
                 "drop_last": self.drop_last, "epoch": self.epoch, "position": int(position),
                 "block_bytes": self.block_bytes, "blocks": self.layout.num_blocks,
                 "window_blocks": self.window_blocks, "world_size": self.world_size, "parts": self._order.parts}
        if self._replanned():
            state["queue"] = self._queue.tolist()
        return state

    def state_at(self, samples_consumed: int) -> dict[str, Any]:
        """The state after this rank's training loop consumed ``samples_consumed`` indices of the current pass
        (counted from the epoch's start, or from the loaded position after `load_state_dict`)."""
        samples_consumed = as_int(samples_consumed, "samples_consumed")
        count = self._count()
        if not 0 <= samples_consumed <= count:
            raise ValueError(f"samples_consumed must be in [0, {count}] (this rank's pass has {count} indices), "
                             f"got {samples_consumed}")
        if samples_consumed == count:
            return self._state(self._total())
        return self._state(self._base + samples_consumed * self.world_size)

    def _remaining(self, position: int) -> list[list[int]]:
        """The stream position ranges no rank has read at interleaved ``position`` of the current deal (padding
        excluded)."""
        pieces: list[list[int]] = []
        for rank in range(self.world_size):
            read = max(0, -(-(position - rank) // self.world_size))
            low, high = int(self._cuts[rank]), int(self._cuts[rank + 1])
            for piece in _pieces(self._queue, self._queue_starts, min(low + read, high), high):
                if pieces and pieces[-1][1] == piece[0]:
                    pieces[-1][1] = piece[1]
                else:
                    pieces.append(piece)
        return pieces

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch saved in ``state`` on the next ``iter()`` (from any world size and rank): exactly when
        saved on this world size with every rank at the same step, else by re-planning the samples no rank read.
        The state must be of the same block layout and window."""
        if not isinstance(state, dict):
            raise TypeError(f"BlockShuffleSampler.load_state_dict needs a dict, got {type(state).__name__}")
        missing = [key for key in ("block_bytes", "blocks", "window_blocks", "world_size", "parts", "position",
                                   "epoch", "seed", "drop_last", "n") if key not in state]
        if missing:
            raise ValueError(f"not a BlockShuffleSampler state: missing {', '.join(missing)} (a ResumableSampler's "
                             f"state has another order)")
        for key in ("block_bytes", "blocks", "window_blocks", "world_size", "parts", "position", "epoch", "seed", "n"):
            as_int(state[key], f"BlockShuffleSampler state's {key!r}")
        if not isinstance(state["drop_last"], (bool, np.bool_)):
            raise TypeError(f"BlockShuffleSampler state's 'drop_last' must be a bool, got {state['drop_last']!r}")
        version = state.get("version")
        if version == 1 or (version == 2 and not block_orders_unchanged(2, self.layout)):
            raise ValueError(older_order_message("BlockShuffleSampler", version))
        if version not in (2, STATE_VERSION):
            raise ValueError(f"BlockShuffleSampler state version {version!r} is not supported (this "
                             f"mmap_ninja reads versions 2 and {STATE_VERSION})")
        mine = (self.block_bytes, self.layout.num_blocks, self.window_blocks)
        theirs = (int(state["block_bytes"]), int(state["blocks"]), int(state["window_blocks"]))
        if theirs != mine:
            raise ValueError(f"this BlockShuffleSampler state was saved for blocks of {theirs[0]} bytes ({theirs[1]} "
                             f"blocks) in windows of {theirs[2]}, but this sampler has blocks of {mine[0]} bytes "
                             f"({mine[1]} blocks) in windows of {mine[2]}")
        if int(state["n"]) != self.n:
            raise ValueError(f"this BlockShuffleSampler state was saved for a dataset of {int(state['n'])} samples, "
                             f"but this sampler's dataset has {self.n}")
        position, epoch, saved_world = int(state["position"]), int(state["epoch"]), int(state["world_size"])
        if position < 0 or epoch < 0 or saved_world < 1:
            raise ValueError(f"BlockShuffleSampler state has a negative position or epoch, or no ranks: {state}")
        chosen = getattr(self, "_epoch_set", None)
        if chosen is not None and chosen > epoch:  # a later epoch chosen since the last read (as ResumableSampler)
            self.seed, self.drop_last, self.epoch = int(state["seed"]), bool(state["drop_last"]), chosen
            self._fresh_deal()
            self._base, self._taken, self._pending = 0, 0, True
            self._generation += 1
            return
        self.seed, self.drop_last, self.epoch = int(state["seed"]), bool(state["drop_last"]), epoch
        order = BlockOrder(self.layout, window_blocks=self.window_blocks, seed=self.seed, epoch=epoch,
                           parts=int(state["parts"]))
        queue = np.asarray(state.get("queue", [[0, self.n]]), dtype=np.int64).reshape(-1, 2)
        if (queue[:, 0] < 0).any() or (queue[:, 1] < queue[:, 0]).any() or (queue[:, 1] > self.n).any():
            raise ValueError(f"BlockShuffleSampler state's queue must hold ranges [start, end) within [0, {self.n}], "
                             f"got {queue.tolist()[:4]}...")
        # the deal the state was saved in (rebuilt on its world size to know what its ranks read)
        here = self.world_size
        self.world_size = saved_world
        self._deal(order, queue, order.part_bounds if "queue" not in state else None)
        position = min(position, self._total())
        if saved_world == here and position % here == 0:
            self.world_size = here
            self._base = position
        else:
            remaining = self._remaining(position)
            self.world_size = here
            self._deal(order, np.asarray(remaining or [[0, 0]], dtype=np.int64), None)
            self._base = 0
        self._taken, self._pending = 0, True
        self._generation += 1

    def skip(self, num_samples: int) -> None:
        """Step over the next ``num_samples`` positions of the epoch's interleaved stream without reading them
        (every rank calls it with the same number); past the epoch's end the epoch is done. A number that is not a
        multiple of the world size re-plans the rest as `load_state_dict` does."""
        num_samples = as_int(num_samples, "num_samples")
        if num_samples < 0:
            raise ValueError(f"skip needs num_samples >= 0, got {num_samples}")
        running = self._live == self._generation
        generation = self._generation
        self.load_state_dict(self._state(min(self.position + num_samples, self._total())))
        self._plan += 1
        if running:  # the running iterator continues from the new place
            self._generation = generation
            self._pending = False
