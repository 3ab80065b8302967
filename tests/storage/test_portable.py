"""What mmap_ninja needs from the OS, checked on Linux the ways that do not need macOS or Windows: the lock module
with each facility, reads (and clear write errors) where Python has no fcntl, writes where os.pwrite / os.pwritev
are missing, and worker processes under the spawn and forkserver start methods. The CI matrix runs the same suite
on macOS and Windows (.github/workflows/ci.yml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from mmap_ninja import open_existing
from mmap_ninja.storage import _osfile, locks
from mmap_ninja.testing import specs

# ------------------------------------------------------------------ locks

Backend = tuple[Callable[[int, bool], bool], Callable[[int], None]]


def _facilities() -> dict[str, Backend]:
    """Every lock facility this machine can exercise: the library's choice (fcntl.flock on POSIX) and portalocker
    (Windows' facility, installed with the dev extra everywhere)."""
    found: dict[str, Backend] = {"chosen": (lambda fd, shared: locks.try_lock(fd, shared=shared),
                                            lambda fd: None)}
    portable = locks.portalocker_backend()
    if portable is not None:
        found["portalocker"] = (portable[1], portable[2])
    return found


@pytest.fixture(params=sorted(_facilities()))
def facility(request: Any) -> Backend:
    return _facilities()[request.param]


def _open_lock_files(path: Path, count: int) -> list[int]:
    return [os.open(path, os.O_RDWR | os.O_CREAT, 0o644) for _ in range(count)]


def test_an_exclusive_lock_excludes_every_other_handle_until_released(tmp_path: Path, facility: Backend) -> None:
    try_lock, unlock = facility
    first, second, third = _open_lock_files(tmp_path / ".lock", 3)
    try:
        assert try_lock(first, False)
        assert not try_lock(second, False) and not try_lock(second, True)  # other handles, even in this process
        unlock(first)
        locks.release(first)
        assert try_lock(second, False)
        assert not try_lock(third, True)
    finally:
        for fd in (second, third):
            locks.release(fd)


def test_shared_locks_coexist_and_keep_an_exclusive_one_out(tmp_path: Path, facility: Backend) -> None:
    try_lock, _ = facility
    readers = _open_lock_files(tmp_path / ".lock", 2)
    writer, = _open_lock_files(tmp_path / ".lock", 1)
    try:
        assert all(try_lock(fd, True) for fd in readers)
        assert not try_lock(writer, False)
        for fd in readers:
            locks.release(fd)
        readers = []
        assert try_lock(writer, False)
    finally:
        for fd in [*readers, writer]:
            locks.release(fd)


def test_lock_with_a_timeout_returns_false_while_another_handle_holds_it(tmp_path: Path) -> None:
    holder, waiter = _open_lock_files(tmp_path / ".lock", 2)
    try:
        assert locks.lock(holder, timeout=None)
        assert locks.lock(waiter, timeout=0) is False
        assert locks.lock(waiter, shared=True, timeout=0.05) is False  # the holder never lets go: always False
        locks.release(holder)
        holder = -1
        assert locks.lock(waiter, timeout=0) is True
    finally:
        for fd in (holder, waiter):
            if fd >= 0:
                locks.release(fd)


def test_the_facility_is_named() -> None:
    from mmap_ninja.testing import windows_semantics

    assert locks.available()
    assert locks.facility() == ("portalocker (Windows-semantics mode)" if windows_semantics.active() else
                                "fcntl.flock" if os.name == "posix" else "portalocker")


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_the_os_specific_modules_type_check_for_windows_and_macos(platform: str) -> None:
    # mypy --strict reads their Windows and macOS branches as it would on those systems (pywin32 and msvcrt paths,
    # F_FULLFSYNC), so a name missing there is caught on Linux.
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "mypy", "--platform", platform, "--follow-imports=silent",
                           "--no-incremental", "src/mmap_ninja/storage/locks.py", "src/mmap_ninja/storage/_osfile.py"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------ without fcntl

_HIDE_FCNTL = '''
import sys

class HideFcntl:
    """Python as on Windows: no fcntl module (and so no portalocker on POSIX, which locks through it)."""
    def find_spec(self, name, path=None, target=None):
        if name == "fcntl" or name.startswith("fcntl."):
            raise ModuleNotFoundError("No module named 'fcntl' (hidden by the test)", name=name)
        return None

sys.meta_path.insert(0, HideFcntl())
sys.modules.pop("fcntl", None)
'''


def _run_without_fcntl(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", _HIDE_FCNTL + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_without_fcntl_every_kind_of_map_reads_and_writes_say_what_is_missing(tmp_path: Path) -> None:
    from mmap_ninja import StringsMmap, merge

    names = []
    for spec in specs():
        spec.container.from_generator(tmp_path / spec.name, spec.samples(0, 23), batch_size=10,
                                      **spec.build_options).close()
        names.append(spec.name)
    for part in ("a", "b"):
        StringsMmap.from_strings(tmp_path / f"part-{part}", [f"{part}{i}" for i in range(5)]).close()
    merge(tmp_path / "sharded", [tmp_path / "part-a", tmp_path / "part-b"])
    before = _files(tmp_path)

    out = _run_without_fcntl(f'''
        import mmap_ninja
        from mmap_ninja import StringsMmap, locks, open_existing
        from mmap_ninja.testing import spec_for
        assert "fcntl" not in sys.modules and not locks.available() and locks.facility() is None
        for name in {names!r}:
            spec = spec_for(name)
            m = open_existing(name, mode="r")
            assert len(m) == 23 and all(spec.equal(m[i], spec.make_sample(i)) for i in range(23)), name
            m.close()
        sharded = open_existing("sharded", mode="r")
        assert list(sharded) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]
        for write in (lambda: StringsMmap.from_strings("new", ["x"]),
                      lambda: open_existing("strings").append("one more")):
            try:
                write()
            except locks.LockingUnavailableError as e:
                assert isinstance(e, mmap_ninja.MapError) and isinstance(e, OSError)
                print(e)
            else:
                raise AssertionError("a write without a lock facility went through")
        ''', tmp_path)
    messages = out.splitlines()
    assert len(messages) == 2
    for message in messages:
        assert "fcntl" in message and "portalocker" in message and "reading does not" in message
    assert "the map" in messages[0] and "new" in messages[0]
    assert _files(tmp_path) == before  # the refused writes changed nothing (nor did the reads)


def test_without_fcntl_maps_are_written_and_read_with_the_portable_lock(tmp_path: Path) -> None:
    # As on Windows: mmap_ninja finds no fcntl module and locks through portalocker. On POSIX portalocker itself
    # locks through fcntl, so it is imported before the module is hidden from every later import.
    out = _run_without_fcntl('''
        sys.meta_path.pop(0)
        import portalocker  # its POSIX backend keeps the fcntl it imports
        sys.meta_path.insert(0, HideFcntl())
        sys.modules.pop("fcntl", None)
        import mmap_ninja
        from mmap_ninja import RaggedMmap, StringsMmap, locks, merge, open_existing
        assert locks.available() and (locks.facility() or "").startswith("portalocker"), locks.facility()
        texts = StringsMmap.from_strings("texts", ["a", "b"])
        texts.append("c")
        with texts.transaction():
            texts.extend(["d", "e"])
        texts.close()
        import numpy as np
        RaggedMmap.from_lists("part", [np.arange(3), np.arange(2)]).close()
        StringsMmap.from_strings("more", ["f"]).close()
        merge("sharded", ["more"]).close()
        with open_existing("texts") as reopened:
            reopened.append("g")
        with open_existing("texts", mode="r") as m:
            print(list(m))
        with open_existing("sharded", mode="r") as m:
            print(list(m))
        assert "fcntl" not in sys.modules or sys.modules["fcntl"] is portalocker.portalocker.fcntl
        ''', tmp_path)
    assert out.splitlines() == ["['a', 'b', 'c', 'd', 'e', 'g']", "['f']"]


# ------------------------------------------------------------------ positional writes without pwrite / pwritev


def _comparable(directory: Path) -> dict[str, Any]:
    def without_id(header: dict[str, Any]) -> dict[str, Any]:
        header.pop("id", None)  # a new uuid per map
        header.pop("checksum", None)  # the header's own checksum covers the id
        return header

    files: dict[str, Any] = dict(_files(directory))
    for name in [name for name in files if name.startswith(".readers-")]:  # a slot map's reader lock, named by id
        files[".readers-ID"] = files.pop(name)
    if files.pop("header.slots", None) is not None:  # a slot map (the default in the Windows-semantics mode)
        from mmap_ninja.storage.header_slots import read_slots

        files["header.slots"] = without_id(json.loads(read_slots(directory)))
    files["header.json"] = without_id(json.loads(files.pop("header.json")))
    return files


@pytest.mark.parametrize("missing", [("pwritev",), ("pwritev", "pwrite")])
def test_maps_written_without_pwritev_or_pwrite_are_byte_identical(tmp_path: Path, monkeypatch: Any,
                                                                   missing: tuple[str, ...]) -> None:
    def build_all(root: Path) -> None:
        for spec in specs():
            with spec.container.from_generator(root / spec.name, spec.samples(0, 40), batch_size=7,
                                               **spec.build_options) as m:
                m.extend(spec.samples(40, 45))

    build_all(tmp_path / "posix")
    for name in missing:
        monkeypatch.delattr(os, name)
    build_all(tmp_path / "portable")
    for spec in specs():
        got, want = _comparable(tmp_path / "portable" / spec.name), _comparable(tmp_path / "posix" / spec.name)
        assert got.keys() == want.keys() and got == want, spec.name
        m = open_existing(tmp_path / "portable" / spec.name)
        assert all(spec.equal(m[i], spec.make_sample(i)) for i in range(45))


def test_pwrite_without_os_pwrite_writes_at_the_offset_and_leaves_the_position(tmp_path: Path,
                                                                               monkeypatch: Any) -> None:
    monkeypatch.delattr(os, "pwrite")
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"0123456789")
        assert _osfile.pwrite(fd, memoryview(b"ab"), 3) == 2
        assert _osfile.pwrite(fd, b"XYZ", 12) == 3  # past the end: a hole, as pwrite leaves
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"012ab56789\0\0XYZ"


def test_fsync_choices_per_os(tmp_path: Path) -> None:
    on_macos, on_windows = sys.platform == "darwin", sys.platform == "win32"
    # F_FULLFSYNC (the drive's cache too) on macOS; no directory fsync on Windows, which cannot open a directory
    assert (on_macos, not on_windows) == (_osfile.FULL_FSYNC, _osfile.DIRECTORY_FSYNC)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"data")
        _osfile.fsync_file(fd)
    finally:
        os.close(fd)
    _osfile.fsync_directory(tmp_path)


# ------------------------------------------------------------------ worker processes under spawn and forkserver

_SOURCES = '''
import functools

def text(i):
    return f"sample {i} " + "é" * (i % 3)

def first_n(n, i):
    if i >= n:
        raise IndexError(i)
    return text(i)

class Texts:
    def __len__(self):
        return 37
    def __getitem__(self, i):
        return text(i)
'''

_BUILD = '''
import functools
import multiprocessing
import sys
from pathlib import Path

import portable_sources as sources
from mmap_ninja import StringsMmap
from mmap_ninja.kinds.parallel import make_indexable


def main(method):
    multiprocessing.set_start_method(method)
    want = [sources.text(i) for i in range(37)]
    for name, source in [("sized", sources.Texts()),
                         ("partial", make_indexable(functools.partial(sources.first_n, 37))),
                         ("function", make_indexable(sources.text, 37))]:
        m = StringsMmap.from_indexable(Path(name), source, 8, n_jobs=2)
        assert list(m) == want, name
        m.close()
    for name, source in [("lambda", make_indexable(lambda i: str(i), 5)), ("nested", Local())]:
        try:
            StringsMmap.from_indexable(Path(name), source, 2, n_jobs=2)
        except TypeError as e:
            print(str(e).replace("\\n", " "))
        else:
            raise AssertionError(name)
        assert not Path(name).exists(), name


def Local():
    class Nested:
        def __len__(self):
            return 3
        def __getitem__(self, i):
            return str(i)
    return Nested()


if __name__ == "__main__":
    main(sys.argv[1])
'''


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_from_indexable_workers_under_spawn_and_forkserver(tmp_path: Path, method: str) -> None:
    (tmp_path / "portable_sources.py").write_text(_SOURCES)
    (tmp_path / "build.py").write_text(_BUILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "build.py", method], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    lambda_error, nested_error = done.stdout.splitlines()
    for message in (lambda_error, nested_error):
        assert f"with {method!r}" in message and "cannot be pickled" in message
        assert "top level of a module" in message and "functools.partial" in message
    assert "<lambda>" in lambda_error
    assert "Local.<locals>.Nested" in nested_error


def test_from_indexable_refuses_an_unpicklable_source_before_creating_the_map(tmp_path: Path) -> None:
    from mmap_ninja import RaggedMmap
    from mmap_ninja.kinds.parallel import make_indexable

    with pytest.raises(TypeError, match=r"cannot be pickled.*<lambda>.*functools\.partial"):
        RaggedMmap.from_indexable(tmp_path / "m", make_indexable(lambda i: [i], length=5), 4, n_jobs=2)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ the CI matrix


def test_the_ci_matrix_runs_the_project_test_command_on_three_systems() -> None:
    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parents[2]
    workflow = yaml.safe_load((root / ".github" / "workflows" / "ci.yml").read_text())
    job = workflow["jobs"]["test"]
    assert sorted(job["strategy"]["matrix"]["os"]) == ["macos-latest", "ubuntu-latest", "windows-latest"]
    commands = [step["run"] for step in job["steps"] if "run" in step]
    assert commands == ["bash .ci/run"]  # the Linux job is exactly the project's CI command
    assert "bash scripts/test.sh" in (root / ".ci" / "run").read_text()


# ------------------------------------------------------------------ DataLoader workers under spawn and forkserver


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_dataloader_workers_read_images_and_sharded_maps_under_spawn_and_forkserver(tmp_path: Path,
                                                                                    method: str) -> None:
    # strings, ragged, numpy (tests/adapters/test_torch.py) and records (tests/adapters/test_torch_records.py) are
    # checked the same
    # way; these are the two other kinds of map a DataLoader reads.
    torch_data = pytest.importorskip("torch.utils.data")
    from mmap_ninja import ImagesMmap, StringsMmap, merge
    from mmap_ninja.testing import spec_for

    images = spec_for("images")
    ImagesMmap.from_generator(tmp_path / "images", images.samples(0, 9), 4).close()
    for part in ("a", "b"):
        StringsMmap.from_strings(tmp_path / part, [f"{part}{i}" for i in range(4)]).close()
    merge(tmp_path / "sharded", [tmp_path / "a", tmp_path / "b"])
    dataset = torch_data.ConcatDataset([open_existing(tmp_path / "images"), open_existing(tmp_path / "sharded")])
    order = [12, 0, 8, 16, 3, 9, 1, 15, 4, 7, 10, 2, 14, 6, 11, 5, 13]
    loader = torch_data.DataLoader(dataset, batch_size=3, sampler=order, num_workers=2,
                                   multiprocessing_context=method, collate_fn=list)
    seen = [sample for batch in loader for sample in batch]
    want = [*images.samples(0, 9), *[f"{p}{i}" for p in "ab" for i in range(4)]]
    assert len(seen) == len(order)
    for got, index in zip(seen, order):
        assert images.equal(got, want[index]) if index < 9 else got == want[index]


# ---------------------------------------------------------------------------------------------- the crash harness

@pytest.fixture
def without_process_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kit's crash harness as it runs on Windows (forced on Linux): no session of its own for a child, no
    signal to a process group (it is killed by Popen.kill, TerminateProcess there), no select on its pipe."""
    from mmap_ninja.testing import processes

    monkeypatch.setattr(processes, "_PROCESS_GROUPS", False)

    def no_process_groups(*args: Any) -> None:
        raise AssertionError("the portable path signalled a process group")

    monkeypatch.setattr(os, "killpg", no_process_groups)


def test_the_crash_harness_kills_and_checks_without_process_groups(tmp_path: Path,
                                                                  without_process_groups: None) -> None:
    from mmap_ninja.testing import assert_holds, check_interleaved_batches, spec_for
    from mmap_ninja.testing.processes import (
        kill_build_at_random,
        kill_extender_at_random,
        run_concurrent_writers,
        writer_batches,
    )

    spec = spec_for("strings")
    path = tmp_path / "extended"
    spec.container.from_generator(path, spec.samples(0, 10), 4).close()
    outcome = kill_extender_at_random(spec, path, seed=3, max_delay=0.05)
    with spec.container(path, mode="r") as m:
        assert len(m) in outcome.allowed_lengths()
        assert_holds(spec, m, len(m))
    built = kill_build_at_random(spec, tmp_path / "built", batch_size=5, seed=4, max_delay=0.05)
    with spec.container(tmp_path / "built", allow_unfinished=True) as m:
        assert built.committed <= len(m) <= built.in_flight
    plans = [writer_batches(w, 2, 6, seed=5) for w in range(2)]
    run_concurrent_writers(spec, tmp_path / "shared", plans)
    with spec.container(tmp_path / "shared", mode="r") as m:
        check_interleaved_batches(spec, list(m), plans)


def test_the_portable_harness_tells_a_kill_from_an_exit(tmp_path: Path, without_process_groups: None) -> None:
    from mmap_ninja.testing import spec_for
    from mmap_ninja.testing.processes import _Child

    failing = _Child({"action": "no such action"}, tmp_path, "failing")
    try:
        with pytest.raises(AssertionError, match=r"(?s)failed before it was ready.*unknown child action"):
            failing.wait_ready()  # the thread that reads its pipe sees it close
        failing.kill()
        assert not failing.killed(), "a child that had exited on its own is reported as killed"
    finally:
        failing.close()
    waiting = _Child({"action": "write_batches", "spec": spec_for("strings"), "path": str(tmp_path / "m"),
                      "batches": [[0]]}, tmp_path, "waiting")  # ready, then waits for GO
    try:
        waiting.wait_ready()
        waiting.kill()
        assert waiting.killed() and waiting.process.returncode != 0
    finally:
        waiting.close()
