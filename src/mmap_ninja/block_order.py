"""``mmap_ninja.block_order``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.containers.block_order`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.containers.block_order import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_WINDOW_BLOCKS,
    BlockLayout,
    BlockOrder,
    block_layout,
    shuffle_quality,
)

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_WINDOW_BLOCKS",
    "BlockLayout",
    "BlockOrder",
    "block_layout",
    "shuffle_quality",
]
