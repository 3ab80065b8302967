"""``mmap_ninja.cli``, kept as an import path (the ``mmap-ninja`` script that an install made before 1.0's relayout
generated runs ``mmap_ninja.cli:main``): it re-exports `mmap_ninja.tools.cli`, where the code lives
(ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.tools.cli import main

__all__ = ["main"]
