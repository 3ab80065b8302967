"""The Windows-semantics mode (mmap_ninja.testing.windows_semantics): it refuses, on Linux, what Windows refuses
(renaming, deleting or cutting a file that a process of the test holds) and allows what Windows allows."""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmap_ninja.storage import locks
from mmap_ninja.testing import windows_semantics as ws

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the mode reads /proc")


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 16)
    return path


def _holder_child(path: Path, how: str) -> subprocess.Popen[str]:
    """A child process (started in the mode, so it joins it) that holds ``path`` (``open`` or ``map``) until its
    stdin closes; returns once it holds it."""
    code = ("import mmap, sys\n"
            "import mmap_ninja\n"
            f"f = open({str(path)!r}, 'rb')\n"
            f"m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if {how!r} == 'map' else None\n"
            f"if {how!r} == 'map': f.close()\n"
            "print('HOLDING', flush=True)\n"
            "sys.stdin.read()\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "HOLDING"
    return child


def _release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait(60) == 0


# ---------------------------------------------------------------------------------------------- refused

@pytest.mark.parametrize("operation", ["unlink", "remove", "Path.unlink", "rename away", "replace away",
                                       "replace over", "rename over"])
def test_a_file_open_in_this_process_cannot_be_renamed_or_deleted(data_file: Path, operation: str) -> None:
    other = data_file.with_name("other.bin")
    other.write_bytes(b"other")
    calls = {
        "unlink": lambda: os.unlink(data_file), "remove": lambda: os.remove(data_file),
        "Path.unlink": data_file.unlink, "rename away": lambda: os.rename(data_file, data_file.with_name("moved")),
        "replace away": lambda: os.replace(data_file, data_file.with_name("moved")),
        "replace over": lambda: os.replace(other, data_file),
        "rename over": lambda: Path(other).rename(data_file)}  # POSIX rename replaces, as os.replace
    with ws.windows_semantics(), open(data_file, "rb"):
        with pytest.raises(PermissionError, match=r"WinError 32.*held by this process \(descriptor \d+\)") as caught:
            calls[operation]()
        assert caught.value.winerror == 32 and isinstance(caught.value, ws.WindowsSharingError)
    assert data_file.read_bytes()[:4] == bytes(range(4)) and other.exists(), "the refused call changed something"
    calls[operation]()  # allowed once nobody holds it


def test_a_mapped_file_is_held_after_its_descriptor_is_closed(data_file: Path) -> None:
    with ws.windows_semantics():
        with open(data_file, "rb") as f:
            mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        assert any(h.how == "mapping" for h in ws.holders(data_file))
        with pytest.raises(PermissionError, match=r"WinError 32.*mapping"):
            os.unlink(data_file)
        with pytest.raises(PermissionError, match="WinError 1224") as caught:
            os.truncate(data_file, 100)
        assert caught.value.winerror == 1224
        fd = os.open(data_file, os.O_RDWR)
        try:
            with pytest.raises(PermissionError, match=r"WinError 1224.*ftruncate to 0 of 4096 bytes"):
                os.ftruncate(fd, 0)
            os.ftruncate(fd, 8192)  # growing a mapped file is allowed on Windows
            assert data_file.stat().st_size == 8192
        finally:
            os.close(fd)
        mapping.close()
        os.truncate(data_file, 100)
        os.unlink(data_file)


def test_an_open_but_unmapped_file_can_be_cut(data_file: Path) -> None:
    """Windows cuts files that other handles hold open (Python shares read and write), just not mapped ones."""
    with ws.windows_semantics(), open(data_file, "rb"):
        os.truncate(data_file, 10)
        assert data_file.stat().st_size == 10


def test_a_folder_holding_an_open_file_cannot_be_renamed(tmp_path: Path) -> None:
    folder = tmp_path / "entry"
    (folder / "inner").mkdir(parents=True)
    held = folder / "inner" / "column.bin"
    held.write_bytes(b"1234")
    (folder / "free.bin").write_bytes(b"5678")
    with ws.windows_semantics():
        with open(held, "rb"):
            with pytest.raises(PermissionError, match=r"WinError 32.*column\.bin"):
                os.rename(folder, tmp_path / "trash")
            shutil.rmtree(folder, ignore_errors=True)  # as on Windows: what is held stays, the rest goes
            assert held.exists() and not (folder / "free.bin").exists()
            with pytest.raises(PermissionError):
                shutil.rmtree(folder)
        os.rename(folder, tmp_path / "trash")
        shutil.rmtree(tmp_path / "trash")


def test_the_current_directory_holds_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inside = tmp_path / "a" / "b"
    inside.mkdir(parents=True)
    monkeypatch.chdir(inside)
    with ws.windows_semantics(), pytest.raises(PermissionError, match="current directory"):
        os.rename(tmp_path / "a", tmp_path / "c")


@pytest.mark.parametrize("how", ["open", "map"])
def test_a_file_another_process_of_the_test_holds_is_refused(data_file: Path, how: str) -> None:
    with ws.windows_semantics():
        child = _holder_child(data_file, how)
        try:
            replacement = data_file.with_name("x")
            replacement.write_bytes(b"")
            with pytest.raises(PermissionError, match=rf"held by process {child.pid} "):
                os.replace(replacement, data_file)
            if how == "map":
                with pytest.raises(PermissionError, match="WinError 1224"):
                    os.truncate(data_file, 1)
            else:
                os.truncate(data_file, 4000)
        finally:
            _release(child)
        os.unlink(data_file)


def test_a_child_process_joins_the_mode_and_sees_the_parents_handles(data_file: Path) -> None:
    code = ("import os, sys\n"
            "import mmap_ninja\n"
            "from mmap_ninja.testing import windows_semantics as ws\n"
            "assert ws.active(), 'the child did not join the mode'\n"
            "try:\n"
            "    os.unlink(sys.argv[1])\n"
            "except PermissionError as e:\n"
            "    print('REFUSED', e)\n")
    with ws.windows_semantics(), open(data_file, "rb"):
        done = subprocess.run([sys.executable, "-c", code, str(data_file)], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("REFUSED") and f"held by process {os.getpid()}" in done.stdout, done.stdout
    assert data_file.exists()


def test_a_forked_child_registers_itself(data_file: Path) -> None:
    with ws.windows_semantics():
        read, write = os.pipe()
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: hold the file until told to exit
            held = open(data_file, "rb")  # noqa: SIM115
            os.write(write, b"x")
            os.read(go_read, 1)
            held.close()
            os._exit(0)
        try:
            assert os.read(read, 1) == b"x"
            with pytest.raises(PermissionError, match=f"held by process {pid} "):
                os.unlink(data_file)
        finally:
            os.write(go_write, b"x")
            os.waitpid(pid, 0)
            for fd in (read, write, go_read, go_write):
                os.close(fd)
        os.unlink(data_file)


def test_the_variable_set_to_1_starts_the_mode_in_a_fresh_process(data_file: Path) -> None:
    code = ("import os, sys\n"
            "import mmap_ninja\n"
            "from mmap_ninja.testing import windows_semantics as ws\n"
            "registry = os.environ[ws.ENVIRONMENT_VARIABLE]\n"
            "assert ws.active() and os.path.isdir(registry), registry\n"
            "f = open(sys.argv[1], 'rb')\n"
            "try:\n"
            "    os.unlink(sys.argv[1])\n"
            "except PermissionError:\n"
            "    print(registry)\n")
    assert not ws.active()
    env = dict(os.environ, **{ws.ENVIRONMENT_VARIABLE: "1"})
    done = subprocess.run([sys.executable, "-c", code, str(data_file)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert not os.path.exists(done.stdout.strip()), "the process that made the registry leaves it behind"


# ---------------------------------------------------------------------------------------------- allowed

def test_what_windows_allows_is_allowed(tmp_path: Path, data_file: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(data_file)
    new = tmp_path / "new.bin"
    new.write_bytes(b"new")
    with ws.windows_semantics(), open(data_file, "rb"):
        os.unlink(link)  # a link is not the file it points to
        os.replace(new, tmp_path / "renamed.bin")  # nobody holds either name
        with pytest.raises(FileNotFoundError):
            os.unlink(tmp_path / "missing")  # the call's own error, unchanged
        fd = os.open(tmp_path / "renamed.bin", os.O_RDWR)
        try:
            os.ftruncate(fd, 1)  # this process's own descriptor does not stop it: only a mapping would
        finally:
            os.close(fd)
        os.unlink(tmp_path / "renamed.bin")


def test_off_means_posix_again(data_file: Path) -> None:
    original_unlink = os.unlink
    with ws.windows_semantics() as registry:
        assert os.unlink is not original_unlink and registry.is_dir()
        assert os.environ[ws.ENVIRONMENT_VARIABLE] == str(registry)
    assert os.unlink is original_unlink and not registry.exists() and ws.ENVIRONMENT_VARIABLE not in os.environ
    with open(data_file, "rb"):
        os.unlink(data_file)


# ---------------------------------------------------------------------------------------------- locks

def test_locks_behave_as_on_windows(tmp_path: Path) -> None:
    lock_file = tmp_path / ".lock"
    first = os.open(lock_file, os.O_RDWR | os.O_CREAT)
    second = os.open(lock_file, os.O_RDWR)
    try:
        assert locks.try_lock(first, shared=True)
        assert locks.try_lock(first), "flock converts a handle's own lock (the check below must differ)"
        os.close(first)  # releases it
        first = os.open(lock_file, os.O_RDWR)
        with ws.windows_semantics():
            assert locks.facility() == "portalocker (Windows-semantics mode)"
            assert locks.try_lock(first, shared=True)
            assert locks.try_lock(first, shared=True), "a shared lock may overlap this handle's shared lock"
            assert not locks.try_lock(first), "LockFileEx: an exclusive lock overlaps no lock, this handle's neither"
            assert not locks.try_lock(second), "a second handle of the same process"
            assert locks.try_lock(second, shared=True)
            assert not locks.lock(second, timeout=0)
        assert locks.facility() in ("fcntl.flock", "portalocker")
    finally:
        os.close(first)
        os.close(second)


# -------------------------------------------------------------------------------- the library's Windows paths

def _parts(tmp_path: Path) -> list[Path]:
    from mmap_ninja import StringsMmap

    parts = [tmp_path / name for name in ("a", "b")]
    for number, part in enumerate(parts):
        StringsMmap.from_strings(part, [f"{number}-{i}" for i in range(3)]).close()
    return parts


def test_merge_moves_maps_where_a_folder_holding_an_open_lock_cannot_be_renamed(tmp_path: Path,
                                                                               windows_semantics_mode: Path) -> None:
    from mmap_ninja import merge

    with merge(tmp_path / "all", _parts(tmp_path)) as merged:
        assert list(merged) == [f"{n}-{i}" for n in range(2) for i in range(3)]


def test_merge_is_refused_whole_while_a_source_is_held(tmp_path: Path, windows_semantics_mode: Path) -> None:
    from mmap_ninja import StringsMmap, merge

    parts = _parts(tmp_path)
    reader = StringsMmap(parts[1], mode="r")
    assert reader[0] == "1-0"  # maps its files
    with pytest.raises(PermissionError, match="WinError 32"):
        merge(tmp_path / "all", parts)
    for number, part in enumerate(parts):  # all or nothing: both maps are back where they were
        with StringsMmap(part, mode="r") as m:
            assert list(m) == [f"{number}-{i}" for i in range(3)]
    reader.close()
    with merge(tmp_path / "all", parts) as merged:
        assert len(merged) == 6


def test_a_refused_merge_leaves_no_folder_where_a_held_lock_cannot_be_deleted(tmp_path: Path,
                                                                            windows_semantics_mode: Path) -> None:
    from mmap_ninja import merge
    from mmap_ninja.errors import NotAMapError

    parts = _parts(tmp_path)
    with pytest.raises(NotAMapError, match="missing"):
        merge(tmp_path / "new" / "out", [parts[0], tmp_path / "missing"])
    assert not (tmp_path / "new").exists()


class ModeProbe:
    """A dataset whose items say, from a DataLoader worker, whether the worker is in the mode and whether it may
    delete a file the test process holds open."""

    def __init__(self, held: str):
        self.held = held
        self.holder = os.getpid()  # the test process (under forkserver, a worker's parent is the fork server)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[bool, int, str]:
        try:
            os.rename(self.held, self.held)  # a rename onto itself: refused while held, a no-op otherwise
            verdict = "allowed"
        except PermissionError as e:
            verdict = "refused" if f"held by process {self.holder} " in str(e) else str(e)
        return ws.active(), os.getpid(), verdict


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_dataloader_workers_join_the_mode(data_file: Path, method: str) -> None:
    torch_data = pytest.importorskip("torch.utils.data")
    with ws.windows_semantics(), open(data_file, "rb"):
        loader = torch_data.DataLoader(ModeProbe(str(data_file)), batch_size=None, num_workers=2,
                                       multiprocessing_context=method)
        seen = list(loader)
    assert [(active, verdict) for active, _, verdict in seen] == [(True, "refused")] * 2, seen
    assert all(pid != os.getpid() for _, pid, _ in seen)
