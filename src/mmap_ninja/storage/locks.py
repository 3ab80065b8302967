"""Advisory locks on dedicated lock files, shared or exclusive, on every OS.

Every lock mmap_ninja takes goes through this module, and only ever on a file that holds nothing but the lock
(a map's ``.lock``, a conversion's ``.DST.converting-ID.lock``, the remote cache's ``locks/<key>``): on Windows a
lock is a mandatory byte-range lock, so a locked file must never be one that anyone reads or writes.

Two facilities, chosen once at import:

- ``fcntl.flock`` where the ``fcntl`` module exists (Linux, macOS, every POSIX system). Locks belong to the open
  file description, so two descriptors of the same file exclude each other even inside one process, and the
  kernel releases them when the descriptor is closed or the process dies.
- ``portalocker`` (``LockFileEx`` through pywin32) where it does not (Windows, where mmap_ninja depends on
  ``portalocker`` and ``pywin32``). Locks belong to the file handle; Windows releases them when the handle is closed
  or the process dies. `release` unlocks explicitly before closing, as Microsoft recommends.

When neither is available, `available` is False and taking a lock raises `LockingUnavailableError`: reading maps
needs no lock, so ``import mmap_ninja`` and every read work, and writes say what is missing.
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import Any, Callable, Optional

from mmap_ninja.errors import LockingUnavailableError

__all__ = ["LockingUnavailableError", "available", "facility", "lock", "release", "require", "try_lock",
           "use_facility"]

_POLL_SECONDS = 0.01  # how often a lock with a timeout is tried again




# A backend takes (descriptor, shared) and returns True when it took the lock, False when another holder keeps it
# (never waiting); `release` undoes it.
_TryLock = Callable[[int, bool], bool]
_Unlock = Callable[[int], None]


def _flock_backend() -> Optional[tuple[str, _TryLock, _Unlock, Callable[[int, bool], None]]]:
    if sys.platform == "win32":  # no fcntl there (and mypy --platform win32 checks the rest of this module)
        return None
    try:
        import fcntl
    except ImportError:
        return None

    def try_flock(fd: int, shared: bool) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unflock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def wait_flock(fd: int, shared: bool) -> None:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)

    return "fcntl.flock", try_flock, unflock, wait_flock


def portalocker_backend() -> Optional[tuple[str, _TryLock, _Unlock]]:
    """``(name, try_lock, unlock)`` through portalocker, or None when it cannot be imported. The default facility
    where ``fcntl`` is missing; public so that the test suite can check it on every OS."""
    try:
        import portalocker
    except ImportError:  # not installed, or (on POSIX) installed but its fcntl backend is missing
        return None
    flags: Any = portalocker.LockFlags

    def handle(fd: int) -> io.FileIO:
        # portalocker wants a file object (it seeks it to byte 0 on Windows); this one leaves the descriptor open.
        return io.FileIO(fd, "r+", closefd=False)

    def try_portalock(fd: int, shared: bool) -> bool:
        try:
            portalocker.lock(handle(fd), (flags.SHARED if shared else flags.EXCLUSIVE) | flags.NON_BLOCKING)
        except portalocker.exceptions.AlreadyLocked:
            return False
        except portalocker.exceptions.LockException as e:
            if isinstance(e.__cause__, BlockingIOError):  # portalocker before 3 on POSIX: held elsewhere
                return False
            raise
        return True

    def unportalock(fd: int) -> None:
        try:
            portalocker.unlock(handle(fd))
        except portalocker.exceptions.LockException as e:
            raise OSError(f"cannot unlock: {e}") from e

    return "portalocker", try_portalock, unportalock


def _choose() -> tuple[Optional[str], Optional[_TryLock], Optional[_Unlock], Optional[Callable[[int, bool], None]]]:
    flock = _flock_backend()
    if flock is not None:
        return flock
    portable = portalocker_backend()
    if portable is not None:
        return portable[0], portable[1], portable[2], None
    return None, None, None, None


_facility, _try, _unlock, _wait = _choose()


def available() -> bool:
    """Whether this Python can take locks (False only without both ``fcntl`` and ``portalocker``)."""
    return _try is not None


def facility() -> Optional[str]:
    """The facility locks use here: ``"fcntl.flock"``, ``"portalocker"`` or None."""
    return _facility


def _missing(what: str) -> LockingUnavailableError:
    return LockingUnavailableError(
        f"cannot lock {what}: this Python has neither the fcntl module (POSIX) nor the portalocker package "
        f"(Windows: pip install portalocker pywin32); writing a map needs a lock, reading does not")


def require(what: str) -> None:
    """Raise `LockingUnavailableError` naming ``what`` unless locks can be taken here (checked before a write
    creates anything, so that a write refused for want of locks leaves the disk as it was)."""
    if _try is None:
        raise _missing(what)


def try_lock(fd: int, *, shared: bool = False, what: str = "the lock file") -> bool:
    """Take a shared or exclusive lock on the open lock file ``fd`` without waiting; False if another holder keeps
    a conflicting one. ``what`` names the file in the error raised when no locking facility exists."""
    if _try is None:
        raise _missing(what)
    return _try(fd, shared)


def lock(fd: int, *, shared: bool = False, timeout: Optional[float] = None, what: str = "the lock file") -> bool:
    """Take a shared or exclusive lock on the open lock file ``fd``, waiting at most ``timeout`` seconds (None: for
    as long as it takes; 0: one try). Returns False if the time ran out, True once the lock is held."""
    if _try is None:
        raise _missing(what)
    if timeout is None and _wait is not None:
        _wait(fd, shared)
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while not _try(fd, shared):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS if deadline is None else min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    return True


def use_facility(name: str, try_lock: Callable[[int, bool], bool], unlock: Callable[[int], None]) -> Callable[[], None]:
    """Take every lock through ``try_lock(fd, shared)`` (True when taken, False when another holder keeps it, never
    waiting) and ``unlock(fd)`` until the returned function is called, which restores the facility chosen at
    import. The hook of the test kit's Windows-semantics mode (`mmap_ninja.testing.windows_semantics`)."""
    global _facility, _try, _unlock, _wait
    previous = _facility, _try, _unlock, _wait
    _facility, _try, _unlock, _wait = name, try_lock, unlock, None

    def restore() -> None:
        global _facility, _try, _unlock, _wait
        _facility, _try, _unlock, _wait = previous

    return restore


def release(fd: int) -> None:
    """Unlock and close ``fd`` (closing alone releases the lock too; unlocking first frees it at once on Windows)."""
    try:
        if _unlock is not None:
            _unlock(fd)
    except OSError:
        pass  # the descriptor held no lock: closing is all there is to do
    finally:
        os.close(fd)
