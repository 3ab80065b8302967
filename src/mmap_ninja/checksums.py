"""Checksums of committed bytes: one record per column per write, so appends stay O(batch).

Every commit adds, for each column it grew, a record ``(column id, start byte, stop byte, hash)`` to the map's
``checksums`` column, written before the header that publishes the data. An in-place write re-hashes the records
whose ranges it touches, in the same transaction. ``mmap_ninja.verify(path, deep=True)`` re-hashes every record and
checks that the records cover every committed byte. FORMAT.md specifies the records.

The hash is xxh3-64 from the ``xxhash`` package when it is installed (about 25 GB/s here: a build loses ~4%),
otherwise the standard library's CRC-32 (about 7 GB/s). A map records which one it uses.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np

__all__ = ["ALGORITHMS", "RECORD_DTYPE", "column_id", "default_algorithm", "hasher"]

RECORD_DTYPE = np.dtype([("column", "<u4"), ("hash", "<u4"), ("start", "<u8"), ("stop", "<u8"), ("digest", "<u8")])
"""One checksum record; ``hash`` is reserved (0) and ``digest`` holds the hash value (CRC-32 in its low 32 bits)."""

Hasher = Callable[[Iterable[Any]], int]


def _xxh3(buffers: Iterable[Any]) -> int:
    import xxhash

    state = xxhash.xxh3_64()
    for buffer in buffers:
        state.update(buffer)
    value: int = state.intdigest()
    return value


def _crc32(buffers: Iterable[Any]) -> int:
    value = 0
    for buffer in buffers:
        value = zlib.crc32(buffer, value)
    return value


ALGORITHMS: dict[str, Hasher] = {"xxh3_64": _xxh3, "crc32": _crc32}


def default_algorithm() -> str:
    """xxh3-64 if ``xxhash`` is installed, else CRC-32."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "crc32"
    return "xxh3_64"


def hasher(algorithm: str) -> Hasher:
    """The function hashing a sequence of buffers (as one byte string) with ``algorithm``."""
    if algorithm == "xxh3_64":
        try:
            import xxhash  # noqa: F401
        except ImportError:
            raise ImportError("this map's checksums are xxh3-64, which needs the 'xxhash' package: "
                              "pip install xxhash") from None
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}") from None


def column_id(name: str) -> int:
    """The id a record gives its column: the CRC-32 of the column's name."""
    return zlib.crc32(name.encode())
