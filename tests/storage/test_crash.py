"""Crash torture: writers SIGKILLed at random instants never lose a committed sample.

The scenarios live in ``stress/crash_torture.py`` (run it directly for long runs and a table); these tests
call the same code: a short form in the default run and a long one marked ``slow``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import crash_torture as ct
import numpy as np
import pytest


def _failures(results: Sequence[ct.Trial]) -> list[str]:
    return [f"{t.kind}/{t.scenario}: {t.detail}" for t in results
            if not t.consistent or t.lost or t.failed_reopen]


@pytest.mark.parametrize("kind", ct.KINDS)
def test_crash_torture_short(kind: str) -> None:
    results = ct.run_many([kind], 20, seed=7)
    assert not _failures(results)
    assert {t.scenario for t in results} == set(ct.SCENARIOS)
    assert sum(t.lost for t in results) == 0
    appenders = [t for t in results if t.scenario == "appenders"]
    assert all(t.batches > 0 for t in appenders)  # the writers really committed batches before the kill


@pytest.mark.slow
@pytest.mark.parametrize("kind", ct.KINDS)
def test_crash_torture_long(kind: str) -> None:
    results = ct.run_many([kind], 300, seed=11)
    assert not _failures(results)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ct.KINDS)
def test_concurrent_appenders_torture_long(kind: str) -> None:
    results = ct.run_many([kind], 100, seed=13, scenarios=("appenders",))
    assert not _failures(results)
    assert sum(t.victim_in_flight for t in results) > 50  # most kills hit a writer inside a write


# The checker itself must be able to fail: feed it maps that break the promises.

@pytest.mark.parametrize("kind", ct.KINDS)
def test_checker_reports_lost_samples(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    ct.CLASSES[kind].from_generator(path, ct.samples(kind, 0, 10), batch_size=5).close()
    trial = ct.Trial(kind, "build")
    ct.check_after_crash(trial, kind, "build", path, [["I", "15"], ["C", "15"], ["I", "20"]])
    assert not trial.consistent and trial.lost == 5
    assert "length 10" in trial.detail


@pytest.mark.parametrize("kind", ct.KINDS)
def test_checker_reports_a_wrong_byte(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    ct.CLASSES[kind].from_generator(path, ct.samples(kind, 0, 10), batch_size=5).close()
    data = path / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01
    data.write_bytes(bytes(raw))
    trial = ct.Trial(kind, "build")
    ct.check_after_crash(trial, kind, "build", path, [["I", "10"], ["C", "10"]])
    assert not trial.consistent and "Mismatch" in trial.detail


def test_checker_accepts_the_batch_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "map"
    ct.CLASSES["strings"].from_generator(path, ct.samples("strings", 0, 10), batch_size=5).close()
    trial = ct.Trial("strings", "build")
    ct.check_after_crash(trial, "strings", "build", path, [["I", "5"], ["C", "5"], ["I", "10"]])
    assert trial.consistent, trial.detail


def _failing_after(kind: str, n: int) -> Iterator[Any]:
    yield from ct.samples(kind, 0, n)
    raise KeyboardInterrupt  # as a Ctrl-C in the middle of a build


def _interrupted_build(path: Path, kind: str, committed: int) -> None:
    with pytest.raises(KeyboardInterrupt):
        ct.CLASSES[kind].from_generator(path, _failing_after(kind, committed), batch_size=5)


@pytest.mark.parametrize("kind", ct.KINDS)
def test_checker_reads_an_interrupted_build_and_builds_it_again(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    _interrupted_build(path, kind, 10)
    build_log = [["S", "30"], ["I", "5"], ["C", "5"], ["I", "10"], ["C", "10"]]
    trial = ct.Trial(kind, "build")
    ct.check_after_crash(trial, kind, "build", path, build_log)
    assert trial.consistent and trial.detail == "unfinished build", trial.detail
    # the checker re-ran the build without overwrite=True: now a complete map
    with ct.CLASSES[kind](path, mode="r") as m:
        ct.verify(kind, m, 10 + 1 + 10 % 29)


@pytest.mark.parametrize("kind", ct.KINDS)
def test_checker_reports_a_batch_an_interrupted_build_lost(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    _interrupted_build(path, kind, 5)
    # the log says batch 10 was written and then the next one started: batch 10 was committed
    build_log = [["S", "30"], ["I", "5"], ["C", "5"], ["I", "10"], ["C", "10"], ["I", "15"]]
    trial = ct.Trial(kind, "build")
    ct.check_after_crash(trial, kind, "build", path, build_log)
    assert not trial.consistent and trial.lost == 5, trial.detail
    assert "unfinished build of length 5" in trial.detail


def test_a_batch_in_flight_inside_a_build_may_be_committed_or_not() -> None:
    log = ct.split_build([["S", "30"], ["I", "5"], ["C", "5"], ["I", "10"], ["C", "10"]])
    assert not log.returned and log.published() == {10}  # a build commits each batch inside its extend
    log = ct.split_build([["S", "30"], ["I", "5"], ["C", "5"], ["I", "10"]])
    assert log.published() == {5, 10}
    log = ct.split_build([["S", "30"], ["I", "5"], ["C", "5"], ["B"], ["I", "9"]])
    assert log.returned and log.after == [["I", "9"]]


@pytest.mark.parametrize("kind", ct.KINDS)
def test_checker_reports_a_complete_map_of_the_wrong_length_after_a_build(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    ct.CLASSES[kind].from_generator(path, ct.samples(kind, 0, 10), batch_size=5).close()
    trial = ct.Trial(kind, "build")  # the build was of 20 samples: a complete map must hold all of them
    ct.check_after_crash(trial, kind, "build", path, [["S", "20"], ["I", "10"], ["C", "10"], ["I", "20"]])
    assert not trial.consistent and trial.lost == 10


def test_variants_have_the_same_byte_size() -> None:
    for kind in ct.KINDS:
        for i in range(50):
            a, b = ct.sample(kind, i), ct.sample(kind, i, 1)
            if kind == "strings":
                assert len(a.encode()) == len(b.encode())
            else:
                assert np.shape(a) == np.shape(b)


# The concurrent-appender checker: tagged samples, batches whole and in order.

def _tagged_map(path: Path, kind: str, batches: Sequence[tuple[int, int, int]]) -> None:
    """A map holding the tagged batches (writer, batch number, size), in this order."""
    with ct.CLASSES[kind](path) as m:
        for writer, batch_no, size in batches:
            m.extend(ct.tagged_batch(kind, writer, batch_no, size))


@pytest.mark.parametrize("kind", ct.KINDS)
def test_tagged_samples_identify_themselves(kind: str) -> None:
    for position in range(7):
        value = ct.tagged_sample(kind, 2, 41, position, 7)
        assert ct.identity(kind, value) == (2, 41, position, 7)
    other = ct.tagged_sample(kind, 2, 41, 3, 7)
    if kind == "strings":
        assert ct.identity(kind, other[:-1] + "#") is None
        assert ct.identity(kind, "no tag") is None
    else:
        changed = other.copy()
        changed.reshape(-1)[-1] += 1
        assert ct.identity(kind, changed) is None
    if kind == "ragged":
        assert {ct.tagged_sample(kind, 1, b, 0, 1).ndim for b in range(6)} == {1, 2, 3}


@pytest.mark.parametrize("kind", ct.KINDS)
def test_audit_accepts_whole_batches_in_order(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    _tagged_map(path, kind, [(0, 0, 3), (1, 0, 1), (0, 1, 4), (1, 1, 2)])
    with ct.CLASSES[kind](path, mode="r") as m:
        scan = ct.scan_tagged(kind, m)
    assert scan.torn == 0 and [(w, b) for w, b, _, _ in scan.batches] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    # writer 1's batch 2 was in flight when it died: present or not, both are fine
    result = ct.audit(scan, {0: {0: 3, 1: 4}, 1: {0: 1}}, {0: None, 1: 1})
    assert result.ok, result.notes
    trial = ct.Trial(kind, "appenders")
    logs = {0: [["I", "0", "3"], ["C", "0", "3"], ["I", "1", "4"], ["C", "1", "4"]],
            1: [["I", "0", "1"], ["C", "0", "1"], ["I", "1", "2"]]}
    ct.check_appenders(trial, kind, path, logs, {})
    assert trial.consistent, trial.detail


@pytest.mark.parametrize("kind", ct.KINDS)
def test_audit_reports_interleaved_lost_duplicated_and_reordered_batches(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    with ct.CLASSES[kind](path) as m:  # writer 1's batch 0 cut in two by writer 0's batch 0
        first = ct.tagged_batch(kind, 1, 0, 4)
        m.extend(first[:2])
        m.extend(ct.tagged_batch(kind, 0, 0, 3))
        m.extend(first[2:])
        m.extend(ct.tagged_batch(kind, 0, 2, 2))  # writer 0's batch 1 is missing, batch 2 is there
        m.extend(ct.tagged_batch(kind, 0, 0, 3))  # and batch 0 a second time
    with ct.CLASSES[kind](path, mode="r") as m:
        scan = ct.scan_tagged(kind, m)
    assert scan.torn == 4  # the four samples of the interleaved batch
    result = ct.audit(scan, {0: {0: 3, 1: 5, 2: 2}, 1: {0: 4}}, {0: None, 1: None})
    assert result.lost == 5 + 4 and result.duplicated == 1 and result.out_of_order == 1
    trial = ct.Trial(kind, "appenders")
    logs = {0: [["C", "0", "3"], ["C", "1", "5"], ["C", "2", "2"]], 1: [["C", "0", "4"]]}
    ct.check_appenders(trial, kind, path, logs, {})
    assert not trial.consistent and trial.lost == 9 and "4 torn samples" in trial.detail


@pytest.mark.parametrize("kind", ct.KINDS)
def test_audit_reports_a_batch_nobody_wrote(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    _tagged_map(path, kind, [(0, 0, 2), (0, 1, 2)])
    trial = ct.Trial(kind, "appenders")
    ct.check_appenders(trial, kind, path, {0: [["I", "0", "2"], ["C", "0", "2"]]}, {})  # batch 1 never started
    assert not trial.consistent and "1 unexpected" in trial.detail


@pytest.mark.parametrize("kind", ct.KINDS)
def test_scan_reports_a_batch_cut_short_at_the_end(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "map"
    with ct.CLASSES[kind](path) as m:
        m.extend(ct.tagged_batch(kind, 0, 0, 2))
        m.extend(ct.tagged_batch(kind, 0, 1, 5)[:3])
    with ct.CLASSES[kind](path, mode="r") as m:
        scan = ct.scan_tagged(kind, m)
    assert scan.torn == 3 and len(scan.batches) == 1


def test_an_appender_that_failed_fails_the_trial(tmp_path: Path) -> None:
    path = tmp_path / "map"
    _tagged_map(path, "strings", [(0, 0, 2)])
    trial = ct.Trial("strings", "appenders")
    logs = {0: [["I", "0", "2"], ["C", "0", "2"], ["I", "1", "3"], ["X", "MapLockedError: ..."]]}
    ct.check_appenders(trial, "strings", path, logs, {})
    assert not trial.consistent and "appender 0 failed" in trial.detail


def test_a_missing_map_is_a_failed_reopen_once_a_batch_returned(tmp_path: Path) -> None:
    trial = ct.Trial("strings", "appenders")
    ct.check_appenders(trial, "strings", tmp_path / "none", {0: [["I", "0", "2"], ["C", "0", "2"]]}, {})
    assert not trial.consistent and trial.failed_reopen


_KILLED_BEFORE_ITS_FILES = """
import os, signal, sys
from mmap_ninja import RaggedMmap, StringsMmap
real_open = os.open
def dying_open(path, flags, *args, **kwargs):
    if flags & os.O_EXCL and str(path).endswith(".bin"):  # the build makes its first column file
        os.kill(os.getpid(), signal.SIGKILL)
    return real_open(path, flags, *args, **kwargs)
os.open = dying_open
cls = {"strings": StringsMmap, "ragged": RaggedMmap}[sys.argv[2]]
cls.from_generator(sys.argv[1], iter([[1], [2]] if sys.argv[2] == "ragged" else ["a", "b"]), batch_size=1)
"""


@pytest.mark.parametrize("kind", ["strings", "ragged"])
def test_a_build_killed_between_claiming_its_folder_and_making_its_files_is_an_empty_unfinished_build(
        tmp_path: Path, kind: str) -> None:
    """A build writes the header that claims its folder before it makes its column files: a process killed in
    between leaves a header naming files that do not exist, an instant the crash tests' random kills reach only
    rarely (so it is pinned here by killing at that point): it is an empty unfinished build, which a re-run
    replaces."""
    import os
    import signal
    import subprocess
    import sys

    from mmap_ninja import RaggedMmap, StringsMmap, UnfinishedMapError

    cls = {"strings": StringsMmap, "ragged": RaggedMmap}[kind]
    path = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_ITS_FILES, str(path), kind], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (path / "header.json").exists() and not list(path.glob("*.bin"))
    with pytest.raises(UnfinishedMapError):
        cls(path)
    with cls(path, mode="r", allow_unfinished=True) as m:
        assert len(m) == 0 and list(m) == []
    with cls.from_generator(path, iter([[7]] if kind == "ragged" else ["x"]), batch_size=1) as rebuilt:
        assert len(rebuilt) == 1  # re-running the build replaces it
