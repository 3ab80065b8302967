"""Crash torture: a writer SIGKILLed at random instants never loses a committed sample.

The scenarios live in ``stress/crash_torture.py`` (run it directly for long runs and a table); these tests
call the same code: a short form in the default run and a long one marked ``slow``.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stress"))
import crash_torture as ct  # noqa: E402


def _failures(results):
    return [f"{t.kind}/{t.scenario}: {t.detail}" for t in results
            if not t.consistent or t.lost or t.failed_reopen]


@pytest.mark.parametrize("kind", ct.KINDS)
def test_crash_torture_short(kind):
    results = ct.run_many([kind], 20, seed=7)
    assert not _failures(results)
    assert {t.scenario for t in results} == set(ct.SCENARIOS)
    assert sum(t.lost for t in results) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ct.KINDS)
def test_crash_torture_long(kind):
    results = ct.run_many([kind], 300, seed=11)
    assert not _failures(results)


# The checker itself must be able to fail: feed it maps that break the promises.

@pytest.mark.parametrize("kind", ct.KINDS)
def test_checker_reports_lost_samples(tmp_path, kind):
    path = tmp_path / "map"
    ct.CLASSES[kind].from_generator(path, ct.samples(kind, 0, 10), batch_size=5).close()
    trial = ct.Trial(kind, "build")
    ct.check_after_crash(trial, kind, "build", path, [["I", "15"], ["C", "15"], ["I", "20"]])
    assert not trial.consistent and trial.lost == 5
    assert "length 10" in trial.detail


@pytest.mark.parametrize("kind", ct.KINDS)
def test_checker_reports_a_wrong_byte(tmp_path, kind):
    path = tmp_path / "map"
    ct.CLASSES[kind].from_generator(path, ct.samples(kind, 0, 10), batch_size=5).close()
    data = path / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01
    data.write_bytes(bytes(raw))
    trial = ct.Trial(kind, "build")
    ct.check_after_crash(trial, kind, "build", path, [["I", "10"], ["C", "10"]])
    assert not trial.consistent and "Mismatch" in trial.detail


def test_checker_accepts_the_batch_in_flight(tmp_path):
    path = tmp_path / "map"
    ct.StringsMmap.from_generator(path, ct.samples("strings", 0, 10), batch_size=5).close()
    trial = ct.Trial("strings", "build")
    ct.check_after_crash(trial, "strings", "build", path, [["I", "5"], ["C", "5"], ["I", "10"]])
    assert trial.consistent, trial.detail


def test_variants_have_the_same_byte_size():
    for kind in ct.KINDS:
        for i in range(50):
            a, b = ct.sample(kind, i), ct.sample(kind, i, 1)
            if kind == "strings":
                assert len(a.encode()) == len(b.encode())
            else:
                assert np.shape(a) == np.shape(b)
