"""The conformance kit (mmap_ninja.testing) run on every registered kind, and checks of the kit itself.

The default run covers each kind once with small sizes (QUICK); the classes marked ``slow`` repeat everything with
many crash trials and Hypothesis examples (THOROUGH).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja.errors import UnfinishedMapError
from mmap_ninja.kinds.maps import KINDS
from mmap_ninja.testing import (
    THOROUGH,
    BadSample,
    KindSpec,
    MapConformance,
    MissingSpecError,
    check_interleaved_batches,
    register_spec,
    spec_for,
    specs,
)
from mmap_ninja.testing.processes import kill_build_at_random
from mmap_ninja.testing.registry import _SPECS, strings_sample


class TestStrings(MapConformance):
    spec = spec_for("strings")


class TestRagged(MapConformance):
    spec = spec_for("ragged")


class TestNumpy(MapConformance):
    spec = spec_for("numpy")


class TestRecords(MapConformance):
    spec = spec_for("records")


class TestImages(MapConformance):
    spec = spec_for("images")


class TestRecordsImages(MapConformance):
    spec = spec_for("records-images")


@pytest.mark.slow
class TestStringsThorough(TestStrings):
    effort = THOROUGH


@pytest.mark.slow
class TestRaggedThorough(TestRagged):
    effort = THOROUGH


@pytest.mark.slow
class TestNumpyThorough(TestNumpy):
    effort = THOROUGH


@pytest.mark.slow
class TestRecordsThorough(TestRecords):
    effort = THOROUGH


@pytest.mark.slow
class TestImagesThorough(TestImages):
    effort = THOROUGH


@pytest.mark.slow
class TestRecordsImagesThorough(TestRecordsImages):
    effort = THOROUGH


CONFORMANCE_CLASSES = [TestStrings, TestRagged, TestNumpy, TestRecords, TestImages, TestRecordsImages]


# ---------------------------------------------------------------------------------------------- the registry

def test_every_registered_kind_has_a_spec_and_a_conformance_class() -> None:
    all_specs = specs()  # raises MissingSpecError naming any kind in KINDS without a spec
    assert {spec.kind for spec in all_specs} == set(KINDS)
    tested = {cls.spec.name for cls in CONFORMANCE_CLASSES}
    assert tested == {spec.name for spec in all_specs}, "add a MapConformance class for every spec"


def test_a_kind_without_a_spec_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    class UntestedKind(mmap_ninja.StringsMmap):
        pass

    monkeypatch.setitem(KINDS, "untested", UntestedKind)
    with pytest.raises(MissingSpecError, match=r"'untested'.*register_spec"):
        specs()
    assert {spec.kind for spec in specs(require_all=False)} == set(KINDS) - {"untested"}
    with pytest.raises(MissingSpecError, match=r"'untested' \(registered in mmap_ninja\.kinds\.maps\.KINDS"):
        spec_for("untested")


def test_register_spec_adds_a_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mmap_ninja.testing.registry._SPECS", dict(_SPECS))
    spec = register_spec(KindSpec(mmap_ninja.StringsMmap, strings_sample, name="strings-again"))
    assert spec_for("strings-again") is spec and spec.kind == "strings"
    assert spec in specs()
    with pytest.raises(TypeError, match="MapBase subclass"):
        KindSpec(list, strings_sample)  # type: ignore[arg-type]


def _plain_environment() -> dict[str, str]:
    """This test's environment for a child, without the Windows-semantics mode (whose hook imports the kit)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("MMAP_NINJA_WINDOWS_SEMANTICS", None)
    return env


def test_importing_mmap_ninja_imports_no_test_tool() -> None:
    code = ("import sys, mmap_ninja, mmap_ninja.adapters; "
            "print(sorted(m for m in ('pytest', 'hypothesis', 'mmap_ninja.testing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=_plain_environment()).stdout
    assert out.strip() == "[]"


def test_every_spec_makes_distinct_samples() -> None:
    for spec in specs():
        samples = spec.samples(0, 200)
        for i in range(0, 200, 13):
            assert spec.equal(samples[i], spec.make_sample(i))
            assert not any(spec.equal(samples[i], samples[j]) for j in range(200) if j != i), (spec.name, i)
            if spec.variant is not None and np.size(samples[i]):  # an empty array is its own variant
                assert not spec.equal(spec.variant(samples[i]), samples[i]), (spec.name, i)
        assert spec.bad_samples, spec.name


# ---------------------------------------------------------------------------------------------- the kit can fail
# Each conformance test must fail on a kind that breaks what it checks. These kinds break one promise each; they
# are module-level classes so that the kit's child processes can unpickle specs naming them.

class ForgetfulStrings(mmap_ninja.StringsMmap):
    """Drops the last sample of every batch of two or more."""

    def extend(self, samples: Any) -> None:
        batch = list(samples)
        super().extend(batch[:-1] if len(batch) > 1 else batch)


class ForgetsModeStrings(mmap_ninja.StringsMmap):
    """Comes back from pickling read-only."""

    def __reduce__(self) -> tuple[Any, ...]:
        return ForgetsModeStrings, (str(self.path), None, "r")


class StaleStrings(mmap_ninja.StringsMmap):
    """refresh() sees nothing."""

    def refresh(self) -> int:
        return 0


class DeafStrings(mmap_ninja.StringsMmap):
    """In-place assignment does nothing."""

    def __setitem__(self, index: Any, value: Any) -> None:
        pass


class EagerStrings(mmap_ninja.StringsMmap):
    """Publishes every write of a transaction at once (no atomic transactions)."""

    def transaction(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


FORGETFUL = KindSpec(ForgetfulStrings, strings_sample, bad_samples=spec_for("strings").bad_samples,
                     variant=spec_for("strings").variant, name="forgetful")
LAX = KindSpec(mmap_ninja.StringsMmap, strings_sample, bad_samples=(BadSample("fine", TypeError),),
               name="lax")


def _conformance(spec: KindSpec) -> MapConformance:
    return type("Sabotaged", (MapConformance,), {"spec": spec})()


SABOTAGE = {
    "test_from_generator_round_trip": FORGETFUL,
    "test_from_indexable_round_trip": FORGETFUL,
    "test_grows_by_extend_append_and_transaction": FORGETFUL,
    "test_indexing": FORGETFUL,
    "test_pickle_keeps_path_mode_and_data": KindSpec(ForgetsModeStrings, strings_sample, name="forgets-mode"),
    "test_reopen_by_path": FORGETFUL,
    "test_refresh_sees_another_handles_commit": KindSpec(StaleStrings, strings_sample, name="stale"),
    "test_a_raising_transaction_commits_nothing": KindSpec(EagerStrings, strings_sample, name="eager"),
    "test_in_place_assignment": KindSpec(DeafStrings, strings_sample,
                                         variant=spec_for("strings").variant, name="deaf"),
    "test_bad_input_is_refused_and_changes_no_file": LAX,
    "test_a_refused_first_write_creates_nothing": LAX,
    "test_a_build_stopped_by_a_bad_sample": LAX,
    "test_crash_while_extending": FORGETFUL,
    "test_crash_while_building": FORGETFUL,
    "test_concurrent_writer_processes": FORGETFUL,
    "test_writer_and_reader_threads": FORGETFUL,
    "test_state_machine": FORGETFUL,
}
# Spawning child processes costs: the default run checks one process test; the slow run checks them all.
_PROCESS_TESTS = {"test_crash_while_extending", "test_crash_while_building", "test_concurrent_writer_processes"}


def test_every_conformance_test_has_a_sabotage() -> None:
    assert set(SABOTAGE) == {name for name in dir(MapConformance) if name.startswith("test_")}


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[pytest.mark.slow] if name in _PROCESS_TESTS - {"test_crash_while_building"} else [])
    for name in SABOTAGE])
def test_the_conformance_test_fails_on_a_broken_kind(tmp_path: Path, name: str) -> None:
    method = getattr(_conformance(SABOTAGE[name]), name)
    arguments = {"tmp_path": tmp_path} if "tmp_path" in method.__code__.co_varnames else {}
    # AssertionError, or pytest's Failed when an expected exception is not raised.
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        method(**arguments)


def test_the_interleaving_checker_finds_a_torn_batch() -> None:
    spec = spec_for("strings")
    plans = [[[0, 2], [4]], [[1, 3, 5]]]
    whole = [spec.make_sample(i) for i in (0, 2, 1, 3, 5, 4)]
    assert check_interleaved_batches(spec, whole, plans).writers == [0, 1, 0]
    torn = [spec.make_sample(i) for i in (0, 1, 2, 3, 5, 4)]
    with pytest.raises(AssertionError, match="not whole"):
        check_interleaved_batches(spec, torn, plans)
    out_of_order = [spec.make_sample(i) for i in (4, 0, 2, 1, 3, 5)]
    with pytest.raises(AssertionError, match="not the first sample"):
        check_interleaved_batches(spec, out_of_order, plans)


@pytest.mark.parametrize("spec", specs(), ids=lambda spec: spec.name)
def test_a_build_killed_the_moment_it_is_ready_holds_an_unfinished_map(tmp_path: Path, spec: KindSpec) -> None:
    """The building child says READY only once its "building" header exists, so a kill with no delay at all
    still leaves a folder that opens as an unfinished map (a kind that infers its schema from the first rows
    writes its header later than one that does not: the kill must never land before it)."""
    for batch_size in (1, 5):
        path = tmp_path / f"batch{batch_size}"
        kill_build_at_random(spec, path, batch_size, seed=batch_size, max_delay=0.0)
        assert (path / "header.json").is_file(), sorted(p.name for p in path.iterdir())
        with pytest.raises(UnfinishedMapError):
            spec.container(path)
