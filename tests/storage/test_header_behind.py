"""A build from a list in RAM renames its per-batch headers into place on a helper thread (storage/header_behind.py,
issue 21); every other build writes each header itself. Either way the map is the same, a failed rename fails the
build, and a process killed during the build leaves a map holding whole batches of the right samples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmap_ninja import RaggedMmap
from mmap_ninja.errors import CorruptMapError, UnfinishedMapError
from mmap_ninja.storage.format import read_header

_HELPER = "mmap_ninja-header"


def _helper_running() -> bool:
    return any(thread.name == _HELPER for thread in threading.enumerate())


class _Probe:
    """A sample (converted by its ``__array__``) that notes whether the header helper thread is running when the
    build converts it, and optionally does something to the map's folder then."""

    def __init__(self, value: np.ndarray[Any, Any], seen: list[bool], action: Any = None):
        self.value, self.seen, self.action = value, seen, action

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        self.seen.append(_helper_running())
        if self.action is not None:
            self.action()
        return self.value


def _tokens(n: int) -> list[np.ndarray[Any, Any]]:
    return [np.arange(k % 7, dtype=np.int32) + k for k in range(n)]


def test_a_build_from_a_list_renames_its_headers_on_a_helper_thread(tmp_path: Path) -> None:
    seen: list[bool] = []
    samples: list[Any] = _tokens(30)
    samples[25] = _Probe(samples[25], seen)  # in the third batch: the first two batches' headers were handed over
    RaggedMmap.from_lists(tmp_path / "m", samples, batch_size=10).close()
    assert seen == [True]
    assert not _helper_running()  # ended with the build


@pytest.mark.parametrize("how", ["generator", "durable"])
def test_other_builds_write_each_header_themselves(tmp_path: Path, how: str) -> None:
    seen: list[bool] = []
    samples: list[Any] = _tokens(30)
    samples[25] = _Probe(samples[25], seen)
    if how == "generator":
        RaggedMmap.from_lists(tmp_path / "m", iter(samples), batch_size=10).close()
    else:
        RaggedMmap.from_lists(tmp_path / "m", samples, batch_size=10, durable=True).close()
    assert seen == [False]


def test_a_build_from_a_list_equals_one_from_a_generator(tmp_path: Path) -> None:
    samples = _tokens(1_000)
    RaggedMmap.from_lists(tmp_path / "list", samples, batch_size=64).close()
    RaggedMmap.from_lists(tmp_path / "generator", iter(samples), batch_size=64).close()
    for name in ("data", "offsets", "shape_offsets", "dims", "checksums"):
        assert (tmp_path / "list" / f"{name}.bin").read_bytes() == (tmp_path / "generator" / f"{name}.bin").read_bytes()
    listed, generated = read_header(tmp_path / "list"), read_header(tmp_path / "generator")
    # One commit per batch, but a list's last batch is published by the header that finishes the build.
    assert listed.commit == generated.commit - 1 and not listed.building and not generated.building
    with RaggedMmap(tmp_path / "list") as m:
        assert len(m) == 1_000 and all(np.array_equal(m[i], samples[i]) for i in range(0, 1_000, 37))


@pytest.mark.parametrize("batches", [1, 3])
def test_the_last_batch_of_a_build_from_a_list_is_published_by_its_final_header(tmp_path: Path,
                                                                              batches: int) -> None:
    samples = _tokens(10 * batches)
    RaggedMmap.from_lists(tmp_path / "list", samples, batch_size=10).close()
    RaggedMmap.from_lists(tmp_path / "generator", iter(samples), batch_size=10).close()
    listed, generated = read_header(tmp_path / "list"), read_header(tmp_path / "generator")
    assert listed.commit == generated.commit - 1 and listed.columns == generated.columns and not listed.building
    assert (tmp_path / "list" / "checksums.bin").read_bytes() == (tmp_path / "generator" / "checksums.bin").read_bytes()
    assert not _helper_running()
    with RaggedMmap(tmp_path / "list") as m:
        assert len(m) == 10 * batches and all(np.array_equal(m[i], samples[i]) for i in range(len(m)))


def test_a_failed_rename_on_the_helper_thread_fails_the_build(tmp_path: Path) -> None:
    path = tmp_path / "m"
    seen: list[bool] = []
    samples: list[Any] = _tokens(50)
    # In the third batch, something takes the temporary header's name: the next rename of a header fails.
    samples[25] = _Probe(samples[25], seen, lambda: _take_the_name(path / "header.json.tmp"))
    with pytest.raises(CorruptMapError, match=r"header\.json\.tmp"):
        RaggedMmap.from_lists(path, samples, batch_size=10)
    assert seen == [True] and not _helper_running()
    with pytest.raises(UnfinishedMapError):
        RaggedMmap(path)
    with RaggedMmap(path, allow_unfinished=True) as m:  # whole batches, as written
        assert len(m) in (0, 10, 20) and all(np.array_equal(m[i], samples[i]) for i in range(len(m)))


_CHILD = """
import sys
import numpy as np
from mmap_ninja import RaggedMmap
samples = [np.arange(k % 50, dtype=np.int32) + k for k in range(400_000)]
print("ready", flush=True)
RaggedMmap.from_lists(sys.argv[1], samples, batch_size=2_000)
print("done", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("batches_before_kill", [3, 40])
def test_a_build_from_a_list_killed_at_any_instant_keeps_whole_batches(tmp_path: Path,
                                                                       batches_before_kill: int) -> None:
    path = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        # Kill once the build has written some batches (the data file's size says so), whatever has been committed.
        deadline = time.monotonic() + 600  # bounds a hang only: the data file's size decides when the kill comes
        data = path / "data.bin"
        while time.monotonic() < deadline and child.poll() is None and \
                (not data.exists() or data.stat().st_size < batches_before_kill * 2_000 * 24 * 4):
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with RaggedMmap(path, allow_unfinished=True) as m:
        n = len(m)
        assert n % 2_000 == 0 or n == 400_000
        for i in list(range(0, n, 997)) + ([n - 1] if n else []):
            assert np.array_equal(m[i], np.arange(i % 50, dtype=np.int32) + i)


def _take_the_name(tmp: Path) -> None:
    """Make a folder named ``tmp``. The helper thread may be writing the previous batch's header under that name
    right now: once it has renamed it, it writes nothing more until the build (blocked here) hands it another
    header, so the name is free then. (The wait only bounds a hang: the outcome never depends on it.)"""
    deadline = time.monotonic() + 600
    while True:
        try:
            tmp.mkdir()
            return
        except FileExistsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)
