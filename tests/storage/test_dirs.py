"""The directory toolkit (`mmap_ninja.storage.dirs`): the lock with a timeout, staging then rename then fsync, the sweep
of
what a killed process left, and the refusal of foreign files, on their own and through the writers that use them.

Every outcome here is decided by state, never by timing: a child process reports that it holds a lock or that its
stage exists before the test acts, and a killed child's locks are free once it has been waited for.
"""

import os

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, MapExistsError, MapLockedError, RaggedMmap, StringsMmap, merge
from mmap_ninja.storage import dirs
from mmap_ninja.testing.processes import kill_while_staging, lock_held_by_child

# ---------------------------------------------------------------------------------------------- the lock


def test_a_lock_held_by_another_process_times_out_naming_the_lock_file_and_the_wait(tmp_path):
    lock = tmp_path / "thing.lock"
    with lock_held_by_child(lock):
        assert dirs.is_held(lock) and dirs.is_held(lock, exclusively=True)
        with pytest.raises(MapLockedError, match=rf"the thing is locked by another writer \(waited 0 s for "
                                                 rf"{lock}\); try later"):
            dirs.hold_lock(lock, timeout=0, what="the thing", hint="try later")
        assert dirs.try_hold(lock) is None
        assert dirs.try_hold(lock, shared=True) is None
    assert not dirs.is_held(lock)  # the child was killed: the kernel dropped its lock
    fd = dirs.hold_lock(lock, timeout=0)
    dirs.release(fd)


def test_a_shared_holder_lets_other_readers_in_and_is_no_exclusive_holder(tmp_path):
    lock = tmp_path / "entry.lock"
    with lock_held_by_child(lock, shared=True):
        assert dirs.is_held(lock) and not dirs.is_held(lock, exclusively=True)
        fd = dirs.hold_lock(lock, shared=True, timeout=0)
        dirs.release(fd)
        with pytest.raises(MapLockedError, match=str(lock)):
            dirs.hold_lock(lock, timeout=0)


def test_a_map_whose_lock_another_process_holds_refuses_a_write_naming_the_map_and_its_lock_file(tmp_path):
    path = tmp_path / "m"
    StringsMmap.from_strings(path, ["a"]).close()
    with lock_held_by_child(path / dirs.LOCK_FILE), StringsMmap(path, lock_timeout=0) as m:
        with pytest.raises(MapLockedError, match=rf"{path} is locked by another writer \(waited 0 s for "
                                                 rf"{path / '.lock'}\); pass lock_timeout="):
            m.append("b")
        assert len(m) == 1
    with StringsMmap(path, lock_timeout=0) as m:  # the holder is gone
        m.append("b")
        assert list(m) == ["a", "b"]


def test_is_held_creates_nothing_and_says_no_for_a_missing_lock_file(tmp_path):
    assert not dirs.is_held(tmp_path / "missing.lock")
    assert not (tmp_path / "missing.lock").exists()


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    (tmp_path / "target").write_text("precious")
    os.symlink(tmp_path / "target", tmp_path / "link.lock")
    with pytest.raises(CorruptMapError, match="symbolic link"):  # never through a link
        dirs.hold_lock(tmp_path / "link.lock")
    assert (tmp_path / "target").read_text() == "precious"


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), True, "5"])
def test_a_bad_lock_timeout_is_refused(bad):
    with pytest.raises(ValueError, match="lock_timeout must be None"):
        dirs.check_lock_timeout(bad)


# ---------------------------------------------------------------------------------------------- stage, publish


def test_a_stage_is_published_whole_under_its_destination_and_leaves_no_staging_name(tmp_path):
    destination = tmp_path / "out"
    staged = dirs.stage(destination, ".converting-", guarded=True, make=True)
    assert staged.path.parent == tmp_path and staged.path.name.startswith(".out.converting-")
    assert dirs.is_held(tmp_path / f"{staged.path.name}.lock")
    (staged.path / "data.bin").write_bytes(b"12345")
    assert not destination.exists()
    staged.publish()
    staged.release()
    assert (destination / "data.bin").read_bytes() == b"12345"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_discarded_stage_leaves_nothing(tmp_path):
    staged = dirs.stage(tmp_path / "out", ".converting-", guarded=True, make=True)
    (staged.path / "data.bin").write_bytes(b"half")
    staged.discard()
    assert os.listdir(tmp_path) == []


def test_a_stage_in_a_staging_folder_takes_the_name_given(tmp_path):
    (tmp_path / "staging").mkdir()
    staged = dirs.stage(tmp_path / "entries" / "key", ".", folder=tmp_path / "staging", make=True)
    assert staged.path.parent == tmp_path / "staging" and staged.path.name.startswith("key.")
    (tmp_path / "entries").mkdir()
    staged.publish()
    assert os.listdir(tmp_path / "staging") == [] and (tmp_path / "entries" / "key").is_dir()


def test_replace_file_with_a_unique_name_leaves_no_temporary_file_even_when_it_fails(tmp_path):
    dirs.replace_file(tmp_path / "a.json", b"{}", durable=True, unique=True)
    assert os.listdir(tmp_path) == ["a.json"]
    with pytest.raises(TypeError):
        dirs.replace_file(tmp_path / "b.json", object(), durable=False, unique=True)  # fails once its file is open
    assert os.listdir(tmp_path) == ["a.json"]


# ---------------------------------------------------------------------------------------------- the sweep


def test_a_guarded_sweep_removes_what_a_killed_stager_left_and_keeps_live_stages(tmp_path):
    dead = kill_while_staging(tmp_path / "out", ".converting-", guarded=True)
    assert (dead / "partial.bin").exists() and (tmp_path / f"{dead.name}.lock").exists()
    live = dirs.stage(tmp_path / "out", ".converting-", guarded=True, make=True)  # a conversion still running
    (tmp_path / ".other.converting-0123456789ab").mkdir()  # another destination's: not named by the pattern
    (tmp_path / "notes.txt").write_text("the user's")
    removed = dirs.sweep(tmp_path, lambda name: name.startswith(".out.converting-"), guarded=True)
    assert removed == [dead.name]
    assert sorted(os.listdir(tmp_path)) == sorted([".other.converting-0123456789ab", "notes.txt", live.path.name,
                                                   f"{live.path.name}.lock"])
    live.discard()
    assert sorted(os.listdir(tmp_path)) == [".other.converting-0123456789ab", "notes.txt"]


def test_an_unguarded_sweep_under_the_callers_lock_removes_only_the_names_it_owns(tmp_path):
    dead = kill_while_staging(tmp_path / "part-00000", ".staging-", guarded=False)
    assert (dead / "partial.bin").exists()
    (tmp_path / "part-00001").mkdir()
    (tmp_path / "keep.staging-file").write_text("not hidden: not a stage's name")
    assert dirs.sweep(tmp_path, lambda name: name.startswith(".") and ".staging-" in name) == [dead.name]
    assert sorted(os.listdir(tmp_path)) == ["keep.staging-file", "part-00001"]
    assert dirs.sweep(tmp_path / "missing", lambda name: True) == []


def test_a_convert_killed_mid_staging_is_swept_by_the_next_convert_to_the_same_destination(tmp_path):
    from mmap_ninja import convert

    dead = kill_while_staging(tmp_path / "out", ".converting-", guarded=True)  # what a killed convert leaves
    (tmp_path / "lines.jsonl").write_text('"a"\n"b"\n')
    assert convert(tmp_path / "lines.jsonl", tmp_path / "out", verbose=False).length == 2
    assert not dead.exists() and sorted(os.listdir(tmp_path)) == ["lines.jsonl", "out"]


def test_remove_aside_deletes_a_folder_by_way_of_its_trash_name(tmp_path):
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "data.bin").write_bytes(b"x")
    assert dirs.remove_aside(tmp_path / "entry", tmp_path / ".trash-1")
    assert os.listdir(tmp_path) == []
    assert not dirs.remove_aside(tmp_path / "entry", tmp_path / ".trash-2")


# ---------------------------------------------------------------------------------------------- folders made


def test_make_folders_returns_the_outermost_folder_it_made_and_unmake_removes_only_those(tmp_path):
    (tmp_path / "a").mkdir()
    made = dirs.make_folders(tmp_path / "a" / "b" / "c")
    assert made == tmp_path / "a" / "b" and (tmp_path / "a" / "b" / "c").is_dir()
    assert dirs.make_folders(tmp_path / "a" / "b" / "c") is None  # existed: not this call's
    (tmp_path / "a" / "b" / "theirs.txt").write_text("x")
    dirs.unmake_folders(made, tmp_path / "a" / "b" / "c", only_empty=True)
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["theirs.txt"]  # stopped at someone else's file
    dirs.unmake_folders(made, tmp_path / "a" / "b" / "c")
    assert os.listdir(tmp_path / "a") == []


# ---------------------------------------------------------------------------------------------- foreign files


def test_refuse_foreign_names_every_foreign_file(tmp_path):
    for name in ("header.json", "b.txt", "a.txt"):
        (tmp_path / name).write_text("x")
    assert dirs.foreign_names(tmp_path, {"header.json"}) == ["a.txt", "b.txt"]
    with pytest.raises(ValueError, match=r"\['a.txt', 'b.txt'\]"):
        dirs.refuse_foreign(tmp_path, {"header.json"}, lambda foreign: ValueError(str(foreign)))
    dirs.refuse_foreign(tmp_path, lambda name: name.endswith((".json", ".txt")), ValueError)
    assert dirs.listed([str(k) for k in range(7)]) == "0, 1, 2, 3, 4, ..."


def test_a_map_is_not_created_among_foreign_files_and_the_error_names_them(tmp_path):
    for name in ("notes.txt", "photo.jpg"):
        (tmp_path / name).write_text("the user's")
    with pytest.raises(MapExistsError, match=r"it holds notes.txt, photo.jpg\); mmap_ninja never deletes"):
        RaggedMmap.from_lists(tmp_path, [np.arange(3)])
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "photo.jpg"]


def test_merge_into_a_folder_of_foreign_files_is_refused_naming_one(tmp_path):
    StringsMmap.from_strings(tmp_path / "a", ["x"]).close()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("the user's")
    with pytest.raises(MapExistsError, match=r"holds no sharded map \(found 'notes.txt'\)"):
        merge(tmp_path / "out", [tmp_path / "a"])
    assert os.listdir(tmp_path / "out") == ["notes.txt"] and (tmp_path / "a" / "header.json").exists()


def test_the_cache_sweeps_a_dead_download_and_fills_an_entry_through_a_stage(tmp_path):
    from mmap_ninja.adapters.cache import Cache

    cache = Cache(tmp_path / "cache")
    for folder in ("staging", "meta"):
        (tmp_path / "cache" / folder).mkdir(parents=True)
    (tmp_path / "cache" / "staging" / "k.0123abcd").mkdir()  # a downloader of entry k that died
    (tmp_path / "cache" / "staging" / "other.0123abcd").mkdir()  # another entry's: its own downloader sweeps it
    (tmp_path / "precious").write_text("mine")
    os.symlink(tmp_path / "precious", tmp_path / "cache" / "meta" / "k.json")  # written through by nothing
    entry, fd = cache.acquire("k", lambda stage: (stage / "data.bin").write_bytes(b"1"), about={"url": "memory://k"})
    dirs.release(fd)
    assert (entry / "data.bin").read_bytes() == b"1" and (tmp_path / "precious").read_text() == "mine"
    assert os.listdir(tmp_path / "cache" / "staging") == ["other.0123abcd"]
