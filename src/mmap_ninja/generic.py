"""``mmap_ninja.generic``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.containers.generic`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.containers.generic import M, OpenedMap, Wrapped, is_url, open_existing, upload
from mmap_ninja.errors import KindMismatchError, UnknownFeatureError

__all__ = ["KindMismatchError", "M", "OpenedMap", "UnknownFeatureError", "Wrapped", "is_url", "open_existing", "upload"]
