"""Sharded maps: reading many maps as one, merging by rename, adding shards, crashes during a merge."""

import inspect
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import ChecksumMismatchError, CorruptMapError, NotAMapError, RaggedMmap, StringsMmap, np_from_ndarray
from mmap_ninja.containers.sharded import (
    SHARDS_FILE,
    SchemaMismatchError,
    ShardedMap,
    is_sharded,
    merge,
    recover_merge,
)
from mmap_ninja.kinds.codecs import Zstd
from mmap_ninja.storage.format import read_header

from tests.support import build, equal, snapshot
from tests.support import sample_for as kit_sample

SRC = str(Path(__file__).resolve().parents[2] / "src")
SIZES = [3, 5, 1, 4]


def sample_for(kind, i):
    """Sample i of a kind: ragged samples of shapes (i % 4 + 1, 2) in int32, numpy (2, 3) float32, which the
    batch tests below rely on."""
    if kind == "ragged":
        return np.full((i % 4 + 1, 2), i, dtype=np.int32)
    if kind == "numpy":
        return np.full((2, 3), i, dtype=np.float32)
    return kit_sample(kind, i)


def make_shards(kind, root, sizes=SIZES):
    """Maps of ``sizes`` samples each; the samples of all of them, in order, are ``sample_for(kind, 0..)``."""
    paths, first = [], 0
    for k, n in enumerate(sizes):
        path = root / f"src{k}"
        samples = [sample_for(kind, first + i) for i in range(n)]
        if kind == "strings":
            StringsMmap.from_strings(path, samples).close()
        elif kind == "ragged":
            RaggedMmap.from_lists(path, samples).close()
        else:
            np_from_ndarray(path, np.stack(samples)).close()
        paths.append(path)
        first += n
    return paths, [sample_for(kind, i) for i in range(first)]


# ------------------------------------------------------------------ reading


def test_reads_like_one_map(tmp_path, kind):
    paths, expected = make_shards(kind, tmp_path)
    m = merge(tmp_path / "out", paths)
    assert len(m) == len(expected) == 13
    assert all(equal(m[i], expected[i]) for i in range(len(m)))
    assert equal(m[-1], expected[-1]) and equal(m[-13], expected[0])
    assert equal(m[np.int64(4)], expected[4]) and equal(m[np.array(8)], expected[8])
    one = np_from_ndarray(tmp_path / "one", np.stack(expected)) if kind == "numpy" else None
    mask = np.arange(13) % 3 == 0
    for index in [slice(2, 11), slice(None, None, -3), [12, 0, 3, 3, -1], np.array([8, 9], dtype=np.uint8), mask]:
        got, want = m[index], [expected[i] for i in np.arange(13)[index]]
        if one is None:
            assert isinstance(got, list) and len(got) == len(want) and all(map(equal, got, want))
        else:  # numpy samples: one array, as the single map gives (tests/containers/test_sharded_numpy_indexing.py)
            single = one[index]
            assert type(got) is type(single) is np.ndarray and got.dtype == single.dtype
            assert got.flags.writeable == single.flags.writeable
            np.testing.assert_array_equal(got, single)
            np.testing.assert_array_equal(got, np.stack(want))
    assert all(map(equal, m.__getitems__([4, 2, 9]), [expected[4], expected[2], expected[9]]))
    assert all(map(equal, list(m), expected)) and len(list(m)) == 13
    assert m.kind == kind and m.shard_starts == [0, 3, 8, 9, 13]
    assert [s.length for s in m.shards] == SIZES
    for bad in (13, -14):
        with pytest.raises(IndexError, match=f"index {bad} is out of range .* length 13"):
            m[bad]
    with pytest.raises(IndexError):
        m[[0, 13]]
    with pytest.raises(TypeError, match="boolean scalar"):
        m[True]


def test_maps_are_moved_not_copied(tmp_path):
    paths, _ = make_shards("ragged", tmp_path)
    inodes = [os.stat(p / "data.bin").st_ino for p in paths]
    m = merge(tmp_path / "out", paths)
    assert not any(p.exists() for p in paths)
    moved = [m.path / s.path / "data.bin" for s in m.shards]
    assert [os.stat(p).st_ino for p in moved] == inodes
    assert all(not Path(s.path).is_absolute() for s in m.shards)
    assert is_sharded(m.path) and not is_sharded(m.path / m.shards[0].path)


def test_a_moved_sharded_map_still_reads(tmp_path):
    paths, expected = make_shards("strings", tmp_path)
    merge(tmp_path / "out", paths).close()
    os.rename(tmp_path / "out", tmp_path / "elsewhere")
    assert list(ShardedMap(tmp_path / "elsewhere")) == expected


def test_opening_reads_only_the_header_and_opens_shards_lazily(tmp_path):
    paths, expected = make_shards("ragged", tmp_path)
    m = merge(tmp_path / "out", paths)
    fresh = ShardedMap(m.path)
    assert fresh.open_shards == 0
    assert equal(fresh[10], expected[10])
    assert fresh.open_shards == 1


def test_at_most_max_open_shards_are_open(tmp_path):
    paths, expected = make_shards("strings", tmp_path, [2] * 10)
    m = ShardedMap(merge(tmp_path / "out", paths).path, max_open_shards=3)
    order = np.random.default_rng(0).permutation(len(m)).tolist()
    for i in order:
        assert m[i] == expected[i]
        assert m.open_shards <= 3
    assert m[order] == [expected[i] for i in order] and m.open_shards <= 3
    with pytest.raises(ValueError, match="max_open_shards"):
        ShardedMap(m.path, max_open_shards=0)


def test_threads_reading_while_shards_are_evicted(tmp_path):
    paths, expected = make_shards("ragged", tmp_path, [3] * 12)
    m = ShardedMap(merge(tmp_path / "out", paths).path, max_open_shards=2)
    errors = []

    def read(seed):
        rng = np.random.default_rng(seed)
        try:
            for i in rng.integers(0, len(m), 500).tolist():
                assert equal(m[i], expected[i])
        except Exception as e:  # collected: a thread's exception would otherwise be lost
            errors.append(e)

    threads = [threading.Thread(target=read, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_get_batch_across_shards(tmp_path):
    paths, expected = make_shards("ragged", tmp_path)
    m = merge(tmp_path / "out", paths)
    indices = [0, 12, 4, 8, 1]
    padded, lengths = m.get_batch(indices, pad_value=-1)
    single = RaggedMmap.from_lists(tmp_path / "single", expected)
    want_padded, want_lengths = single.get_batch(indices, pad_value=-1)
    assert np.array_equal(padded, want_padded) and np.array_equal(lengths, want_lengths)
    out = np.zeros((5, 6, 3), dtype=np.int32)
    m.get_batch(indices, pad_value=7, out=out)
    assert np.array_equal(out, single.get_batch(indices, pad_value=7, out=np.zeros((5, 6, 3), np.int32))[0])
    same_shape = [0, 4, 8, 12]  # i % 4 == 0: all of shape (1, 2), in three shards
    assert np.array_equal(m.get_batch(same_shape), single.get_batch(same_shape))
    with pytest.raises(ValueError, match=r"item 0 has shape .* item 1 has shape"):
        m.get_batch([0, 1])
    with pytest.raises(ValueError, match=r"cannot stack .* item 0 has shape \(1, 2\) and item 5 has shape \(2, 2\)"):
        m.get_batch([0, 5])


def test_get_batch_numpy_and_strings(tmp_path):
    paths, expected = make_shards("numpy", tmp_path / "n")
    m = merge(tmp_path / "n" / "out", paths)
    assert np.array_equal(m.get_batch([12, 0, 5]), np.stack([expected[12], expected[0], expected[5]]))
    spaths, _ = make_shards("strings", tmp_path / "s")
    with pytest.raises(TypeError, match="no get_batch"):
        merge(tmp_path / "s" / "out", spaths).get_batch([0])


def test_pickles_as_its_path(tmp_path):
    paths, expected = make_shards("ragged", tmp_path, [50] * 20)
    m = merge(tmp_path / "out", paths)
    m[999]
    blob = pickle.dumps(m)
    assert len(blob) < 500
    copy = pickle.loads(blob)
    assert copy.open_shards == 0 and len(copy) == 1000 and equal(copy[999], expected[999])


def test_wrapper_fn(tmp_path):
    paths, expected = make_shards("ragged", tmp_path)
    m = ShardedMap(merge(tmp_path / "out", paths).path, wrapper_fn=lambda a: a * 2)
    assert equal(m[3], expected[3] * 2)
    assert all(map(equal, m[[1, 9]], [expected[1] * 2, expected[9] * 2]))
    assert all(map(equal, list(m), [e * 2 for e in expected]))


def test_wrapper_fn_set_after_opening_and_taken_back(tmp_path):
    paths, expected = make_shards("ragged", tmp_path)
    m = ShardedMap(merge(tmp_path / "out", paths).path)
    assert equal(m[3], expected[3])  # shard open: the next read takes the fast path
    m.wrapper_fn = lambda a: a * 2
    assert equal(m[3], expected[3] * 2) and equal(m[-1], expected[-1] * 2)
    m.wrapper_fn = None
    assert equal(m[3], expected[3])


def test_every_position_and_the_ends_with_empty_shards_between(tmp_path):
    paths, expected = make_shards("strings", tmp_path, [0, 2, 0, 0, 3, 1, 0])
    m = ShardedMap(merge(tmp_path / "out", paths).path)
    for _ in range(2):  # the first round opens the shards, the second reads the open ones
        assert [m[i] for i in range(len(m))] == expected
        assert [m[i] for i in range(-len(m), 0)] == expected
        for bad in (len(m), len(m) + 5, -len(m) - 1):
            with pytest.raises(IndexError, match="out of range"):
                m[bad]
    m.close()
    assert m.open_shards == 0 and m[5] == expected[5]  # closed shards reopen on the next read


def test_a_replaced_or_grown_shard_is_reported(tmp_path):
    paths, _ = make_shards("strings", tmp_path)
    m = merge(tmp_path / "out", paths)
    shard_dir = m.path / m.shards[1].path
    with pytest.raises(PermissionError, match="is a shard of the sharded map"):
        StringsMmap(shard_dir).append("one more")  # refused in place; grown elsewhere and put back, it is reported
    shard_dir.rename(tmp_path / "grown")
    with StringsMmap(tmp_path / "grown") as grown:  # closed before the move back: Windows moves no held file
        grown.append("one more")
    (tmp_path / "grown").rename(shard_dir)
    with pytest.raises(CorruptMapError, match=r"shard 1 .* holds 6 samples, but shards.json records 5"):
        ShardedMap(m.path)[4]
    with pytest.raises(PermissionError, match="is a shard of the sharded map"):
        StringsMmap.from_strings(shard_dir, ["x"] * 5, overwrite=True)  # refused before anything changes
    StringsMmap.from_strings(tmp_path / "other", ["x"] * 5).close()
    shutil.rmtree(shard_dir)
    (tmp_path / "other").rename(shard_dir)
    with pytest.raises(CorruptMapError, match=r"shard 1 .* was replaced"):
        ShardedMap(m.path)[4]


def test_damaged_header_is_refused(tmp_path):
    paths, _ = make_shards("strings", tmp_path)
    m = merge(tmp_path / "out", paths)
    header = m.path / SHARDS_FILE
    content = json.loads(header.read_text())
    content["length"] = 99
    header.write_text(json.dumps(content))
    with pytest.raises(CorruptMapError, match="checksum"):
        ShardedMap(m.path)
    del content["checksum"]
    content["shards"][0]["path"] = "../src0"
    header.write_text(json.dumps(content))
    with pytest.raises(CorruptMapError, match="relative 'path' inside the map"):
        ShardedMap(m.path)
    with pytest.raises(NotAMapError, match="no sharded map"):
        ShardedMap(tmp_path)


# ------------------------------------------------------------------ merging: refusals leave everything as it was


def _assert_refused(tmp_path, paths, error, match, **kwargs):
    before = snapshot(tmp_path)
    with pytest.raises(error, match=match):
        merge(tmp_path / "out", paths, **kwargs)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_merge_refuses_another_kind(tmp_path):
    paths, _ = make_shards("ragged", tmp_path)
    build("strings", tmp_path / "strings", 3).close()
    _assert_refused(tmp_path, [*paths, tmp_path / "strings"], SchemaMismatchError,
                    r"strings cannot be merged with .*src0: it has kind 'strings' instead of 'ragged'")


def test_merge_refuses_another_dtype_shape_or_codec(tmp_path):
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3, dtype=np.int32)]).close()
    RaggedMmap.from_lists(tmp_path / "b", [np.arange(3, dtype=np.float32)]).close()
    _assert_refused(tmp_path, [tmp_path / "a", tmp_path / "b"], SchemaMismatchError,
                    r"b .*dtype '<f4' instead of '<i4'")
    RaggedMmap.from_lists(tmp_path / "c", [np.arange(3, dtype=np.int32)], codec=Zstd(level=3)).close()
    _assert_refused(tmp_path, [tmp_path / "a", tmp_path / "c"], SchemaMismatchError, r"c .*codec")
    np_from_ndarray(tmp_path / "d", np.zeros((2, 3), np.float32)).close()
    np_from_ndarray(tmp_path / "e", np.zeros((2, 4), np.float32)).close()
    _assert_refused(tmp_path, [tmp_path / "d", tmp_path / "e"], SchemaMismatchError, r"e .*sample_shape \[4\]")


def test_merge_accepts_shards_differing_only_in_derived_attributes(tmp_path):
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3, dtype=np.int32)]).close()
    RaggedMmap.from_lists(tmp_path / "b", [np.zeros((2, 2), dtype=np.int32)]).close()  # ndims [2], not [1]
    RaggedMmap.from_lists(tmp_path / "empty", [], dtype=np.int32).close()
    m = merge(tmp_path / "out", [tmp_path / "a", tmp_path / "empty", tmp_path / "b"])
    assert len(m) == 2 and m[1].shape == (2, 2) and m.dtype == np.int32


def test_merge_refuses_bad_inputs(tmp_path):
    paths, _ = make_shards("strings", tmp_path)
    _assert_refused(tmp_path, [paths[0], paths[0]], ValueError, "given twice")
    _assert_refused(tmp_path, [paths[0], tmp_path / "missing"], NotAMapError, "missing")
    with StringsMmap.build(tmp_path / "unfinished") as unfinished:
        unfinished.append("a")
        _assert_refused(tmp_path, [paths[0], tmp_path / "unfinished"], ValueError, "unfinished build")
    _assert_refused(tmp_path, [], ValueError, "at least one map")
    with pytest.raises(TypeError, match="sequence of map paths"):
        merge(tmp_path / "out", str(paths[0]))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=r"notes.txt"):
        merge(tmp_path / "busy", paths)
    assert snapshot(tmp_path) == before


def test_a_refused_merge_leaves_no_folder_it_made(tmp_path):
    paths, _ = make_shards("strings", tmp_path)
    with pytest.raises(NotAMapError, match="missing"):
        merge(tmp_path / "new" / "deeper" / "out", [paths[0], tmp_path / "missing"])
    assert not (tmp_path / "new").exists()  # not even the parent folders merge made for out_dir
    with pytest.raises(ValueError, match="lies inside the map"):
        merge(paths[0] / "sub" / "out", [paths[0]])
    assert not (paths[0] / "sub").exists()  # nothing left inside the map that was refused either


def test_a_symbolic_link_to_a_map_is_refused_unless_copied(tmp_path):
    # Renaming a link moves the link, not the map: the relative link dangled inside the sharded map.
    paths, expected = make_shards("strings", tmp_path)
    (tmp_path / "link").symlink_to(paths[0].name)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"link is a symbolic link to .*src0.* copy=True"):
        merge(tmp_path / "out", [tmp_path / "link"])
    assert snapshot(tmp_path) == before and (tmp_path / "link").is_symlink() and not (tmp_path / "out").exists()
    m = merge(tmp_path / "out", [tmp_path / "link"], copy=True)
    assert list(m) == expected[:3] and not (m.path / m.shards[0].path).is_symlink()


def test_merge_across_file_systems_needs_copy(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    elsewhere = shm / f"mmap_ninja_test_{os.getpid()}"
    try:
        StringsMmap.from_strings(elsewhere, ["far", "away"]).close()
        local, _ = make_shards("strings", tmp_path, [2])
        before = snapshot(elsewhere)
        with pytest.raises(OSError, match=r"another file system .* copy=True"):
            merge(tmp_path / "out", [local[0], elsewhere])
        assert local[0].exists() and snapshot(elsewhere) == before and not (tmp_path / "out").exists()
        m = merge(tmp_path / "out", [local[0], elsewhere], copy=True)
        assert list(m) == [sample_for("strings", 0), sample_for("strings", 1), "far", "away"]
        assert snapshot(elsewhere) == before  # the original stays where it was
    finally:
        import shutil

        shutil.rmtree(elsewhere, ignore_errors=True)


# ------------------------------------------------------------------ adding shards


def test_add_shards_and_refresh(tmp_path):
    paths, expected = make_shards("ragged", tmp_path)
    m = merge(tmp_path / "out", paths[:2])
    reader = ShardedMap(m.path, mode="r")
    m.add_shards(paths[2:])
    assert len(m) == 13 and all(equal(m[i], expected[i]) for i in range(13))
    assert len(reader) == 8  # a snapshot until refresh()
    assert reader.refresh() == 5 and equal(reader[12], expected[12])
    with pytest.raises(PermissionError, match="mode='r'"):
        reader.add_shards([])
    RaggedMmap.from_lists(tmp_path / "floats", [np.zeros(2, np.float64)]).close()
    before = snapshot(tmp_path)
    with pytest.raises(SchemaMismatchError, match=r"floats .* dtype '<f8' instead of '<i4'"):
        m.add_shards([tmp_path / "floats"])
    assert snapshot(tmp_path) == before


def test_merge_into_an_existing_sharded_map_by_path(tmp_path):
    paths, expected = make_shards("strings", tmp_path)
    merge(tmp_path / "out", paths[:1])
    m = merge(tmp_path / "out", paths[1:], metadata={"source": "test"})
    assert list(m) == expected and m.metadata == {"source": "test"}
    assert len({s.path for s in m.shards}) == 4


# ------------------------------------------------------------------ a merge killed midway


_KILL_AFTER = """
import os, signal, sys
sys.path.insert(0, {src!r})
from mmap_ninja.containers.sharded import merge
calls = [0]
real_{name} = os.{name}
def dying_{name}(*args, **kwargs):
    calls[0] += 1
    if calls[0] > {allowed}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_{name}(*args, **kwargs)
os.{name} = dying_{name}
merge({out!r}, {paths!r})
"""


def _merge_killed(out, paths, name, allowed):
    code = _KILL_AFTER.format(src=SRC, name=name, allowed=allowed, out=str(out), paths=[str(p) for p in paths])
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert result.returncode == -9, result.stderr


def test_a_merge_killed_midway_leaves_the_old_map_and_is_undone(tmp_path, kind):
    paths, expected = make_shards(kind, tmp_path)
    merge(tmp_path / "out", paths[:1]).close()
    # os.rename moves the maps (the journal and the header use os.replace): die after moving two of three.
    _merge_killed(tmp_path / "out", paths[1:], "rename", 2)
    old = ShardedMap(tmp_path / "out")
    assert len(old) == 3 and all(equal(old[i], expected[i]) for i in range(3))
    assert not paths[1].exists() and not paths[2].exists()  # moved before the kill
    assert recover_merge(tmp_path / "out") == 2
    assert all(p.exists() for p in paths[1:])
    m = merge(tmp_path / "out", paths[1:])
    assert len(m) == 13 and all(equal(m[i], expected[i]) for i in range(13))


def test_a_merge_killed_before_its_first_header_leaves_the_maps_recoverable(tmp_path):
    paths, expected = make_shards("strings", tmp_path)
    _merge_killed(tmp_path / "out", paths, "rename", 1)
    with pytest.raises(NotAMapError):
        ShardedMap(tmp_path / "out")
    m = merge(tmp_path / "out", paths)  # undoes the dead merge first, then merges
    assert list(m) == expected


def test_a_merge_killed_after_publishing_keeps_the_new_map(tmp_path):
    paths, expected = make_shards("strings", tmp_path)
    _merge_killed(tmp_path / "out", paths, "unlink", 0)  # killed when removing its journal
    assert list(ShardedMap(tmp_path / "out")) == expected
    assert recover_merge(tmp_path / "out") == 0
    assert list(ShardedMap(tmp_path / "out")) == expected and not any(p.exists() for p in paths)


# ------------------------------------------------------------------ many shards, few files


@pytest.mark.parametrize(("n_shards", "max_open", "file_limit"), [
    (300, 16, 128),
    pytest.param(1000, 64, 1024, marks=pytest.mark.slow),  # the case: a thousand shards, the usual 1,024
])
def test_many_shards_with_few_open_files(tmp_path, n_shards, max_open, file_limit):
    n = 2 * n_shards
    code = textwrap.dedent(f"""
        import os, resource, sys
        sys.path.insert(0, {SRC!r})
        import numpy as np
        from mmap_ninja import StringsMmap
        from mmap_ninja.containers.sharded import ShardedMap, merge
        resource.setrlimit(resource.RLIMIT_NOFILE, ({file_limit}, {file_limit}))
        root = {str(tmp_path)!r}
        paths = []
        for k in range({n_shards}):
            StringsMmap.from_strings(f"{{root}}/m{{k}}", [f"{{k}}-a", f"{{k}}-b"]).close()
            paths.append(f"{{root}}/m{{k}}")
        m = ShardedMap(merge(f"{{root}}/out", paths).path, max_open_shards={max_open})
        order = np.random.default_rng(1).permutation({n}).tolist()
        for i in order:
            assert m[i] == f"{{i // 2}}-{{'ab'[i % 2]}}", i
        assert m[order[:500]] == [m[i] for i in order[:500]]
        assert list(m) == [f"{{i // 2}}-{{'ab'[i % 2]}}" for i in range({n})]
        mapped = {{line.split()[-1] for line in open("/proc/self/maps") if root in line}}
        print(len(os.listdir("/proc/self/fd")), len(mapped), m.open_shards)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fds, mapped_files, open_shards = map(int, result.stdout.split())
    # Per open strings shard: a read-only descriptor for each of its 3 columns (data, offsets, checksums: a handle
    # keeps reading its own files if the map is replaced) and one more per mapping (Python's mmap keeps one).
    assert open_shards == max_open
    assert mapped_files <= max_open * 2 and fds <= max_open * 5 + 16


# ------------------------------------------------------------------ the shard-aware DDP sampler


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("lengths", "world_size"), [
    ([50] * 20, 3),
    ([37, 5, 120, 64, 64, 1, 0, 80, 33], 4),
    ([7], 3),
    ([10, 10], 2),
    ([1, 0, 1], 5),  # more ranks than samples: padded (or all dropped) as DistributedSampler does
    ([0, 0], 2),  # only empty shards
])
def test_shard_aware_sampler_covers_every_index_with_equal_lengths(lengths, world_size, drop_last):
    from torch.utils.data import DistributedSampler

    from mmap_ninja.adapters.shards import shard_aware_indices

    n = sum(lengths)
    reference = DistributedSampler(range(n), num_replicas=world_size, rank=0, drop_last=drop_last)
    for epoch in (0, 1):
        per_rank = [shard_aware_indices(lengths, rank=r, world_size=world_size, epoch=epoch, seed=5,
                                        drop_last=drop_last) for r in range(world_size)]
        assert {len(p) for p in per_rank} == {len(reference)}
        together = np.concatenate(per_rank)
        counts = np.bincount(together, minlength=n)
        assert not len(together) or (together.min() >= 0 and together.max() < n)
        if drop_last:
            assert (counts <= 1).all() and n - (counts == 1).sum() == n - len(reference) * world_size
        else:
            assert (counts >= 1).all()  # every index, and only DistributedSampler's padding repeated
            assert (counts - 1).sum() == len(reference) * world_size - n


def test_shard_aware_sampler_gives_whole_shards_and_is_deterministic(tmp_path):
    from mmap_ninja.adapters.shards import ShardAwareSampler

    paths, _ = make_shards("strings", tmp_path, [50] * 20)
    m = merge(tmp_path / "out", paths)
    samplers = [ShardAwareSampler(m, rank=r, world_size=3, seed=1) for r in range(3)]
    starts = np.asarray(m.shard_starts)
    for sampler in samplers:
        sampler.set_epoch(2)
        indices = np.asarray(list(sampler))
        assert len(indices) == len(sampler) == 334
        shard_of = np.searchsorted(starts, indices, side="right") - 1
        whole = [k for k in set(shard_of.tolist()) if (shard_of == k).sum() == 50]
        assert len(whole) * 50 >= 0.85 * len(indices)  # most of a rank's samples come from shards it reads whole
    again = ShardAwareSampler(m, rank=1, world_size=3, seed=1)
    again.set_epoch(2)
    assert list(again) == list(samplers[1])
    again.set_epoch(3)
    assert list(again) != list(samplers[1])
    unshuffled = ShardAwareSampler(m, rank=0, world_size=3, shuffle=False)
    first = list(unshuffled)[:50]
    assert first == list(range(50))
    with pytest.raises(ValueError, match="rank must be in"):
        ShardAwareSampler(m, rank=3, world_size=3)


def test_shard_aware_sampler_in_a_dataloader(tmp_path):
    from torch.utils.data import DataLoader

    from mmap_ninja.adapters.shards import ShardAwareSampler

    paths, expected = make_shards("strings", tmp_path, [6] * 5)
    m = merge(tmp_path / "out", paths)
    loader = DataLoader(m, batch_size=4, sampler=ShardAwareSampler(m, rank=0, world_size=2), num_workers=2,
                        collate_fn=list)
    got = [s for batch in loader for s in batch]
    assert len(got) == 15 and set(got) <= set(expected)


_DDP_RANK = """
import json, sys
import torch.distributed as dist
from mmap_ninja.adapters.shards import ShardAwareSampler
from mmap_ninja.containers.sharded import ShardedMap

path, store, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
sampler = ShardAwareSampler(ShardedMap(path, mode="r"), seed=7)  # rank and world size from the process group
print(json.dumps([sampler.rank, sampler.world_size, list(sampler)]))
dist.destroy_process_group()
"""


def test_shard_aware_sampler_takes_rank_and_world_size_from_the_process_group(tmp_path):
    # As DistributedSampler (and RankSampler) do; without a process group: rank 0 of 1.
    from mmap_ninja.adapters.shards import ShardAwareSampler

    paths, _ = make_shards("strings", tmp_path, [6, 4, 5])
    m = merge(tmp_path / "out", paths)
    alone = ShardAwareSampler(m)
    assert (alone.rank, alone.world_size, len(alone)) == (0, 1, 15)
    env = {**os.environ, "PYTHONPATH": SRC}
    runs = [subprocess.Popen([sys.executable, "-c", _DDP_RANK, str(m.path), str(tmp_path / "store"), str(rank)],
                             stdout=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    results = [json.loads(run.communicate(timeout=600)[0]) for run in runs]  # torch's import may take minutes
    for rank, (got_rank, world_size, indices) in enumerate(results):
        assert (got_rank, world_size) == (rank, 2)
        assert indices == list(ShardAwareSampler(m, rank=rank, world_size=2, seed=7))


def test_publish_shards_checks_every_shard(tmp_path):
    from mmap_ninja.containers.sharded import directory_lock, publish_shards

    out = tmp_path / "out"
    RaggedMmap.from_lists(out / "shards" / "a", [np.arange(3, dtype=np.int32)]).close()
    RaggedMmap.from_lists(out / "shards" / "b", [np.arange(2, dtype=np.int64)]).close()
    with directory_lock(out), pytest.raises(SchemaMismatchError, match=r"b cannot be published .* dtype '<i8'"):
        publish_shards(out, ["shards/a", "shards/b"], "ragged")
    assert not (out / SHARDS_FILE).exists()
    with directory_lock(out):
        m = publish_shards(out, ["shards/a"], "ragged", extra={"source": "test"})
    assert len(m) == 1 and json.loads((out / SHARDS_FILE).read_text())["source"] == "test"
    with directory_lock(out), pytest.raises(SchemaMismatchError, match="holds a 'ragged' map, not a 'strings'"):
        publish_shards(out, ["shards/a"], "strings")


# ------------------------------------------------------------------ get_batch of every kind

from mmap_ninja.testing import specs as kit_specs  # noqa: E402

BATCH_SIZES = [7, 9, 2, 6]  # 24 samples: indices i and i + 20 hold images of one shape


def _same_batch(got, want):
    if isinstance(want, (tuple, list)):
        return type(got) is type(want) and len(got) == len(want) and all(map(_same_batch, got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and list(got) == list(want) and all(_same_batch(got[k], want[k]) for k in want)
    return equal(got, want)


def _outcome(method, *args, **kwargs):
    try:
        return method(*args, **kwargs)
    except (ValueError, TypeError) as e:
        return type(e)


@pytest.mark.parametrize("spec", kit_specs(), ids=lambda s: s.name)
def test_get_batch_of_every_kind_equals_a_single_map(tmp_path, spec):
    paths, first = [], 0
    for k, n in enumerate(BATCH_SIZES):
        spec.container.from_generator(tmp_path / f"src{k}", spec.samples(first, first + n), 4,
                                      **spec.build_options).close()
        paths.append(tmp_path / f"src{k}")
        first += n
    single = spec.container.from_generator(tmp_path / "single", spec.samples(0, first), 4, **spec.build_options)
    m = merge(tmp_path / "out", paths)
    if not hasattr(single, "get_batch"):
        with pytest.raises(TypeError, match="no get_batch"):
            m.get_batch([0, 10])
        return
    stackable = [[2, 22], [0, 12, 18], [20, 2, 11]]  # shared shapes (images / records / ragged), across shards
    mixed = [[0, 23, 8, 9, 1], [3, 4, 5], slice(1, 20, 4), np.arange(24) % 5 == 1, [], [16, 16, 7]]
    options = [{}, {"pad_value": 0}]
    if spec.kind == "records":  # a pad value for one paddable field, two fields padded alike, one field alone
        names = list(single.fields)
        paddable = [name for name, field in single.schema.items() if field.kind in ("ragged", "images")]
        options += [{"pad_value": {paddable[0]: -1}}, {"fields": names[:2], "pad_value": 3}, {"fields": names[-1:]}]
    if spec.kind == "images":
        options += [{"threads": 2}, {"pad_value": 9, "threads": 2}]
    for indices in stackable + mixed:
        for kwargs in options:
            want = _outcome(single.get_batch, indices, **kwargs)
            got = _outcome(m.get_batch, indices, **kwargs)
            assert got is want if isinstance(want, type) else _same_batch(got, want), (indices, kwargs)
    stacked = [indices for indices in stackable if not isinstance(_outcome(m.get_batch, indices), type)]
    assert stacked  # each kind stacks samples from several shards somewhere
    if "out" in inspect.signature(single.get_batch).parameters:
        for indices, kwargs in [(stacked[0], {}), ([3, 21, 9, 6], {"pad_value": 5})]:  # one ndim
            want = single.get_batch(indices, **kwargs)
            shape = (want[0] if kwargs else want).shape
            bigger = (shape[0], *(s + 2 for s in shape[1:])) if kwargs else shape
            out = np.full(bigger, 1, dtype=(want[0] if kwargs else want).dtype)
            got = m.get_batch(indices, out=out, **kwargs)
            reference = single.get_batch(indices, out=np.full(bigger, 1, dtype=out.dtype), **kwargs)
            assert (got[0] if kwargs else got) is out and _same_batch(got, reference)
        with pytest.raises(ValueError, match="out has shape"):
            m.get_batch(stacked[0], out=np.empty((3, 1), dtype=out.dtype))
    with pytest.raises(TypeError, match="unexpected keyword"):
        m.get_batch([0, 10], no_such_option=1)


# ------------------------------------------------------------------ merging: what is schema, per kind


def test_images_of_different_formats_and_writers_merge(tmp_path):
    from mmap_ninja import ImagesMmap

    rgb = np.full((4, 5, 3), 200, np.uint8)
    rgba = np.arange(4 * 6 * 4, dtype=np.uint8).reshape(4, 6, 4)
    ImagesMmap.from_generator(tmp_path / "jpeg", [rgb, rgb], 2, format="jpeg", quality=80).close()
    ImagesMmap.from_generator(tmp_path / "png", [rgba], 2, format="png", verify=True).close()
    assert ImagesMmap(tmp_path / "jpeg").formats != ImagesMmap(tmp_path / "png").formats
    m = merge(tmp_path / "out", [tmp_path / "jpeg", tmp_path / "png"])
    assert len(m) == 3 and m[0].shape == (4, 5, 3) and np.array_equal(m[2], rgba)
    assert "formats" not in m.attrs and "encode" not in m.attrs


def _records(path, tokens, schema=None, **kwargs):
    from mmap_ninja import RecordsMmap

    schema = schema or {"text": "strings", "tokens": ("ragged", "int32"), "label": ("scalar", "int64")}
    kinds = {name: spec if isinstance(spec, str) else spec[0] for name, spec in schema.items()}
    values = {"strings": lambda i, t: f"row {i}", "ragged": lambda i, t: t, "scalar": lambda i, t: i}
    rows = [{name: values[kind](i, t) for name, kind in kinds.items()} for i, t in enumerate(tokens)]
    return RecordsMmap.from_generator(path, rows, 8, schema=schema, **kwargs)


def test_records_whose_ragged_field_differs_only_in_ndims_merge(tmp_path):
    _records(tmp_path / "flat", [np.arange(3, dtype=np.int32), np.arange(1, dtype=np.int32)]).close()
    _records(tmp_path / "grid", [np.zeros((2, 2), np.int32)]).close()
    _records(tmp_path / "empty", []).close()
    ndims = [read_header(tmp_path / p).attrs["fields"]["tokens"]["attrs"]["ndims"] for p in ("flat", "grid")]
    assert ndims[0] != ndims[1]
    m = merge(tmp_path / "out", [tmp_path / "flat", tmp_path / "empty", tmp_path / "grid"])
    assert len(m) == 3 and m[2]["tokens"].shape == (2, 2) and m[1]["text"] == "row 1"
    assert m.attrs["fields"]["tokens"] == {"kind": "ragged", "attrs": {"dtype": "<i4"}}


def test_records_with_another_field_dtype_codec_name_or_order_are_refused(tmp_path):
    _records(tmp_path / "a", [np.arange(3, dtype=np.int32)]).close()
    _records(tmp_path / "dtype", [np.arange(3, dtype=np.int64)],
             {"text": "strings", "tokens": ("ragged", "int64"), "label": ("scalar", "int64")}).close()
    _assert_refused(tmp_path, [tmp_path / "a", tmp_path / "dtype"], SchemaMismatchError,
                    r"dtype cannot be merged with .*a: it has fields\.tokens\.attrs\.dtype '<i8' instead of '<i4'")
    _records(tmp_path / "codec", [np.arange(3, dtype=np.int32)],
             {"text": "strings", "tokens": ("ragged", "int32", Zstd(level=3)), "label": ("scalar", "int64")}).close()
    _assert_refused(tmp_path, [tmp_path / "a", tmp_path / "codec"], SchemaMismatchError,
                    r"codec cannot be merged .*: it has fields\.tokens\.attrs\.codec \{.*zstd.*\}, which the other")
    _records(tmp_path / "renamed", [np.arange(3, dtype=np.int32)],
             {"text": "strings", "ids": ("ragged", "int32"), "label": ("scalar", "int64")}).close()
    _assert_refused(tmp_path, [tmp_path / "a", tmp_path / "renamed"], SchemaMismatchError, r"no fields\.tokens")
    _records(tmp_path / "order", [np.arange(3, dtype=np.int32)],
             {"tokens": ("ragged", "int32"), "text": "strings", "label": ("scalar", "int64")}).close()
    _assert_refused(tmp_path, [tmp_path / "a", tmp_path / "order"], SchemaMismatchError,
                    r"fields in the order \['tokens', 'text', 'label'\] instead of \['text', 'tokens', 'label'\]")
    m = merge(tmp_path / "out", [tmp_path / "a"])  # appending checks against the sharded map's schema too
    before = snapshot(tmp_path)
    with pytest.raises(SchemaMismatchError, match=r"fields\.tokens\.attrs\.dtype '<i8' instead of '<i4'"):
        m.add_shards([tmp_path / "dtype"])
    assert snapshot(tmp_path) == before and len(ShardedMap(m.path)) == 1


def test_shard_options_reach_every_shard_and_survive_pickling(tmp_path):
    first = StringsMmap.from_strings(tmp_path / "a", ["alpha", "beta"])
    StringsMmap.from_strings(tmp_path / "b", ["gamma", "delta"]).close()
    first.close()
    m = merge(tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    m.close()
    data = tmp_path / "out" / m.shards[1].path / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[raw.index(b"gamma")] ^= 0x20  # "Gamma": the same size, so only a checksum can tell
    data.write_bytes(bytes(raw))
    assert ShardedMap(tmp_path / "out")[2] == "Gamma"  # reads stay unchecked by default
    checked = ShardedMap(tmp_path / "out", verify_reads=True)
    assert checked[0] == "alpha"
    with pytest.raises(ChecksumMismatchError, match=r"data\.bin"):
        checked[2]
    with pytest.raises(ChecksumMismatchError):
        pickle.loads(pickle.dumps(checked))[3]
    with pytest.raises(TypeError, match="no_such_option"):
        ShardedMap(tmp_path / "out", no_such_option=1)


@pytest.mark.parametrize("kind", ["records", "zstd"])
def test_add_shards_of_maps_whose_headers_require_features(tmp_path, kind):
    # A records map (and a compressed map) lists features in its header's requires; the sharded map's own
    # requires stays empty, so appending must compare the shards with a shard, not with the top header.
    from mmap_ninja import RecordsMmap

    def make(name, start, n):
        path = tmp_path / name
        if kind == "records":
            RecordsMmap.from_dict(path, {"label": np.arange(start, start + n)}).close()
        else:
            RaggedMmap.from_lists(path, [np.arange(i, i + 3) for i in range(start, start + n)], codec=Zstd()).close()
        return path

    m = merge(tmp_path / "out", [make("a", 0, 3)])
    m.add_shards([make("b", 3, 2)])
    assert len(m) == 5 and len(ShardedMap(tmp_path / "out").shards) == 2
    first = m[4]["label"] if kind == "records" else m[4][0]
    assert first == 4


def test_keys_of_records_shards_are_looked_up_across_shards(tmp_path):
    # A records map built with key= answers `in` and index_of(); a sharded map of such maps must answer the same
    # (it used to scan every row comparing row dicts with the key, and say False).
    from mmap_ninja import RecordsMmap

    RecordsMmap.from_dict(tmp_path / "a", {"path": ["a.jpg", "b.jpg"], "label": np.array([3, 5])}, key="path").close()
    RecordsMmap.from_dict(tmp_path / "b", {"path": ["c.jpg"], "label": np.array([7])}, key="path").close()
    m = merge(tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    assert "c.jpg" in m and "b.jpg" in m and "z.jpg" not in m and 4 not in m
    assert m.index_of("c.jpg") == 2 and m[m.index_of("b.jpg")]["label"] == 5
    with pytest.raises(KeyError, match=r"'z\.jpg'"):
        m.index_of("z.jpg")
    RecordsMmap.from_dict(tmp_path / "c", {"path": ["d.jpg"], "label": np.array([1])}).close()  # no key
    unkeyed = merge(tmp_path / "unkeyed", [tmp_path / "c"])
    with pytest.raises(TypeError, match=r"shard 0 .* has no key field"):
        unkeyed.index_of("d.jpg")
    StringsMmap.from_strings(tmp_path / "w", ["x", "y"]).close()  # merge moves no map a handle holds on Windows
    strings = merge(tmp_path / "words", [tmp_path / "w"])
    assert "y" in strings and "q" not in strings  # other kinds: a sample equal to it, as a single map
    with pytest.raises(AttributeError, match="index_of"):
        strings.index_of("y")


def test_a_map_of_mmap_ninja_090_is_refused_by_merge_with_the_way_to_convert_it(legacy_maps, tmp_path):
    source = tmp_path / "old"
    shutil.copytree(legacy_maps["strings"], source)
    before = snapshot(tmp_path)
    with pytest.raises(NotAMapError, match=r"old is a map of mmap_ninja 0\.9\.0; convert it first"):
        merge(tmp_path / "out", [source])
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_url_given_where_a_local_directory_is_written_is_refused(tmp_path):
    # Maps are written locally and published with upload(); a URL used to become a local folder named "s3:".
    paths, _ = make_shards("strings", tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"s3://bucket/out is a URL, not a local path: .*mmap_ninja\.upload"):
        merge("s3://bucket/out", paths)
    with pytest.raises(ValueError, match=r"s3://bucket/out is a URL"):
        ShardedMap("s3://bucket/out")
    with pytest.raises(ValueError, match=r"memory://b/words is a URL"):
        StringsMmap.from_strings("memory://b/words", ["a"])
    assert snapshot(tmp_path) == before and not list(Path.cwd().glob("*:"))


def test_merges_racing_to_create_one_sharded_map_both_land(tmp_path):
    # Two merges into the same new directory at once: the second waits for the first's lock and appends (it used
    # to fail with "File exists" when the other made the directory between its check and its mkdir).
    failures = []
    for attempt in range(20):
        names = [f"{side}{attempt}" for side in "ab"]
        for name in names:
            StringsMmap.from_strings(tmp_path / name, [name]).close()
        barrier = threading.Barrier(2)

        def run(name, attempt=attempt, barrier=barrier):
            barrier.wait()
            try:
                # the other merge may hold the lock for seconds on a loaded machine: the wait is bounded only
                # against a hang (the default, 5 s, would let the load decide)
                merge(tmp_path / f"out{attempt}", [tmp_path / name], lock_timeout=600)
            except Exception as e:  # collected, asserted below
                failures.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=run, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(ShardedMap(tmp_path / f"out{attempt}")) == sorted(names) or failures
    assert failures == []
