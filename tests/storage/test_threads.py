"""F3 (issue 8): one map object shared by threads. A writer thread appends, a thread calls ``refresh()`` in a loop
and four reader threads read single samples, batches and prefixes, all on the SAME object (or, in a variant, the
writer appends through another handle). Every sample read must be exactly the value its index encodes: an empty
string, a wrong array or an IndexError for an index below a length observed just before is a torn snapshot.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from mmap_ninja import NumpyMmap, RaggedMmap, StringsMmap
from mmap_ninja.testing import quick_gil_handoff

BATCH = 7  # samples per extend
HANG_SECONDS = 600  # a bound that only ends a hang: on a loaded machine the threads may need minutes


@pytest.fixture(autouse=True)
def quick_handoff() -> Iterator[None]:
    """Writer and refresher threads must make progress beside four flat-out readers (see `quick_gil_handoff`)."""
    with quick_gil_handoff():
        yield


def expected_sample(kind: str, i: int) -> Any:
    """A sample that encodes its own index, of a length that varies with it."""
    if kind == "strings":
        return f"{i:08d}" * (i % 5 + 1)
    if kind == "ragged":
        return np.full((i % 4 + 1, 3), i, dtype=np.int64)
    return np.full((2, 3), i, dtype=np.int64)


def is_expected(kind: str, i: int, sample: Any) -> bool:
    want = expected_sample(kind, i)
    if kind == "strings":
        return bool(sample == want)
    return isinstance(sample, np.ndarray) and sample.shape == want.shape and bool(np.array_equal(sample, want))


def build(kind: str, path: Path, n: int) -> Any:
    samples = [expected_sample(kind, i) for i in range(n)]
    if kind == "strings":
        return StringsMmap.from_strings(path, samples)
    if kind == "ragged":
        return RaggedMmap.from_lists(path, samples)
    return NumpyMmap.from_generator(path, samples, batch_size=max(n, 1))


def run_threads(kind: str, tmp_path: Path, seconds: float, writer_is_other_handle: bool) -> dict[str, int]:
    shared = build(kind, tmp_path / "m", 50)
    writer_handle = type(shared)(tmp_path / "m") if writer_is_other_handle else shared
    stop = threading.Event()
    failures: list[str] = []
    counts = {"single": 0, "batch": 0, "prefix": 0, "refresh": 0, "written": 50}

    def fail(message: str) -> None:
        failures.append(message)
        stop.set()

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as e:  # any exception in a thread is a failure of the test
                fail(f"{threading.current_thread().name}: {type(e).__name__}: {e}")
        return run

    def writer() -> None:
        n = 50
        while not stop.is_set():
            writer_handle.extend([expected_sample(kind, i) for i in range(n, n + BATCH)])
            n += BATCH
            counts["written"] = n
            time.sleep(0.0005)

    def refresher() -> None:
        while not stop.is_set():
            shared.refresh()
            counts["refresh"] += 1

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            length = len(shared)
            i = rng.randrange(length)
            sample = shared[i]
            if not is_expected(kind, i, sample):
                return fail(f"m[{i}] (length {length} just before) gave {sample!r}")
            counts["single"] += 1
            positions = [rng.randrange(length) for _ in range(5)]
            for p, s in zip(positions, shared[positions]):
                if not is_expected(kind, p, s):
                    return fail(f"m[{positions}] gave {s!r} at index {p} (length {length} just before)")
            counts["batch"] += 1
            prefix = rng.randrange(1, min(length, 200) + 1)
            for k, s in enumerate(shared):
                if k == prefix:
                    break
                if not is_expected(kind, k, s):
                    return fail(f"iterating gave {s!r} at index {k}")
            counts["prefix"] += 1

    threads = [threading.Thread(target=guarded(writer), name="writer"),
               threading.Thread(target=guarded(refresher), name="refresher"),
               *[threading.Thread(target=guarded(lambda s=s: reader(s)), name=f"reader{s}") for s in range(4)]]
    for t in threads:
        t.start()
    # Run for ``seconds``, and longer on a loaded machine until every thread made some progress (decided by the
    # counts; the bound of minutes only ends a hang).
    deadline = time.monotonic() + seconds
    while not stop.wait(0.05):
        progressed = counts["written"] > 50 + 3 * BATCH and counts["prefix"] > 3 and counts["refresh"] > 3
        if time.monotonic() > deadline and (progressed or time.monotonic() > deadline + HANG_SECONDS):
            break
    stop.set()
    for t in threads:
        t.join(HANG_SECONDS)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not failures, failures[:5]
    shared.refresh()
    assert len(shared) == counts["written"]
    assert all(is_expected(kind, i, shared[i]) for i in range(len(shared)))
    return counts


KINDS = ["strings", "ragged", "numpy"]


@pytest.mark.parametrize("writer_is_other_handle", [False, True], ids=["same-object", "other-handle"])
@pytest.mark.parametrize("kind", KINDS)
def test_threads_share_one_map_object(kind: str, tmp_path: Path, writer_is_other_handle: bool) -> None:
    counts = run_threads(kind, tmp_path, 1.0, writer_is_other_handle)
    # the threads really ran concurrently, or the test proves nothing
    assert counts["written"] > 50 + 3 * BATCH and counts["prefix"] > 3 and counts["refresh"] > 3


@pytest.mark.slow
@pytest.mark.parametrize("writer_is_other_handle", [False, True], ids=["same-object", "other-handle"])
@pytest.mark.parametrize("kind", KINDS)
def test_threads_share_one_map_object_for_10_seconds(kind: str, tmp_path: Path, writer_is_other_handle: bool) -> None:
    counts = run_threads(kind, tmp_path, 10.0, writer_is_other_handle)
    assert counts["written"] > 50 + 20 * BATCH and counts["prefix"] > 20 and counts["refresh"] > 20


def test_a_view_taken_before_writes_reads_one_state_through_all_its_attributes(tmp_path: Path) -> None:
    """A reader thread takes ``view = m._view`` and then reads several of its attributes (the length to resolve
    positions, then the offsets to read them). When that view stands in for the state after a write, all its
    attributes must come from one state, however many writes and refreshes happen between the reads: before, the
    length came from one state and the offsets from another, an IndexError in a reader thread."""
    m = StringsMmap.from_strings(tmp_path / "m", ["a", "b"])
    other = StringsMmap(tmp_path / "m")
    m.extend(["c"])
    view = m._view  # stands in for the state after the extend, built when first used
    length = view.length
    other.extend(["d", "e"])
    m.refresh()
    m.extend(["f"])
    assert length == 3 and len(view.offsets) == length + 1 and view.get_many(np.arange(length)) == ["a", "b", "c"]
    assert m[:] == ["a", "b", "c", "d", "e", "f"]
