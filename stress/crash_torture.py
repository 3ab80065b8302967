"""Crash torture: SIGKILL writers at random instants and prove that nothing committed is ever lost.

Usage::

    python stress/crash_torture.py --trials 300 --kinds strings,ragged,numpy --seed 0 [--jobs 2]

Every trial starts fresh child *processes* (``python crash_torture.py --child ...``, never a fork of the
caller) that write a map whose every sample is derivable from what it holds. A child logs, to an append-only
log file that survives the kill, ``I ...`` before each write and ``C ...`` after it returned. The parent kills
a child's whole process group with SIGKILL after a random delay and then checks:

* the map opens (``mode="r"``) and holds every sample of every write that returned, byte for byte, and
  nothing else except possibly the whole batch that was in flight;
* a build (``from_*``) that was interrupted is marked unfinished: a plain open raises `UnfinishedMapError`,
  ``allow_unfinished=True`` reads every batch it committed, intact, and re-running the build succeeds
  without ``overwrite=True``;
* a new writer then extends the map (its transaction cuts the uncommitted tail off the files) and the result
  reads back exactly.

Scenarios (cycled through per kind):

``build``     ``from_generator`` (``np_from_generator`` for NumPy), then extends/appends from a reopened
              handle (``np_extend`` on an open map and on a path for NumPy), killed anywhere in between;
``setitem``   in-place assignments: only the sample being written may differ;
``refresh``   a writer extends while a reader handle in the same process ``refresh()``-es and checks the
              new samples after every commit; killed during either;
``indexable`` ``from_indexable(n_jobs=2)``; half of the trials kill only the main process and leave its
              pool workers orphaned, which must not keep the map locked;
``appenders`` three appender processes extend one map at once (half of the trials start with no map, so
              they race to create it), each with batches whose samples encode (writer, batch number,
              position in batch, batch size); one of them is killed at a random instant. Every batch a
              writer saw return must be there, whole and contiguous, each writer's batches in order, no
              batch twice, and the survivors must keep appending after the kill (the kernel releases the
              lock the killed process held).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mmap_ninja
from mmap_ninja import NumpyMmap, RaggedMmap, StringsMmap, UnfinishedMapError
from mmap_ninja.maps import MapBase

HERE = Path(__file__).resolve()
KINDS = ("strings", "ragged", "numpy")
SCENARIOS = ("build", "setitem", "refresh", "indexable", "appenders")
CLASSES: dict[str, type[MapBase]] = {"strings": StringsMmap, "ragged": RaggedMmap, "numpy": NumpyMmap}
NUMPY_SHAPE = (3, 4)
APPENDERS = 3  # concurrent appender processes per "appenders" trial
PREBUILT_WRITER = 9  # the writer id of the samples an "appenders" trial may start with
RECOVERY_WRITER = 8  # the writer id of the batch the checker appends after the trial
HANG_SECONDS = 600  # waits on the appenders bound a hang only: on a loaded machine they may need minutes
_ALPHABET = "abcXYZ019 |\u00e9\u00df\u20ac\U0001f600\n"
Events = list[list[str]]
Identity = tuple[int, int, int, int]  # (writer, batch number, position in batch, batch size)


# --------------------------------------------------------------------------- the deterministic content

def sample(kind: str, i: int, variant: int = 0) -> Any:
    """Sample ``i`` of a map of ``kind``; ``variant=1`` is a different value of the same byte size."""
    if kind == "strings":
        r = random.Random(i)
        text = f"{i}|" + "".join(r.choice(_ALPHABET) for _ in range(r.randrange(0, 40)))
        return text[::-1] if variant else text
    if kind == "ragged":
        shape: tuple[int, ...]
        if i % 3 == 0:
            shape = ()
        elif i % 3 == 1:
            shape = ((i * 7) % 13,)
        else:
            shape = (1 + i % 2, 2, i % 4)
        size = int(np.prod(shape, dtype=np.int64))
        values = (np.arange(size, dtype=np.int64) + i * 100).reshape(shape)
        return -values - 1 if variant else values
    if kind == "numpy":
        array = (np.arange(12, dtype=np.int32) + i * 12).reshape(NUMPY_SHAPE)
        return -array - 1 if variant else array
    raise ValueError(kind)


def samples(kind: str, start: int, stop: int) -> list[Any]:
    return [sample(kind, i) for i in range(start, stop)]


def batch(kind: str, start: int, stop: int) -> Any:
    """What a writer passes to extend: a list, or an ndarray for NumPy maps."""
    items = samples(kind, start, stop)
    if kind == "numpy":
        return np.stack(items) if items else np.empty((0, *NUMPY_SHAPE), dtype=np.int32)
    return items


class Source:
    """An indexable of ``n`` samples, for ``from_indexable`` (importable, so pool workers can use it)."""

    def __init__(self, kind: str, n: int):
        self.kind, self.n = kind, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return sample(self.kind, i)


def tagged_sample(kind: str, writer: int, batch_no: int, position: int, size: int) -> Any:
    """A sample that says who wrote it: (writer, batch number, position in the batch, batch size), plus a
    filler derived from them (variable length and multi-byte characters for strings, shapes of 1 to 3
    dimensions for ragged), so that a sample torn or mixed with another one is recognised."""
    code = writer * 1_000_003 + batch_no * 1009 + position * 31
    if kind == "strings":
        filler = "".join(_ALPHABET[(code + 7 * j) % len(_ALPHABET)] for j in range(code % 23))
        return f"{writer}:{batch_no}:{position}:{size}|{filler}"
    if kind == "ragged":
        shapes = ((4 + code % 5,), (2, 2 + code % 3), (1, 2, 2 + code % 2))
        shape = shapes[code % 3]
        values = np.arange(int(np.prod(shape)), dtype=np.int64) + code
        values[:4] = (writer, batch_no, position, size)
        return values.reshape(shape)
    if kind == "numpy":
        flat = (np.arange(12, dtype=np.int64) + code) % (1 << 31)
        flat[:4] = (writer, batch_no, position, size)
        return flat.astype(np.int32).reshape(NUMPY_SHAPE)
    raise ValueError(kind)


def tagged_batch(kind: str, writer: int, batch_no: int, size: int) -> Any:
    """Batch ``batch_no`` of ``writer``: a list, or an ndarray for NumPy maps."""
    items = [tagged_sample(kind, writer, batch_no, p, size) for p in range(size)]
    return np.stack(items) if kind == "numpy" else items


def identity(kind: str, value: Any) -> Identity | None:
    """The identity a tagged sample encodes, or None if the sample is not exactly what it claims to be."""
    try:
        if kind == "strings":
            head = value.split("|", 1)[0]
            w, b, p, size = (int(x) for x in head.split(":"))
        else:
            array = np.asarray(value)
            w, b, p, size = (int(x) for x in array.reshape(-1)[:4])
        if min(w, b, p) < 0 or not 0 <= p < size:
            return None
        want = tagged_sample(kind, w, b, p, size)
    except (ValueError, TypeError, IndexError):
        return None
    if kind == "strings":
        return (w, b, p, size) if value == want else None
    array = np.asarray(value)
    same = array.dtype == want.dtype and array.shape == want.shape and array.tobytes() == want.tobytes()
    return (w, b, p, size) if same else None


@dataclass
class Scan:
    """What a map of tagged samples holds: its whole batches in order, and every sample not in one."""

    batches: list[tuple[int, int, int, int]] = field(default_factory=list)  # (writer, batch, size, start)
    torn: int = 0  # samples with wrong content, or outside a whole contiguous batch
    notes: list[str] = field(default_factory=list)


def scan_tagged(kind: str, m: MapBase, start: int = 0, stop: int | None = None) -> Scan:
    """Read samples ``start:stop`` of ``m`` and group them into batches; anything torn, partial or
    interleaved is counted in ``torn``."""
    stop = len(m) if stop is None else stop
    scan = Scan()
    i = start
    while i < stop:
        ident = identity(kind, m[i])
        if ident is None or ident[2] != 0:
            scan.torn += 1
            if len(scan.notes) < 5:
                scan.notes.append(f"sample {i} is {'not a valid tagged sample' if ident is None else ident}")
            i += 1
            continue
        w, b, _, size = ident
        end = i + size
        whole = end <= stop and all(identity(kind, m[j]) == (w, b, j - i, size) for j in range(i + 1, end))
        if not whole:
            scan.torn += 1
            if len(scan.notes) < 5:
                scan.notes.append(f"batch {b} of writer {w} at {i} (size {size}) is partial or interleaved")
            i += 1
            continue
        scan.batches.append((w, b, size, i))
        i = end
    return scan


@dataclass
class Audit:
    """A scan compared with what the writers logged."""

    lost: int = 0  # samples of batches a writer saw committed that are missing
    duplicated: int = 0  # batches present more than once
    unexpected: int = 0  # batches present that no writer committed or had in flight
    out_of_order: int = 0  # writers whose batches are not 0, 1, 2, ... in map order
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.out_of_order)


def audit(scan: Scan, committed: dict[int, dict[int, int]], in_flight: dict[int, int | None]) -> Audit:
    """``committed[w]`` maps each batch number writer ``w`` saw return to its size; ``in_flight[w]`` is the
    batch it was writing when it stopped, if any (present or not, but whole)."""
    result = Audit()
    seen: dict[tuple[int, int], int] = {}
    order: dict[int, list[int]] = {}
    for w, b, _, _ in scan.batches:
        seen[(w, b)] = seen.get((w, b), 0) + 1
        order.setdefault(w, []).append(b)
    for w, sizes in committed.items():
        for b, size in sizes.items():
            if (w, b) not in seen:
                result.lost += size
                if len(result.notes) < 5:
                    result.notes.append(f"batch {b} of writer {w} ({size} samples) returned but is missing")
    for (w, b), count in seen.items():
        result.duplicated += count - 1
        if b not in committed.get(w, {}) and in_flight.get(w) != b:
            result.unexpected += 1
            if len(result.notes) < 5:
                result.notes.append(f"batch {b} of writer {w} is present but was never written")
    for w, numbers in order.items():
        if numbers != list(range(len(numbers))):
            result.out_of_order += 1
            if len(result.notes) < 5:
                result.notes.append(f"writer {w}'s batches are in the order {numbers[:10]}...")
    return result


class Mismatch(AssertionError):
    pass


def verify(kind: str, m: MapBase, length: int, variants: dict[int, int] | None = None,
           free: int | None = None) -> None:
    """Check, byte for byte, that ``m`` holds exactly ``length`` samples with the expected content.

    ``variants`` maps an index to the variant it was last assigned; the sample at ``free`` (an in-place
    write in flight) may hold anything of its original byte size.
    """
    variants = variants or {}
    if len(m) != length:
        raise Mismatch(f"length {len(m)}, expected {length}")
    expected = [sample(kind, i, variants.get(i, 0)) for i in range(length)]
    if kind == "strings":
        assert isinstance(m, StringsMmap)
        encoded = [s.encode("utf-8") for s in expected]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)])
        if not np.array_equal(m.offsets, offsets) or m.offsets.dtype != np.int64:
            raise Mismatch("offsets differ")
        values = m.values.tobytes()
        if free is not None:
            a, b = int(offsets[free]), int(offsets[free + 1])
            values = values[:a] + encoded[free] + values[b:]
        if values != b"".join(encoded):
            raise Mismatch("UTF-8 bytes differ")
        for i in range(length):
            if i != free and m[i] != expected[i]:
                raise Mismatch(f"sample {i} reads {m[i]!r}, expected {expected[i]!r}")
    elif kind == "ragged":
        assert isinstance(m, RaggedMmap)
        for i in range(length):
            got = m[i]
            if got.dtype != np.int64 or got.shape != expected[i].shape:
                raise Mismatch(f"sample {i}: {got.dtype} {got.shape}, expected int64 {expected[i].shape}")
            if i != free and got.tobytes() != expected[i].tobytes():
                raise Mismatch(f"sample {i} differs")
        if length:
            sizes = [e.size for e in expected]
            if not np.array_equal(m.offsets, np.concatenate([[0], np.cumsum(sizes)])):
                raise Mismatch("offsets differ")
    else:
        got = np.asarray(m)
        if length == 0:
            return
        want = np.stack(expected)
        if got.dtype != np.int32 or got.shape != want.shape:
            raise Mismatch(f"array {got.dtype} {got.shape}, expected int32 {want.shape}")
        if free is not None:
            got = got.copy()
            got[free] = want[free]
        if got.tobytes() != want.tobytes():
            raise Mismatch("array bytes differ")


def committed_bytes_ok(kind: str, path: Path, length: int) -> bool:
    """After a writer's transaction: do the files hold exactly the committed bytes (no uncommitted tail)?"""
    if kind == "numpy":
        return os.path.getsize(path / "data.bin") == length * 12 * 4
    offsets = os.path.getsize(path / "offsets.bin") == (length + 1) * 8
    with CLASSES[kind](path, mode="r") as m:
        assert isinstance(m, (StringsMmap, RaggedMmap))
        data_bytes = int(m.offsets[-1]) * (8 if kind == "ragged" else 1)
    return offsets and os.path.getsize(path / "data.bin") == data_bytes


# --------------------------------------------------------------------------- the children

class Log:
    """Append-only event log; every line is one write(2), so it survives a SIGKILL right after."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, *words: object) -> None:
        os.write(self.fd, (" ".join(map(str, words)) + "\n").encode())


def _log_extends(cls: type[MapBase], log: Log) -> None:
    original = cls.extend

    def extend(self: MapBase, samples: Iterable[Any]) -> None:
        items = samples if isinstance(samples, np.ndarray) else list(samples)
        log("I", len(self) + len(items))
        original(self, items)
        log("C", len(self))

    cls.extend = extend  # type: ignore[method-assign]


def record_fsyncs(record_path: Path) -> None:
    """For the power-loss tests: log what every ``os.fsync`` made durable, and every published header.

    One JSON line per event: ``{"file": path, "size": bytes}`` (plus ``"content"`` for the header's temp
    file), ``{"dir": path, "header": text}`` after a directory fsync, ``{"published": text}`` after each
    header published by a commit. Logged after the real call returns, so the log never claims more than was
    synced.
    """
    import stat

    from mmap_ninja.storage import store as storage

    out = os.open(record_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    real_fsync, real_publish = os.fsync, storage.Store._publish

    def emit(record: dict[str, Any]) -> None:
        os.write(out, (json.dumps(record) + "\n").encode())

    def fsync(fd: Any) -> None:
        real_fsync(fd)
        fd = fd if isinstance(fd, int) else fd.fileno()
        target = os.readlink(f"/proc/self/fd/{fd}")
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            emit({"dir": target, "header": (Path(target) / "header.json").read_text()})
        else:
            record: dict[str, Any] = {"file": target, "size": st.st_size}
            if target.endswith(".tmp"):
                record["content"] = Path(target).read_text()
            emit(record)

    def publish(self: storage.Store, **options: Any) -> None:
        real_publish(self, **options)
        emit({"published": (self.path / "header.json").read_text()})

    os.fsync = fsync
    storage.Store._publish = publish  # type: ignore[method-assign]


def _ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def child(scenario: str, kind: str, path: Path, log_path: Path, seed: int, durable: bool = False) -> None:
    """A writer that runs until it is killed. Build phases are logged as ``S n`` (a build of ``n`` samples
    starts) and ``B`` (it returned): inside them ``C`` means the batch was written, and it is committed once
    the next ``I`` (or ``B``) is logged."""
    rng = random.Random(seed)
    log = Log(log_path)
    cls = CLASSES[kind]
    cap = 6000
    if scenario == "setitem":
        n = 400
        cls.from_generator(path, samples(kind, 0, n), batch_size=100).close()
        m = cls(path)
        variants: dict[int, int] = {}
        _ready()
        while True:
            i = rng.randrange(n)
            v = 1 - variants.get(i, 0)
            log("W", i, v)
            m[i] = sample(kind, i, v)
            variants[i] = v
            log("D")
    _log_extends(cls, log)
    batch_size = rng.choice([1, 7, 50, 200])
    n_first = rng.randrange(0, 1500)
    _ready()
    if scenario == "indexable":
        log("S", 3000)
        built = cls.from_indexable(path, Source(kind, 3000), batch_size=rng.choice([64, 200]), n_jobs=2,
                                   durable=durable)
    else:
        log("S", n_first)
        if kind == "numpy":
            built = mmap_ninja.np_from_generator(path, iter(samples(kind, 0, n_first)), batch_size, durable=durable)
        else:
            built = cls.from_generator(path, iter(samples(kind, 0, n_first)), batch_size, durable=durable)
    log("B")
    built.close()
    m = cls(path, durable=durable)
    reader = cls(path, mode="r") if scenario == "refresh" else None
    while len(m) < cap:
        start = len(m)
        # np_extend on a path opens and closes its own handle
        if kind == "numpy" and rng.random() < 0.2:
            mmap_ninja.np_extend(path, batch(kind, start, start + rng.randrange(1, 60)), durable=durable)
            m.refresh()
        elif rng.random() < 0.2:
            m.append(batch(kind, start, start + 1)[0])
        else:
            m.extend(batch(kind, start, start + rng.randrange(0, 60)))
        if reader is not None:
            before = len(reader)
            reader.refresh()
            try:
                if rng.random() < 0.02:
                    verify(kind, reader, len(m))
                for i in range(before, len(reader)):
                    if np.asarray(reader[i]).tobytes() != np.asarray(sample(kind, i)).tobytes():
                        raise Mismatch(f"reader sees a wrong sample {i} after refresh")
            except Mismatch as e:
                log("E", str(e).replace("\n", " "))
                os._exit(3)
    log("DONE")
    while True:
        time.sleep(1)


def appender(kind: str, path: Path, log_path: Path, seed: int, writer: int, stop_path: Path) -> None:
    """One of several concurrent appenders: batches ``0, 1, 2, ...`` of ``writer`` until ``stop_path`` exists.
    Logs ``I b size`` before each batch and ``C b size`` after it returned, ``X error`` if a write failed."""
    rng = random.Random(seed)
    log = Log(log_path)
    cls = CLASSES[kind]
    m = _open_appender(cls, path, log)
    _ready()
    batch_no = 0
    while not stop_path.exists():
        size = rng.randrange(1, 40)
        items = tagged_batch(kind, writer, batch_no, size)
        log("I", batch_no, size)
        try:
            if rng.random() < 0.2:  # a transaction of single appends is one commit, as one extend is
                with m.transaction():
                    for item in items:
                        m.append(item)
            else:
                m.extend(items)
        except Exception as e:
            log("X", f"{type(e).__name__}: {e}".replace("\n", " "))
            os._exit(2)
        log("C", batch_no, size)
        batch_no += 1
        if rng.random() < 0.05:  # a fresh handle now and then: a new snapshot to catch up from
            m.close()
            m = _open_appender(cls, path, log)
    m.close()


def _open_appender(cls: type[MapBase], path: Path, log: Log) -> MapBase:
    """Open the map for appending, retrying for at most `HANG_SECONDS` the two refusals an open can meet while another
    process's first write is creating the map (both reported in the table's summary, see the report):

    * ``U``: `UnfinishedMapError` ("still being built by another process"): the creator's header still marks
      the map unfinished;
    * ``N``: `NotAMapError` ("header.json is missing"): ``MapBase.__init__`` found no header, then saw one
      appear before deciding that the path holds no map yet.
    """
    deadline = time.monotonic() + HANG_SECONDS
    while True:
        try:
            return cls(path, lock_timeout=HANG_SECONDS)  # three writers share the lock, however slowly
        except (UnfinishedMapError, mmap_ninja.NotAMapError) as e:
            if time.monotonic() > deadline:
                raise
            log("U" if isinstance(e, UnfinishedMapError) else "N")
            time.sleep(0.005)


# --------------------------------------------------------------------------- the parent

@dataclass
class Trial:
    kind: str
    scenario: str
    consistent: bool = False
    lost: int = 0
    failed_reopen: bool = False
    recovery_s: float | None = None
    idle: bool = False  # the kill came after the child's workload had finished
    refused_opens: int = 0  # appender opens refused (UnfinishedMapError) while another one created the map
    missing_opens: int = 0  # appender opens refused (NotAMapError) while another one created the map
    batches: int = 0  # appenders: batches the writers saw committed
    victim_in_flight: bool = False  # appenders: the killed writer had a batch in flight
    detail: str = ""


def _events(log_path: Path) -> Events:
    try:
        text = log_path.read_text()
    except FileNotFoundError:
        return []
    return [line.split(" ", 2) for line in text.splitlines() if line]


def _spawn(args: Sequence[str], stderr_path: Path) -> subprocess.Popen[str]:
    # stderr goes to a file: orphaned pool workers keep their copy of it open
    with open(stderr_path, "wb") as err:
        return subprocess.Popen([sys.executable, str(HERE), "--child", *args], stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True, text=True)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and its pool workers


def _ready_line(proc: subprocess.Popen[str]) -> bool:
    assert proc.stdout is not None
    return proc.stdout.readline().strip() == "READY"


def _commits(events: Events) -> int:
    """How many writes of a positive length the child saw return (``C n`` with ``n > 0``)."""
    return sum(ev[0] == "C" and int(ev[1]) > 0 for ev in events)


def kill_child_at_random(scenario: str, kind: str, workdir: Path, seed: int, extra: Sequence[str] = (),
                         max_delay: float = 0.3, after_commits: int = 0) -> Events:
    """Run a child in ``workdir`` (map in ``workdir/map``), SIGKILL it (and its group) at a random instant
    after it is ready (and, with ``after_commits``, after it logged that many returned writes of a positive
    length: a state it must reach, so that the kill lands after some commits however loaded the machine is);
    returns its event log. Raises if the child failed on its own."""
    rng = random.Random(seed)
    err_path = workdir / "stderr"
    proc = _spawn([scenario, kind, str(workdir / "map"), str(workdir / "log"), str(seed), *extra], err_path)
    try:
        if not _ready_line(proc):
            proc.wait()
            raise RuntimeError(f"child failed before READY: {err_path.read_text()[-2000:]}")
        deadline = time.monotonic() + HANG_SECONDS  # bounds a hang only: the state decides when the delay starts
        while _commits(_events(workdir / "log")) < after_commits and proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the child logged fewer than {after_commits} commits in {HANG_SECONDS} s")
            time.sleep(0.001)
        time.sleep(rng.uniform(0, max_delay))
        _kill_group(proc)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"child exited with {proc.returncode}: {err_path.read_text()[-2000:]}")
    finally:
        _kill_group(proc)
        assert proc.stdout is not None
        proc.stdout.close()
    return _events(workdir / "log")


def run_trial(kind: str, scenario: str, seed: int, workdir: Path) -> Trial:
    if scenario == "appenders":
        return run_appenders_trial(kind, seed, workdir)
    trial = Trial(kind, scenario)
    rng = random.Random(seed)
    path, log_path = workdir / "map", workdir / "log"
    err_path = workdir / "stderr"
    proc = _spawn([scenario, kind, str(path), str(log_path), str(seed)], err_path)
    orphan_workers = False
    try:
        if not _ready_line(proc):
            proc.wait()
            trial.detail = f"child failed before READY: {err_path.read_text()[-2000:]}"
            return trial
        time.sleep(rng.uniform(0, 0.02) if rng.random() < 0.4 else rng.uniform(0, 0.3))
        if scenario == "indexable" and rng.random() < 0.5:
            os.kill(proc.pid, signal.SIGKILL)  # the main process only: its pool workers live on
            orphan_workers = True
        else:
            _kill_group(proc)
        proc.wait()
        stderr = err_path.read_text()
        if proc.returncode != -signal.SIGKILL:
            trial.detail = f"child exited with {proc.returncode} before the kill: {stderr[-2000:]}"
            return trial
        events = _events(log_path)
        trial.idle = any(ev[0] == "DONE" for ev in events)
        check_after_crash(trial, kind, scenario, path, events)
    finally:
        if orphan_workers or proc.poll() is None:
            _kill_group(proc)
        assert proc.stdout is not None
        proc.stdout.close()
    return trial


def expected_state(events: Events) -> tuple[int | None, int | None]:
    """From an extend log (outside a build): (length of the last returned extend or None if none, length if
    the batch in flight was published, or None)."""
    committed: int | None = None
    intent: int | None = None
    for ev in events:
        if ev[0] == "E":
            raise Mismatch(f"the child saw: {ev[1:]}")
        if ev[0] == "C":
            committed = int(ev[1])
        elif ev[0] == "I":
            intent = int(ev[1])
    in_flight = intent if intent is not None and (committed is None or intent > committed) else None
    return committed, in_flight


@dataclass
class BuildLog:
    """A child's log split at its build: ``size`` samples were to be built (None: no build logged)."""

    size: int | None
    returned: bool  # the from_* call returned
    during: Events  # the events logged inside the build
    after: Events  # the events logged after it returned (all of them when no build was logged)

    def published(self) -> set[int]:
        """The lengths an interrupted build can have published: a build commits each batch inside its
        ``extend``, so ``C n`` means batch ``n`` is committed, and after an ``I n`` with no ``C`` yet the batch in
        flight may or may not be."""
        written = [int(ev[1]) for ev in self.during if ev[0] == "C"]
        committed = written[-1] if written else 0
        last = self.during[-1] if self.during else None
        if last is not None and last[0] == "I":
            return {committed, int(last[1])}
        return {committed}


def split_build(events: Events) -> BuildLog:
    start = next((k for k, ev in enumerate(events) if ev[0] == "S"), None)
    if start is None:
        return BuildLog(None, True, [], events)
    end = next((k for k, ev in enumerate(events) if ev[0] == "B"), None)
    if end is None:
        return BuildLog(int(events[start][1]), False, events[start + 1:], [])
    return BuildLog(int(events[start][1]), True, events[start + 1:end], events[end + 1:])


def check_after_crash(trial: Trial, kind: str, scenario: str, path: Path, events: Events) -> None:
    """Judge the map a killed ``child`` left in ``path`` from its log; the verdict goes into ``trial``."""
    cls = CLASSES[kind]
    variants: dict[int, int] = {}
    free = None
    try:
        if any(ev[0] == "E" for ev in events):
            raise Mismatch(f"the child saw: {next(ev for ev in events if ev[0] == 'E')[1:]}")
        build = split_build(events)
        if scenario == "setitem":
            pending: tuple[int, int] | None = None
            for ev in events:
                if ev[0] == "W":
                    pending = (int(ev[1]), int(ev[2]))
                elif ev[0] == "D" and pending is not None:
                    variants[pending[0]] = pending[1]
                    pending = None
            free = pending[0] if pending else None
            must, allowed = 400, {400}
        elif not build.returned:
            if _check_unfinished_build(trial, kind, path, build):
                return
            # the build published its end but was killed before its from_* call returned
            assert build.size is not None
            must, allowed = build.size, {build.size}
        else:
            committed, in_flight = expected_state(build.after)
            if committed is None and build.size is not None:
                committed = build.size
            must = committed or 0
            allowed = {must} if in_flight is None else {must, in_flight}
        try:
            m = cls(path, mode="r")
        except mmap_ninja.NotAMapError:
            if must == 0 and not build.during and build.size is None:
                trial.consistent = True  # killed while creating the map: no write returned, nothing to lose
                trial.detail = "not created"
                return
            trial.failed_reopen = True
            raise
        except Exception:
            trial.failed_reopen = True
            raise
        length = len(m)
        if length not in allowed:
            trial.lost = max(0, must - length)
            raise Mismatch(f"length {length} after the kill, expected one of {sorted(allowed)}")
        verify(kind, m, length, variants, free)
        m.close()
        _extend_after_crash(trial, kind, path, length, variants, free)
        trial.consistent = True
    except Exception as e:  # the trial's verdict, reported in the table
        trial.detail = f"{type(e).__name__}: {e}"


def _extend_after_crash(trial: Trial, kind: str, path: Path, length: int, variants: dict[int, int],
                        free: int | None) -> None:
    """A new writer opens the map, repairs the torn in-place write if any, extends it; all must read exactly."""
    cls = CLASSES[kind]
    t0 = time.perf_counter()
    try:
        w = cls(path, lock_timeout=5)
    except Exception:
        trial.failed_reopen = True
        raise
    k = 1 + (length % 37)
    with w:
        if free is not None:  # repair the torn sample, then everything must read exactly
            w[free] = sample(kind, free, variants.get(free, 0))
        w.extend(batch(kind, length, length + k))
    trial.recovery_s = time.perf_counter() - t0
    if not committed_bytes_ok(kind, path, length + k):
        raise Mismatch("after a writer's transaction the files are longer than what it committed")
    with cls(path, mode="r") as m:
        verify(kind, m, length + k, variants)


def _check_unfinished_build(trial: Trial, kind: str, path: Path, build: BuildLog) -> bool:
    """The kill came inside a ``from_*`` call. True if the verdict is in (the map is marked unfinished, or was
    never created); False if the build had published its end (a complete map, checked as any other)."""
    cls = CLASSES[kind]
    allowed = build.published()
    try:
        cls(path, mode="r").close()
    except UnfinishedMapError:
        pass
    except mmap_ninja.NotAMapError:
        if any(ev[0] == "I" for ev in build.during):  # the map existed before its first batch was written
            trial.failed_reopen = True
            raise
        trial.consistent = True
        trial.detail = "not created"
        return True
    else:
        return False
    try:
        m = cls(path, allow_unfinished=True)
    except Exception:
        trial.failed_reopen = True
        raise
    with m:
        if m.mode != "r":
            raise Mismatch(f"an unfinished build opened with allow_unfinished=True has mode {m.mode!r}")
        length = len(m)
        if length not in allowed:
            trial.lost = max(0, min(allowed) - length)
            raise Mismatch(f"unfinished build of length {length}, expected one of {sorted(allowed)}")
        verify(kind, m, length)
    try:
        cls(path).close()  # the default mode is no way around the marker either
    except UnfinishedMapError:
        pass
    else:
        raise Mismatch("an unfinished build opened without allow_unfinished=True")
    # re-running the build replaces it without overwrite=True
    size = length + 1 + length % 29
    t0 = time.perf_counter()
    try:
        rebuilt = cls.from_generator(path, iter(samples(kind, 0, size)), batch_size=16)
    except Exception:
        trial.failed_reopen = True
        raise
    rebuilt.close()
    trial.recovery_s = time.perf_counter() - t0
    with cls(path, mode="r") as m:
        verify(kind, m, size)
    trial.consistent = True
    trial.detail = "unfinished build"
    return True


# --------------------------------------------------------------------------- concurrent appenders

def _count(events: Events, word: str) -> int:
    return sum(ev[0] == word for ev in events)


def run_appenders_trial(kind: str, seed: int, workdir: Path, writers: int = APPENDERS,
                        survivor_commits: int = 2, max_delay: float = 0.3) -> Trial:
    """Start ``writers`` appender processes on one map, SIGKILL one at a random instant, let the others
    commit ``survivor_commits`` more batches each, stop them, and check the map (see `check_appenders`)."""
    trial = Trial(kind, "appenders")
    rng = random.Random(seed)
    path, stop = workdir / "map", workdir / "stop"
    prebuilt: dict[int, int] = {}
    if rng.random() < 0.5:  # else the appenders race to create the map with their first writes
        sizes = [rng.randrange(1, 30) for _ in range(rng.randrange(1, 6))]
        prebuilt = dict(enumerate(sizes))
        items = [s for b, size in prebuilt.items() for s in tagged_batch(kind, PREBUILT_WRITER, b, size)]
        CLASSES[kind].from_generator(path, items, batch_size=rng.choice([1, 10, 100])).close()
    logs = [workdir / f"log{w}" for w in range(writers)]
    procs = [_spawn(["appender", kind, str(path), str(logs[w]), str(seed + w), "--writer", str(w),
                     "--stop", str(stop)], workdir / f"stderr{w}") for w in range(writers)]
    victim = rng.randrange(writers)
    try:
        for w, proc in enumerate(procs):
            if not _ready_line(proc):
                proc.wait()
                trial.detail = f"appender {w} failed before READY: {(workdir / f'stderr{w}').read_text()[-2000:]}"
                return trial
        time.sleep(rng.uniform(0, max_delay))
        _kill_group(procs[victim])
        procs[victim].wait()
        at_kill = {w: _count(_events(logs[w]), "C") for w in range(writers) if w != victim}
        deadline = time.monotonic() + HANG_SECONDS
        stalled = dict(at_kill)
        while stalled and time.monotonic() < deadline:
            stalled = {w: n for w, n in at_kill.items()
                       if _count(_events(logs[w]), "C") < n + survivor_commits and procs[w].poll() is None}
            time.sleep(0.005)
        stop.touch()
        for proc in procs:
            try:
                proc.wait(timeout=HANG_SECONDS)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
        if stalled:
            trial.detail = (f"appenders {sorted(stalled)} made no progress for {HANG_SECONDS} s after appender "
                            f"{victim} was killed")
            return trial
        for w, proc in enumerate(procs):
            if w != victim and proc.returncode != 0:
                stderr = (workdir / f"stderr{w}").read_text()[-2000:]
                trial.detail = f"appender {w} exited with {proc.returncode}: {_events(logs[w])[-1:]} {stderr}"
                return trial
        if procs[victim].returncode != -signal.SIGKILL:
            trial.detail = f"appender {victim} exited with {procs[victim].returncode} before the kill"
            return trial
        events = {w: _events(logs[w]) for w in range(writers)}
        trial.refused_opens = sum(_count(e, "U") for e in events.values())
        trial.missing_opens = sum(_count(e, "N") for e in events.values())
        check_appenders(trial, kind, path, events, prebuilt)
    finally:
        for proc in procs:
            _kill_group(proc)
            assert proc.stdout is not None
            proc.stdout.close()
    return trial


def appender_logs(logs: dict[int, Events]) -> tuple[dict[int, dict[int, int]], dict[int, int | None]]:
    """From appender logs: the batches each writer saw committed (number -> size) and the one in flight."""
    committed: dict[int, dict[int, int]] = {}
    in_flight: dict[int, int | None] = {}
    for w, events in logs.items():
        done = committed.setdefault(w, {})
        pending: int | None = None
        for ev in events:
            if ev[0] == "X":
                raise Mismatch(f"appender {w} failed: {' '.join(ev[1:])}")
            if ev[0] not in ("I", "C"):
                continue
            b = int(ev[1])
            if ev[0] == "I":
                pending = b
            elif ev[0] == "C":
                done[b] = int(ev[2])
                pending = None
        in_flight[w] = pending
    return committed, in_flight


def check_appenders(trial: Trial, kind: str, path: Path, logs: dict[int, Events], prebuilt: dict[int, int]) -> None:
    """The map must open and hold every committed batch whole, contiguous and once, each writer's in order;
    then a new writer appends a batch after all of them."""
    cls = CLASSES[kind]
    try:
        committed, in_flight = appender_logs(logs)
        trial.batches = sum(len(c) for c in committed.values())
        trial.victim_in_flight = any(b is not None for b in in_flight.values())
        if prebuilt:
            committed[PREBUILT_WRITER] = prebuilt
        try:
            m = cls(path, mode="r")
        except mmap_ninja.NotAMapError:
            if any(committed.values()):
                trial.failed_reopen = True
                raise
            trial.consistent, trial.detail = True, "not created"
            return
        except Exception:
            trial.failed_reopen = True
            raise
        with m:
            length = len(m)
            scan = scan_tagged(kind, m)
        result = audit(scan, committed, in_flight)
        trial.lost = result.lost
        if scan.torn or not result.ok:
            raise Mismatch(f"{scan.torn} torn samples, {result.lost} lost, {result.duplicated} duplicated, "
                           f"{result.unexpected} unexpected batches, {result.out_of_order} writers out of order: "
                           f"{'; '.join(scan.notes + result.notes)}")
        t0 = time.perf_counter()
        try:
            w = cls(path, lock_timeout=5)
        except Exception:
            trial.failed_reopen = True
            raise
        with w:
            w.extend(tagged_batch(kind, RECOVERY_WRITER, 0, 5))
        trial.recovery_s = time.perf_counter() - t0
        if not committed_bytes_ok(kind, path, length + 5):
            raise Mismatch("after a writer's transaction the files are longer than what it committed")
        with cls(path, mode="r") as m:
            tail = scan_tagged(kind, m, length)
            if len(m) != length + 5 or tail.torn or [b[:3] for b in tail.batches] != [(RECOVERY_WRITER, 0, 5)]:
                raise Mismatch(f"the batch appended after the trial reads wrong: {tail}")
        trial.consistent = True
    except Exception as e:  # the trial's verdict, reported in the table
        trial.detail = f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- many trials

def run_many(kinds: Iterable[str], trials_per_kind: int, seed: int, jobs: int = 2,
             scenarios: Sequence[str] = SCENARIOS, progress: bool = False) -> list[Trial]:
    plan = [(kind, scenarios[t % len(scenarios)], zlib.crc32(f"{seed}/{kind}/{t}".encode()))
            for kind in kinds for t in range(trials_per_kind)]
    root = Path(tempfile.mkdtemp(prefix="crash_torture_"))

    def one(item: tuple[int, tuple[str, str, int]]) -> Trial:
        idx, (kind, scenario, s) = item
        workdir = root / f"{idx}"
        workdir.mkdir()
        trial = run_trial(kind, scenario, s, workdir)
        if trial.consistent:
            _rmtree(workdir)
        elif progress:
            print(f"  FAILED {kind}/{scenario} (seed {s}, {workdir}): {trial.detail}", file=sys.stderr)
        return trial

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(one, enumerate(plan)))
    if all(t.consistent for t in results):
        _rmtree(root)
    return results


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def table(results: Sequence[Trial]) -> str:
    rows = [("kind", "trials", "consistent", "samples lost", "failed reopens", "median recovery (ms)")]
    groups: dict[str, list[Trial]] = {}
    for t in results:
        groups.setdefault(t.kind, []).append(t)
        groups.setdefault(f"  {t.kind}/{t.scenario}", []).append(t)
    order = sorted(groups, key=lambda g: (g.strip().split("/")[0], g.startswith("  "), g))
    for name in order:
        ts = groups[name]
        rec = [t.recovery_s for t in ts if t.recovery_s is not None]
        rows.append((name, str(len(ts)), str(sum(t.consistent for t in ts)), str(sum(t.lost for t in ts)),
                     str(sum(t.failed_reopen for t in ts)),
                     f"{statistics.median(rec) * 1e3:.2f}" if rec else "-"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in
                               enumerate(zip(row, widths))) for row in rows)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--child":
        scenario, kind, path, log_path, seed = argv[1:6]
        if scenario == "appender":
            appender(kind, Path(path), Path(log_path), int(seed), int(argv[argv.index("--writer") + 1]),
                     Path(argv[argv.index("--stop") + 1]))
            return 0
        if "--record-fsync" in argv:
            record_fsyncs(Path(argv[argv.index("--record-fsync") + 1]))
        child(scenario, kind, Path(path), Path(log_path), int(seed), durable="--durable" in argv)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="trials per kind")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="trials run at once")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    t0 = time.perf_counter()
    results = run_many(kinds, args.trials, args.seed, args.jobs, tuple(args.scenarios.split(",")), progress=True)
    print(table(results))
    appenders = [t for t in results if t.scenario == "appenders"]
    if appenders:
        print(f"appenders trials: {sum(t.batches for t in appenders)} batches committed by the writers; "
              f"{sum(t.victim_in_flight for t in appenders)} of {len(appenders)} kills hit a batch in flight")
    print(f"{len(results)} trials in {time.perf_counter() - t0:.1f} s; "
          f"{sum(t.idle for t in results)} kills came after the workload had finished; "
          f"appender opens retried while another appender was creating the map: "
          f"{sum(t.refused_opens for t in results)} UnfinishedMapError, {sum(t.missing_opens for t in results)} "
          f"NotAMapError")
    ok = all(t.consistent and not t.lost and not t.failed_reopen for t in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
