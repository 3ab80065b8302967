"""`MapConformance`: the tests every kind of map must pass, as a pytest base class."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import random
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from mmap_ninja.containers.generic import open_existing
from mmap_ninja.errors import KindMismatchError, MapError, UnfinishedMapError
from mmap_ninja.kinds.maps import KINDS, MapBase
from mmap_ninja.storage.format import read_header
from mmap_ninja.testing.processes import (
    check_interleaved_batches,
    kill_build_at_random,
    kill_extender_at_random,
    run_concurrent_writers,
    writer_batches,
)
from mmap_ninja.testing.registry import KindSpec
from mmap_ninja.testing.stateful import make_state_machine

__all__ = ["QUICK", "THOROUGH", "Effort", "MapConformance", "assert_holds", "directory_digest", "quick_gil_handoff"]


@dataclass(frozen=True)
class Effort:
    """How hard the conformance tests work: sizes, trials and examples."""

    samples: int  # samples in the maps of the round-trip tests
    crash_extend_trials: int  # child processes killed while extending
    crash_build_trials: int  # child processes killed while building
    kill_max_delay: float  # seconds: a child is killed after a random delay up to this
    concurrent_trials: int  # runs of two writer processes appending at once
    concurrent_batches: int  # batches each of them appends
    thread_batches: int  # batches the writer thread appends while reader threads read
    reader_threads: int
    stateful_examples: int  # Hypothesis examples of the state machine
    stateful_steps: int  # steps per example
    parallel_builds: bool  # also build with from_indexable(n_jobs=2)


_HANG_SECONDS = 600  # a wait on another thread ends after this: it bounds a hang, it decides nothing


QUICK = Effort(samples=60, crash_extend_trials=2, crash_build_trials=1, kill_max_delay=0.1, concurrent_trials=1,
               concurrent_batches=20, thread_batches=30, reader_threads=2, stateful_examples=6, stateful_steps=12,
               parallel_builds=False)
"""Every test once, small: the default for a project's everyday run (a few seconds per kind)."""

THOROUGH = Effort(samples=2000, crash_extend_trials=25, crash_build_trials=10, kill_max_delay=0.4,
                  concurrent_trials=4, concurrent_batches=200, thread_batches=400, reader_threads=4,
                  stateful_examples=80, stateful_steps=40, parallel_builds=True)
"""Many trials and examples: for a long run (mark it ``slow``)."""


def directory_digest(directory: Path) -> dict[str, str]:
    """A SHA-256 of every file below ``directory``, by relative path (to check that a call changed no file). A
    column file of a map kept with ``commit.slots`` counts by its committed bytes only: such maps never cut a file
    (a tail a failed write left is overwritten by the next one, and no reader looks at it)."""
    committed: dict[Path, int] = {}
    for slots in directory.rglob("header.slots"):
        with contextlib.suppress(MapError):
            header = read_header(slots.parent)
            committed.update({slots.parent / header.file_of(name): column.length * column.dtype.itemsize
                              for name, column in header.columns.items()})
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()[:committed.get(p)]).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_holds(spec: KindSpec, m: Any, length: int, what: str = "the map") -> None:
    """Assert that ``m`` holds exactly samples ``0 .. length - 1`` of ``spec``, by iteration and by index."""
    assert len(m) == length, f"{what} has length {len(m)}, expected {length}"
    count = 0
    for i, sample in enumerate(m):
        assert spec.equal(sample, spec.make_sample(i)), f"{what}: iteration gives a wrong sample {i}: {sample!r}"
        count += 1
    assert count == length, f"{what}: iteration gave {count} samples, its length is {length}"
    for i in range(length):
        assert spec.equal(m[i], spec.make_sample(i)), f"{what}[{i}] is wrong: {m[i]!r}"


def _assert_samples(spec: KindSpec, got: Iterable[Any], indices: Iterable[int], what: str) -> None:
    got_list, wanted = list(got), list(indices)
    assert len(got_list) == len(wanted), f"{what} gave {len(got_list)} samples, expected {len(wanted)}"
    for j, (sample, i) in enumerate(zip(got_list, wanted)):
        assert spec.equal(sample, spec.make_sample(i)), f"{what}: item {j} should be sample {i}, got {sample!r}"


@contextlib.contextmanager
def quick_gil_handoff(interval: float = 0.00005) -> Iterator[None]:
    """Within the block, CPython hands the GIL over every ``interval`` seconds instead of every 5 ms (default: 50 µs).

    Reader threads that run flat out and release the GIL only briefly (in NumPy calls) make every system call of
    a writer thread wait a whole switch interval to get the GIL back (the "convoy effect"): on 2 cores an extend
    then takes seconds, and a test of a writer and readers sharing a map barely writes. With a short interval
    the readers still run flat out; only the hand-over is quicker."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


class MapConformance:
    """Conformance tests for one kind of map. Subclass it in a test module with a ``Test`` name and set ``spec``::

        class TestStrings(MapConformance):
            spec = mmap_ninja.testing.spec_for("strings")

        @pytest.mark.slow
        class TestStringsThorough(TestStrings):
            effort = mmap_ninja.testing.THOROUGH

    The tests use only the public API and pytest's ``tmp_path`` fixture; the crash and concurrency tests run
    child processes (fresh interpreters with the test's ``sys.path``).
    """

    spec: ClassVar[KindSpec]
    effort: ClassVar[Effort] = QUICK

    # ------------------------------------------------------------------ helpers

    @property
    def cls(self) -> type[MapBase]:
        return self.spec.container

    def build(self, path: Path, length: int, batch_size: int = 7) -> MapBase:
        """A map of samples ``0 .. length - 1`` built with ``from_generator``."""
        return self.cls.from_generator(path, (self.spec.make_sample(i) for i in range(length)), batch_size,
                                       **self.spec.build_options)

    def holds(self, m: Any, length: int, what: str = "the map") -> None:
        assert_holds(self.spec, m, length, what)

    # ------------------------------------------------------------------ round trips

    def test_from_generator_round_trip(self, tmp_path: Path) -> None:
        n = self.effort.samples
        for batch_size in (1, 7, n + 1):
            with self.build(tmp_path / f"b{batch_size}", n, batch_size) as m:
                self.holds(m, n, f"from_generator(batch_size={batch_size})")
        with self.cls.from_generator(tmp_path / "empty", iter([]), 4, **self.spec.build_options) as empty:
            self.holds(empty, 0, "an empty build")
        with self.cls(tmp_path / "empty") as reopened:
            self.holds(reopened, 0, "an empty build reopened")

    def test_from_indexable_round_trip(self, tmp_path: Path) -> None:
        n = self.effort.samples
        source = self.spec.samples(0, n)
        for n_jobs in (None, 2) if self.effort.parallel_builds else (None,):
            with self.cls.from_indexable(tmp_path / f"j{n_jobs}", source, 8, n_jobs=n_jobs,
                                         **self.spec.build_options) as m:
                self.holds(m, n, f"from_indexable(n_jobs={n_jobs})")

    def test_grows_by_extend_append_and_transaction(self, tmp_path: Path) -> None:
        path = tmp_path / "grown"
        m = self.cls(path)  # no map there yet: the first write creates it
        assert len(m) == 0 and not m.exists
        m.extend(self.spec.samples(0, 5))
        assert m.exists
        m.append(self.spec.make_sample(5))
        m.extend([])
        with m.transaction():
            m.extend(self.spec.samples(6, 9))
            m.append(self.spec.make_sample(9))
            m.extend(iter(self.spec.samples(10, 12)))  # any iterable
        length = 12
        for start in range(length, self.effort.samples, 9):
            m.extend(self.spec.samples(start, start + 9))
            length = start + 9
        self.holds(m, length, "the grown map")
        m.close()
        with self.cls(path, mode="r") as reopened:
            self.holds(reopened, length, "the grown map reopened")

    def test_indexing(self, tmp_path: Path) -> None:
        n = max(self.effort.samples, 12)
        with self.build(tmp_path / "m", n) as m:
            assert len(m) == n, f"the map has length {len(m)}, expected {n}"
            for i in (0, 1, n // 2, n - 1):
                assert self.spec.equal(m[i], self.spec.make_sample(i)), f"m[{i}]"
                assert self.spec.equal(m[i - n], self.spec.make_sample(i)), f"m[{i - n}]"
                assert self.spec.equal(m[np.int64(i)], self.spec.make_sample(i)), f"m[np.int64({i})]"
            positions = list(range(n))
            for index in (slice(None), slice(2, 9), slice(None, None, 3), slice(-5, None), slice(None, None, -2),
                          slice(n + 5, n + 9), slice(3, 3)):
                _assert_samples(self.spec, m[index], positions[index], f"m[{index}]")
            picked = [3, 0, n - 1, 3, -2]
            _assert_samples(self.spec, m[picked], [positions[i] for i in picked], f"m[{picked}]")
            _assert_samples(self.spec, m[np.array(picked)], [positions[i] for i in picked], "m[int array]")
            mask = np.arange(n) % 3 == 1
            _assert_samples(self.spec, m[mask], np.flatnonzero(mask).tolist(), "m[mask]")
            _assert_samples(self.spec, iter(m), positions, "iteration")
            assert len(m) == n
            for out_of_range in (n, -n - 1):
                with pytest.raises(IndexError):
                    m[out_of_range]
        with pytest.raises(ValueError, match="closed"):
            m[0]

    # ------------------------------------------------------------------ handles

    def test_pickle_keeps_path_mode_and_data(self, tmp_path: Path) -> None:
        n = self.effort.samples
        path = tmp_path / "m"
        self.build(path, n).close()
        for mode in ("r+", "r"):
            with self.cls(path, mode=mode) as m:
                clone = pickle.loads(pickle.dumps(m))
                assert type(clone) is self.cls
                assert clone.path == m.path and clone.mode == mode, (clone.path, clone.mode)
                self.holds(clone, n, f"a map unpickled with mode {mode!r}")
                clone.close()
        with self.cls(path) as writer:
            clone = pickle.loads(pickle.dumps(writer))
            clone.append(self.spec.make_sample(n))  # an unpickled r+ map writes
            assert writer.refresh() == 1
            self.holds(writer, n + 1, "the map after the clone appended")
            clone.close()
        nowhere = pickle.loads(pickle.dumps(self.cls(tmp_path / "nothing")))
        assert len(nowhere) == 0 and not nowhere.exists and nowhere.path == tmp_path / "nothing"

    def test_reopen_by_path(self, tmp_path: Path) -> None:
        n = self.effort.samples
        path = tmp_path / "m"
        self.build(path, n).close()
        with self.cls(path) as m:
            assert m.mode == "r+"
            self.holds(m, n, "cls(path)")
        with open_existing(path) as m:
            assert type(m) is self.cls, f"open_existing gave a {type(m).__name__}"
            self.holds(m, n, "open_existing(path)")
        before = directory_digest(path)
        with self.cls(path, mode="r") as m:
            with pytest.raises(PermissionError):
                m.append(self.spec.make_sample(n))
            with pytest.raises(PermissionError):
                m.extend(self.spec.samples(n, n + 2))
        assert directory_digest(path) == before, "a mode='r' handle changed a file"
        for other in KINDS.values():
            if other is not self.cls:
                with pytest.raises(KindMismatchError):
                    other(path)

    def test_refresh_sees_another_handles_commit(self, tmp_path: Path) -> None:
        n = self.effort.samples
        path = tmp_path / "m"
        with self.build(path, n) as writer, self.cls(path, mode="r") as reader:
            writer.extend(self.spec.samples(n, n + 5))
            assert len(writer) == n + 5, "a handle sees its own writes at once"
            assert len(reader) == n, "a reader keeps its snapshot until refresh()"
            assert reader.refresh() == 5
            self.holds(reader, n + 5, "the reader after refresh()")
            with writer.transaction():
                writer.append(self.spec.make_sample(n + 5))
                assert reader.refresh() == 0, "a reader saw a write before its transaction committed"
            assert reader.refresh() == 1
            with self.cls(path) as second:  # another writer handle: each write catches up with the other's
                second.append(self.spec.make_sample(n + 6))
                writer.append(self.spec.make_sample(n + 7))
                second.extend(self.spec.samples(n + 8, n + 10))
            assert writer.refresh() == 2
            self.holds(writer, n + 10, "the first writer")
            assert reader.refresh() == 4
            self.holds(reader, n + 10, "the reader")

    def test_a_raising_transaction_commits_nothing(self, tmp_path: Path) -> None:
        n = self.effort.samples
        path = tmp_path / "m"
        with self.build(path, n) as m:
            before = directory_digest(path)
            with pytest.raises(KeyError, match="stop here"), m.transaction():
                m.extend(self.spec.samples(n, n + 5))
                m.append(self.spec.make_sample(n + 5))
                assert len(m) == n + 6
                raise KeyError("stop here")
            self.holds(m, n, "the map after the transaction raised")
            assert directory_digest(path) == before, "a transaction that raised changed a file"
            m.extend(self.spec.samples(n, n + 2))
            self.holds(m, n + 2, "the map written after the transaction raised")

    def test_in_place_assignment(self, tmp_path: Path) -> None:
        n = max(self.effort.samples, 6)
        path = tmp_path / "m"
        with self.build(path, n) as m, self.cls(path, mode="r") as reader:
            variant = self.spec.variant
            if variant is None:  # the kind has no in-place assignment of another value: it must refuse it
                before = directory_digest(path)
                with pytest.raises((TypeError, NotImplementedError, ValueError)):
                    m[0] = self.spec.make_sample(1)
                assert directory_digest(path) == before
                return
            expected = self.spec.samples(0, n)
            for index in (2, -1):
                expected[index] = variant(expected[index])
                m[index] = expected[index]
            expected[0], expected[1] = variant(expected[0]), variant(expected[1])
            m[[0, 1]] = [expected[0], expected[1]]
            for handle, what in ((m, "the writer"), (reader, "a reader (in place writes need no refresh)")):
                assert len(handle) == n
                for i in range(n):
                    assert self.spec.equal(handle[i], expected[i]), f"{what}: sample {i} after assignment"
        with self.cls(path, mode="r") as reopened:
            for i in range(n):
                assert self.spec.equal(reopened[i], expected[i]), f"reopened: sample {i} after assignment"

    # ------------------------------------------------------------------ bad input

    def test_bad_input_is_refused_and_changes_no_file(self, tmp_path: Path) -> None:
        assert self.spec.bad_samples, f"the spec {self.spec.name!r} lists no bad samples to check"
        n = 5
        path = tmp_path / "m"
        with self.build(path, n) as m:
            before = directory_digest(path)
            good = self.spec.make_sample(n)
            for bad in self.spec.bad_samples:
                attempts: list[tuple[str, Callable[[], None]]] = [
                    ("append", partial(m.append, bad.value)),
                    ("extend", partial(m.extend, [good, good, bad.value])),
                    ("a transaction", partial(self._extend_then_append, m, good, bad.value))]
                if self.spec.variant is not None and bad.in_setitem:
                    attempts.append(("m[1] = ...", partial(m.__setitem__, 1, bad.value)))
                for how, attempt in attempts:
                    with pytest.raises(bad.error, match=bad.match):
                        attempt()
                    assert directory_digest(path) == before, f"{how} with {bad} changed a file"
                    self.holds(m, n, f"the map after {how} with {bad}")
        with self.cls(path, mode="r") as reopened:
            self.holds(reopened, n, "the map reopened after the refused writes")

    @staticmethod
    def _extend_then_append(m: MapBase, good: Any, bad: Any) -> None:
        with m.transaction():
            m.extend([good, good])
            m.append(bad)

    def test_a_refused_first_write_creates_nothing(self, tmp_path: Path) -> None:
        assert self.spec.bad_samples, f"the spec {self.spec.name!r} lists no bad samples to check"
        for k, bad in enumerate(b for b in self.spec.bad_samples if b.in_first_write):
            path = tmp_path / f"fresh{k}"
            m = self.cls(path)
            with pytest.raises(bad.error, match=bad.match):
                m.extend([self.spec.make_sample(0), bad.value])
            assert not path.exists(), f"a first write refused for {bad} left {sorted(directory_digest(path))}"
            m.close()

    def test_a_build_stopped_by_a_bad_sample(self, tmp_path: Path) -> None:
        assert self.spec.bad_samples, f"the spec {self.spec.name!r} lists no bad samples to check"
        for k, bad in enumerate(self.spec.bad_samples):
            path = tmp_path / f"m{k}"
            samples = [*self.spec.samples(0, 9), bad.value, *self.spec.samples(10, 12)]
            with pytest.raises(bad.error, match=bad.match):
                self.cls.from_generator(path, iter(samples), 4, **self.spec.build_options)
            with pytest.raises(UnfinishedMapError):
                self.cls(path)
            with self.cls(path, allow_unfinished=True) as unfinished:
                assert unfinished.mode == "r"
                self.holds(unfinished, 8, "the unfinished build")  # the two batches before the bad sample
            with self.build(path, 12, 4) as rebuilt:  # re-running replaces an unfinished build
                self.holds(rebuilt, 12, "the build re-run")

    # ------------------------------------------------------------------ crashes

    def test_crash_while_extending(self, tmp_path: Path) -> None:
        rng = random.Random(f"{self.spec.name} extend")
        for trial in range(self.effort.crash_extend_trials):
            path = tmp_path / f"trial{trial}"
            self.build(path, rng.randrange(0, 30)).close()
            outcome = kill_extender_at_random(self.spec, path, rng.randrange(2**32), self.effort.kill_max_delay)
            with self.cls(path, mode="r") as m:
                length = len(m)
                assert length in outcome.allowed_lengths(), (
                    f"trial {trial}: after the kill the map has {length} samples; the last write that returned "
                    f"made it {outcome.committed} long, the one under way {outcome.in_flight}")
                self.holds(m, length, f"trial {trial}: the map after the kill")
            with self.cls(path) as writer:  # a writer carries on where the killed one stopped
                writer.extend(self.spec.samples(length, length + 3))
            with self.cls(path, mode="r") as m:
                self.holds(m, length + 3, f"trial {trial}: the map written after the kill")

    def test_crash_while_building(self, tmp_path: Path) -> None:
        rng = random.Random(f"{self.spec.name} build")
        for trial in range(self.effort.crash_build_trials):
            path = tmp_path / f"trial{trial}"
            batch_size = rng.choice([1, 5, 32])
            outcome = kill_build_at_random(self.spec, path, batch_size, rng.randrange(2**32),
                                           self.effort.kill_max_delay)
            with pytest.raises(UnfinishedMapError, match="allow_unfinished"):
                self.cls(path)
            with pytest.raises(UnfinishedMapError):
                open_existing(path)
            unfinished = self.cls(path, allow_unfinished=True)
            length = len(unfinished)
            assert unfinished.mode == "r"
            assert length % batch_size == 0 and outcome.committed <= length <= outcome.committed + batch_size, (
                f"trial {trial}: the killed build holds {length} samples; batches of {batch_size}, "
                f"{outcome.committed} logged as committed")
            self.holds(unfinished, length, f"trial {trial}: the killed build")
            with pytest.raises(PermissionError):
                unfinished.append(self.spec.make_sample(length))
            n = min(length + 5, 50)
            with self.build(path, n) as rebuilt:  # no overwrite=True needed for an unfinished build
                self.holds(rebuilt, n, f"trial {trial}: the build re-run")
            self.holds(unfinished, length, f"trial {trial}: a handle on the replaced build")
            unfinished.close()
            with pytest.raises(FileExistsError):
                self.build(path, 1)  # a complete map needs overwrite=True

    # ------------------------------------------------------------------ concurrency

    def test_concurrent_writer_processes(self, tmp_path: Path) -> None:
        for trial in range(self.effort.concurrent_trials):
            path = tmp_path / f"trial{trial}"
            if trial % 2:
                self.build(path, 0).close()  # odd trials append to a map; even ones race to create it
            plans = [writer_batches(w, 2, self.effort.concurrent_batches, seed=trial) for w in range(2)]
            run_concurrent_writers(self.spec, path, plans)
            with self.cls(path, mode="r") as m:
                check_interleaved_batches(self.spec, list(m), plans)

    def test_writer_and_reader_threads(self, tmp_path: Path) -> None:
        m = self.build(tmp_path / "m", 10, 4)
        stop = threading.Event()
        errors: list[str] = []
        reads = [0] * self.effort.reader_threads

        def read(number: int) -> None:
            rng = random.Random(number)
            try:
                while not stop.is_set():
                    length = len(m)
                    i = rng.randrange(length)
                    if not self.spec.equal(m[i], self.spec.make_sample(i)):
                        errors.append(f"reader {number}: m[{i}] is {m[i]!r}")
                    j = rng.randrange(length)
                    got = list(m[j:j + 4])
                    if len(got) < min(4, length - j):
                        errors.append(f"reader {number}: m[{j}:{j + 4}] gave {len(got)} samples of {length}")
                    errors.extend(f"reader {number}: m[{j}:{j + 4}] item {t} is wrong"
                                  for t, sample in enumerate(got) if not self.spec.equal(sample,
                                                                                        self.spec.make_sample(j + t)))
                    if rng.random() < 0.05:
                        errors.extend(f"reader {number}: iteration gave a wrong sample {t}"
                                      for t, sample in zip(range(40), m)
                                      if not self.spec.equal(sample, self.spec.make_sample(t)))
                    reads[number] += 1
            except Exception as e:
                errors.append(f"reader {number}: {type(e).__name__}: {e}")

        def until_every_reader_read_since(before: list[int]) -> None:
            # Decided by state: the writer waits here until every reader has completed a read begun after
            # ``before`` was taken (the bound only ends a hang: a loaded machine may take minutes).
            deadline = time.monotonic() + _HANG_SECONDS
            while not all(now > then for now, then in zip(reads, before)):
                assert not errors, "\n".join(errors[:10])
                assert time.monotonic() < deadline, f"a reader thread completed no read in {_HANG_SECONDS} s: {reads}"
                time.sleep(0.001)

        readers = [threading.Thread(target=read, args=(k,)) for k in range(self.effort.reader_threads)]
        with quick_gil_handoff():  # the writer below is this thread
            for thread in readers:
                thread.start()
            rng = random.Random(self.spec.name)
            length = 10
            halfway = self.effort.thread_batches // 2
            try:
                for batch in range(self.effort.thread_batches):
                    if batch == halfway:  # every reader reads while the map grows, whatever the load
                        until_every_reader_read_since(list(reads))
                    size = rng.randrange(1, 10)
                    if size == 1:
                        m.append(self.spec.make_sample(length))
                    elif size < 4:
                        with m.transaction():
                            m.extend(self.spec.samples(length, length + 1))
                            m.extend(self.spec.samples(length + 1, length + size))
                    else:
                        m.extend(self.spec.samples(length, length + size))
                    length += size
            finally:
                stop.set()
                for thread in readers:
                    thread.join(_HANG_SECONDS)
        assert not errors, "\n".join(errors[:10])
        assert all(reads), f"a reader thread never completed a read: {reads}"
        assert not any(thread.is_alive() for thread in readers), "a reader thread hung"
        self.holds(m, length, "the map the threads shared")
        m.close()

    # ------------------------------------------------------------------ stateful

    def test_state_machine(self) -> None:
        run_state_machine_as_test(make_state_machine(self.spec), settings=settings(
            max_examples=self.effort.stateful_examples, stateful_step_count=self.effort.stateful_steps,
            deadline=None, database=None, report_multiple_bugs=False, suppress_health_check=list(HealthCheck)))
