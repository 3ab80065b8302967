"""mmap_ninja 0.9.0's ``base`` module path, kept so that ``from mmap_ninja import base`` still works.

Its private byte-conversion helpers described 0.9.0's on-disk format and are gone; `Wrapped` lives in
`mmap_ninja.containers.generic`.
"""

from mmap_ninja.containers.generic import Wrapped

__all__ = ["Wrapped"]
