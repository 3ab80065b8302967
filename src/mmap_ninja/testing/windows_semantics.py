"""A Windows-semantics mode for tests on Linux: file operations refused where Windows refuses them.

On POSIX a file that some process has open or memory-mapped can still be renamed over, unlinked or truncated; on
Windows the same calls fail with ``PermissionError`` (``WinError 32``, a sharing violation, or ``WinError 1224``,
a user-mapped section). Code that passes its tests on Linux can therefore fail on a Windows workstation the first
time a reader holds a file. While this mode is active (Linux only: it reads ``/proc``):

- ``os.replace``, ``os.rename``, ``os.unlink`` and ``os.remove`` (and what calls them: ``pathlib``, ``shutil``)
  raise `WindowsSharingError` when the file, or for a folder any file below it, is held: open (a descriptor) or
  mapped, or for a folder the current directory, in this process or in any other process of the test;
- ``os.truncate`` and ``os.ftruncate`` raise `WindowsMappedFileError` when they would shrink a file that is
  mapped in any process of the test (Windows lets open handles be truncated, and files grow, but refuses to cut a
  file below a mapped section);
- new maps are slot maps (``MMAP_NINJA_COMMIT=slots`` unless it is set), as on Windows;
- the library takes the paths it takes on Windows where it chooses by OS
(``mmap_ninja.storage._osfile.HELD_FILES_PINNED``);
- locks taken through `mmap_ninja.storage.locks` go through portalocker (the Windows facility) with Windows' per-handle
  rule: a handle that holds a lock cannot take it again exclusively, nor exclusively-held again shared (flock would
  convert it); a second handle, even in the same process, never takes a lock another handle holds.

"The processes of the test" are those that activated the mode: each writes its process id (and start time, so a
reused id is not mistaken for it) into a registry folder, and the mode asks the kernel (``/proc/<pid>/fd``,
``/proc/<pid>/maps``, ``/proc/<pid>/cwd``) what each of them holds at the moment of the call, so every handle
counts, however it was made (``open``, ``os.open``, ``mmap``, ``numpy.memmap``, a library's own file).

The mode passes to child processes through the environment variable ``MMAP_NINJA_WINDOWS_SEMANTICS`` (the
registry's path): ``import mmap_ninja`` in a process that has it activates the mode there, so the kit's crash and
writer children and DataLoader workers under ``spawn`` and ``forkserver`` join it; a child made by ``fork``
registers itself at the fork. Setting the variable to ``1`` before starting Python makes that process create a
registry and pass it on.

Usage::

    from mmap_ninja.testing.windows_semantics import windows_semantics

    with windows_semantics():
        ...  # every process started here joins the mode

or run a pytest suite with ``--windows-semantics`` after adding ``pytest_plugins =
["mmap_ninja.testing.windows_semantics"]`` to its ``conftest.py`` (the plugin also gives a ``windows_semantics_mode``
fixture and a ``windows_semantics`` marker, each of which activates the mode for one test).

What it does not model: Windows' mandatory byte-range locks (reading or writing a locked range through another
handle fails there; mmap_ninja locks only files nobody reads or writes), sharing modes other than Python's
defaults (Python opens files without ``FILE_SHARE_DELETE``), handles of processes outside the registry, and
files under ``/dev`` (POSIX shared memory, which multiprocessing unlinks while it holds it, has no Windows twin).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Union

import pytest

from mmap_ninja.errors import WindowsMappedFileError, WindowsSharingError

__all__ = [
    "COMMIT_VARIABLE",
    "ENVIRONMENT_VARIABLE",
    "Holder",
    "WindowsMappedFileError",
    "WindowsSharingError",
    "activate",
    "activate_from_environment",
    "active",
    "deactivate",
    "holders",
    "slots_protocol_available",
    "windows_semantics",
]

#: The environment variable that carries the mode to child processes: the registry folder's path (or ``1``).
ENVIRONMENT_VARIABLE = "MMAP_NINJA_WINDOWS_SEMANTICS"
#: The library's choice of commit protocol for new maps; the mode sets it to ``slots`` (Windows' default) when
#: the library has that protocol and the variable is unset.
COMMIT_VARIABLE = "MMAP_NINJA_COMMIT"

_StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


@dataclass(frozen=True)
class Holder:
    """One hold on a file: process ``pid`` has it open as descriptor ``fd``, or mapped (``fd`` is None), or, for a
    folder, holds a file below it (``path``) or has its current directory there."""

    pid: int
    how: str  # "descriptor 7", "mapping", "current directory"
    path: str

    def describe(self) -> str:
        who = "this process" if self.pid == os.getpid() else f"process {self.pid}"
        return f"{self.path} is held by {who} ({self.how})"


# ------------------------------------------------------------------------------------------------ the registry

def _start_time(pid: int | str) -> Optional[str]:
    """The start time of process ``pid`` (field 22 of ``/proc/<pid>/stat``), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name (which may hold spaces)


class _State:
    registry: Optional[Path] = None
    owner = False  # this process created the registry (and removes it when the mode ends)
    originals: ClassVar[dict[str, Any]] = {}
    restore_locks: Optional[Callable[[], None]] = None
    previous_variable: Optional[str] = None
    set_commit = False  # this process set COMMIT_VARIABLE
    pinned_before = False  # mmap_ninja.storage._osfile.HELD_FILES_PINNED before the mode
    lock = threading.Lock()


def _register(registry: Path) -> None:
    pid = str(os.getpid())
    (registry / f".{pid}.tmp").write_text(_start_time(pid) or "")
    _original("replace")(registry / f".{pid}.tmp", registry / pid)  # others never read half of it


def _unregister() -> None:
    registry = _State.registry
    if registry is not None:
        with contextlib.suppress(OSError):
            _original("unlink")(registry / str(os.getpid()))


def _test_processes() -> list[int]:
    """The live processes of the registry (this one included)."""
    registry = _State.registry
    pids = {os.getpid()}
    if registry is not None:
        try:
            names = os.listdir(registry)
        except OSError:
            names = []
        for name in names:
            if not name.isdigit() or int(name) in pids:
                continue
            try:
                recorded = (registry / name).read_text()
            except OSError:
                continue
            if recorded and _start_time(name) == recorded:  # alive, and not a later process given the same id
                pids.add(int(name))
            elif recorded:  # a process that died (a child killed by the crash tests): forget it
                with contextlib.suppress(OSError):
                    _original("unlink")(registry / name)
    return sorted(pids)


# ------------------------------------------------------------------------------------------------ who holds what

def _resolve(path: _StrPath, dir_fd: Optional[int] = None) -> str:
    """The absolute path of the name ``path`` (its folder resolved, its last component kept: an unlink or a rename
    acts on a link, not on its target)."""
    text = os.fsdecode(os.fspath(path))
    if dir_fd is not None and not os.path.isabs(text):
        text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
    head, tail = os.path.split(os.path.abspath(text))
    return os.path.join(os.path.realpath(head), tail)


def _mapped(pid: int) -> Iterator[tuple[int, int, int, str]]:
    """``(major, minor, inode, path)`` of every file mapping of process ``pid``."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            lines = f.read().decode(errors="surrogateescape").splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split(None, 5)
        if len(fields) < 6 or fields[4] == "0":
            continue
        major, _, minor = fields[3].partition(":")
        yield int(major, 16), int(minor, 16), int(fields[4]), fields[5]


def _descriptors(pid: int) -> Iterator[tuple[int, str, Optional[os.stat_result]]]:
    """``(fd, path, stat)`` of every open descriptor of process ``pid`` (``stat`` None when it is gone)."""
    folder = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(folder)
    except OSError:
        return
    for name in fds:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if not target.startswith("/"):  # pipes, sockets, anonymous inodes
            continue
        try:
            info: Optional[os.stat_result] = os.stat(f"{folder}/{name}")
        except OSError:
            info = None
        yield int(name), target, info


def holders(path: _StrPath, *, dir_fd: Optional[int] = None, mapped_only: bool = False) -> list[Holder]:
    """Who holds the file (or, for a folder, anything below it) at ``path`` now: every descriptor and mapping of
    the processes of the test that refers to it. ``mapped_only``: mappings only. Empty if ``path`` is missing or
    a symbolic link."""
    name = _resolve(path, dir_fd)
    if name.startswith("/dev/"):
        return []  # devices and POSIX shared memory (multiprocessing's /dev/shm arenas): nothing Windows has
    try:
        info = os.lstat(name)
    except OSError:
        return []
    return [] if stat.S_ISLNK(info.st_mode) else _holders(name, info, mapped_only)


def _holders(name: str, info: os.stat_result, mapped_only: bool) -> list[Holder]:
    folder = stat.S_ISDIR(info.st_mode)
    below = name.rstrip("/") + "/"
    found: list[Holder] = []
    for pid in _test_processes():
        for major, minor, inode, mapped_path in _mapped(pid):
            same = (not folder and inode == info.st_ino and major == os.major(info.st_dev)
                    and minor == os.minor(info.st_dev)) or mapped_path == name
            if same or (folder and mapped_path.startswith(below)):
                found.append(Holder(pid, "mapping", mapped_path))
        if mapped_only:
            continue
        for fd, target, target_info in _descriptors(pid):
            if folder:
                if target.startswith(below):
                    found.append(Holder(pid, f"descriptor {fd}", target))
            elif target_info is not None and (target_info.st_dev, target_info.st_ino) == (info.st_dev, info.st_ino):
                found.append(Holder(pid, f"descriptor {fd}", target))
        if folder:
            with contextlib.suppress(OSError):
                cwd = os.readlink(f"/proc/{pid}/cwd")
                if cwd == name or cwd.startswith(below):
                    found.append(Holder(pid, "current directory", cwd))
    return found


def _refuse_if_held(operation: str, path: _StrPath, dir_fd: Optional[int] = None) -> None:
    held = holders(path, dir_fd=dir_fd)
    if held:
        name = os.fsdecode(os.fspath(path))
        raise WindowsSharingError(
            errno.EACCES, f"[WinError 32] The process cannot access the file because it is being used by another "
            f"process (Windows-semantics mode, {operation}: {'; '.join(h.describe() for h in held[:3])})", name)


def _refuse_if_cut_while_mapped(operation: str, name: str, info: os.stat_result, length: int) -> None:
    if length >= info.st_size:
        return  # Windows lets a mapped file grow
    held = _holders(name, info, mapped_only=True)
    if held:
        raise WindowsMappedFileError(
            errno.EACCES, f"[WinError 1224] The requested operation cannot be performed on a file with a "
            f"user-mapped section open (Windows-semantics mode, {operation} to {length} of {info.st_size} bytes: "
            f"{'; '.join(h.describe() for h in held[:3])})", name)


# ------------------------------------------------------------------------------------------------ the wrappers

def _original(name: str) -> Any:
    return _State.originals.get(name) or getattr(os, name)


def _unlink(path: _StrPath, *, dir_fd: Optional[int] = None) -> None:
    _refuse_if_held("unlink", path, dir_fd)
    _original("unlink")(path, dir_fd=dir_fd)


def _remove(path: _StrPath, *, dir_fd: Optional[int] = None) -> None:
    _refuse_if_held("remove", path, dir_fd)
    _original("remove")(path, dir_fd=dir_fd)


def _renamer(name: str) -> Callable[..., None]:
    def rename(src: _StrPath, dst: _StrPath, *, src_dir_fd: Optional[int] = None,
               dst_dir_fd: Optional[int] = None) -> None:
        _refuse_if_held(name, src, src_dir_fd)
        if _resolve(src, src_dir_fd) != _resolve(dst, dst_dir_fd):
            _refuse_if_held(f"{name} over", dst, dst_dir_fd)
        _original(name)(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    rename.__name__ = rename.__qualname__ = name
    return rename


def _truncate(path: _StrPath | int, length: int) -> None:
    if isinstance(path, int):
        _ftruncate(path, length)
        return
    name = os.path.realpath(os.fsdecode(os.fspath(path)))
    try:
        info = os.stat(name)
    except OSError:
        info = None  # the call itself reports it
    if info is not None:
        _refuse_if_cut_while_mapped("truncate", name, info, length)
    _original("truncate")(path, length)


def _ftruncate(fd: int, length: int) -> None:
    try:
        info: Optional[os.stat_result] = os.fstat(fd)
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        info = None  # the call itself reports it
    if info is not None:
        _refuse_if_cut_while_mapped("ftruncate", name, info, length)
    _original("ftruncate")(fd, length)


_WRAPPERS: dict[str, Callable[..., Any]] = {
    "unlink": _unlink, "remove": _remove, "rename": _renamer("rename"), "replace": _renamer("replace"),
    "truncate": _truncate, "ftruncate": _ftruncate,
}


def _install() -> None:
    for name, wrapper in _WRAPPERS.items():
        original = getattr(os, name)
        _State.originals[name] = original
        setattr(os, name, wrapper)
        for support in (os.supports_dir_fd, os.supports_fd):  # shutil.rmtree asks these sets
            if original in support:
                support.add(wrapper)
    _State.restore_locks = _windows_locks()
    from mmap_ninja.storage import _osfile

    _State.pinned_before = _osfile.HELD_FILES_PINNED
    _osfile.HELD_FILES_PINNED = True  # the library's code for Windows


def _uninstall() -> None:
    for name, original in _State.originals.items():
        wrapper = _WRAPPERS[name]
        setattr(os, name, original)
        for support in (os.supports_dir_fd, os.supports_fd):
            support.discard(wrapper)
    _State.originals = {}
    if _State.restore_locks is not None:
        _State.restore_locks()
        _State.restore_locks = None
    from mmap_ninja.storage import _osfile

    _osfile.HELD_FILES_PINNED = _State.pinned_before


# ------------------------------------------------------------------------------------------------ locks

def _flock_kinds(fd: int) -> list[str]:
    """The kinds (``READ``, ``WRITE``) of the flock locks held through ``fd``'s open file description."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [line.split()[4] for line in lines if line.startswith("lock:") and " FLOCK " in line]


def _windows_locks() -> Optional[Callable[[], None]]:
    """Route `mmap_ninja.storage.locks` through portalocker with Windows' per-handle rule; returns the undo."""
    from mmap_ninja.storage import locks

    backend = locks.portalocker_backend()
    if backend is None:
        return None
    _, try_portalock, unportalock = backend

    def try_lock(fd: int, shared: bool) -> bool:
        held = _flock_kinds(fd)
        if held:
            # LockFileEx: a shared lock may overlap shared locks (this handle's too); an exclusive one overlaps
            # nothing, so a handle cannot turn its own lock into another kind, as flock would.
            return shared and all(kind == "READ" for kind in held)
        return try_portalock(fd, shared)

    return locks.use_facility("portalocker (Windows-semantics mode)", try_lock, unportalock)


# ------------------------------------------------------------------------------------------------ on and off

def slots_protocol_available() -> bool:
    """Whether this mmap_ninja has the commit protocol that never renames over, cuts or deletes a file a reader
    holds (``commit.slots``, FORMAT.md), which is what maps are created with on Windows."""
    import importlib.util

    return importlib.util.find_spec("mmap_ninja.storage.header_slots") is not None


def active() -> bool:
    """Whether the mode is active in this process."""
    return _State.registry is not None


def activate(registry: Optional[_StrPath] = None) -> Path:
    """Turn the mode on in this process and in the processes it starts from now on; returns the registry folder.
    ``registry``: an existing registry to join (by default, the one named by the environment, or a new one)."""
    if sys.platform != "linux":
        raise RuntimeError(f"the Windows-semantics mode reads /proc and runs on Linux only, not on {sys.platform}")
    with _State.lock:
        if _State.registry is not None:
            return _State.registry
        if registry is None:
            named = os.environ.get(ENVIRONMENT_VARIABLE, "")
            registry = named if named and os.path.isdir(named) else None
        if registry is None:
            folder = Path(tempfile.mkdtemp(prefix="mmap_ninja_windows_"))
            _State.owner = True
        else:
            folder = Path(os.fsdecode(os.fspath(registry)))
            _State.owner = False
        _State.previous_variable = os.environ.get(ENVIRONMENT_VARIABLE)
        os.environ[ENVIRONMENT_VARIABLE] = str(folder)
        if slots_protocol_available() and COMMIT_VARIABLE not in os.environ:
            os.environ[COMMIT_VARIABLE] = "slots"  # new maps as on Windows
            _State.set_commit = True
        _State.registry = folder
        _register(folder)
        _install()
        _restart_forkserver()
        return folder


def deactivate() -> None:
    """Turn the mode off in this process (the registry is removed if this process created it)."""
    with _State.lock:
        registry = _State.registry
        if registry is None:
            return
        _unregister()
        _uninstall()
        _State.registry = None
        if _State.previous_variable is None:
            os.environ.pop(ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[ENVIRONMENT_VARIABLE] = _State.previous_variable
        if _State.set_commit:
            os.environ.pop(COMMIT_VARIABLE, None)
            _State.set_commit = False
        if _State.owner:
            shutil.rmtree(registry, ignore_errors=True)
        _State.owner = False
        _restart_forkserver()


def _restart_forkserver() -> None:
    """Stop this process's forkserver, if one runs: its children inherit the server's environment, not ours, so
    a server started before the mode changed would start workers in the wrong mode. The next forkserver worker
    starts a new server with the environment as it is now."""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None:
        stop()


def activate_from_environment() -> bool:
    """Activate the mode if the environment asks for it (``import mmap_ninja`` calls this when the variable is
    set); whether it is active."""
    if os.environ.get(ENVIRONMENT_VARIABLE) and sys.platform == "linux":
        activate()
    return active()


@contextlib.contextmanager
def windows_semantics(registry: Optional[_StrPath] = None) -> Iterator[Path]:
    """Within the block, the mode is active in this process and in the processes it starts (a no-op if it was
    active already: the outer activation ends it)."""
    if active():
        assert _State.registry is not None
        yield _State.registry
        return
    folder = activate(registry)
    try:
        yield folder
    finally:
        deactivate()


def _after_fork_in_child() -> None:
    if _State.registry is not None:
        _State.owner = False  # the parent removes the registry
        with contextlib.suppress(OSError):
            _register(_State.registry)


def _at_exit() -> None:
    if _State.registry is not None:
        if _State.owner:
            deactivate()
        else:
            _unregister()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


# ------------------------------------------------------------------------------------------------ pytest plugin

def pytest_addoption(parser: pytest.Parser) -> None:
    """``--windows-semantics``: run the whole session in the mode."""
    parser.addoption("--windows-semantics", action="store_true", default=False,
                     help="run with Windows file semantics on Linux (mmap_ninja.testing.windows_semantics)")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; start the mode for the session if asked (the option, or the environment variable)."""
    config.addinivalue_line("markers", "windows_semantics: run this test in the Windows-semantics mode")
    if config.getoption("--windows-semantics", default=False) or os.environ.get(ENVIRONMENT_VARIABLE):
        activate()


def pytest_unconfigure(config: pytest.Config) -> None:
    """End the session's mode (and remove the registry this process made)."""
    deactivate()


@pytest.fixture
def windows_semantics_mode() -> Iterator[Path]:
    """The mode, active for one test (and the processes it starts); yields the registry folder."""
    with windows_semantics() as registry:
        yield registry


@pytest.fixture(autouse=True)
def _windows_semantics_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``windows_semantics`` run in the mode."""
    if request.node.get_closest_marker("windows_semantics") is None:
        yield
        return
    with windows_semantics():
        yield
