"""``mmap_ninja.verify``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.containers.verify`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.containers.verify import Report, verify
from mmap_ninja.errors import CorruptMapError, FormatVersionError, NotAMapError

__all__ = ["CorruptMapError", "FormatVersionError", "NotAMapError", "Report", "verify"]
