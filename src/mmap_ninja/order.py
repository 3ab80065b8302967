"""``mmap_ninja.order``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.containers.order`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.containers.order import Order, OrderFamily, take_many

__all__ = ["Order", "OrderFamily", "take_many"]

# What pickles of earlier releases name (``__reduce__`` reconstructors); not public API.
from mmap_ninja.containers.order import _rebuild as _rebuild
