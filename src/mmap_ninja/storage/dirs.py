"""The directory toolkit: how every writer of a folder locks it, builds something new aside and publishes it,
sweeps what a killed process left, and refuses files it did not write.

One implementation of each, used by a map's `Store` (``storage.py``), `merge` (``sharded.py``), `convert`
(``conversion.py``), `from_dask` (``adapters/dask.py``) and the remote cache (``adapters/cache.py``):

- **A lock with a timeout** (`hold_lock`, `try_hold`, `release`; `lock_directory` and `directory_lock` for a
  directory's ``.lock``): a dedicated lock file opened (never through a link) and locked through
  `mmap_ninja.storage.locks`,
  waiting at most ``timeout`` seconds; when another holder keeps it, `MapLockedError` names what is locked, the lock
  file and how long it waited. `is_held` asks, without waiting, whether a live process holds a lock file (a build
  in progress, a cache entry a reader maps, a conversion that is running).
- **Stage, rename, fsync** (`stage`, `Stage`; `replace_file` for one file): a new directory is built under a
  hidden name (``.<name><marker><id>`` beside its destination, or in a staging folder), its files and folders
  fsynced, renamed to its destination and the destination's folder fsynced: a reader sees nothing or the whole of
  it. A stage may be *guarded*: it holds a lock on ``<stage>.lock`` while it lives, so a sweep can tell a live
  stage from a dead one without a common lock.
- **Sweep** (`sweep`, `remove_aside`): what a killed process left (staging folders, trash), chosen by the
  caller's name pattern only (never a name the caller does not own), and, for guarded stages, only those whose
  lock no live process holds. `remove_aside` deletes a folder readers may map: renamed out of the way first (so no
  reader ever sees half of it), then deleted (its files are unlinked, never truncated).
- **Folders made for a destination** (`make_folders`, `unmake_folders`): a failed build leaves no folder it made.
- **Foreign files** (`foreign_names`, `refuse_foreign`): a directory the caller is about to write into holds only
  names it owns, or the caller's error names the others.

Windows (`mmap_ninja.storage._osfile.HELD_FILES_PINNED`): a lock file is closed before it is deleted, as Windows deletes
no
open file. Directory fsync is a no-op there (`mmap_ninja.storage._osfile`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Callable, Optional, Union

from mmap_ninja.errors import MapLockedError, ReadOnlyMapError
from mmap_ninja.storage import _osfile, locks
from mmap_ninja.storage._fsio import check_entry, fsync_dir, fsync_tree, open_inside, pwrite_all
from mmap_ninja.storage._osfile import fsync_file
from mmap_ninja.storage._paths import PathLike, absolute

__all__ = ["DEFAULT_LOCK_TIMEOUT", "LOCK_FILE", "Stage", "check_lock_timeout", "directory_lock", "foreign_names",
           "hold_lock", "is_held", "listed", "lock_directory", "make_folders", "refuse_foreign", "release",
           "remove_aside", "replace_file", "stage", "sweep", "try_hold", "unmake_folders"]

LOCK_FILE = ".lock"
"""The lock file of a map's (or sharded map's) directory."""
DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a write waits for another writer by default, as SQLite's default busy timeout."""
_GUARD_SUFFIX = ".lock"  # a guarded stage's lock file: ``<stage>.lock``

Names = Union[Collection[str], Callable[[str], bool]]
"""Which names a caller owns: a collection of names, or a function of a name."""


# ---------------------------------------------------------------------------------------------- locks


def check_lock_timeout(timeout: Any) -> Optional[float]:
    """``lock_timeout`` as None (wait for ever) or a finite number of seconds >= 0, or a ValueError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < float("inf"):
        raise ValueError(f"lock_timeout must be None (wait for ever) or a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


def _open_lock(lock_path: Path) -> int:
    return open_inside(lock_path, os.O_RDWR | os.O_CREAT)  # a link or a non-file there: CorruptMapError


def _lock(fd: int, *, shared: bool, timeout: Optional[float], what: str) -> Optional[int]:
    """Lock the open lock file ``fd``, waiting at most ``timeout`` seconds: ``fd``, or None (closed) when another
    holder kept it."""
    try:
        taken = locks.lock(fd, shared=shared, timeout=timeout, what=what)
    except BaseException:
        os.close(fd)
        raise
    if not taken:
        os.close(fd)
        return None
    return fd


def hold_lock(lock_path: Path, *, timeout: Optional[float] = None, shared: bool = False, what: Optional[str] = None,
              hint: str = "pass lock_timeout= to wait longer (None waits for ever)") -> int:
    """Take the lock of the lock file ``lock_path`` (created if missing; never through a link), shared or
    exclusive, waiting at most ``timeout`` seconds (None: for as long as it takes; 0: one try), and return the
    descriptor that holds it (`release` it). If another holder keeps it, a `MapLockedError` says ``"<what> is
    locked by another writer (waited <timeout> s for <lock_path>); <hint>"``. ``what`` (default: the lock file's
    folder) names what the lock protects."""
    what = str(lock_path.parent) if what is None else what
    fd = _lock(_open_lock(lock_path), shared=shared, timeout=timeout, what=what)
    if fd is None:
        raise MapLockedError(f"{what} is locked by another writer (waited {timeout or 0:g} s for {lock_path}); "
                             f"{hint}")
    return fd


def try_hold(lock_path: Path, *, shared: bool = False, what: Optional[str] = None) -> Optional[int]:
    """`hold_lock` without waiting: the descriptor holding the lock, or None while another holder keeps it."""
    return _lock(_open_lock(lock_path), shared=shared, timeout=0, what=str(lock_path.parent) if what is None else what)


def release(fd: int) -> None:
    """Unlock and close a descriptor `hold_lock`, `try_hold` or `lock_directory` returned."""
    locks.release(fd)


def is_held(lock_path: Path, *, exclusively: bool = False) -> bool:
    """Whether a live process holds a lock on ``lock_path``, asked without waiting and without creating anything
    (the lock is taken and released at once). ``exclusively``: only an exclusive holder counts (a writer's lock,
    not readers' shared ones; the question is then asked with a shared lock, so that two askers never see each
    other). False when the file is missing or cannot be opened, or when this Python takes no locks (nobody can
    tell then)."""
    if not locks.available():
        return False
    try:
        fd = os.open(lock_path, os.O_RDONLY if exclusively else os.O_RDWR)
    except OSError:
        return False
    try:
        return not locks.try_lock(fd, shared=exclusively, what=str(lock_path))
    finally:
        locks.release(fd)


def lock_directory(path: Path, timeout: Optional[float], what: str = "the map") -> int:
    """Take the writer lock (``.lock``) of the map (or sharded map) directory ``path``, waiting up to ``timeout``
    seconds (None: for ever), and return the descriptor that holds it. `MapLockedError` (naming ``path``, the lock
    file and the wait) if another writer keeps it; `ReadOnlyMapError` if the lock file cannot be made."""
    lock_path = path / LOCK_FILE
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            opened = _open_lock(lock_path)
        except OSError as e:
            raise ReadOnlyMapError(e.errno, f"cannot write to {what} {path}: {e.strerror}", str(lock_path)) from None
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        fd = _lock(opened, shared=False, timeout=left, what=f"{what} {path}")
        if fd is None:
            raise MapLockedError(f"{path} is locked by another writer (waited {timeout or 0:g} s for {lock_path}); "
                                 f"pass lock_timeout= to wait longer (None waits for ever)")
        if _is_current(fd, lock_path):
            return fd
        # While this waited, the lock file was deleted or the folder replaced (a map replaced by `overwrite`, a
        # creation undone): the lock held protects nothing now. Take the current one.
        locks.release(fd)


def _is_current(fd: int, lock_path: Path) -> bool:
    """Whether ``fd`` is the file at ``lock_path`` now."""
    try:
        current = os.stat(lock_path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev)


@contextlib.contextmanager
def directory_lock(directory: PathLike, timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                   what: str = "the sharded map") -> Iterator[None]:
    """Hold the exclusive lock of a directory (its ``.lock``) for the block, as `lock_directory` takes it: `merge`,
    `add_shards` and the Dask build take a sharded map's, so only one of them changes it at a time. Waits at most
    ``timeout`` seconds (``None``: for ever), then raises `MapLockedError`."""
    fd = lock_directory(absolute(directory), timeout, what)
    try:
        yield
    finally:
        release(fd)


# ---------------------------------------------------------------------------------------------- staging


def replace_file(path: Path, data: bytes, *, durable: bool, unique: bool = False) -> None:
    """Atomically make ``path`` hold ``data``: write a temporary file beside it and rename it over ``path``
    (``durable``: fsync the file, then the folder). The temporary file is ``<name>.tmp``, written under the lock of
    whoever owns ``path``; ``unique``: ``<name>.<hex>.tmp``, for a file that processes replace without a lock (a
    failure then removes it)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp" if unique else f"{path.name}.tmp")
    check_entry(path)  # a rename over a link would not touch its target, but the map must not hold one
    fd = open_inside(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        try:
            pwrite_all(fd, memoryview(data), 0)
            if durable:
                fsync_file(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if unique:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


class Stage:
    """A new directory being built at ``path``, where nobody looks, until `publish` renames it to
    ``destination``. Made by `stage`; the builder creates ``path`` (or `stage` made it empty)."""

    def __init__(self, path: Path, destination: Path, guard: Optional[int]):
        self.path = path
        self.destination = destination
        self._guard = guard

    def publish(self) -> None:
        """fsync every file and folder of the stage, rename it to its destination, then fsync the destination's
        folder: the name appears only for complete, durable contents. The caller has checked the destination
        (a rename replaces an empty folder there without a word)."""
        fsync_tree(self.path)
        os.rename(self.path, self.destination)
        fsync_dir(self.destination.parent)

    def discard(self) -> None:
        """Delete what was built (a failed build), then `release` the stage."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()

    def release(self) -> None:
        """Drop a guarded stage's lock file (after `publish` or `discard`; nothing for an unguarded one)."""
        fd, self._guard = self._guard, None
        if fd is not None:
            _drop_lock_file(Path(f"{self.path}{_GUARD_SUFFIX}"), fd)


def stage(destination: Path, marker: str, *, folder: Optional[Path] = None, guarded: bool = False,
          make: bool = False) -> Stage:
    """Reserve a hidden, unique name to build ``destination`` under: ``.<destination name><marker><12 hex
    digits>`` beside it, or ``<destination name><marker><32 hex digits>`` in ``folder`` (a staging folder).
    ``guarded``: create and lock ``<stage>.lock`` (O_EXCL: the name is new), which the stage holds until
    `Stage.release`, so that `sweep` removes it only once its process is gone. ``make``: create the (empty) stage
    folder too. An interruption (Ctrl-C) while the stage is being made leaves nothing behind."""
    if folder is None:
        path = destination.parent / f".{destination.name}{marker}{uuid.uuid4().hex[:12]}"
    else:
        path = folder / f"{destination.name}{marker}{uuid.uuid4().hex}"
    guard: Optional[int] = None
    guard_path = Path(f"{path}{_GUARD_SUFFIX}")
    try:
        if guarded:
            guard = os.open(guard_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            locks.lock(guard, what=str(guard_path))
        if make:
            path.mkdir()
    except BaseException:
        if guard is not None:
            _drop_lock_file(guard_path, guard)
        elif guarded:  # (made before the interruption arrived: the name is unique, so it is ours)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(guard_path)
        raise
    return Stage(path, destination, guard)


def _drop_lock_file(lock_path: Path, fd: int) -> None:
    """Delete a lock file this process holds, and close it: deleted while still held where the OS allows it (a
    sweeper never takes a lock that is about to go), closed first where it does not (Windows)."""
    if _osfile.HELD_FILES_PINNED:
        locks.release(fd)
        with contextlib.suppress(OSError):  # (taken just now by a sweeper: it deletes it)
            os.unlink(lock_path)
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
    finally:
        locks.release(fd)


def _owns(names: Names) -> Callable[[str], bool]:
    return names if callable(names) else frozenset(names).__contains__


def sweep(folder: Path, ours: Names, *, guarded: bool = False) -> list[str]:
    """Delete the entries of ``folder`` that a killed process left: those ``ours`` owns (a staging or trash name
    pattern of the caller's). Unguarded, the caller holds the lock that excludes every live owner of such names
    (a directory's writer lock, a cache entry's download lock). ``guarded``: the entries are stages made by
    `stage` with ``guarded=True``; one is deleted (with its lock file) only if no live process holds its lock file,
    which ``ours`` is asked about. Returns the names deleted; a missing ``folder`` holds nothing."""
    owned = _owns(ours)
    try:
        entries = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        if not owned(entry):
            continue
        if not guarded:
            _remove(folder / entry)
            removed.append(entry)
            continue
        if not entry.endswith(_GUARD_SUFFIX):
            continue  # a stage without its lock file is left alone: its owner may be making the lock right now
        lock_path = folder / entry
        try:
            opened = os.open(lock_path, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile by its owner or another sweeper
        fd = _lock(opened, shared=False, timeout=0, what=str(lock_path))
        if fd is None:
            continue  # a live stage
        shutil.rmtree(folder / entry[:-len(_GUARD_SUFFIX)], ignore_errors=True)
        _drop_lock_file(lock_path, fd)
        removed.append(entry[:-len(_GUARD_SUFFIX)])
    return removed


def _remove(path: Path) -> None:
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def remove_aside(path: Path, aside: Path) -> bool:
    """Delete the folder ``path``, which readers may map, by renaming it to ``aside`` (a trash name: no reader
    ever sees half of it) and deleting it there (unlinked, never truncated: readers keep what they map). False if
    there was no ``path``."""
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


# ---------------------------------------------------------------------------------------------- folders made


def make_folders(path: Path) -> Optional[Path]:
    """Make the folder ``path`` and its missing parents; return the outermost folder this call made (None if
    ``path`` existed, or another process made it meanwhile: then it is not this call's to remove). A failure
    midway removes what it made."""
    made: Optional[Path] = None
    for folder in (path, *path.parents):
        if os.path.lexists(folder):
            break
        made = folder
    if made is None:
        return None
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return None
    except BaseException:
        unmake_folders(made, path, only_empty=True)
        raise
    return made


def unmake_folders(made: Optional[Path], path: Path, *, only_empty: bool = False) -> None:
    """Remove the folders `make_folders` made (``made``, the outermost, down to ``path``): with all they hold, or
    ``only_empty``: from ``path`` up, each only while it is empty (someone else's files stop it)."""
    if made is None:
        return
    if not only_empty:
        shutil.rmtree(made, ignore_errors=True)
        return
    for folder in (path, *path.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == made:
            return


# ---------------------------------------------------------------------------------------------- foreign files


def foreign_names(directory: Path, ours: Names) -> list[str]:
    """The names in ``directory`` that ``ours`` does not own, sorted."""
    owned = _owns(ours)
    return sorted(name for name in os.listdir(directory) if not owned(name))


def listed(names: list[str], most: int = 5) -> str:
    """``names`` for a message: the first ``most`` of them, joined by commas, then ``...`` if there are more."""
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def refuse_foreign(directory: Path, ours: Names, refusal: Callable[[list[str]], Exception]) -> None:
    """Raise ``refusal(foreign)`` if ``directory`` holds names ``ours`` does not own (``foreign``: those names,
    sorted); the caller's error says what it is and why it stops."""
    foreign = foreign_names(directory, ours)
    if foreign:
        raise refusal(foreign)
