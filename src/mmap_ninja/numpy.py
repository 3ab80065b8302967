"""``mmap_ninja.numpy``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.numpy`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.kinds.numpy import (
    NpTarget,
    NumpyField,
    NumpyMmap,
    append,
    extend,
    extend_dir,
    from_generator,
    from_ndarray,
    open_existing,
)

__all__ = [
    "NpTarget",
    "NumpyField",
    "NumpyMmap",
    "append",
    "extend",
    "extend_dir",
    "from_generator",
    "from_ndarray",
    "open_existing",
]
