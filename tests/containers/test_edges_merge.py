"""Merges and uploads at the edges (issue 20): shards keyed alike, shard lengths checked before an upload, and a
handle whose map a merge moved away."""

import shutil

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, MapMovedError, NotAMapError, RaggedMmap, RecordsMmap, merge, upload, verify
from mmap_ninja.containers.sharded import SchemaMismatchError

from tests.support import snapshot


def _rows(path, start, key=None):
    return RecordsMmap.from_dict(path, {"id": [f"k{i}" for i in range(start, start + 3)],
                                        "n": list(range(start, start + 3))}, key=key)


def test_merge_refuses_maps_keyed_by_different_fields_naming_both(tmp_path):
    _rows(tmp_path / "a", 0, key="id").close()
    _rows(tmp_path / "b", 3, key="n").close()
    before = snapshot(tmp_path)
    with pytest.raises(SchemaMismatchError, match=r"keyed by the field 'n', the other by 'id'"):
        merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"])
    assert snapshot(tmp_path) == before and not (tmp_path / "s").exists()


def test_merge_refuses_a_mix_of_keyed_and_unkeyed_maps(tmp_path):
    _rows(tmp_path / "a", 0, key="id").close()
    _rows(tmp_path / "b", 3).close()
    with pytest.raises(SchemaMismatchError, match=r"keyed by the field 'id' and .*b has no key"):
        merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"])
    merge(tmp_path / "s", [tmp_path / "a"])
    with pytest.raises(SchemaMismatchError, match=r"keyed by the field 'id' and .*b has no key"):
        merge(tmp_path / "s", [tmp_path / "b"])  # appending to a keyed sharded map
    _rows(tmp_path / "c", 6, key="id").close()
    s = merge(tmp_path / "s", [tmp_path / "c"])
    assert s.index_of("k7") == 4


def test_upload_refuses_a_shard_whose_length_differs_from_shards_json(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    for k in range(2):
        RaggedMmap.from_lists(tmp_path / f"p{k}", [np.arange(k + 1)]).close()
    merge(tmp_path / "s", [tmp_path / "p0", tmp_path / "p1"])
    # Changed behind the sharded map's back (a shard refuses writes at its own path, so grow a copy and put its
    # files back, as a hand-made edit would): the shard keeps its id, and shards.json still says 1 sample.
    shard_dir = tmp_path / "s" / "shards" / "shard-000001"
    shutil.copytree(shard_dir, tmp_path / "grown")
    with RaggedMmap(tmp_path / "grown") as grown:
        grown.append(np.arange(5))
    for path in (tmp_path / "grown").iterdir():
        shutil.copyfile(path, shard_dir / path.name)
    assert not verify(tmp_path / "s").ok
    url = "memory://edges-upload/lengths"
    with pytest.raises(CorruptMapError, match=r"shard-000001 holds 2 samples, but its sharded map lists 1"):
        upload(tmp_path / "s", url)
    assert not fsspec.filesystem("memory").exists("/edges-upload/lengths")


def test_a_handle_whose_map_was_merged_away_says_where_it_went(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "a", [np.arange(3)])
    assert m[0].tolist() == [0, 1, 2]
    RaggedMmap.from_lists(tmp_path / "b", [np.arange(2)]).close()
    merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(MapMovedError, match=r"a was moved or deleted .* now at .*s/shards/shard-000000"):
        m.append(np.arange(2))
    with pytest.raises(MapMovedError, match="moved or deleted"):
        m.refresh()
    assert isinstance(MapMovedError("x"), NotAMapError) and isinstance(MapMovedError("x"), FileNotFoundError)
    m.close()
    assert not (tmp_path / "a").exists()  # nothing was created at the old path


def test_a_handle_whose_map_was_deleted_says_so(tmp_path):
    import shutil

    m = RaggedMmap.from_lists(tmp_path / "a", [np.arange(3)])
    shutil.rmtree(tmp_path / "a")
    with pytest.raises(MapMovedError, match=r"was moved or deleted .*merge\(\) moves maps"):
        m.append(np.arange(2))
    m.close()
