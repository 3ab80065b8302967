"""Child processes for the crash and concurrency tests, and the checks the parent runs afterwards.

A child is a fresh Python interpreter (never a fork of the test process) started with the parent's
``sys.path``; it receives its job (the `KindSpec` and what to do) as a pickle file, prints ``READY`` once it is
about to write, and logs to an append-only file, one ``write(2)`` per line, so the log survives a SIGKILL:
``I n`` before a write that would make the map ``n`` samples long and ``C n`` once that write returned.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import IO, Any, Optional

from mmap_ninja.testing.registry import KindSpec

__all__ = [
    "CrashOutcome",
    "Interleaving",
    "check_interleaved_batches",
    "child_main",
    "kill_build_at_random",
    "kill_extender_at_random",
    "kill_while_staging",
    "lock_held_by_child",
    "read_log",
    "run_concurrent_writers",
    "writer_batches",
]

_CHILD_CODE = "import sys; from mmap_ninja.testing.processes import child_main; child_main(sys.argv[1:])"
# POSIX: a child runs in its own session and is killed by SIGKILL to its process group, its pipe is polled with
# select. Elsewhere (Windows: no process groups to signal, no select on pipes) a child gets a new process group
# (CREATE_NEW_PROCESS_GROUP), is killed by TerminateProcess (Popen.kill), and its pipe is read by a thread.
# Tests force the portable path on Linux by setting this to False.
_PROCESS_GROUPS = hasattr(os, "killpg")
# The waits on a child only bound a hang and decide nothing: a fresh interpreter importing NumPy and the library on
# a loaded machine (a CI runner sharing 2 cores) may take minutes to report READY or to finish its writes.
_READY_TIMEOUT = 600.0
_SAMPLES_CAP = 20_000  # an extending or building child stops writing (and waits to be killed) at this length


# ---------------------------------------------------------------------------------------------- the child side

class _Log:
    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, *words: object) -> None:
        os.write(self.fd, (" ".join(map(str, words)) + "\n").encode())


def _ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


def _wait_forever() -> None:
    while True:
        time.sleep(1)


def child_main(argv: Sequence[str]) -> None:
    """Entry point of a child process: ``argv`` is ``[job file]`` (see `_spawn`)."""
    with open(argv[0], "rb") as f:
        job: dict[str, Any] = pickle.load(f)
    action = job["action"]
    if action == "extend":
        _extend_until_killed(job["spec"], job["path"], job["log"], job["seed"])
    elif action == "build":
        _build_until_killed(job["spec"], job["path"], job["log"], job["batch_size"])
    elif action == "write_batches":
        _write_batches(job["spec"], job["path"], job["batches"])
    elif action == "stage":
        _stage_until_killed(job["destination"], job["marker"], job["guarded"], job["log"])
    elif action == "hold_lock":
        _hold_lock_until_killed(job["lock"], job["shared"])
    else:
        raise ValueError(f"unknown child action {action!r}")


def _extend_until_killed(spec: KindSpec, path: str, log_path: str, seed: int) -> None:
    """Grow the map by extend, append and transactions of several writes, logging each; the length logged is
    the one promised by the write that returned, never what the map reports."""
    rng = random.Random(seed)
    log = _Log(log_path)
    m = spec.container(path)
    length = len(m)
    _ready()
    while length < _SAMPLES_CAP:
        choice = rng.random()
        if choice < 0.2:
            log("I", length + 1)
            m.append(spec.make_sample(length))
            length += 1
        elif choice < 0.4:
            sizes = [rng.randrange(0, 8) for _ in range(rng.randrange(1, 4))]
            log("I", length + sum(sizes))
            with m.transaction():
                for size in sizes:
                    m.extend(spec.samples(length, length + size))
                    length += size
        else:
            size = rng.randrange(0, 40)
            log("I", length + size)
            m.extend(spec.samples(length, length + size))
            length += size
        log("C", length)
    log("DONE")
    _wait_forever()


def _build_until_killed(spec: KindSpec, path: str, log_path: str, batch_size: int) -> None:
    log = _Log(log_path)
    header = Path(path) / "header.json"
    ready = False

    def samples() -> Iterator[Any]:
        nonlocal ready
        for i in count():
            if i % batch_size == 0:  # asked for the first sample of a batch: every earlier batch is committed
                log("C", i)
                # Ready once the "building" header exists, never before: a kill before it would leave a folder
                # holding no map yet (a kind that infers its schema from the first rows writes it only then).
                if not ready and header.exists():
                    ready = True
                    _ready()
            if i >= _SAMPLES_CAP:
                log("DONE")
                _wait_forever()
            yield spec.make_sample(i)

    spec.container.from_generator(path, samples(), batch_size, **spec.build_options)


def _stage_until_killed(destination: str, marker: str, guarded: bool, log_path: str) -> None:
    from mmap_ninja.storage.dirs import stage

    staged = stage(Path(destination), marker, guarded=guarded, make=True)
    _Log(log_path)("S", staged.path)
    (staged.path / "partial.bin").write_bytes(b"half of a build")
    _ready()  # the stage (and its lock file, if guarded) and a file in it exist: a kill now leaves them
    _wait_forever()


def _hold_lock_until_killed(lock: str, shared: bool) -> None:
    from mmap_ninja.storage.dirs import hold_lock

    hold_lock(Path(lock), shared=shared, timeout=None)
    _ready()
    _wait_forever()


def _write_batches(spec: KindSpec, path: str, batches: list[list[int]]) -> None:
    # The other writer may hold the lock for seconds on a loaded machine (it is descheduled mid-write): the
    # default lock timeout (5 s) would make the wait decide the test.
    m = spec.container(path, lock_timeout=_READY_TIMEOUT)
    pause = random.Random(batches[0][0] if batches and batches[0] else 0).uniform
    _ready()
    if sys.stdin.readline().strip() != "GO":
        raise RuntimeError("the parent never said GO")
    for number, indices in enumerate(batches):
        if number:
            time.sleep(pause(0, 0.002))  # a lock taken again at once would starve the other writer: let it in
        if len(indices) == 1 and number % 2:
            m.append(spec.make_sample(indices[0]))
        elif len(indices) > 1 and number % 3 == 0:
            with m.transaction():  # two writes, one commit: other writers must see the batch whole
                half = len(indices) // 2
                m.extend([spec.make_sample(i) for i in indices[:half]])
                m.extend([spec.make_sample(i) for i in indices[half:]])
        else:
            m.extend([spec.make_sample(i) for i in indices])
    m.close()


# ---------------------------------------------------------------------------------------------- the parent side

def read_log(path: Path) -> list[tuple[str, int]]:
    """The ``(event, length)`` pairs of a child's log (``DONE`` has length -1)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        word, _, number = line.partition(" ")
        events.append((word, int(number) if number else -1))
    return events


class _Child:
    """A child process running ``job``, in its own session on POSIX (so that killing its group kills all of it; see
    ``_PROCESS_GROUPS`` for Windows)."""

    def __init__(self, job: dict[str, Any], workdir: Path, name: str):
        self.workdir = workdir
        job_path = workdir / f"{name}.job"
        with open(job_path, "wb") as f:
            pickle.dump(job, f)
        self.stderr_path = workdir / f"{name}.stderr"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process_group = _PROCESS_GROUPS
        isolation: dict[str, Any] = ({"start_new_session": True} if self.process_group else
                                     {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)})
        self.exited_before_kill = False
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, str(job_path)], env=env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                            text=True, **isolation)

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-3000:]

    def wait_ready(self) -> None:
        line = (_readline if self.process_group else _readline_in_thread)(self.stdout, _READY_TIMEOUT)
        if line.strip() != "READY":
            self.kill()
            raise AssertionError(f"the child process failed before it was ready:\n{self.stderr()}")

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.exited_before_kill = self.process.poll() is not None
        if self.process_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        elif not self.exited_before_kill:
            self.process.kill()
        self.process.wait()

    def killed(self) -> bool:
        """Whether the last `kill` is what ended the child (not an exit of its own before it)."""
        if self.process_group:
            return self.process.returncode == -signal.SIGKILL
        return not self.exited_before_kill

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _readline_in_thread(stream: IO[str], timeout: float) -> str:
    """A line of ``stream``, or "" if none came within ``timeout`` seconds (the reading thread then ends when the
    child is killed and its pipe closes)."""
    import threading

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


def _readline(stream: IO[str], timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline()


@dataclass
class CrashOutcome:
    """What a child logged before it was killed."""

    committed: int  # the length after the last write that returned (or the length the child started from)
    in_flight: Optional[int]  # the length the write under way would have given, if one was under way
    finished: bool  # the child had finished its work before the kill came
    events: list[tuple[str, int]] = field(default_factory=list)

    def allowed_lengths(self) -> set[int]:
        return {self.committed} if self.in_flight is None else {self.committed, self.in_flight}


def _outcome(events: list[tuple[str, int]], start: int) -> CrashOutcome:
    committed, in_flight = start, None
    for word, length in events:
        if word == "I":
            in_flight = length
        elif word == "C":
            committed, in_flight = length, None
    return CrashOutcome(committed, in_flight, any(word == "DONE" for word, _ in events), events)


def kill_extender_at_random(spec: KindSpec, path: Path, seed: int, max_delay: float) -> CrashOutcome:
    """Run a child that extends the map in ``path`` in a loop, SIGKILL it after a random delay (up to
    ``max_delay`` seconds after it is ready) and return what it logged."""
    with tempfile.TemporaryDirectory(prefix="mmap_ninja_kit_") as workdir:
        log = Path(workdir) / "log"
        start = 0
        if path.exists():
            with spec.container(path, mode="r") as existing:
                start = len(existing)
        child = _Child({"action": "extend", "spec": spec, "path": str(path), "log": str(log), "seed": seed},
                       Path(workdir), "extender")
        try:
            child.wait_ready()
            time.sleep(random.Random(seed).uniform(0, max_delay))
            child.kill()
            if not child.killed():
                raise AssertionError(f"the extending child exited with {child.process.returncode} before the "
                                     f"kill:\n{child.stderr()}")
            return _outcome(read_log(log), start)
        finally:
            child.close()


def kill_build_at_random(spec: KindSpec, path: Path, batch_size: int, seed: int, max_delay: float) -> CrashOutcome:
    """Run a child whose ``from_generator`` build never ends, SIGKILL it after a random delay and return what it
    logged (``committed``: the samples of the batches committed before the generator was asked for more)."""
    with tempfile.TemporaryDirectory(prefix="mmap_ninja_kit_") as workdir:
        log = Path(workdir) / "log"
        child = _Child({"action": "build", "spec": spec, "path": str(path), "log": str(log),
                        "batch_size": batch_size}, Path(workdir), "builder")
        try:
            child.wait_ready()
            time.sleep(random.Random(seed).uniform(0, max_delay))
            child.kill()
            if not child.killed():
                raise AssertionError(f"the building child exited with {child.process.returncode} before the "
                                     f"kill:\n{child.stderr()}")
            events = read_log(log)
            outcome = _outcome(events, 0)
            # The builder logs only "C": a batch after the last one logged may have been committed too.
            outcome.in_flight = outcome.committed + batch_size
            return outcome
        finally:
            child.close()


def kill_while_staging(destination: Path, marker: str, *, guarded: bool) -> Path:
    """Run a child that stages ``destination`` with `mmap_ninja.storage.dirs.stage` (``marker``, ``guarded``) and writes
    a
    file into the stage, SIGKILL it once it reports that the stage exists, and return the stage's path: what a
    build killed mid-staging leaves for `mmap_ninja.storage.dirs.sweep`. Decided by state, not timing."""
    with tempfile.TemporaryDirectory(prefix="mmap_ninja_kit_") as workdir:
        log = Path(workdir) / "log"
        child = _Child({"action": "stage", "destination": str(destination), "marker": marker, "guarded": guarded,
                        "log": str(log)}, Path(workdir), "stager")
        try:
            child.wait_ready()
            child.kill()
            if not child.killed():
                raise AssertionError(f"the staging child exited with {child.process.returncode} before the "
                                     f"kill:\n{child.stderr()}")
            return Path(log.read_text().split(" ", 1)[1].rstrip("\n"))
        finally:
            child.close()


@contextlib.contextmanager
def lock_held_by_child(lock: Path, *, shared: bool = False) -> Iterator[None]:
    """For the block, a child process holds the lock file ``lock`` (taken by `mmap_ninja.storage.dirs.hold_lock`, shared
    or
    exclusive): the block starts once the child reports that it holds it, and the child is killed at its end (so
    the lock is free once the block is left)."""
    with tempfile.TemporaryDirectory(prefix="mmap_ninja_kit_") as workdir:
        child = _Child({"action": "hold_lock", "lock": str(lock), "shared": shared}, Path(workdir), "holder")
        try:
            child.wait_ready()
            yield
        finally:
            child.close()


def writer_batches(writer: int, writers: int, batch_count: int, seed: int, max_batch: int = 8) -> list[list[int]]:
    """The batches of sample indices writer number ``writer`` appends: its samples are
    ``writer, writer + writers, writer + 2 * writers, ...`` in batches of 1 to ``max_batch``."""
    rng = random.Random(seed * 1000 + writer)
    batches, k = [], 0
    for _ in range(batch_count):
        size = rng.randrange(1, max_batch + 1)
        batches.append([writer + writers * (k + j) for j in range(size)])
        k += size
    return batches


def run_concurrent_writers(spec: KindSpec, path: Path, plans: list[list[list[int]]], timeout: float = 900) -> None:
    """Start one child process per plan, each opening the map in ``path`` (which may not exist yet); once all are
    ready they append their batches at the same time. Raises AssertionError if a writer fails."""
    with tempfile.TemporaryDirectory(prefix="mmap_ninja_kit_") as workdir:
        children = [_Child({"action": "write_batches", "spec": spec, "path": str(path), "batches": plan},
                           Path(workdir), f"writer{w}") for w, plan in enumerate(plans)]
        try:
            for child in children:
                child.wait_ready()
            for child in children:
                child.send("GO")
            deadline = time.monotonic() + timeout
            for w, child in enumerate(children):
                try:
                    code = child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"writer {w} did not finish within {timeout} s") from None
                if code != 0:
                    raise AssertionError(f"writer {w} exited with {code}:\n{child.stderr()}")
        finally:
            for child in children:
                child.close()


@dataclass
class Interleaving:
    """How the batches of concurrent writers ended up in the map: the writer of each batch, in map order."""

    writers: list[int]

    @property
    def switches(self) -> int:
        """How many times the writer changed from one batch to the next."""
        return sum(a != b for a, b in zip(self.writers, self.writers[1:]))


def check_interleaved_batches(spec: KindSpec, samples: Sequence[Any], plans: list[list[list[int]]]) -> Interleaving:
    """Check that ``samples`` (the map read back) is every writer's batches, each whole and each writer's in its
    order, interleaved in any way; raises AssertionError naming the first sample that breaks this."""
    total = sum(len(batch) for plan in plans for batch in plan)
    assert len(samples) == total, f"the map holds {len(samples)} samples; the writers appended {total}"
    next_batch = [0] * len(plans)
    order: list[int] = []
    position = 0
    while position < total:
        sample = samples[position]
        writer = next((w for w, plan in enumerate(plans) if next_batch[w] < len(plan)
                       and spec.equal(sample, spec.make_sample(plan[next_batch[w]][0]))), None)
        assert writer is not None, (
            f"sample {position} is not the first sample of any writer's next batch (expected one of "
            f"{[plan[next_batch[w]][0] for w, plan in enumerate(plans) if next_batch[w] < len(plan)]}): a batch "
            f"was torn, lost, reordered or duplicated")
        batch = plans[writer][next_batch[writer]]
        assert position + len(batch) <= total, (
            f"writer {writer}'s batch {next_batch[writer]} starts at sample {position} but the map ends before it "
            f"does")
        for j, index in enumerate(batch):
            assert spec.equal(samples[position + j], spec.make_sample(index)), (
                f"sample {position + j} is not sample {index} (item {j} of writer {writer}'s batch "
                f"{next_batch[writer]}, which starts at {position}): the batch is not whole")
        next_batch[writer] += 1
        order.append(writer)
        position += len(batch)
    return Interleaving(order)
