"""``mmap_ninja.string``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.strings`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.kinds.strings import DEFAULT_BATCH_SIZE, StringsField, StringsMmap, StringsMmmap

__all__ = ["DEFAULT_BATCH_SIZE", "StringsField", "StringsMmap", "StringsMmmap"]
