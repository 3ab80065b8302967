"""The bytes on disk and the commit protocol. Every container is a thin view on top of a ``Store``.

FORMAT.md at the repository root is the specification; this is the summary.

A map is one directory::

    header.json       the commit record: format version, kind, attributes, committed length of every column
    <column>.bin      one file per column: a flat array of fixed-size items (``data.bin``, ``offsets.bin``, ...)
    .lock             advisory ``flock`` held by the one writer

``header.json`` looks like::

    {"format": "mmap_ninja", "version": [1, 0], "kind": "ragged",
     "attrs": {"dtype": "<f4"},
     "columns": {"data": {"dtype": "|u1", "length": 4096},
                 "offsets": {"dtype": "<i8", "length": 3}, ...}}

Only the first ``length`` items of a column file are committed. Anything after them is the tail of a write
that never published; readers never look at it and the next writer truncates it.

Commit protocol (``Store.append``), with one writer holding the lock:

1. the new items of every column are written after that column's committed end;
2. with ``durable=True`` the column files are fsynced;
3. a new header is written to ``header.json.tmp`` (fsynced with ``durable=True``) and renamed over
   ``header.json``, which is atomic on POSIX file systems; with ``durable=True`` the directory is fsynced.

A reader reads ``header.json`` once and maps the column files; it sees exactly the state of one commit, never a
torn one. If a write fails before step 3, the column files are cut back to their committed length, so the
directory is left as it was.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import stat
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

FORMAT_NAME = "mmap_ninja"
FORMAT_VERSION = (1, 0)
HEADER_FILE = "header.json"
LOCK_FILE = ".lock"
COLUMN_SUFFIX = ".bin"
_TMP_SUFFIX = ".tmp"

PathLike = Union[str, "os.PathLike[str]"]

# Linux writes at most 0x7ffff000 bytes per write call; stay below that and loop.
_MAX_WRITE = 1 << 30
try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))  # buffers per vectored write
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 1024


class MapError(Exception):
    """Base class of the errors mmap_ninja raises about a map directory."""


class NotAMapError(MapError, FileNotFoundError):
    """The path does not exist or holds no mmap_ninja map."""


class CorruptMapError(MapError, ValueError):
    """A map's header or one of its files is damaged or truncated."""


class FormatVersionError(MapError, ValueError):
    """The map was written by a newer, incompatible version of the format."""


class MapLockedError(MapError, BlockingIOError):
    """Another writer holds the map's lock."""


def dtype_to_json(dtype: np.dtype) -> Any:
    """A JSON-able description of ``dtype`` (NumPy's own ``descr``, as in ``.npy`` headers)."""
    return np.lib.format.dtype_to_descr(np.dtype(dtype))


def dtype_from_json(descr: Any) -> np.dtype:
    """Inverse of `dtype_to_json`."""
    return np.lib.format.descr_to_dtype(_descr_from_json(descr))


def _descr_from_json(descr: Any) -> Any:
    # JSON turned the tuples of a structured descr (name or (title, name), descr[, shape]) into lists.
    if isinstance(descr, str):
        return descr
    fields = []
    for name, sub, *shape in descr:
        name = tuple(name) if isinstance(name, list) else name
        fields.append((name, _descr_from_json(sub), *(tuple(s) for s in shape)))
    return fields


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, buffers: Sequence[memoryview], offset: int) -> int:
    """Write ``buffers`` back to back at ``offset``; returns the number of bytes written."""
    views = [memoryview(b).cast("B") for b in buffers]
    views = [v for v in views if v.nbytes]
    total = 0
    i = 0
    while i < len(views):
        group = views[i:i + _IOV_MAX]
        size = sum(v.nbytes for v in group)
        if len(group) > 1 and size <= _MAX_WRITE:
            written = os.pwritev(fd, group, offset + total)
            total += written
            if written == size:
                i += len(group)
                continue
            # A short vector write: finish this group buffer by buffer from where it stopped.
            skip = written
            for v in group:
                if skip >= v.nbytes:
                    skip -= v.nbytes
                    continue
                total += _pwrite_all(fd, v[skip:], offset + total)
                skip = 0
            i += len(group)
        else:
            total += _pwrite_all(fd, views[i], offset + total)
            i += 1
    return total


def _pwrite_all(fd: int, view: memoryview, offset: int) -> int:
    done = 0
    while done < view.nbytes:
        written = os.pwrite(fd, view[done:done + _MAX_WRITE], offset + done)
        if written <= 0:
            raise OSError(errno.EIO, "write returned no progress")
        done += written
    return done


# Stores holding the writer lock. A forked child (a DataLoader or from_indexable worker) inherits the lock's
# file descriptor, and flock locks belong to the open file, so a child outliving a killed writer would keep
# the map locked for ever. The child closes its copies at once; the parent's lock is unaffected.
_LOCK_HOLDERS: "weakref.WeakSet[Store]" = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    for store in list(_LOCK_HOLDERS):
        if store._lock_fd is not None:
            try:
                os.close(store._lock_fd)
            except OSError:
                pass
            store._lock_fd = None
    _LOCK_HOLDERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


class _Column:
    """One column file: its dtype, committed length and (lazily) a mapping of it."""

    __slots__ = ("name", "path", "dtype", "length", "fd", "mapped", "mapped_items")

    def __init__(self, name: str, path: Path, dtype: np.dtype, length: int):
        self.name = name
        self.path = path
        self.dtype = dtype
        self.length = length
        self.fd: Optional[int] = None  # writers keep the file open
        self.mapped: Optional[np.ndarray] = None  # the whole mapped file, as items
        self.mapped_items = 0


class Store:
    """An open map directory: its header and its columns.

    ``Store(path)`` opens for reading (no lock, works on read-only files); ``writable=True`` takes the
    writer lock, waiting up to ``lock_timeout`` seconds (``None``: forever, ``0``: fail at once), and cuts
    every column back to its committed length. Use `Store.create` to make a new map.
    """

    def __init__(self, path: PathLike, *, writable: bool = False, lock_timeout: Optional[float] = 0.0,
                 durable: bool = False, _expect_kind: Optional[str] = None):
        self.path = Path(path)
        self.writable = writable
        self.durable = durable
        self._lock_fd: Optional[int] = None
        self._owner_pid = os.getpid()
        self.closed = False
        if not self.path.exists():
            raise NotAMapError(f"{self.path}: no such map directory")
        if not self.path.is_dir():
            raise NotAMapError(f"{self.path} is a file, not a map directory")
        if writable:
            self._lock(lock_timeout)
        try:
            self._load_header(self._read_header())
            if _expect_kind is not None and self.kind != _expect_kind:
                raise TypeError(f"{self.path} holds a {self.kind!r} map, not a {_expect_kind!r} one; "
                                f"open it with mmap_ninja.open_existing()")
            if writable:
                self._open_for_writing()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- creation

    @classmethod
    def create(cls, path: PathLike, kind: str, columns: Mapping[str, np.dtype], attrs: Mapping[str, Any],
               *, initial: Optional[Mapping[str, np.ndarray]] = None, overwrite: bool = False,
               durable: bool = False, lock_timeout: Optional[float] = 0.0) -> "Store":
        """Make a map of ``kind`` in ``path`` (parents created) and return it open for writing.

        ``columns`` maps each column name to its item dtype; ``initial`` optionally gives the items a column
        starts with (such as the leading 0 of an offsets column), published in the same first commit.

        A directory that already holds a map is replaced only with ``overwrite=True``; its files are
        unlinked, never truncated, so a process that still maps them keeps reading the old data.
        A directory with files of its own that are not a map's is refused.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        header = path / HEADER_FILE
        if header.exists() and not overwrite:
            raise FileExistsError(f"{path} already holds a map; pass overwrite=True to replace it")
        ours = {HEADER_FILE, LOCK_FILE, HEADER_FILE + _TMP_SUFFIX}
        foreign = sorted(p.name for p in path.iterdir()
                         if p.name not in ours and not p.name.endswith(COLUMN_SUFFIX))
        if foreign and not header.exists():
            raise FileExistsError(f"{path} is not empty and holds no map (found {', '.join(foreign[:5])}); "
                                  f"choose an empty or new directory")
        store = cls.__new__(cls)
        store.path = path
        store.writable = True
        store.durable = durable
        store._lock_fd = None
        store._owner_pid = os.getpid()
        store.closed = False
        store._lock(lock_timeout)
        try:
            if header.exists():
                header.unlink()  # first, so a crash below leaves "no map" rather than a map with missing columns
            for p in path.iterdir():
                if p.name.endswith(COLUMN_SUFFIX) or p.name.endswith(_TMP_SUFFIX):
                    p.unlink()
            for name in columns:
                fd = os.open(path / (name + COLUMN_SUFFIX), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                os.close(fd)
            store.kind = kind
            store.map_id = uuid.uuid4().hex
            store.attrs = dict(attrs)
            store._columns = {name: _Column(name, path / (name + COLUMN_SUFFIX), np.dtype(dt), 0)
                              for name, dt in columns.items()}
            store._open_for_writing()
            lengths = {name: 0 for name in columns}
            for name, items in (initial or {}).items():
                items = np.asarray(items, dtype=store._columns[name].dtype)
                _write_all(store._columns[name].fd, [items.reshape(-1).view(np.uint8)], 0)
                lengths[name] = items.size
            if durable:
                store.flush()
            store._publish(store.attrs, lengths)
        except BaseException:
            store.close()
            raise
        return store

    # ---------------------------------------------------------------- header

    def _read_header(self) -> dict:
        header_path = self.path / HEADER_FILE
        try:
            raw = header_path.read_bytes()
        except FileNotFoundError:
            raise NotAMapError(f"{self.path} holds no mmap_ninja map ({HEADER_FILE} is missing)") from None
        except IsADirectoryError:
            raise CorruptMapError(f"{header_path} is a directory, not a header file") from None
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptMapError(f"{header_path} is corrupt: {e}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise CorruptMapError(f"{header_path} is not a mmap_ninja header")
        version = header.get("version")
        if (not isinstance(version, list) or len(version) != 2
                or not all(isinstance(v, int) for v in version)):
            raise CorruptMapError(f"{header_path} has no valid format version: {version!r}")
        if version[0] > FORMAT_VERSION[0]:
            raise FormatVersionError(
                f"{self.path} uses format version {version[0]}.{version[1]}, newer than this mmap_ninja "
                f"supports ({FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}); upgrade mmap_ninja to read it")
        return header

    def _load_header(self, header: dict) -> None:
        header_path = self.path / HEADER_FILE
        try:
            kind = header["kind"]
            attrs = header["attrs"]
            columns = {}
            for name, spec in header["columns"].items():
                length = spec["length"]
                if not isinstance(length, int) or length < 0:
                    raise ValueError(f"bad length {length!r} of column {name!r}")
                columns[name] = (dtype_from_json(spec["dtype"]), length)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptMapError(f"{header_path} is corrupt: {e!r}") from None
        map_id = header.get("id")
        old = getattr(self, "_columns", {})
        if map_id != getattr(self, "map_id", map_id):
            old = {}  # the map was replaced (overwrite=True): its files are new, drop the old mappings
        self.map_id = map_id
        self.kind = kind
        self.attrs = attrs
        self._columns = {}
        for name, (dtype, length) in columns.items():
            col = old.get(name) or _Column(name, self.path / (name + COLUMN_SUFFIX), dtype, length)
            col.dtype, col.length = dtype, length
            self._columns[name] = col
        for col in self._columns.values():
            self._check_size(col)

    def _check_size(self, col: _Column) -> None:
        try:
            info = os.stat(col.path)
        except FileNotFoundError:
            raise CorruptMapError(f"{col.path} is missing (the header lists column {col.name!r})") from None
        if not stat.S_ISREG(info.st_mode):
            raise CorruptMapError(f"{col.path} is not a regular file")
        size, need = info.st_size, col.length * col.dtype.itemsize
        if size < need:
            raise CorruptMapError(f"{col.path} is truncated: it holds {size} bytes, the header commits {need}")

    def _publish(self, attrs: Mapping[str, Any], lengths: Mapping[str, int]) -> None:
        header = {
            "format": FORMAT_NAME,
            "id": self.map_id,
            "version": list(FORMAT_VERSION),
            "kind": self.kind,
            "attrs": attrs,
            "columns": {name: {"dtype": dtype_to_json(col.dtype), "length": int(lengths[name])}
                        for name, col in self._columns.items()},
        }
        tmp = self.path / (HEADER_FILE + _TMP_SUFFIX)
        data = json.dumps(header).encode()  # no indent: the C encoder, a third of the cost of a commit
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _pwrite_all(fd, memoryview(data), 0)
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path / HEADER_FILE)
        if self.durable:
            _fsync_dir(self.path)
        self.attrs = dict(attrs)
        for name, col in self._columns.items():
            col.length = int(lengths[name])

    # ---------------------------------------------------------------- lock

    def _lock(self, timeout: Optional[float]) -> None:
        lock_path = self.path / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise PermissionError(e.errno, f"cannot open {self.path} for writing: {e.strerror}",
                                  str(lock_path)) from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if timeout is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    waited = f" after waiting {timeout:g} s" if timeout else ""
                    raise MapLockedError(
                        f"{self.path} is being written by another writer{waited}; only one writer at a "
                        f"time (open read-only with mode='r', or pass lock_timeout= to wait)") from None
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        self._lock_fd = fd
        _LOCK_HOLDERS.add(self)

    def _open_for_writing(self) -> None:
        for col in self._columns.values():
            try:
                col.fd = os.open(col.path, os.O_RDWR)
            except OSError as e:
                raise PermissionError(e.errno, f"cannot open {col.path} for writing: {e.strerror}",
                                      str(col.path)) from None
            committed = col.length * col.dtype.itemsize
            if os.fstat(col.fd).st_size != committed:
                os.ftruncate(col.fd, committed)  # the uncommitted tail of a write that never published

    # ---------------------------------------------------------------- reading

    @property
    def lengths(self) -> Dict[str, int]:
        return {name: col.length for name, col in self._columns.items()}

    def column(self, name: str, *, writable: bool = False) -> np.ndarray:
        """The committed items of column ``name`` as a 1-D array over the mapping (read-only unless asked)."""
        col = self._columns[name]
        if col.length == 0:
            return np.empty(0, dtype=col.dtype)
        if col.mapped_items < col.length:
            self._map(col)
        view = col.mapped[:col.length]
        if not writable:
            view.flags.writeable = False
        elif not view.flags.writeable:
            raise PermissionError(f"{self.path} is open read-only")
        return view

    def _map(self, col: _Column) -> None:
        fd = col.fd if col.fd is not None else os.open(col.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < col.length * col.dtype.itemsize:
                raise CorruptMapError(f"{col.path} is truncated: it holds {size} bytes, the header commits "
                                      f"{col.length * col.dtype.itemsize}")
            access = mmap.ACCESS_WRITE if col.fd is not None else mmap.ACCESS_READ
            mapping = mmap.mmap(fd, size, access=access)
        finally:
            if col.fd is None:
                os.close(fd)
        items = size // col.dtype.itemsize
        # The old mapping stays alive as long as arrays handed out earlier still point into it.
        col.mapped = np.frombuffer(mapping, dtype=col.dtype, count=items)
        col.mapped_items = items

    def refresh(self) -> bool:
        """Re-read the header; True if another writer committed since."""
        header = self._read_header()
        before = (self.map_id, self.attrs, self.lengths)
        self._load_header(header)
        return (self.map_id, self.attrs, self.lengths) != before

    # ---------------------------------------------------------------- writing

    def _check_writer(self) -> None:
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only; open it with mode='r+' to write")
        if self.closed:
            raise ValueError(f"{self.path}: I/O operation on a closed map")
        if os.getpid() != self._owner_pid:
            raise RuntimeError(f"{self.path}: this writer was opened in another process (pid "
                               f"{self._owner_pid}); open a new writer in this one")

    def append(self, new_items: Mapping[str, Iterable], attrs: Optional[Mapping[str, Any]] = None) -> None:
        """Append to columns and publish, per the commit protocol above.

        ``new_items`` maps a column name to a buffer, or a list of buffers written back to back; their byte
        size must be a whole number of that column's items. ``attrs`` replaces the header's attributes.
        """
        self._check_writer()
        plan = []
        for name, buffers in new_items.items():
            col = self._columns[name]
            if not isinstance(buffers, (list, tuple)):
                buffers = [buffers]
            nbytes = sum(memoryview(b).nbytes for b in buffers)
            if nbytes % col.dtype.itemsize:
                raise ValueError(f"{nbytes} bytes is not a whole number of {col.name!r} items")
            plan.append((col, buffers, nbytes // col.dtype.itemsize))
        lengths = self.lengths
        try:
            for col, buffers, count in plan:
                _write_all(col.fd, buffers, col.length * col.dtype.itemsize)
                lengths[col.name] = col.length + count
            if self.durable:
                for col, _, _ in plan:
                    os.fsync(col.fd)
            self._publish(self.attrs if attrs is None else attrs, lengths)
        except BaseException:
            self._discard_tails()
            raise

    def _discard_tails(self) -> None:
        for col in self._columns.values():
            if col.fd is not None:
                try:
                    os.ftruncate(col.fd, col.length * col.dtype.itemsize)
                except OSError:
                    pass  # the next writer truncates it when it opens

    def flush(self) -> None:
        """With ``durable=True``, push in-place writes to disk; otherwise the kernel writes them back."""
        for col in self._columns.values():
            if col.fd is not None:
                os.fsync(col.fd)

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Release the lock and file descriptors; arrays handed out stay valid until they are dropped."""
        for col in getattr(self, "_columns", {}).values():
            if col.fd is not None:
                os.close(col.fd)
                col.fd = None
            col.mapped = None
            col.mapped_items = 0
        if self._lock_fd is not None:
            # Closing (not LOCK_UN) releases the lock; in a forked child it leaves the parent's lock alone.
            os.close(self._lock_fd)
            self._lock_fd = None

        self.closed = True
