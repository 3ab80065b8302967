"""Merging maps that differ only in their commit protocol (issue 18, "nothing silent at the edges"): the protocol
is a fact of one shard, read through that shard's own header, not part of the sharded map's schema."""

import numpy as np
import pytest

from mmap_ninja import MapExistsError, RaggedMmap, RecordsMmap, ShardedMap, StringsMmap, merge
from mmap_ninja.containers.sharded import SchemaMismatchError

from tests.support import snapshot


def test_a_slot_map_and_a_renamed_map_merge_and_both_shards_read(tmp_path):
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3), np.arange(2)], commit="slots").close()
    RaggedMmap.from_lists(tmp_path / "b", [np.arange(4) * 10], commit="rename").close()
    with merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"]) as sharded:
        assert len(sharded) == 3
        np.testing.assert_array_equal(sharded[1], np.arange(2))
        np.testing.assert_array_equal(sharded[2], np.arange(4) * 10)
        assert [len(x) for x in sharded] == [3, 2, 4]
        np.testing.assert_array_equal(sharded.get_batch([2, 0], pad_value=-1)[0][1], [0, 1, 2, -1])
    with ShardedMap(tmp_path / "s") as reopened:
        np.testing.assert_array_equal(reopened[2], np.arange(4) * 10)


def test_a_slot_records_map_joins_a_sharded_map_of_renamed_ones(tmp_path):
    RecordsMmap.from_dict(tmp_path / "a", {"text": ["x", "y"], "n": [1, 2]}).close()
    merge(tmp_path / "s", [tmp_path / "a"]).close()
    RecordsMmap.from_dict(tmp_path / "b", {"text": ["z"], "n": [3]}, commit="slots").close()
    with merge(tmp_path / "s", [tmp_path / "b"]) as sharded:
        assert [row["text"] for row in sharded] == ["x", "y", "z"]
        assert sharded[2]["n"] == 3


def test_a_codec_difference_is_still_refused_whatever_the_commit_protocols(tmp_path):
    StringsMmap.from_strings(tmp_path / "a", ["hello"], codec="zstd", commit="slots").close()
    StringsMmap.from_strings(tmp_path / "b", ["world"], commit="rename").close()
    before = snapshot(tmp_path)
    with pytest.raises(SchemaMismatchError, match="cannot be merged"):
        merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_builder_given_a_sharded_map_s_folder_says_it_holds_one(tmp_path, overwrite):
    RaggedMmap.from_lists(tmp_path / "a", [np.arange(3)]).close()
    merge(tmp_path / "s", [tmp_path / "a"]).close()
    before = snapshot(tmp_path)
    with pytest.raises(MapExistsError, match=r"s holds a sharded map \(shards\.json.*does not replace a sharded map, "
                                             r"even with overwrite=True"):
        RaggedMmap.from_lists(tmp_path / "s", [np.arange(2)], overwrite=overwrite)
    with pytest.raises(MapExistsError, match="holds a sharded map"):
        StringsMmap.from_strings(tmp_path / "s", ["x"], overwrite=overwrite)
    assert snapshot(tmp_path) == before
    with ShardedMap(tmp_path / "s") as sharded:
        np.testing.assert_array_equal(sharded[0], np.arange(3))


def test_a_sharded_records_batch_that_cannot_stack_names_the_field_and_the_rows(tmp_path):
    RecordsMmap.from_dict(tmp_path / "a", {"n": list(range(10)), "v": [np.arange(2)] * 10}).close()
    RecordsMmap.from_dict(tmp_path / "b", {"n": list(range(10)), "v": [np.arange(3)] * 10}).close()
    with merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"]) as sharded:
        with pytest.raises(ValueError, match=r"field 'v': cannot stack .* item 5 has shape \(2,\) and item 15 has "
                                             r"shape \(3,\)"):
            sharded.get_batch([15, 5])
        with pytest.raises(ValueError, match=r"item 7 has shape \(2,\) and item 12 has shape \(3,\)"):
            sharded["v"].get_batch([7, 12])


def test_a_records_batch_that_cannot_stack_names_the_rows_asked_for_not_batch_positions(tmp_path):
    rows = RecordsMmap.from_dict(tmp_path / "r", {"v": [np.arange(2)] * 10 + [np.arange(3)] * 10})
    with pytest.raises(ValueError, match=r"field 'v': cannot stack .* item 8 has shape \(2,\) and item 13 has "
                                         r"shape \(3,\)"):
        rows.get_batch([8, 9, 13])
