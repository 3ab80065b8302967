"""``overwrite=True`` over a finished map builds the new one aside and swaps it in once complete
(`mmap_ninja.storage.replace`): a build that fails, or a process killed while building, leaves the old map exactly
as it was; a build that succeeds leaves only the new map, at the old map's path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, StringsMmap
from mmap_ninja.storage.format import read_header
from mmap_ninja.storage.replace import _exchange


def _snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _old_map(tmp_path: Path) -> Path:
    path = tmp_path / "keep"
    StringsMmap.from_strings(path, ["precious"] * 3, commit="rename").close()
    return path


@pytest.mark.parametrize("failure", ["bad sample", "generator raises later", "bad sample in a later batch"])
def test_a_failed_overwrite_leaves_the_old_map_exactly_as_it_was(tmp_path: Path, failure: str) -> None:
    path = _old_map(tmp_path)
    before, header_id = _snapshot(path), read_header(path).id

    def raising() -> object:
        yield from ["a", "b", "c"]
        raise RuntimeError("the source failed")

    with pytest.raises((TypeError, RuntimeError)):
        if failure == "bad sample":
            StringsMmap.from_strings(path, [None], overwrite=True)  # type: ignore[list-item]
        elif failure == "generator raises later":
            StringsMmap.from_generator(path, raising(), batch_size=1, overwrite=True)
        else:
            StringsMmap.from_generator(path, ["a", "b", 3], batch_size=1, overwrite=True)
    assert _snapshot(path) == before and read_header(path).id == header_id
    assert list(StringsMmap(path)) == ["precious"] * 3
    assert sorted(os.listdir(tmp_path)) == ["keep"]  # no stage left beside it


def test_a_successful_overwrite_leaves_only_the_new_map_at_the_path(tmp_path: Path) -> None:
    path = _old_map(tmp_path)
    reader = StringsMmap(path, mode="r")
    assert reader[0] == "precious"
    new = StringsMmap.from_strings(path, ["new", "map"], overwrite=True)
    assert new.path == path and list(new) == ["new", "map"]
    new.append("grows")  # the returned map is the one at the path, open for writing
    assert list(StringsMmap(path)) == ["new", "map", "grows"]
    assert sorted(os.listdir(tmp_path)) == ["keep"]
    if os.name != "nt":  # a reader of the old map keeps what it maps (its files unlinked, never truncated)
        assert reader[2] == "precious"
    assert reader.refresh() == 0 and list(reader) == ["new", "map", "grows"]  # as after a replacement in place


def test_a_folder_holding_other_files_is_replaced_in_place_and_keeps_them(tmp_path: Path) -> None:
    path = _old_map(tmp_path)
    (path / "notes.txt").write_text("mine")
    StringsMmap.from_strings(path, ["new"], overwrite=True).close()
    assert (path / "notes.txt").read_text() == "mine" and list(StringsMmap(path)) == ["new"]


def test_swapping_two_folders_exchanges_their_contents(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a").write_text("1")
    (second / "b").write_text("2")
    if _exchange(first, second):  # a system that swaps in one step
        assert os.listdir(first) == ["b"] and os.listdir(second) == ["a"]
    else:
        assert os.listdir(first) == ["a"] and os.listdir(second) == ["b"]  # nothing moved


_KILLED_WHILE_REPLACING = textwrap.dedent("""
    import sys
    import numpy as np
    from mmap_ninja import RaggedMmap

    def samples():
        yield np.arange(3)
        yield np.arange(4)  # the first batch is written when this is asked for
        print("ready", flush=True)
        sys.stdin.readline()  # killed while waiting here
        yield np.arange(5)

    RaggedMmap.from_generator(sys.argv[1], samples(), batch_size=1, overwrite=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
def test_a_process_killed_while_replacing_leaves_the_old_map(tmp_path: Path) -> None:
    path = tmp_path / "keep"
    RaggedMmap.from_lists(path, [np.arange(7)], commit="rename").close()
    before = _snapshot(path)
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WHILE_REPLACING, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                 sys.path)))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        stages = [name for name in os.listdir(tmp_path) if name.startswith(".keep.replacing-")]
        assert stages, "the replacement is built aside"
    finally:
        child.kill()
        child.wait()
    assert _snapshot(path) == before and np.array_equal(RaggedMmap(path)[0], np.arange(7))
    RaggedMmap.from_lists(path, [np.arange(2)], overwrite=True).close()  # sweeps the killed build's stage
    assert sorted(os.listdir(tmp_path)) == ["keep"] and np.array_equal(RaggedMmap(path)[0], np.arange(2))


def test_a_write_to_the_old_map_during_its_replacement_waits_and_is_never_lost(tmp_path: Path) -> None:
    """The replacement holds the old map's writer lock from its start: a write meanwhile waits, then raises
    `MapLockedError` (here inside the generator, so the replacement fails too and the old map stays whole)."""
    from mmap_ninja.errors import MapLockedError

    path = _old_map(tmp_path)
    writer = StringsMmap(path, lock_timeout=0.2)

    def samples() -> object:
        yield "new0"
        writer.append("written meanwhile")  # refused: never acknowledged, then lost to the swap
        yield "new1"

    with pytest.raises(MapLockedError):
        StringsMmap.from_generator(path, samples(), batch_size=1, overwrite=True)
    assert list(StringsMmap(path)) == ["precious"] * 3
    writer.append("after")
    assert list(StringsMmap(path)) == ["precious"] * 3 + ["after"]


def test_a_lock_whose_file_was_replaced_is_taken_again_on_the_current_file(tmp_path: Path) -> None:
    """A writer that waited for a lock file replaced meanwhile (a folder swapped away, a creation undone) holds the
    current lock file when `lock_directory` returns, whichever came first (the wait or the replacement)."""
    import threading

    from mmap_ninja.storage.dirs import _is_current, lock_directory, release

    folder = tmp_path / "map"
    folder.mkdir()
    held = lock_directory(folder, None)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(lock_directory(folder, None)))
    waiter.start()
    # One atomic rename, so that `.lock` exists at every instant: the waiter may open it before or after, never while
    # no lock file is there (a folder renamed away, then made again, left such an instant: the waiter then failed
    # with ENOENT about 1 run in 5).
    (folder / "new lock").touch()
    os.replace(folder / "new lock", folder / ".lock")
    assert not _is_current(held, folder / ".lock")  # the lock held is no longer the folder's
    release(held)
    waiter.join(timeout=600)
    assert got and _is_current(got[0], folder / ".lock")
    release(got[0])


def test_a_replacement_refused_before_its_build_starts_releases_the_old_map(tmp_path: Path) -> None:
    """A replacement refused before its first sample (an invalid option of the new map: here its commit protocol)
    leaves no stage and holds no lock: the old map is written at once."""
    path = _old_map(tmp_path)
    with pytest.raises(ValueError):
        StringsMmap.from_strings(path, ["new"], overwrite=True, commit="no such protocol")
    assert sorted(os.listdir(tmp_path)) == ["keep"]
    StringsMmap(path, lock_timeout=0).append("at once")
    assert list(StringsMmap(path)) == ["precious"] * 3 + ["at once"]
