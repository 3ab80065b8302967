"""A sharded folder (what ``from_dask`` and ``merge`` build) opened as a single map, and a shard opened by its own
path: never an empty map, never a write that breaks the sharded map."""

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, ShardedMap, StringsMmap, merge, open_existing
from mmap_ninja.errors import KindMismatchError, MapError, ShardedFolderError
from mmap_ninja.kinds.numpy import open_existing as np_open_existing


@pytest.fixture
def sharded(tmp_path):
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3), np.arange(2)])
    RaggedMmap.from_lists(tmp_path / "b", [np.arange(4)])
    merge(tmp_path / "top", [tmp_path / "a", tmp_path / "b"])
    return tmp_path / "top"


@pytest.mark.parametrize("mode", ["r+", "r"])
def test_the_class_of_its_kind_names_the_sharded_map_instead_of_showing_an_empty_one(sharded, mode):
    before = sorted(p.name for p in sharded.iterdir())
    with pytest.raises(ShardedFolderError, match=r"holds a sharded map of 2 'ragged' shards .*ShardedMap\(.*"
                                                 r"open_existing\(") as caught:
        RaggedMmap(sharded, mode=mode)
    assert isinstance(caught.value, (MapError, KindMismatchError, TypeError))
    assert len(open_existing(sharded)) == 3 and len(ShardedMap(sharded)) == 3  # what the message proposes works
    assert sorted(p.name for p in sharded.iterdir()) == before  # nothing was created


def test_another_kind_is_told_what_the_folder_holds(sharded):
    with pytest.raises(ShardedFolderError, match=r"2 'ragged' shards, not a 'strings' map"):
        StringsMmap(sharded)
    with pytest.raises(ShardedFolderError, match=r"'ragged' shards, not a 'numpy' map"):
        np_open_existing(sharded)


def test_a_shard_opened_by_its_own_path_reads_but_refuses_writes(sharded):
    shard_path = sharded / ShardedMap(sharded).shards[0].path
    shard = RaggedMmap(shard_path)
    assert shard[1].tolist() == [0, 1]
    for write in (lambda: shard.append(np.arange(5)), lambda: shard.extend([np.arange(1)]),
                  lambda: shard.__setitem__(0, np.arange(3))):
        with pytest.raises(PermissionError, match=r"is a shard of the sharded map .*top.*add_shards"):
            write()
    with pytest.raises(PermissionError, match=r"is a shard of the sharded map"):
        RaggedMmap.from_lists(shard_path, [np.arange(1)], overwrite=True)  # refused before the build starts
    assert [m.tolist() for m in ShardedMap(sharded)] == [[0, 1, 2], [0, 1], [0, 1, 2, 3]]  # still whole


def test_a_map_beside_the_shards_that_is_not_listed_stays_writable(sharded):
    other = StringsMmap.from_strings(sharded / "shards" / "not-a-shard", ["x"])
    other.append("y")
    assert list(other) == ["x", "y"]
