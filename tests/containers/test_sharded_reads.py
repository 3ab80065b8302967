"""A sharded map reads through its shards' containers: their read options (an images map's ``channels``,
``verify_reads``), their exceptions, and a bounded number of open files whatever the shards hold."""

import contextlib
import gc
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import ImagesMmap, RaggedMmap
from mmap_ninja.containers.sharded import ShardedMap, merge
from mmap_ninja.errors import MapError
from mmap_ninja.storage.checksums import ChecksumMismatchError
from mmap_ninja.testing.registry import image_sample

SRC = str(Path(__file__).resolve().parents[2] / "src")


def flip(path, position):
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))


def images_sharded(root, sizes=(3, 4)):
    paths, first = [], 0
    for k, size in enumerate(sizes):
        ImagesMmap.from_generator(root / f"part{k}", [image_sample(first + i) for i in range(size)], 8).close()
        paths.append(root / f"part{k}")
        first += size
    return merge(root / "s", paths).path


def test_every_read_honours_the_shards_read_options(tmp_path):
    path = images_sharded(tmp_path)
    m = ShardedMap(path, channels=1)
    batch = m.get_batch([0, 1], pad_value=0)[0]
    assert batch.shape[-1] == 1
    for i in (0, 4, -1):  # the hot path (an int), its slow path (a negative int) and np.int64
        assert m[i].shape[-1] == 1, i
        assert m[np.int64(i)].shape[-1] == 1
    assert [s.shape[-1] for s in m[[0, 5, 2]]] == [1, 1, 1]
    assert [s.shape[-1] for s in m] == [1] * len(m)
    one = ImagesMmap(tmp_path / "s" / m.shards[1].path, channels=1, mode="r")
    np.testing.assert_array_equal(m[4], one[1])
    plain = ShardedMap(path)
    assert plain[0].shape[-1] == 4  # each image's own channels (RGBA) without the option


def test_verify_reads_covers_the_hot_path_and_get_batch_keeps_the_exception_class(tmp_path):
    samples = [np.arange(i + 1, dtype=np.int32) for i in range(8)]
    RaggedMmap.from_lists(tmp_path / "a", samples[:4]).close()
    RaggedMmap.from_lists(tmp_path / "b", samples[4:]).close()
    path = merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"]).path
    shard_b = path / ShardedMap(path).shards[1].path
    flip(shard_b / "data.bin", 0)  # sample 4 (the first of shard 1)
    m = ShardedMap(path, verify_reads=True)
    np.testing.assert_array_equal(m[0], samples[0])
    with pytest.raises(ChecksumMismatchError):
        m[4]
    with pytest.raises(ChecksumMismatchError):
        m.get_batch([0, 4], pad_value=0)  # two shards: each shard's batch, then joined
    with pytest.raises(MapError):
        m.get_batch([4, 5], pad_value=0)
    with pytest.raises(ChecksumMismatchError):
        m[[1, 4]]


def records_rows(first, n):
    return [{**{f"text{j}": f"row {first + i} field {j}" for j in range(3)},
             **{f"tokens{j}": np.arange((first + i) % 5 + 1, dtype=np.int32) + j for j in range(3)},
             **{f"score{j}": np.float32(first + i + j) for j in range(3)}} for i in range(n)]


def test_a_sharded_map_holds_at_most_max_open_files_descriptors(tmp_path):
    from mmap_ninja import RecordsMmap
    from mmap_ninja.containers.sharded import DEFAULT_MAX_OPEN_FILES

    paths = []
    for k in range(6):
        RecordsMmap.from_generator(tmp_path / f"p{k}", records_rows(3 * k, 3), 8).close()
        paths.append(tmp_path / f"p{k}")
    path = merge(tmp_path / "s", paths).path
    m = ShardedMap(path, max_open_files=40)
    rows = list(m)
    assert len(rows) == 18 and rows[17]["text2"] == "row 17 field 2"
    assert 0 < m.open_files <= 40 and m.open_shards < 6
    assert m[5]["tokens1"].tolist() == (np.arange(5 % 5 + 1) + 1).tolist()
    assert ShardedMap(path).open_files == 0 and DEFAULT_MAX_OPEN_FILES <= 256
    with pytest.raises(ValueError, match="max_open_files must be a positive integer"):
        ShardedMap(path, max_open_files=0)


def test_iterating_nine_fields_over_many_shards_under_a_low_file_limit(tmp_path):
    # 9 fields (22 column files) per shard, 36 shards: at 2 descriptors per column and 64 shards kept open, a
    # sharded map needed about 1,200 descriptors and failed at shard 20 under the usual limit of 1,024.
    code = textwrap.dedent(f"""
        import os, resource, sys
        sys.path.insert(0, {SRC!r})
        import numpy as np
        from mmap_ninja import RecordsMmap
        from mmap_ninja.containers.sharded import ShardedMap, merge
        root = {str(tmp_path)!r}
{textwrap.indent(inspect.getsource(records_rows), "        ")}
        paths = []
        for k in range(36):
            RecordsMmap.from_generator(f"{{root}}/p{{k}}", records_rows(2 * k, 2), 8).close()
            paths.append(f"{{root}}/p{{k}}")
        merge(f"{{root}}/s", paths).close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (320, 320))
        m = ShardedMap(f"{{root}}/s")
        for i, row in enumerate(m):
            assert row["text0"] == f"row {{i}} field 0", i
        batch = m.get_batch(list(range(0, 72, 5)), pad_value=0)
        assert list(batch[0]["text1"]) == [f"row {{i}} field 1" for i in range(0, 72, 5)]
        print(m.open_files, len(os.listdir("/proc/self/fd")))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from mmap_ninja.containers.sharded import DEFAULT_MAX_OPEN_FILES

    held, fds = map(int, result.stdout.split())
    assert held <= DEFAULT_MAX_OPEN_FILES and fds <= DEFAULT_MAX_OPEN_FILES + 40


def _fds(root):
    """How many descriptors this process holds on files under ``root``: a map's own, whatever other threads of the
    test session open or close meanwhile (the Dask cluster's scheduler and nannies in this process read /proc and
    open sockets on their own schedule). A collection first, so that no earlier handle in a reference cycle is
    closed by a collector pass in the middle of a count."""
    gc.collect()
    root = os.path.realpath(root) + os.sep
    held = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since the listing
            held += os.readlink(f"/proc/self/fd/{name}").startswith(root)
    return held


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts this process's descriptors in /proc")
def test_max_open_files_counts_the_reader_locks_of_slot_shards(tmp_path):
    # Each open slot map holds its generation's reader lock (.readers-<id>) besides its columns: a sharded map of
    # slot maps must count it, or it keeps a third more descriptors open than its budget.
    paths = []
    for k in range(8):
        RaggedMmap.from_generator(tmp_path / f"p{k}", [np.arange(k + i, dtype=np.int32) for i in range(1, 4)],
                                  commit="slots").close()
        paths.append(tmp_path / f"p{k}")
    path = merge(tmp_path / "s", paths).path
    shards = sorted((path / "shards").iterdir())
    assert len(shards) == 8 and all((folder / "header.slots").is_file() for folder in shards)
    shard = RaggedMmap(shards[0], mode="r")
    shard[0]
    assert shard.release_files() == 3  # data and offsets mapped, and the reader lock
    shard.close()
    before = _fds(tmp_path)
    m = ShardedMap(path, max_open_files=8)
    assert sum(int(sample.size) for sample in m) == sum(k + i for k in range(8) for i in range(1, 4))
    for k in (7, 0, 5, 2):
        assert m[3 * k + 2].tolist() == list(range(k + 3))
    assert 0 < m.open_files <= 8 and m.open_shards == 2
    assert _fds(tmp_path) - before <= 8  # what it really holds: its columns' mappings and the shards' reader locks
    m.close()
    assert _fds(tmp_path) == before


def test_a_handle_whose_descriptors_were_released_still_refreshes_and_grows(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.arange(3), np.arange(4)])
    reader = RaggedMmap(tmp_path / "r", mode="r")
    reader[0]
    before = _fds(tmp_path)
    held = reader.release_files()
    # 5 columns: 2 mapped by a read of a 1-D map (data, offsets), each with its own descriptor and its mapping's;
    # shape_offsets and dims (mapped when a batch needs shapes) and checksums (read only by verify_reads) are not
    # mapped: the 5 own descriptors are closed, the 2 mappings' stay.
    assert before - _fds(tmp_path) == 5 and held == 2
    m.extend([np.arange(50) for _ in range(100)])  # the files grow past the mappings: they are opened again
    assert reader.refresh() == 100 and reader[101].tolist() == list(range(50)) and reader[1].tolist() == [0, 1, 2, 3]
    released = RaggedMmap(tmp_path / "r", mode="r")
    released[0]
    assert released.release_files() == 2
    released.get_batch([0, 1], pad_value=0)  # maps the shape columns now: opened for that, closed once mapped
    assert released.open_files_held() == 4  # data, offsets, shape_offsets, dims: their mappings' descriptors only
    checked = RaggedMmap(tmp_path / "r", mode="r", verify_reads=True)
    checked.release_files()
    assert checked[101].tolist() == list(range(50))  # the checksums column, released unmapped, is opened again
