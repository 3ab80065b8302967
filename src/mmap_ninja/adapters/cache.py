"""The local cache of maps read from URLs: `Cache` (used by `mmap_ninja.adapters.remote`, which re-exports it),
what it holds, and clearing it safely (``mmap-ninja cache ...``).

The cache (layout in `mmap_ninja.adapters.remote`'s docstring; default ``$MMAP_NINJA_CACHE``, else
``$XDG_CACHE_HOME/mmap_ninja``, else ``~/.cache/mmap_ninja``) keeps one directory per downloaded map or shard
under ``entries/``. `list_entries` says, per entry, which URL it came from (from ``meta/<key>.json``, written when
the entry is filled, or read again if it had none), its size, when it was last used and whether a live reader
holds it. `clear` deletes entries (all, those unused for a while, those from a URL or under it) through the
cache's own eviction path: an entry a live reader maps (it holds the entry's lock shared) is never deleted, only
reported.

Looking at the cache makes no reader wait for long: whether an entry is held is asked by taking its lock
exclusively without waiting and releasing it at once.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.storage.dirs import hold_lock, is_held, release, remove_aside, replace_file, stage, sweep, try_hold
from mmap_ninja.storage.store import PathLike, absolute

__all__ = ["Cache", "CacheEntry", "ClearReport", "cache_dir", "clear", "default_cache_dir", "list_entries",
           "parse_duration"]


def default_cache_dir() -> Path:
    """``$MMAP_NINJA_CACHE``, else ``$XDG_CACHE_HOME/mmap_ninja``, else ``~/.cache/mmap_ninja``.

    Example:

        >>> import os
        >>> from mmap_ninja.adapters.remote import default_cache_dir
        >>> os.environ["MMAP_NINJA_CACHE"] = "my_cache"
        >>> default_cache_dir().name
        'my_cache'
        >>> del os.environ["MMAP_NINJA_CACHE"]
    """
    explicit = os.environ.get("MMAP_NINJA_CACHE")
    if explicit:
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().absolute() / "mmap_ninja"


# ------------------------------------------------------------------ the cache


class Cache:
    """The download cache in ``root`` shared by every process of a node (see the module's docstring).

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import RaggedMmap
        >>> from mmap_ninja.adapters.remote import Cache, open_remote, upload
        >>> RaggedMmap.from_lists("local", [np.arange(n) for n in (1, 2, 3)], overwrite=True).close()
        >>> upload("local", "memory://cache-docs/tokens")
        >>> remote = open_remote("memory://cache-docs/tokens", cache_dir="cache_demo")
        >>> cache = Cache("cache_demo")
        >>> cache.usage()  # opening read only the top header
        {}
        >>> remote[2]  # the first read downloads the map into an entry
        array([0, 1, 2])
        >>> list(cache.usage().values())
        [...]
        >>> remote.close()  # no reader holds the entry any more: evict can delete it
        >>> len(cache.evict(limit=0)), cache.usage()
        (1, {})
    """

    def __init__(self, root: PathLike, size_limit: Optional[int] = None):
        if size_limit is not None and (isinstance(size_limit, bool) or not isinstance(size_limit, int)
                                       or size_limit < 0):
            raise ValueError(f"cache_size_limit must be a number of bytes (a non-negative int) or None, "
                             f"got {size_limit!r}")
        self.root = absolute(root)
        self.size_limit = size_limit
        self.entries = self.root / "entries"
        self.locks = self.root / "locks"
        self.staging = self.root / "staging"
        self.trash = self.root / "trash"
        self.meta = self.root / "meta"

    def _dirs(self) -> None:
        try:
            for d in (self.entries, self.locks, self.staging, self.trash, self.meta):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise type(e)(e.errno, f"cannot use {self.root} as the cache (cache_dir): {e.strerror}",
                          e.filename) from None

    def acquire(self, key: str, fill: Callable[[Path], None], check: Optional[Callable[[Path], None]] = None,
                about: Optional[dict[str, Any]] = None) -> tuple[Path, int]:
        """The entry ``key``, complete, and an open file descriptor holding a shared lock on it (close it to
        release the entry). If the entry is missing, ``fill(staging_dir)`` fills a fresh directory (raising if
        what it got fails its checks), which is fsynced and then renamed into place (and the rename fsynced);
        concurrent callers wait for it. An entry found in the cache is first given to ``check`` (if given): one
        that fails it with a `CorruptMapError` (a power cut can leave an entry truncated or zero-filled) is
        evicted and fetched again, once. ``about`` (JSON-able: the URL, the remote identity) is written to
        ``meta/<key>.json`` when the entry has none (`mmap_ninja.adapters.cache` lists it).

        Two locks per entry: ``locks/<key>``, shared by every reader for as long as it maps the entry (an evictor
        deletes only what it can lock exclusively), and ``locks/<key>.download``, exclusive around a download (so
        one process downloads and the others wait for it, not for the readers)."""
        self._dirs()
        entry = self.entries / key
        # Waits only for an evictor deleting the entry.
        fd = hold_lock(self.locks / key, shared=True, what=f"the cache entry {entry}")
        try:
            downloaded = self._fill_missing(key, entry, fill, about)
            if not downloaded and check is not None:
                try:
                    check(entry)
                except CorruptMapError:
                    self._discard_damaged(key, entry)
                    downloaded = self._fill_missing(key, entry, fill, about)
                    if not downloaded:  # another process fetched it again meanwhile
                        check(entry)
            os.utime(entry)  # last use, for the least-recently-used eviction
            if about is not None and not downloaded and not (self.meta / f"{key}.json").exists():
                self._describe(key, about)  # an entry cached before descriptions were written gets one now
            if downloaded and self.size_limit is not None:
                self.evict()
            return entry, fd
        except BaseException:
            release(fd)
            raise

    def _fill_missing(self, key: str, entry: Path, fill: Callable[[Path], None],
                      about: Optional[dict[str, Any]] = None) -> bool:
        """Download the entry if it is missing (one process at a time); whether this call downloaded it."""
        if entry.is_dir():
            return False
        # One downloader; the rest wait, then find it.
        download = hold_lock(self.locks / (key + ".download"), what=f"the cache entry {entry}")
        try:
            if entry.is_dir():
                return False
            sweep(self.staging, lambda name: name.startswith(key + "."))  # left by a downloader that died
            staged = stage(entry, ".", folder=self.staging, make=True)
            try:
                fill(staged.path)
                staged.publish()  # the files reach the disk before the name that says they are complete
            except BaseException:
                staged.discard()
                raise
            if about is not None:
                self._describe(key, about)
            return True
        finally:
            release(download)

    def _describe(self, key: str, about: dict[str, Any]) -> None:
        """Write ``meta/<key>.json`` atomically; descriptive only, so a failure to write it fails nothing (an entry
        without it, such as one from an older cache, is listed without its URL; a link there is not written through)."""
        with suppress(OSError, CorruptMapError):
            replace_file(self.meta / f"{key}.json", json.dumps({"key": key, **about}, sort_keys=True,
                                                                default=str).encode(), durable=False, unique=True)

    def _discard_damaged(self, key: str, entry: Path) -> None:
        """Move a damaged entry out of the way (under its download lock) and delete it: readers that map its
        files keep them (they are unlinked, never truncated)."""
        download = hold_lock(self.locks / (key + ".download"), what=f"the cache entry {entry}")
        try:
            self._trash(key)  # False: another process discarded it first
        finally:
            release(download)

    def usage(self) -> dict[str, int]:
        """The bytes every complete entry holds, by key."""
        sizes = {}
        if self.entries.is_dir():
            for entry in self.entries.iterdir():
                sizes[entry.name] = _tree_size(entry)
        return sizes

    def evict(self, limit: Optional[int] = None) -> list[str]:
        """Delete least recently used entries that no reader holds until the cache holds at most ``limit`` bytes
        (default: the cache's ``size_limit``); returns the keys deleted."""
        limit = self.size_limit if limit is None else limit
        if limit is None or not self.entries.is_dir():
            return []
        sweep(self.trash, lambda name: True)  # left by an evictor that died (every name there is the cache's)
        found = []
        for entry in self.entries.iterdir():
            try:
                found.append((entry.stat().st_mtime, entry.name, _tree_size(entry)))
            except FileNotFoundError:
                continue  # evicted by another process just now
        total = sum(size for _, _, size in found)
        deleted = []
        for _, key, size in sorted(found):
            if total <= limit:
                break
            if self.try_remove(key) == "removed":
                total -= size
                deleted.append(key)
        return deleted

    def try_remove(self, key: str, *, dry_run: bool = False) -> str:
        """Delete the entry ``key`` unless a live reader holds it: take ``locks/<key>`` exclusively without waiting
        (readers hold it shared while they map the entry, a downloader while it fills it), rename the entry into
        ``trash/`` (so a reader never sees half an entry) and delete it there, with its ``meta/<key>.json``.
        Returns ``"removed"``, ``"held"`` (a reader holds it: left as it is) or ``"gone"`` (no such entry).
        ``dry_run``: only say which (the lock is taken and released, nothing is deleted)."""
        fd = try_hold(self.locks / key, what=f"the cache entry {self.entries / key}")
        if fd is None:
            return "held"
        try:
            if dry_run:
                return "removed" if (self.entries / key).is_dir() else "gone"
            return "removed" if self._trash(key) else "gone"
        finally:
            release(fd)

    def _trash(self, key: str) -> bool:
        """Rename the entry ``key`` into ``trash/`` and delete it (the caller holds its lock exclusively): readers
        that still map its files keep them (unlinked, never truncated). False when there was no such entry."""
        if not remove_aside(self.entries / key, self.trash / uuid.uuid4().hex):
            return False
        with suppress(FileNotFoundError):
            os.unlink(self.meta / f"{key}.json")
        return True


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.stat(os.path.join(folder, name)).st_size
    return total


# ------------------------------------------------------------------ listing and clearing


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
    return CacheEntry(key=directory.name, path=str(directory), size=_tree_size(directory), last_used=last_used,
                      held=is_held(cache.locks / directory.name), url=url if isinstance(url, str) else None,
                      about=about)


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
