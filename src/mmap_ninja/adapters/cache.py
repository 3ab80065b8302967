"""The remote-map cache from the outside: what it holds, and clearing it safely (``mmap-ninja cache ...``).

The cache (`mmap_ninja.adapters.remote`, default ``$MMAP_NINJA_CACHE``, else ``$XDG_CACHE_HOME/mmap_ninja``, else
``~/.cache/mmap_ninja``) keeps one directory per downloaded map or shard under ``entries/``. `list_entries` says,
per entry, which URL it came from (from ``meta/<key>.json``, written when the entry was filled; None for an entry
written by a version that did not record it), its size, when it was last used and whether a live reader holds it.
`clear` deletes entries (all, those unused for a while, those from URLs under a prefix) through the cache's own
eviction path: an entry a live reader maps (it holds the entry's lock shared) is never deleted, only reported.

Reading the cache takes no lock a reader waits on for long: whether an entry is held is asked by taking its lock
exclusively without waiting and releasing it at once.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from mmap_ninja import locks
from mmap_ninja.adapters.remote import Cache, default_cache_dir
from mmap_ninja.storage import PathLike

__all__ = ["CacheEntry", "ClearReport", "cache_dir", "clear", "list_entries", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in a duration written as a number and a unit: ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (also
    combined: ``1d12h``). A `ValueError` names what is wrong.

    Example:

        >>> from mmap_ninja.adapters.cache import parse_duration
        >>> parse_duration("12h"), parse_duration("1d12h")
        (43200.0, 129600.0)
    """
    stripped = text.strip().lower()
    parts = _DURATION.findall(stripped)
    if not stripped or "".join(number + unit for number, unit in parts) != stripped:
        raise ValueError(f"a duration is a number with a unit s, m, h, d or w (90s, 30m, 12h, 7d), got {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def cache_dir(path: Optional[PathLike] = None) -> Path:
    """The cache directory: ``path`` if given, else `mmap_ninja.adapters.remote.default_cache_dir`.

    Example:

        >>> from mmap_ninja.adapters.cache import cache_dir
        >>> cache_dir("my-cache").is_absolute(), cache_dir("my-cache").name
        (True, 'my-cache')
    """
    return default_cache_dir() if path is None else Path(os.fspath(path)).expanduser().absolute()


@dataclass
class CacheEntry:
    """One complete entry of the cache.

    Example:

        >>> from mmap_ninja import StringsMmap, open_existing, upload
        >>> from mmap_ninja.adapters.cache import clear, list_entries
        >>> _ = clear("cache-entry")  # start empty
        >>> StringsMmap.from_strings("entry-example", ["a"], overwrite=True).close()
        >>> upload("entry-example", "memory://cache-examples/entry")
        >>> with open_existing("memory://cache-examples/entry", cache_dir="cache-entry") as m:
        ...     m[0]
        'a'
        >>> [entry] = list_entries("cache-entry")
        >>> entry.url, entry.held, entry.about["holds"], entry.size > 0
        ('memory://cache-examples/entry', False, 'strings map', True)
    """

    key: str
    """Its name under ``entries/`` (a hash of the URL and the remote map's identity)."""
    path: str
    """Its directory."""
    size: int
    """Bytes of its files."""
    last_used: float
    """When a reader last opened it (the directory's mtime, seconds since the epoch)."""
    held: bool
    """Whether a live reader holds it (it cannot be deleted now)."""
    url: Optional[str] = None
    """Where it was downloaded from (None for an entry whose ``meta/<key>.json`` is missing)."""
    about: dict[str, Any] = field(default_factory=dict)
    """Everything ``meta/<key>.json`` says: ``url``, ``holds`` (``"ragged map"``, ``"shard 3 of s3://..."``,
    ``"sharded map header"``) and the remote identity (``id``, ``commit`` or ``length``)."""

    def as_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field, with ``last_used`` also as an ISO 8601 UTC time."""
        described = asdict(self)
        described["last_used_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_used))
        return described


@dataclass
class ClearReport:
    """What `clear` did (or, with ``dry_run``, would do).

    Example:

        >>> from mmap_ninja.adapters.cache import clear
        >>> report = clear("an-empty-cache", dry_run=True)
        >>> report.removed, report.held, report.freed
        ([], [], 0)
    """

    removed: list[CacheEntry]
    """The entries deleted (``dry_run``: those that would be)."""
    held: list[CacheEntry]
    """The entries selected but kept because a live reader holds them."""
    dry_run: bool

    @property
    def freed(self) -> int:
        """Bytes the removed entries held."""
        return sum(entry.size for entry in self.removed)


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


def _held(cache: Cache, key: str) -> bool:
    try:
        fd = os.open(cache.locks / key, os.O_RDWR)
    except FileNotFoundError:
        return False  # no reader has ever locked it
    try:
        return not locks.try_lock(fd, what=f"the cache entry {cache.entries / key}")
    finally:
        locks.release(fd)


def _about(cache: Cache, key: str) -> dict[str, Any]:
    try:
        about = json.loads((cache.meta / f"{key}.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}  # an entry from before meta/ existed, or one whose description was cut short
    return about if isinstance(about, dict) else {}


def _entry(cache: Cache, directory: Path) -> Optional[CacheEntry]:
    try:
        last_used = directory.stat().st_mtime
    except FileNotFoundError:
        return None  # deleted by another process just now
    about = _about(cache, directory.name)
    url = about.get("url")
    return CacheEntry(key=directory.name, path=str(directory), size=_size(directory), last_used=last_used,
                      held=_held(cache, directory.name), url=url if isinstance(url, str) else None, about=about)


def _under(url: Optional[str], prefix: str) -> bool:
    if url is None:
        return False
    folder = prefix.rstrip("/")
    return url == folder or url.startswith(folder + "/")


def list_entries(path: Optional[PathLike] = None) -> list[CacheEntry]:
    """Every complete entry of the cache at ``path`` (default: `cache_dir`), least recently used first; an empty
    list when the cache does not exist. Creates nothing.

    Example:

        >>> from mmap_ninja import StringsMmap, open_existing, upload
        >>> from mmap_ninja.adapters.cache import list_entries
        >>> StringsMmap.from_strings("listed", ["a", "b"], overwrite=True).close()
        >>> upload("listed", "memory://cache-examples/listed")
        >>> m = open_existing("memory://cache-examples/listed", cache_dir="cache-ls")
        >>> m[0]  # the first read downloads the map into the cache
        'a'
        >>> [(entry.url, entry.size > 0) for entry in list_entries("cache-ls") if entry.held]  # m holds it
        [('memory://cache-examples/listed', True)]
        >>> m.close()
        >>> any(entry.held for entry in list_entries("cache-ls"))
        False
    """
    cache = Cache(cache_dir(path))
    if cache.root.exists() and not cache.root.is_dir():
        raise NotADirectoryError(f"{cache.root} is not a directory, so it cannot be the cache")
    if not cache.entries.is_dir():
        return []
    found = [_entry(cache, directory) for directory in cache.entries.iterdir() if directory.is_dir()]
    return sorted((entry for entry in found if entry is not None), key=lambda entry: (entry.last_used, entry.key))


def clear(path: Optional[PathLike] = None, *, older_than: Optional[float] = None, url_prefix: Optional[str] = None,
          dry_run: bool = False, now: Optional[float] = None) -> ClearReport:
    """Delete the entries of the cache at ``path`` (default: `cache_dir`) that match every filter given: last used
    more than ``older_than`` seconds before ``now`` (default: the current time), downloaded from ``url_prefix`` or
    from under it (a path prefix: ``s3://b/data`` matches ``s3://b/data`` and ``s3://b/data/shards/...``, not
    ``s3://b/data2``; an entry whose URL is unknown never matches). No filter: every entry.

    An entry a live reader holds is kept and listed in the report's ``held``; the others are renamed into the
    cache's ``trash/`` and deleted there (the cache's eviction path), with their descriptions. ``dry_run`` deletes
    nothing and reports what would be deleted.

    Example:

        >>> from mmap_ninja import StringsMmap, open_existing, upload
        >>> from mmap_ninja.adapters.cache import clear
        >>> StringsMmap.from_strings("cleared", ["a", "b"], overwrite=True).close()
        >>> upload("cleared", "memory://cache-examples/cleared")
        >>> m = open_existing("memory://cache-examples/cleared", cache_dir="cache-clear")
        >>> m[1]
        'b'
        >>> report = clear("cache-clear")  # m maps its entry: kept
        >>> [entry.url for entry in report.held], report.removed
        (['memory://cache-examples/cleared'], [])
        >>> m.close()
        >>> [entry.url for entry in clear("cache-clear").removed]
        ['memory://cache-examples/cleared']
    """
    if older_than is not None and (isinstance(older_than, bool) or older_than < 0):
        raise ValueError(f"older_than must be a non-negative number of seconds, got {older_than!r}")
    cutoff = None if older_than is None else (time.time() if now is None else now) - older_than
    report = ClearReport(removed=[], held=[], dry_run=dry_run)
    cache = Cache(cache_dir(path))
    for entry in list_entries(path):
        if cutoff is not None and entry.last_used >= cutoff:
            continue
        if url_prefix is not None and not _under(entry.url, url_prefix):
            continue
        outcome = cache.try_remove(entry.key, dry_run=dry_run)
        if outcome == "held":
            entry.held = True
            report.held.append(entry)
        elif outcome == "removed":
            report.removed.append(entry)
    return report
