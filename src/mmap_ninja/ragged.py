"""``mmap_ninja.ragged``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.ragged`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.kinds.ragged import DEFAULT_BATCH_SIZE, RaggedField, RaggedMmap, RaggedMmmap

__all__ = ["DEFAULT_BATCH_SIZE", "RaggedField", "RaggedMmap", "RaggedMmmap"]
