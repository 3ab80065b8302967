"""`BlockShuffleSampler`: a resumable DDP sampler reading the data block by block (`mmap_ninja.block_order`).

The global stream of epoch ``e`` is `mmap_ninja.block_order.BlockOrder` over the map's blocks: blocks in a shuffled
order, the samples of each window of ``window_blocks`` blocks shuffled together, each block read once. Ranks share
the stream as `ResumableSampler` shares its order (rank ``r`` of ``w`` reads positions ``r, r + w, ...``, padded or
cut so every rank gets the same count), so the ranks of a node read the same window at the same time and a block
cache shared by them fetches each block once; the state is `ResumableSampler`'s, plus the block size and window,
and resumes exactly on the same world size and by re-striping the remaining positions on another.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

from mmap_ninja.adapters._samplers import ResumableSampler
from mmap_ninja.block_order import DEFAULT_WINDOW_BLOCKS, BlockLayout, BlockOrder, block_layout

__all__ = ["BlockShuffleSampler"]


class BlockShuffleSampler(ResumableSampler):
    """A DDP sampler that shuffles blocks of the stored data and the samples within a window of a few blocks.

    ``BlockShuffleSampler(map, block_bytes=None, *, window_blocks=8, seed=0, rank=None, world_size=None,
    drop_last=False)``: block ``k`` holds the samples whose first byte in the map's largest data column lies in
    ``[k·block_bytes, (k+1)·block_bytes)`` (``None``: the map's ``fetch_block_size``, the block a remote map
    fetches, else 8 MiB); see `mmap_ninja.block_order.block_layout` for local, sharded and blended maps. Each epoch
    (`set_epoch`) reads every block once, in an order keyed by ``(seed, epoch)``, and shuffles the samples of each
    ``window_blocks`` consecutive blocks of that order together: a larger window mixes more and keeps more blocks
    in use at once (`mmap_ninja.shuffle_quality` measures both).

    Everything else is `ResumableSampler`'s contract: every rank gets ``len(sampler)`` indices per epoch (padded or
    cut as ``DistributedSampler`` does), and `state_dict` / `load_state_dict` / `state_at` / `skip` work the same
    way, with the same small JSON state plus ``block_bytes``, ``blocks`` and ``window_blocks`` (a state of another
    layout is refused, naming both).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import np_from_ndarray
        >>> from mmap_ninja.adapters.torch import BlockShuffleSampler
        >>> rows = np_from_ndarray("block_rows", np.zeros((12, 4), dtype=np.int64), overwrite=True)  # 32-byte rows
        >>> sampler = BlockShuffleSampler(rows, block_bytes=128, window_blocks=1, seed=0)  # blocks of 4 rows
        >>> stream = list(sampler)
        >>> sorted(stream) == list(range(12)), [sorted({i // 4 for i in stream[k:k + 4]}) for k in (0, 4, 8)]
        (True, [[2], [0], [1]])
        >>> sampler.state_dict()["blocks"], sampler.state_dict()["position"]
        (3, 12)
    """

    layout: BlockLayout
    window_blocks: int

    def __init__(self, map: Any, block_bytes: Optional[int] = None, *, window_blocks: int = DEFAULT_WINDOW_BLOCKS,
                 seed: int = 0, rank: Optional[int] = None, world_size: Optional[int] = None, drop_last: bool = False):
        if isinstance(window_blocks, bool) or not isinstance(window_blocks, numbers.Integral) or window_blocks < 1:
            raise ValueError(f"window_blocks must be a positive int, got {window_blocks!r}")
        layout = map if isinstance(map, BlockLayout) else block_layout(map, block_bytes)
        self.layout = layout
        self.window_blocks = int(window_blocks)
        super().__init__(len(layout), rank=rank, world_size=world_size, seed=seed, shuffle=True, drop_last=drop_last)
        self._order = BlockOrder(layout, window_blocks=self.window_blocks, seed=self.seed, epoch=0)

    @property
    def block_bytes(self) -> int:
        """The block size in bytes."""
        return self.layout.block_bytes

    def __repr__(self) -> str:
        return (f"BlockShuffleSampler(n={self.n}, blocks={self.layout.num_blocks}, block_bytes={self.block_bytes}, "
                f"window_blocks={self.window_blocks}, rank={self.rank}, world_size={self.world_size}, "
                f"seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch}, position={self.position})")

    def _set_order(self) -> None:
        if self._order.epoch != self.epoch or self._order.seed != self.seed:
            self._order = BlockOrder(self.layout, window_blocks=self.window_blocks, seed=self.seed, epoch=self.epoch)

    def _state(self, position: int) -> dict[str, Any]:
        return {**super()._state(position), "block_bytes": self.block_bytes, "blocks": self.layout.num_blocks,
                "window_blocks": self.window_blocks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the epoch saved in ``state`` on the next ``iter()`` (from any world size and rank); the state
        must be of the same block layout and window."""
        if not isinstance(state, dict):
            raise TypeError(f"BlockShuffleSampler.load_state_dict needs a dict, got {type(state).__name__}")
        missing = [key for key in ("block_bytes", "blocks", "window_blocks") if key not in state]
        if missing:
            raise ValueError(f"not a BlockShuffleSampler state: missing {', '.join(missing)} (a ResumableSampler's "
                             f"state has another order)")
        mine = (self.block_bytes, self.layout.num_blocks, self.window_blocks)
        theirs = (int(state["block_bytes"]), int(state["blocks"]), int(state["window_blocks"]))
        if theirs != mine:
            raise ValueError(f"this BlockShuffleSampler state was saved for blocks of {theirs[0]} bytes ({theirs[1]} "
                             f"blocks) in windows of {theirs[2]}, but this sampler has blocks of {mine[0]} bytes "
                             f"({mine[1]} blocks) in windows of {mine[2]}")
        super().load_state_dict(state)
        self.shuffle = True
