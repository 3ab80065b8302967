"""``mmap_ninja.blend``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.containers.blend`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.containers.blend import DEFAULT_MAX_OPEN_SOURCES, MAX_LENGTH, QUANTUM_BITS, BlendedMap, blend

__all__ = ["DEFAULT_MAX_OPEN_SOURCES", "MAX_LENGTH", "QUANTUM_BITS", "BlendedMap", "blend"]

# What pickles of earlier releases name (``__reduce__`` reconstructors); not public API.
from mmap_ninja.containers.blend import _rebuild as _rebuild
