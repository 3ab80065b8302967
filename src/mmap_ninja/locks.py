"""``mmap_ninja.locks``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.storage.locks`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import LockingUnavailableError
from mmap_ninja.storage.locks import (
    available,
    facility,
    lock,
    portalocker_backend,
    release,
    require,
    try_lock,
    use_facility,
)

__all__ = [
    "LockingUnavailableError",
    "available",
    "facility",
    "lock",
    "portalocker_backend",
    "release",
    "require",
    "try_lock",
    "use_facility",
]
