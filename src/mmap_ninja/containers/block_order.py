"""A locality-aware shuffle: blocks of the stored data in a shuffled order, samples shuffled within a few blocks.

A full shuffle reads every sample from anywhere: on a map read by blocks (object storage, a block cache smaller
than the data) each sample may cost a block. `BlockOrder` keeps the reads local instead:

- *Blocks.* Block ``k`` of size ``B`` bytes holds the samples whose first byte in the map's largest data column
  lies in ``[k·B, (k+1)·B)`` (the blocks a remote map fetches, see `mmap_ninja.adapters.remote`). Offsets grow with
  the index, so a block is a run of consecutive indices; `block_layout` finds the runs from the map's offsets (a
  binary search per block, nothing read of the data and nothing of size ``n`` built). A sharded map's blocks are
  those of each shard; a blend's are those of its sources, gathered over the blend's positions.
- *Order.* The blocks go in a shuffled order (`mmap_ninja.Order` over the blocks, keyed by seed and epoch); each
  window of ``window_blocks`` consecutive blocks of that order is read in a shuffled order of its samples (one
  `mmap_ninja.Order` per window). Each block is read once per epoch, inside one window. With ``parts`` (one per
  rank) the shuffled blocks are cut into contiguous runs of whole blocks balanced by sample count, windows
  restarting at each run, so each rank reads its own blocks and no block is read by two ranks.

`shuffle_quality` measures an order against a block assignment: how many pairs of a batch come from one block,
and how far samples move from their stored place, so a window size can be chosen knowingly. Only NumPy is needed
here; `mmap_ninja.adapters.torch.BlockShuffleSampler` wraps `BlockOrder` for DDP with a resumable state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np

from mmap_ninja.containers.order import (
    _GOLDEN,
    _MASK64,
    ORDER_VERSION,
    Order,
    OrderFamily,
    _mix64,
    order_version_unchanged,
    refuse_older_order_state,
)

__all__ = ["DEFAULT_BLOCK_BYTES", "DEFAULT_WINDOW_BLOCKS", "BlockLayout", "BlockOrder", "block_layout",
           "block_order_lengths", "block_orders_unchanged", "shuffle_quality"]

DEFAULT_BLOCK_BYTES = 8 * 2**20
"""The block size of a map that states none (``fetch_block_size``): 8 MiB."""
DEFAULT_WINDOW_BLOCKS = 8
"""Blocks whose samples are shuffled together, by default."""


class BlockLayout:
    """Which samples each block holds: block ``b`` holds ``members[bounds[b]:bounds[b + 1]]`` (``members`` is the
    identity when the blocks are runs of consecutive indices, as in one map or a sharded map).

    Example:

        >>> from mmap_ninja.containers.block_order import BlockLayout
        >>> layout = BlockLayout([0, 3, 5])
        >>> len(layout), layout.num_blocks, layout.block_of([0, 2, 3, 4]).tolist()
        (5, 2, [0, 0, 1, 1])
    """

    def __init__(self, bounds: Any, members: Optional[np.ndarray] = None, block_bytes: int = DEFAULT_BLOCK_BYTES):
        self.bounds = np.asarray(bounds, dtype=np.int64)
        if self.bounds.ndim != 1 or not len(self.bounds) or self.bounds[0] != 0 or (np.diff(self.bounds) <= 0).any():
            raise ValueError(f"block bounds must start at 0 and increase, got {self.bounds[:8].tolist()}...")
        self.members = None if members is None else np.asarray(members, dtype=np.int64)
        if self.members is not None and len(self.members) != int(self.bounds[-1]):
            raise ValueError(f"a layout of {int(self.bounds[-1])} samples needs as many members, got "
                             f"{len(self.members)}")
        self.block_bytes = int(block_bytes)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    @property
    def num_blocks(self) -> int:
        """How many blocks hold samples."""
        return len(self.bounds) - 1

    def block_of(self, indices: Any) -> np.ndarray:
        """The block holding each of ``indices`` (an int64 array of the same shape)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.members is None:
            places = indices
        else:
            inverse = np.empty_like(self.members)
            inverse[self.members] = np.arange(len(self.members), dtype=np.int64)
            places = inverse[indices]
        result: np.ndarray = np.searchsorted(self.bounds, places, side="right") - 1
        return result

    def __repr__(self) -> str:
        return f"BlockLayout({len(self)} samples in {self.num_blocks} blocks of {self.block_bytes} bytes)"


def _runs(starts_at: Any, n: int, total_bytes: int, block_bytes: int) -> np.ndarray:
    """Bounds of the blocks of ``n`` samples whose first bytes are ``starts_at(first_index_reaching)``: block
    ``k``'s first sample is the first whose first byte is at least ``k·B`` (empty blocks dropped)."""
    if not n:
        return np.zeros(1, dtype=np.int64)
    thresholds = np.arange(0, max(total_bytes, 1) + block_bytes, block_bytes, dtype=np.int64)
    firsts = starts_at(thresholds)
    return np.unique(np.concatenate([[0], np.minimum(firsts, n), [n]])).astype(np.int64)


def _map_bounds(m: Any, block_bytes: int) -> np.ndarray:
    """The block bounds of one map, from its largest data column (``data`` or ``<field>.data``) and, when it has
    one, that column's offsets (read through the mapping: a binary search per block, nothing copied)."""
    n = len(m)
    store: Any = getattr(m, "_store", None)
    header: Any = getattr(store, "header", None)
    if header is None:
        if not n:
            return np.zeros(1, dtype=np.int64)
        raise TypeError(f"{type(m).__name__} has no byte offsets to form blocks from (a BlockLayout of its blocks "
                        f"can be given instead)")
    columns = header.columns
    candidates = [name for name in columns if name == "data" or name.endswith(".data")]
    if not n:
        return np.zeros(1, dtype=np.int64)
    if not candidates:  # no data column (nothing stored per sample): one block
        return np.array([0, n], dtype=np.int64)
    largest = max(candidates, key=lambda name: columns[name].length * columns[name].dtype.itemsize)
    total = columns[largest].length * columns[largest].dtype.itemsize
    offsets_name = largest[:-len("data")] + "offsets"
    if offsets_name in columns:
        offsets = store.column(offsets_name)[:n]  # a view over the mapping: searched, never copied
        end = int(store.column(offsets_name)[n]) if columns[offsets_name].length > n else total
        unit = total // end if end else 1  # bytes per offset unit (ragged offsets count elements)

        def first_reaching(thresholds: np.ndarray) -> np.ndarray:
            return np.searchsorted(offsets, -(-thresholds // unit), side="left")
    else:
        stride = max(total // n, 1)

        def first_reaching(thresholds: np.ndarray) -> np.ndarray:
            return np.asarray(-(-thresholds // stride), dtype=np.int64)
    return _runs(first_reaching, n, total, block_bytes)


def block_layout(m: Any, block_bytes: Optional[int] = None) -> BlockLayout:
    """The blocks of map ``m`` (see the module's notes): a local or remote map, a sharded map (each shard's blocks),
    or a blend (its sources' blocks, gathered over its positions: O(len(m)) work and memory).

    ``block_bytes=None`` takes the map's ``fetch_block_size`` (the block a remote map fetches) or else
    `DEFAULT_BLOCK_BYTES`. A map without byte offsets raises TypeError.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_from_ndarray
        >>> from mmap_ninja.containers.block_order import block_layout
        >>> rows = np_from_ndarray("rows", np.zeros((10, 4), dtype=np.int64), overwrite=True)  # 32 bytes a row
        >>> block_layout(rows, block_bytes=64).bounds.tolist()  # two rows a block
        [0, 2, 4, 6, 8, 10]
    """
    if block_bytes is None:
        block_bytes = getattr(m, "fetch_block_size", None) or DEFAULT_BLOCK_BYTES
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, numbers.Integral) or block_bytes < 1:
        raise ValueError(f"block_bytes must be a positive int, got {block_bytes!r}")
    block_bytes = int(block_bytes)
    from mmap_ninja.containers.blend import BlendedMap
    from mmap_ninja.containers.sharded import ShardedMap

    if isinstance(m, BlendedMap):
        layouts = [block_layout(m.source(k), block_bytes) for k in range(m.num_sources)]
        first_block = np.cumsum([0] + [layout.num_blocks for layout in layouts[:-1]])
        sources, local = m.sources_of(slice(None))
        blocks = np.empty(len(m), dtype=np.int64)
        for k, layout in enumerate(layouts):
            rows = np.flatnonzero(sources == k)
            if len(rows):
                blocks[rows] = first_block[k] + layout.block_of(local[rows])
        members = np.argsort(blocks, kind="stable")
        counts = np.bincount(blocks, minlength=int(first_block[-1]) + layouts[-1].num_blocks)
        bounds = np.concatenate([[0], np.cumsum(counts[counts > 0])])
        return BlockLayout(bounds, members, block_bytes)
    if isinstance(m, ShardedMap) and getattr(m, "fetch_block_size", None) is not None and \
            getattr(m, "blocks_are_shards", True):
        # A map read by blocks (a remote map opened with fetch="blocks") is a sharded map whose shards are its
        # blocks: its shard starts are the layout, and no block is fetched to find it.
        fetched = getattr(m, "fetch_block_size", None)
        if fetched != block_bytes:
            raise ValueError(f"this map is read by blocks of {fetched} bytes: block_bytes must be that "
                             f"(or None), got {block_bytes}")
        return BlockLayout(np.unique(np.asarray(m.shard_starts, dtype=np.int64)), None, block_bytes)
    if isinstance(m, ShardedMap):
        starts = m.shard_starts
        pieces = [np.zeros(1, dtype=np.int64)]
        for k in range(len(starts) - 1):
            if starts[k + 1] > starts[k]:
                shard = m.shard(k)  # (a shard read by blocks: its own blocks)
                bounds = block_layout(shard, block_bytes).bounds if isinstance(shard, ShardedMap) else \
                    _map_bounds(shard, block_bytes)
                pieces.append(starts[k] + bounds[1:])
        return BlockLayout(np.concatenate(pieces), None, block_bytes)
    return BlockLayout(_map_bounds(m, block_bytes), None, block_bytes)


def _window_seed(seed: int, window: int) -> int:
    return _mix64(((seed & _MASK64) * _GOLDEN + window + 1) & _MASK64)


class BlockOrder:
    """The order of one epoch under a block shuffle: a permutation of ``range(n)`` in which the blocks of ``layout``
    come in a shuffled order and the samples of each window of ``window_blocks`` consecutive blocks (of that order)
    are shuffled together. ``order[k]`` and ``order.take(positions)`` as for `mmap_ninja.Order`; memory is
    O(blocks) (plus the layout's members for a blend).

    ``parts`` (one per rank) cuts the shuffled blocks into that many contiguous runs of whole blocks, balanced by
    sample count (a block goes to the part holding its middle sample): part ``r`` is the stream's positions
    ``part_bounds[r]:part_bounds[r + 1]`` and its windows restart at its first block, so a part reads only its own
    blocks. ``parts=1`` is one run.

    Example:

        >>> from mmap_ninja.containers.block_order import BlockLayout, BlockOrder
        >>> order = BlockOrder(BlockLayout([0, 4, 8, 12]), window_blocks=1, seed=0)
        >>> stream = order.take(range(12)).tolist()
        >>> sorted(stream) == list(range(12)), [sorted({i // 4 for i in stream[k:k + 4]}) for k in (0, 4, 8)]
        (True, [[2], [1], [0]])
    """

    layout: BlockLayout
    window_blocks: int
    seed: int
    epoch: int
    parts: int
    part_bounds: np.ndarray
    shuffle: bool
    _block_order: np.ndarray
    _slot_ends: np.ndarray
    _slot_starts: np.ndarray
    _window_ends: np.ndarray
    _window_starts: np.ndarray
    _family: OrderFamily
    _order_version: int

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A pickle of another order version (version 1's has no "_order_version") would give other orders.
        layout = state.get("layout")
        refuse_older_order_state(type(self).__name__, state,
                                 block_order_lengths(layout) if isinstance(layout, BlockLayout) else None)
        self.__dict__.update(state)

    def __init__(self, layout: BlockLayout, *, window_blocks: int = DEFAULT_WINDOW_BLOCKS, seed: int = 0,
                 epoch: int = 0, parts: int = 1):
        if isinstance(window_blocks, bool) or not isinstance(window_blocks, numbers.Integral) or window_blocks < 1:
            raise ValueError(f"window_blocks must be a positive int, got {window_blocks!r}")
        if isinstance(parts, bool) or not isinstance(parts, numbers.Integral) or parts < 1:
            raise ValueError(f"parts must be a positive int, got {parts!r}")
        self.layout = layout
        self.window_blocks = int(window_blocks)
        for name, value in (("seed", seed), ("epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"BlockOrder: {name} must be an int, got {value!r} ({type(value).__name__})")
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.parts = int(parts)
        self.shuffle = True
        self._order_version = ORDER_VERSION  # pickled: a pickle of another order version is refused
        blocks = layout.num_blocks
        n = len(layout)
        self._block_order = Order(blocks, seed=self.seed, epoch=self.epoch).take(np.arange(blocks, dtype=np.int64))
        sizes = np.diff(layout.bounds)[self._block_order]
        self._slot_ends = np.cumsum(sizes)  # where each block of the shuffled order ends in the epoch's stream
        self._slot_starts = self._slot_ends - sizes
        # part of each slot: the part holding the slot's middle sample (contiguous runs balanced by sample count)
        part_of_slot = np.minimum((self.parts * (2 * self._slot_starts + sizes)) // (2 * max(n, 1)), self.parts - 1)
        first_slot = np.searchsorted(part_of_slot, np.arange(self.parts + 1), side="left")
        self.part_bounds = np.concatenate([self._slot_starts, [n]]).astype(np.int64)[first_slot]
        # windows of window_blocks consecutive slots, restarting at each part
        within = np.arange(blocks, dtype=np.int64) - first_slot[part_of_slot]
        key = part_of_slot * (blocks + 1) + within // self.window_blocks
        window_last = np.flatnonzero(np.r_[key[1:] != key[:-1], True]) if blocks else np.zeros(0, dtype=np.int64)
        self._window_ends = self._slot_ends[window_last] if blocks else np.zeros(0, dtype=np.int64)
        self._window_starts = np.concatenate([[0], self._window_ends[:-1]]).astype(np.int64)
        windows = len(self._window_ends)
        self._family = OrderFamily((self._window_ends - self._window_starts).tolist(),
                                   [_window_seed(self.seed, w) for w in range(windows)])

    def __len__(self) -> int:
        return len(self.layout)

    def __repr__(self) -> str:
        return (f"BlockOrder({len(self)} samples, {self.layout.num_blocks} blocks, window_blocks={self.window_blocks},"
                f" seed={self.seed}, epoch={self.epoch}, parts={self.parts})")

    @property
    def num_windows(self) -> int:
        """How many windows the epoch has."""
        return len(self._window_ends)

    def with_parts(self, parts: int) -> BlockOrder:
        """The order of the same epoch cut into ``parts`` runs."""
        return BlockOrder(self.layout, window_blocks=self.window_blocks, seed=self.seed, epoch=self.epoch, parts=parts)

    def with_epoch(self, epoch: int) -> BlockOrder:
        """The order of ``epoch`` over the same layout."""
        return BlockOrder(self.layout, window_blocks=self.window_blocks, seed=self.seed, epoch=epoch, parts=self.parts)

    def take(self, positions: Any) -> np.ndarray:
        """The indices at ``positions`` (ints in ``range(n)``; negatives count from the end), as int64."""
        array = np.asarray(positions)
        if array.size and array.dtype.kind not in "iu":
            raise TypeError(f"BlockOrder.take needs integer positions, got an array of {array.dtype}")
        n = len(self)
        flat = array.astype(np.int64).reshape(-1)
        if flat.size:
            low, high = int(flat.min()), int(flat.max())
            if low < -n or high >= n:
                raise IndexError(f"BlockOrder position {low if low < -n else high} is out of range for an order "
                                 f"of {n} indices")
        flat = np.where(flat < 0, flat + n, flat)
        window = np.searchsorted(self._window_ends, flat, side="right")
        start = self._window_starts[window]
        place = start + self._family.take(window, np.full(len(flat), self.epoch, dtype=np.int64), flat - start)
        slot = np.searchsorted(self._slot_ends, place, side="right")
        stored = self.layout.bounds[self._block_order[slot]] + (place - self._slot_starts[slot])
        if self.layout.members is not None:
            stored = self.layout.members[stored]
        result: np.ndarray = stored.reshape(array.shape)
        return result

    def __getitem__(self, position: Any) -> int:
        if isinstance(position, bool) or not isinstance(position, numbers.Integral):
            raise TypeError(f"BlockOrder indices must be ints, got {position!r}")
        return int(self.take(np.array([int(position)]))[0])

    def __iter__(self) -> Iterator[int]:
        for start in range(0, len(self), 4096):
            yield from self.take(np.arange(start, min(start + 4096, len(self)), dtype=np.int64)).tolist()


def block_order_lengths(layout: BlockLayout) -> list[int]:
    """Lengths that bound the orders a `BlockOrder` of ``layout`` computes, for `order_version_unchanged`: the
    blocks' order, and each window's (whole blocks, so at least the smallest block's samples; 2 stands for any
    small window, as windows of one-sample blocks can hold several)."""
    sizes = np.diff(layout.bounds)
    return [layout.num_blocks, max(int(sizes.min()) if len(sizes) else 0, 2)]


def block_orders_unchanged(version: Any, layout: BlockLayout) -> bool:
    """Whether every `BlockOrder` of ``layout`` (any window, epoch or parts) computed by order ``version`` is this
    version's (see `mmap_ninja.containers.order.order_version_unchanged`)."""
    return order_version_unchanged(version, block_order_lengths(layout))


def shuffle_quality(order: Any, block_of: Any, batch_size: int) -> dict[str, float]:
    """How local and how mixed an order is, for choosing a block shuffle's window.

    ``order`` is the epoch's indices in reading order (a sequence, an array, an `mmap_ninja.Order` or a
    `BlockOrder`); ``block_of`` the block of every stored index (an array of ``n`` block numbers, a `BlockLayout`,
    or a function of an index array); batches are ``batch_size`` consecutive entries of the order. The result:

    - ``same_block_share``: the share of pairs of samples within a batch that come from the same block (a full
      shuffle gives about ``random_same_block_share``; a sequential read nearly 1);
    - ``random_same_block_share``: that share under a uniform full shuffle, for comparison
      (``Σ s(s-1) / n(n-1)`` over the block sizes ``s``);
    - ``mean_displacement``: the mean ``|position - stored index|`` over ``n`` (0 for the stored order, about 1/3
      for a full shuffle);
    - ``blocks_per_batch``: the mean number of distinct blocks a batch reads.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import shuffle_quality
        >>> blocks = np.arange(8) // 4  # two blocks of four samples
        >>> quality = shuffle_quality(range(8), blocks, batch_size=4)
        >>> quality["same_block_share"], quality["mean_displacement"], quality["blocks_per_batch"]
        (1.0, 0.0, 1.0)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if hasattr(order, "take") and not isinstance(order, np.ndarray):
        indices = np.asarray(order.take(np.arange(len(order), dtype=np.int64)), dtype=np.int64)
    else:
        indices = np.asarray(list(order) if not isinstance(order, (np.ndarray, Sequence, range)) else order,
                             dtype=np.int64)
    n = len(indices)
    if isinstance(block_of, BlockLayout):
        blocks = block_of.block_of(indices)
        sizes = np.diff(block_of.bounds)
    elif callable(block_of):
        blocks = np.asarray(block_of(indices), dtype=np.int64)
        sizes = np.bincount(blocks) if n else np.zeros(0, dtype=np.int64)
    else:
        table = np.asarray(block_of, dtype=np.int64)
        blocks = table[indices]
        sizes = np.bincount(table) if len(table) else np.zeros(0, dtype=np.int64)
    if not n:
        return {"same_block_share": 0.0, "random_same_block_share": 0.0, "mean_displacement": 0.0,
                "blocks_per_batch": 0.0}
    batch = np.arange(n, dtype=np.int64) // int(batch_size)
    _, pair_counts = np.unique(np.stack([batch, blocks]), axis=1, return_counts=True)
    same_pairs = float((pair_counts * (pair_counts - 1) // 2).sum())
    batch_lengths = np.bincount(batch)
    all_pairs = float((batch_lengths * (batch_lengths - 1) // 2).sum())
    sizes = sizes.astype(np.float64)
    random_share = float((sizes * (sizes - 1)).sum() / (n * (n - 1))) if n > 1 else 0.0
    return {"same_block_share": same_pairs / all_pairs if all_pairs else 0.0,
            "random_same_block_share": random_share,
            "mean_displacement": float(np.abs(indices - np.arange(n)).mean() / n),
            "blocks_per_batch": len(pair_counts) / math.ceil(n / batch_size)}
