"""A map directory on disk: its columns, their memory mappings, the writer lock and the commit protocol.

FORMAT.md specifies the files and the protocol; this module is the only code that writes them. Containers
never touch files: they read columns through `Store.column` and change the map inside `Store.transaction`.

A write transaction takes the directory's ``flock`` (waiting at most ``lock_timeout`` seconds), catches up with
whatever other handles committed since this one's snapshot, writes after the latest committed end, publishes one
new header by an atomic rename, and releases the lock. Readers take no lock and see one commit at a time.
"""

from __future__ import annotations

import mmap
import os
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mmap_ninja.errors import (
    ClosedMapError,
    CorruptMapError,
    FormatVersionError,
    KindMismatchError,
    MapExistsError,
    NotAMapError,
    ReadOnlyMapError,
)
from mmap_ninja.storage import _granularity, header_slots, locks
from mmap_ninja.storage._fsio import (
    SizedBuffers,
    byte_sizes,
    fsync_dir,
    fsync_tree,
    open_inside,
    write_all,
)
from mmap_ninja.storage._granularity import checksum_records
from mmap_ninja.storage._open_errors import moved_error, unfinished_error
from mmap_ninja.storage._osfile import fsync_file, fsync_path
from mmap_ninja.storage._paths import PathLike, absolute, is_url, resolved
from mmap_ninja.storage.checksums import RECORD_DTYPE, column_id, default_algorithm, hasher
from mmap_ninja.storage.dirs import (
    DEFAULT_LOCK_TIMEOUT,
    LOCK_FILE,
    check_lock_timeout,
    foreign_names,
    listed,
    lock_directory,
    replace_file,
)
from mmap_ninja.storage.format import FORMAT_VERSION, HEADER_FILE, SHARDS_FILE, Column, Header, read_header
from mmap_ninja.storage.header_behind import HeaderBehind
from mmap_ninja.storage.header_slots import FEATURE as SLOTS
from mmap_ninja.storage.mapped_columns import MappedColumn, Snapshot

__all__ = ["CHECKSUMS", "COLUMN_SUFFIX", "DEFAULT_LOCK_TIMEOUT", "DERIVED_PREFIX", "LOCK_FILE", "PathLike", "Store",
           "absolute", "check_lock_timeout", "fsync_dir", "fsync_tree", "is_derived", "is_url", "lock_directory",
           "resolved"]

COLUMN_SUFFIX = ".bin"
CHECKSUMS = "checksums"  # the column of checksum records (see checksums.py)
DERIVED_PREFIX = "derived-"  # columns of derived data (a key index), updated in place, without checksum records


def is_derived(name: str) -> bool:
    """Whether column ``name`` holds derived data (FORMAT.md, "Derived columns"): no checksum records."""
    return name.startswith(DERIVED_PREFIX)


_OUR_FILES = {LOCK_FILE, HEADER_FILE, HEADER_FILE + ".tmp"}

# Every open Store, so that a forked child (a DataLoader or from_indexable worker) can drop the lock and the
# transaction it inherited: flock locks belong to the open file, so a child outliving its parent would keep the
# map locked for ever, and a thread lock held by another thread at fork time would never be released.
_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forget_transaction()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Transaction:
    """What a write transaction holds: the lock file, write descriptors and the uncommitted lengths."""

    def __init__(self, lock_fd: int, lengths: dict[str, int]):
        self.lock_fd = lock_fd
        self.depth = 1
        self.lengths = lengths  # committed + written in this transaction
        self.fds: dict[str, int] = {}
        self.attrs: dict[str, Any] | None = None
        self.metadata: dict[str, Any] | None = None
        self.records: list[tuple[int, int, int, int, int]] = []  # checksum records of this transaction's writes
        self.dirty = False
        self.savepoints: list[tuple[Any, ...]] = []  # the state at each nested begin, to undo a failed inner block
        self.new_columns: dict[str, np.dtype[Any]] = {}  # columns this transaction adds (published with it)
        self.undo: list[tuple[str, int, bytes]] = []  # (column, byte offset, old bytes) of in-place derived writes
        self.undo_from = 0  # where the undo log stood when the nested block being undone began

    def save(self) -> None:
        self.savepoints.append((self.lengths, self.attrs, self.metadata, len(self.records), self.dirty,
                                dict(self.new_columns), len(self.undo)))

    def restore(self) -> dict[str, int]:
        """Undo what the innermost nested block wrote (its appends; in-place writes are not undone)."""
        self.lengths, self.attrs, self.metadata, records, self.dirty, self.new_columns, undo = self.savepoints.pop()
        del self.records[records:]
        self.undo_from = undo
        return self.lengths


class Store:
    """An open map directory. Open with `Store.open`, make a new one with `Store.create`."""

    def __init__(self, path: Path, header: Header, *, durable: bool, lock_timeout: Optional[float],
                 allow_unfinished: bool):
        self.path = path
        self.durable = durable
        self.lock_timeout = check_lock_timeout(lock_timeout)
        self.allow_unfinished = allow_unfinished
        self.closed = False
        self._header = header
        self._reader_lock = header_slots.hold(path, header, self.lock_timeout)  # a slot map's files stay while held
        self._columns = self._columns_of(header)
        self._txn: _Transaction | None = None
        self._thread_lock = threading.RLock()
        self._builder = False  # this handle is the from_* call that is building the map
        self._behind: Optional[HeaderBehind] = None  # a build's headers renamed on a helper thread (header_behind)
        self._last_write = False  # the build's next write is its last: `finish_build` publishes it (`last_build_write`)
        _STORES.add(self)

    # ------------------------------------------------------------------ opening and creating

    @classmethod
    def open(cls, path: PathLike, *, durable: bool = False, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
             allow_unfinished: bool = False, resolve: bool = True) -> Store:
        """Open the map in ``path`` for reading (no lock, no write access needed). ``path`` is `resolved` (its
        symbolic links), unless ``resolve=False`` says the caller resolved it already."""
        path = resolved(path) if resolve else absolute(path)
        header = read_header(path)
        if header.building and not allow_unfinished:
            raise unfinished_error(path, header)
        store = cls(path, header, durable=durable, lock_timeout=lock_timeout, allow_unfinished=allow_unfinished)
        if store._reader_lock is not None and store._reader_lock.fd is not None and \
                header_slots.current_id(path) != header.id:
            store.close()  # replaced between reading the header and holding its files: open the new map
            return cls.open(path, durable=durable, lock_timeout=lock_timeout, allow_unfinished=allow_unfinished)
        if header.building and header.commit == 0:
            return store  # a build killed while laying out its files: it committed nothing, not even them
        for name in header.columns:
            store._check_size(name)
        return store

    @classmethod
    def create(cls, path: PathLike, kind: str, columns: Mapping[str, Any], attrs: Mapping[str, Any], *,
               initial: Optional[Mapping[str, Sequence[Any]]] = None, metadata: Optional[Mapping[str, Any]] = None,
               requires: Sequence[str] = (), building: bool = False, overwrite: bool = False,
               durable: bool = False, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
               join_existing: bool = False, commit: Optional[str] = None) -> Store:
        """Make a new map of ``kind`` in ``path`` (missing parents are created) and return it open.

        ``columns`` maps each column to its item dtype; ``initial`` gives items a column starts with (such as
        the leading 0 of offsets). The directory must be new or empty, hold an unfinished build (which is
        replaced), or hold a map and ``overwrite=True`` (its files are unlinked, never truncated, so processes
        that map them keep their data). A file the map did not write is never deleted: a directory holding one
        is refused. With ``building=True`` the header marks the map unfinished and the returned store keeps the
        writer lock until `finish_build`. With ``join_existing=True`` a finished map of the same kind found in
        ``path`` (one a racing process just created) is opened instead of failing. ``path`` is `resolved`: a
        link to a folder that does not exist yet creates the map there. ``commit`` is the protocol of the new map
        (`header_slots.choose_protocol`: ``"slots"``, ``"rename"`` or None for the default).
        """
        path = resolved(path)
        lock_timeout = check_lock_timeout(lock_timeout)
        header_slots.choose_protocol(commit)  # a bad value fails before anything exists
        if path.exists() and not path.is_dir():
            raise MapExistsError(f"{path} exists and is not a directory")
        locks.require(f"the map {path}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ReadOnlyMapError(e.errno, f"cannot create the map directory {path}: {e.strerror}") from None
        # Refusals come before the lock file is made, so that a refused create leaves nothing behind.
        if not (path / HEADER_FILE).exists():
            _refuse_foreign_files(path, unless_a_map_appeared=True)
        else:
            _refuse_a_header_it_cannot_replace(path)
        lock_fd = lock_directory(path, lock_timeout)
        try:
            try:
                old: Header | None = read_header(path)
            except NotAMapError:
                old = None
            except (CorruptMapError, FormatVersionError):
                _refuse_a_header_it_cannot_replace(path)
                raise
            if old is not None and join_existing and not old.building:
                if old.kind != kind:
                    raise KindMismatchError(f"{path} holds a {old.kind!r} map, not a {kind!r} one")
                os.close(lock_fd)
                return cls.open(path, durable=durable, lock_timeout=lock_timeout, resolve=False)
            if old is not None and not old.building and not overwrite:
                raise MapExistsError(f"{path} already holds a map; pass overwrite=True to replace it")
            if old is None:
                _refuse_foreign_files(path)  # again, under the lock
            slots = header_slots.choose_protocol(commit, old is not None and SLOTS in old.requires) == "slots"
            store = cls._lay_out(path, old, kind, columns, attrs, initial or {}, metadata or {},
                                 tuple(requires) + ((SLOTS,) if slots and SLOTS not in requires else ()),
                                 building, durable, lock_timeout, lock_fd)
        except BaseException:
            if lock_fd >= 0:
                with suppress(OSError):
                    os.close(lock_fd)
            raise
        if building:
            store._thread_lock.acquire()
            store._builder = True
            store._txn = _Transaction(lock_fd, store._header.lengths)
        else:
            os.close(lock_fd)
        return store

    @classmethod
    def _lay_out(cls, path: Path, old: Header | None, kind: str, columns: Mapping[str, Any],
                 attrs: Mapping[str, Any], initial: Mapping[str, Sequence[Any]], metadata: Mapping[str, Any],
                 requires: tuple[str, ...], building: bool, durable: bool, lock_timeout: Optional[float],
                 lock_fd: int) -> Store:
        # Crash safety, step by step: (1) the old map's columns that the new one lacks go first, so none is
        # orphaned; (2) a header marking an unfinished build with a new id claims the directory, so a crash from
        # here on leaves a build that the next create replaces; (3) the columns are made anew (unlinked, never
        # truncated); (4) their initial items are published by a second header (still unfinished for a build).
        dtypes = {name: np.dtype(dt) for name, dt in columns.items()}
        dtypes[CHECKSUMS] = RECORD_DTYPE
        # A slot map (new or old) instead: the header first, then the old generation's files go, or wait in
        # .deferred-deletions while readers map them (the new files then have their own names).
        map_id, slots = uuid.uuid4().hex, SLOTS in requires or (old is not None and SLOTS in old.requires)
        generation = header_slots.Generation(path, old if slots else None, list(dtypes), map_id, SLOTS in requires)
        for name in (old.columns if old is not None and not slots else {}):
            if name not in dtypes:
                _unlink(path / (name + COLUMN_SUFFIX))  # (a plain map's names)
        header = Header(kind=kind, columns={name: Column(dt, 0) for name, dt in dtypes.items()},
                        attrs=dict(attrs), id=map_id, commit=0, requires=requires, metadata=dict(metadata),
                        building=True, checksums=default_algorithm(),
                        checksum_granularity=_granularity.DEFAULT_GRANULARITY,
                        extra={"file_suffix": generation.suffix} if generation.suffix else {})
        _write_header(path, header, durable, created=True)
        generation.retire(header, durable=durable)
        if slots:  # earlier generations' files whose readers have gone: swept now, not at the next write
            header_slots.run_deferred_deletions(path, map_id, set(map(header.file_of, header.columns)))
        for name in dtypes:
            column_path = path / header.file_of(name)
            if old is not None and not slots:
                _unlink(column_path)
            os.close(os.open(column_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644))
        if durable and slots:  # their names reach the disk before a slot lists them (no rename fsyncs the folder)
            fsync_dir(path)
        store = cls(path, header, durable=durable, lock_timeout=lock_timeout, allow_unfinished=True)
        store._thread_lock.acquire()
        store._txn = _Transaction(lock_fd, header.lengths)
        try:
            if initial:
                store.append({name: [np.asarray(items, dtype=dtypes[name])] for name, items in initial.items()})
            store._publish(building=building)
        finally:
            store._end_transaction(ok=True, release_lock=False)
        return store

    def finish_build(self) -> None:
        """Publish the map as complete and release the lock a ``building=True`` create kept."""
        if not self._builder:
            return
        self._publish(building=False)  # (after the last header handed to the helper thread is in place)
        self._settle_behind()
        self._builder = False
        self._end_transaction(ok=True)

    def end_creation(self, ok: bool) -> None:
        """End the transaction a ``building=True`` create opened as one ordinary transaction (see
        `hold_creation`): ``ok`` publishes what it wrote and the map as complete, in one commit; otherwise the
        map is removed again (its files, its header and its lock file, all of which this creation made and no
        other handle could use while it was marked unfinished and locked), leaving the directory as it was."""
        txn = self._require_transaction()
        if ok:
            txn.dirty = True  # publish even a block that wrote nothing: the header must drop "building"
            self._end_transaction(ok=True)
            return
        self.close_reader_lock()
        names = [self._header.file_of(name) for name in self._header.columns] + [HEADER_FILE, HEADER_FILE + ".tmp",
                 header_slots.SLOTS_FILE, header_slots.reader_lock_name(self._header.id)]
        for name in names:
            _unlink(self.path / name)
        _unlink(self.path / LOCK_FILE)  # while still holding it: a waiting creator then finds no map
        self._end_transaction(ok=False)
        self.close()

    def hold_creation(self) -> None:
        """Make the transaction a ``building=True`` create left open an ordinary one: its writes are published
        only by `end_creation`, which publishes or removes the whole new map."""
        self._require_transaction()
        self._builder = False

    def abandon_build(self) -> None:
        """Release the lock of a build that failed; the map stays marked unfinished."""
        if self._builder:
            self._builder = False
            self._settle_behind()
            self._end_transaction(ok=False)

    def defer_build_commits(self) -> None:
        """Rename this build's per-batch headers into place on a helper thread while the build goes on (see
        `header_behind`): only for a build whose caller runs no code between its batches (samples from a list in
        RAM). Nothing changes for a durable map or a slot map (whose commits rename nothing)."""
        if self._builder and not self.durable and SLOTS not in self._header.requires:
            self._behind = HeaderBehind(self.path / HEADER_FILE)

    def last_build_write(self) -> None:
        """The next write of a build whose headers go behind it (`defer_build_commits`) is its last: publish it with
        the header that finishes the build, not with a header of its own first. Nobody can tell the difference but
        a process killed in between, which then leaves the build at an earlier header, as when the helper thread
        had not renamed that header yet; a single-batch build so starts no helper thread and waits for none."""
        if self._builder and self._behind is not None:
            self._last_write = True

    def _settle_behind(self) -> None:
        """Wait for the headers handed to the helper thread and end it (a failure is not raised: the build has
        failed, or raised it already)."""
        behind, self._behind = self._behind, None
        self._last_write = False
        if behind is not None:
            with suppress(Exception):
                behind.close()

    # ------------------------------------------------------------------ reading

    @property
    def header(self) -> Header:
        """The snapshot this handle reads: the last header it read or published."""
        return self._header

    @property
    def kind(self) -> str:
        return self._header.kind

    @property
    def attrs(self) -> dict[str, Any]:
        txn = self._txn
        if txn is not None and txn.attrs is not None:
            return txn.attrs
        return self._header.attrs

    @property
    def metadata(self) -> dict[str, Any]:
        txn = self._txn
        if txn is not None and txn.metadata is not None:
            return txn.metadata
        return self._header.metadata

    @property
    def lengths(self) -> dict[str, int]:
        """Items per column: committed, plus what this handle's open transaction wrote."""
        txn = self._txn
        return dict(txn.lengths) if txn is not None else self._header.lengths

    def snapshot(self) -> Snapshot:
        """The columns and attributes of this handle's current state, fixed: a view built from it is consistent
        even while another thread writes through the same handle."""
        if self.closed:
            raise ClosedMapError(f"{self.path}: I/O operation on a closed map")
        txn, header = self._txn, self._header
        if txn is None:
            return Snapshot(self.path, self._columns, header.lengths, header.attrs)
        lengths = txn.lengths  # lengths before attributes: see `append`
        attrs = txn.attrs
        return Snapshot(self.path, self._columns, lengths, header.attrs if attrs is None else attrs)

    def column(self, name: str) -> np.ndarray[Any, Any]:
        """The items of column ``name`` (see `lengths`) as a read-only 1-D array over the mapping."""
        if self.closed:
            raise ClosedMapError(f"{self.path}: I/O operation on a closed map")
        txn = self._txn
        length = txn.lengths[name] if txn is not None else self._header.columns[name].length
        return self._columns[name].view(length)

    def release_descriptors(self) -> None:
        """Close the columns' own descriptors, keeping their mappings: a read-only handle that will not grow (a
        sharded map's shard) then holds one descriptor per mapped column instead of two, and none for the others
        (opened again by path when first needed)."""
        for column in self._columns.values():
            column.release()

    def descriptors(self) -> int:
        """How many file descriptors this handle holds: its columns' (their own and their mappings'), and a slot
        map's reader lock (``.readers-<id>``, held while the handle is open)."""
        lock = self._reader_lock
        held = 1 if lock is not None and lock.fd is not None else 0
        return held + sum(column.descriptors() for column in self._columns.values())

    def refresh(self) -> bool:
        """Read the header again; True if it changed (another handle committed, or the map was replaced)."""
        with self._thread_lock:
            if self._txn is not None:
                return False  # our own transaction is the newest state there is
            if not os.path.isdir(self.path):
                raise moved_error(self.path, self._header.id)
            header = read_header(self.path)
            if header.building and not self.allow_unfinished:
                raise unfinished_error(self.path, header)
            return self._adopt(header)

    def _adopt(self, header: Header) -> bool:
        old = self._header
        if header.kind != old.kind:
            raise KindMismatchError(f"{self.path} was replaced by a {header.kind!r} map; this handle reads "
                                    f"{old.kind!r} maps: open it again with mmap_ninja.open_existing()")
        if header.id != old.id:
            replaced, self._columns = self._columns, self._columns_of(header)  # new files: drop the old ones
            for column in replaced.values():
                column.close()
            self.close_reader_lock()
            self._reader_lock = header_slots.hold(self.path, header, self.lock_timeout)
        elif header == old:
            return False
        for name, col in header.columns.items():  # columns another handle added (a new records field)
            if name not in self._columns:
                self._columns[name] = MappedColumn(self.path / header.file_of(name), col.dtype)
        self._header = header
        for name in header.columns:
            self._check_size(name)
        return True

    def _columns_of(self, header: Header) -> dict[str, MappedColumn]:
        directory = os.fspath(self.path) + os.sep  # joined as strings: a Path join per column cost microseconds
        return {name: MappedColumn(directory + header.file_of(name), col.dtype) for name, col in header.columns.items()}

    def _check_size(self, name: str) -> None:
        column, need = self._columns[name], self._header.columns[name]
        column.check(need.length * need.dtype.itemsize)

    # ------------------------------------------------------------------ writing

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Hold the writer lock for the block and publish everything written in it as one commit at its end
        (nothing, if it raises). Transactions nest: only the outermost one commits."""
        self._begin()
        ok = False
        try:
            yield self
            ok = True
        finally:
            self._end_transaction(ok=ok)

    def _begin(self) -> None:
        if self.closed:
            raise ClosedMapError(f"{self.path}: I/O operation on a closed map")
        self._thread_lock.acquire()
        try:
            if self._txn is not None:
                self._txn.depth += 1
                self._txn.save()
                return
            if not self._header.writable_by_us:
                v = self._header.version
                raise FormatVersionError(
                    f"{self.path} uses format version {v[0]}.{v[1]}, newer than this mmap_ninja writes "
                    f"({FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}): it can read the map but not change it; "
                    f"upgrade mmap_ninja to write to it")
            if not os.path.isdir(self.path):
                raise moved_error(self.path, self._header.id)
            lock_fd = lock_directory(self.path, self.lock_timeout)
            try:
                header = read_header(self.path)  # catch up with every commit made since our snapshot
                if header.building:
                    raise unfinished_error(self.path, header)
                self._adopt(header)
                self._txn = txn = _Transaction(lock_fd, header.lengths)
                if SLOTS in header.requires:  # nothing is cut (`_discard_tail`); deletions deferred earlier, now
                    header_slots.run_deferred_deletions(self.path, header.id, set(map(header.file_of, header.columns)))
                for name in header.columns:
                    self._discard_tail(txn, name)
            except BaseException:
                self._txn = None
                os.close(lock_fd)
                raise
        except BaseException:
            self._thread_lock.release()
            raise

    def _end_transaction(self, *, ok: bool, release_lock: bool = True) -> None:
        txn = self._txn
        if txn is None:
            return
        try:
            if txn.depth > 1:
                txn.depth -= 1
                if not ok:  # a nested block that raised: its appends go, the enclosing transaction goes on
                    lengths = txn.restore()
                    self._undo_in_place(txn, txn.undo_from)
                    for name in txn.fds:
                        self._discard_tail(txn, name, to=lengths.get(name, 0))
                    self._drop_unpublished_columns(txn)
                    return
                txn.savepoints.pop()
                if self._builder and txn.dirty and txn.depth == 1 and not self._last_write:
                    self._publish(building=True)  # a build commits each write it is given
                return
            try:
                if ok and txn.dirty and not self._builder:
                    self._publish(building=False)
            finally:
                if not ok:
                    self._undo_in_place(txn, 0)
                if not self._builder or not ok:
                    txn.new_columns = {}
                    for name in txn.fds:
                        self._discard_tail(txn, name)
                    for fd in txn.fds.values():
                        os.close(fd)
                    txn.fds = {}
                    self._drop_unpublished_columns(txn)
                    self._txn = None
                    if release_lock:
                        os.close(txn.lock_fd)
        finally:
            self._thread_lock.release()

    def _undo_in_place(self, txn: _Transaction, start: int) -> None:
        """Put back what in-place writes of derived columns since entry ``start`` of the undo log replaced."""
        for name, offset, old in reversed(txn.undo[start:]):
            with suppress(OSError):  # the next writer's rules keep the column correct anyway (see FORMAT.md)
                write_all(self._fd(txn, name), [old], offset)
        del txn.undo[start:]

    def _drop_unpublished_columns(self, txn: _Transaction) -> None:
        """Forget (and remove the files of) columns added by writes that were undone: no header lists them."""
        for name in [name for name in self._columns if name not in self._header.columns
                     and name not in txn.new_columns]:
            fd = txn.fds.pop(name, None)
            if fd is not None:
                os.close(fd)
            self._columns.pop(name).close()
            _unlink(self.path / self._header.file_of(name))

    def _forget_transaction(self) -> None:
        """In a forked child: drop the inherited transaction (its lock belongs to the parent)."""
        txn, self._txn = self._txn, None
        self._builder = False
        self._behind = None  # (its helper thread does not exist in a forked child)
        self._thread_lock = threading.RLock()
        if txn is not None:
            for fd in (txn.lock_fd, *txn.fds.values()):
                with suppress(OSError):
                    os.close(fd)

    def _require_transaction(self) -> _Transaction:
        txn = self._txn
        if txn is None:
            raise RuntimeError("Store writes must happen inside Store.transaction()")
        return txn

    def _fd(self, txn: _Transaction, name: str) -> int:
        fd = txn.fds.get(name)
        if fd is None:
            column_path = self._columns[name].path
            try:
                fd = open_inside(column_path, os.O_RDWR)  # never through a link: reads may follow one, writes not
            except PermissionError as e:
                raise ReadOnlyMapError(e.errno, f"cannot write to the map {self.path}: {e.strerror}",
                                       str(column_path)) from None
            txn.fds[name] = fd
        return fd

    def _discard_tail(self, txn: _Transaction, name: str, to: Optional[int] = None) -> None:
        """Cut column ``name`` back to ``to`` items (default: its committed length): the tail of a write that
        never published. Only files that are longer are opened for writing."""
        column = self._columns[name]
        if SLOTS in self._header.requires:
            return  # a slot map's files are never cut: the next write overwrites the tail, readers ignore it
        committed = self._header.columns[name].length if name in self._header.columns else 0
        keep = (committed if to is None else to) * column.dtype.itemsize
        fd = txn.fds.get(name)
        try:
            size = os.fstat(fd).st_size if fd is not None else os.stat(column.path).st_size
            if size > keep:
                os.ftruncate(self._fd(txn, name), keep)
        except OSError:
            pass  # the next writer cuts it; readers never look past the committed length

    def append(self, new_items: Mapping[str, Any], attrs: Optional[Mapping[str, Any]] = None) -> None:
        """Write items after the end of columns, inside a transaction; published when it commits.

        ``new_items`` maps a column name to a buffer or a list of buffers written back to back; their byte size
        must be a whole number of that column's items. ``attrs``, if given, replaces the header's attributes
        along with the new items (they describe them: a new dtype, say).
        """
        txn = self._require_transaction()
        plan = []
        for name, buffers in new_items.items():
            column = self._columns[name]
            # A list of our own: the writer may put C-order copies of non-contiguous buffers in it for the hasher.
            if not isinstance(buffers, SizedBuffers):
                buffers = list(buffers) if isinstance(buffers, (list, tuple)) else [buffers]
            sizes = byte_sizes(buffers)
            nbytes = sum(sizes)
            if nbytes % column.dtype.itemsize:
                raise ValueError(f"{nbytes} bytes is not a whole number of {name!r} items")
            plan.append((name, column, buffers, sizes, nbytes // column.dtype.itemsize))
        before, attrs_before = txn.lengths, txn.attrs
        after = dict(before)
        algorithm = self._header.checksums
        buffers_of = {name: buffers for name, _, buffers, _, _ in plan}  # (a lone array is one buffer, not its items)
        records = []
        if attrs is not None:
            # Attributes before lengths (and `snapshot` reads them the other way round), so a thread building a view
            # never pairs new items with old attributes; new attributes with old items describe them still.
            txn.attrs = dict(attrs)
        try:
            for name, column, buffers, sizes, count in plan:
                if count:
                    start = before[name] * column.dtype.itemsize
                    write_all(self._fd(txn, name), buffers, start, sizes)
                    after[name] += count
                    if algorithm is not None and name != CHECKSUMS and not is_derived(name):
                        # The same buffers, hashed as they are (the hashers take any contiguous buffer), in
                        # records cut near the map's checksum granularity (one record without one).
                        records.extend(checksum_records(name, start, buffers, sizes, column.dtype.itemsize,
                                                        hasher(algorithm), self._header.checksum_granularity,
                                                        buffers_of, txn.attrs or self._header.attrs))
        except BaseException:
            txn.attrs = attrs_before
            for name, *_ in plan:
                self._discard_tail(txn, name, to=before[name])
            raise
        txn.lengths = after  # one assignment: a thread rebuilding its view sees all columns grow at once
        txn.records.extend(records)
        txn.dirty = True

    def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Replace the user metadata in the current transaction."""
        txn = self._require_transaction()
        txn.metadata = dict(metadata)
        txn.dirty = True

    def write_at(self, name: str, item_offset: int, buffer: Any) -> None:
        """Overwrite committed items of column ``name`` in place, starting at item ``item_offset``."""
        txn = self._require_transaction()
        column = self._columns[name]
        view = memoryview(buffer).cast("B")
        start = item_offset * column.dtype.itemsize
        if start < 0 or start + view.nbytes > txn.lengths[name] * column.dtype.itemsize:
            raise IndexError(f"in-place write outside column {name!r}")
        write_all(self._fd(txn, name), [view], start)
        self.rehash(name, start, start + view.nbytes)
        if self.durable:
            fsync_file(self._fd(txn, name))

    def write_items(self, name: str, writes: Sequence[tuple[int, np.ndarray[Any, Any]]]) -> None:
        """Overwrite items of the derived column ``name`` in place, inside a transaction: each ``(position,
        items)`` of ``writes`` puts ``items`` at item ``position``. Derived columns have no checksum records to
        update; the layout that owns one keeps it correct whatever part of these writes reaches the file (see
        FORMAT.md)."""
        if not is_derived(name):
            raise ValueError(f"column {name!r} is not a derived column ({DERIVED_PREFIX}...): write it with write_at")
        txn = self._require_transaction()
        column = self._columns[name]
        fd = self._fd(txn, name)
        current = column.view(txn.lengths[name])
        for position, items in writes:
            data = np.ascontiguousarray(items, dtype=column.dtype)
            if position < 0 or position + data.size > txn.lengths[name]:
                raise IndexError(f"in-place write outside column {name!r}")
            # What it replaces, to put back if the transaction (or a nested block) is undone.
            txn.undo.append((name, position * column.dtype.itemsize, current[position:position + data.size].tobytes()))
            write_all(fd, [data], position * column.dtype.itemsize)

    def add_columns(self, columns: Mapping[str, Any]) -> None:
        """Give the map new, empty columns (name -> item dtype) in the current transaction: their files are made
        now, and the header that publishes the transaction lists them. A file left by a transaction that never
        published (a crash) under one of these names is replaced: no header lists it, so nothing reads it."""
        txn = self._require_transaction()
        for name, dtype in columns.items():
            if name in self._columns:
                raise ValueError(f"{self.path} already has a column {name!r}")
            column_path = self.path / self._header.file_of(name)
            _unlink(column_path)
            fd = os.open(column_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            self._columns[name] = MappedColumn(column_path, np.dtype(dtype))
            txn.new_columns[name] = np.dtype(dtype)
            txn.lengths = {**txn.lengths, name: 0}
            txn.dirty = True

    def rehash(self, name: str, start: int, stop: int) -> None:
        """Recompute the checksums of the records of column ``name`` that overlap bytes ``start:stop`` (after an
        in-place write there), inside a transaction."""
        txn = self._require_transaction()
        algorithm = self._header.checksums
        if algorithm is None or stop <= start:
            return
        column = self._columns[name]
        data = column.view(txn.lengths[name]).view(np.uint8)
        cid = column_id(name)
        hash_bytes = hasher(algorithm)
        for k, (rec_column, reserved, rec_start, rec_stop, _) in enumerate(txn.records):
            if rec_column == cid and rec_start < stop and rec_stop > start:
                txn.records[k] = (rec_column, reserved, rec_start, rec_stop, hash_bytes([data[rec_start:rec_stop]]))
        records = self._columns[CHECKSUMS].view(self._header.columns[CHECKSUMS].length)
        touched = np.flatnonzero((records["column"] == cid) & (records["start"] < stop) & (records["stop"] > start))
        for k in touched.tolist():
            updated = records[k:k + 1].copy()
            updated["digest"] = hash_bytes([data[int(updated["start"][0]):int(updated["stop"][0])]])
            write_all(self._fd(txn, CHECKSUMS), [updated], k * RECORD_DTYPE.itemsize)

    def writable_view(self, name: str) -> np.ndarray[Any, Any]:
        """Column ``name`` as a writable array over a shared mapping, for in-place writes inside a transaction
        (drop it before the transaction ends, and `rehash` the bytes it changed)."""
        txn = self._require_transaction()
        column = self._columns[name]
        length = txn.lengths[name]
        if length == 0:
            return np.empty(0, dtype=column.dtype)
        mapping = mmap.mmap(self._fd(txn, name), length * column.dtype.itemsize, access=mmap.ACCESS_WRITE)
        return np.frombuffer(mapping, dtype=column.dtype, count=length)

    def _publish(self, *, building: bool) -> None:
        txn = self._require_transaction()
        if txn.records:  # the checksums of this commit's writes, published by the same header
            records = np.array(txn.records, dtype=RECORD_DTYPE)
            txn.records = []
            self.append({CHECKSUMS: [records]})
        header = self._header
        dtypes = {**{name: col.dtype for name, col in header.columns.items()}, **txn.new_columns}
        new = header.evolve(
            columns={name: Column(dtype, txn.lengths[name]) for name, dtype in dtypes.items()},
            attrs=header.attrs if txn.attrs is None else txn.attrs,
            metadata=header.metadata if txn.metadata is None else txn.metadata,
            commit=header.commit + 1, building=building, version=max(header.version, FORMAT_VERSION))
        if self.durable:
            for fd in txn.fds.values():
                fsync_file(fd)
            if txn.new_columns:  # the names of the files a header lists reach the disk before that header
                fsync_dir(self.path)
        behind = self._behind
        if behind is not None and building:
            behind.publish(_encode(new))  # renamed into place behind the build (header_behind)
        else:
            if behind is not None:
                behind.wait()
            _write_header(self.path, new, self.durable)
        self._header = new
        txn.attrs = txn.metadata = None
        txn.new_columns = {}
        txn.undo = []
        txn.dirty = False

    def sync(self) -> None:
        """fsync every column file, the header and the directory."""
        for column in self._columns.values():
            fd = column.descriptor()  # (opened again if it was released)
            if fd is not None:
                fsync_file(fd)
        fsync_path(self.path / (header_slots.SLOTS_FILE if SLOTS in self._header.requires else HEADER_FILE))
        fsync_dir(self.path)

    def flush(self) -> None:
        """fsync the column files (in-place writes of a ``durable`` map are flushed by each write already)."""
        txn = self._txn
        for fd in (txn.fds.values() if txn is not None else ()):
            fsync_file(fd)

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Drop the mappings (arrays handed out stay valid while they live) and any open transaction."""
        if self.closed:
            return
        self._settle_behind()
        if self._txn is not None:
            self._builder = False
            while self._txn is not None:
                self._end_transaction(ok=False)
        for column in self._columns.values():
            column.close()
        self.close_reader_lock()
        self.closed = True

    def close_reader_lock(self) -> None:
        lock, self._reader_lock = self._reader_lock, None
        if lock is not None:
            lock.release()


def _encode(header: Header) -> bytes:
    from mmap_ninja.storage.format import encode_header

    return encode_header(header)


def _write_header(path: Path, header: Header, durable: bool, created: bool = False) -> None:
    if SLOTS in header.requires:  # in place into a slot of header.slots (and the stub header.json, once)
        header_slots.publish(path, _encode(header), durable=durable, created=created)
    else:
        replace_file(path / HEADER_FILE, _encode(header), durable=durable)


def _refuse_a_header_it_cannot_replace(path: Path) -> None:
    try:
        read_header(path)
    except (CorruptMapError, FormatVersionError) as e:
        raise MapExistsError(f"{path} holds a map this mmap_ninja cannot replace safely ({e}); remove the "
                             f"directory yourself if it is no longer needed") from None


def _refuse_foreign_files(path: Path, unless_a_map_appeared: bool = False) -> None:
    if unless_a_map_appeared and os.path.lexists(path / HEADER_FILE):
        # A racing creator wrote its header (then its columns) since we looked: not foreign files. The check
        # under the lock decides, with the map's own header in hand.
        return
    if (path / SHARDS_FILE).is_file():
        raise MapExistsError(f"{path} holds a sharded map ({SHARDS_FILE}, as merge and from_dask build it); a "
                             f"single map's builder does not replace a sharded map, even with overwrite=True: add "
                             f"shards with merge(), or build in a new directory (remove the sharded map's folder "
                             f"yourself if it is no longer needed)")
    foreign = foreign_names(path, lambda name: name in _OUR_FILES or header_slots.is_our_file(name))
    if foreign and unless_a_map_appeared and os.path.lexists(path / HEADER_FILE):
        return  # a racing creator's header, then its columns, appeared while the folder was listed (as above)
    if foreign:
        raise MapExistsError(f"{path} is not empty and holds no map (it holds {listed(foreign)}); mmap_ninja never "
                             f"deletes files it did not write: choose an empty or new directory")


def _unlink(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()
