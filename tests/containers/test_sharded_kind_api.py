"""A sharded map answers its shards' kind's read API (`mmap_ninja.containers.sharded_kind`): what the kit checks
on every container (`test_answers_as_its_kinds_map`), plus what it does not: Arrow's chunks, attributes of other
kinds absent, NumPy's description without opening a shard, and the torch crops over a
sharded images map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import ImagesMmap, RaggedMmap, ShardedMap, StringsMmap, merge, np_from_ndarray
from mmap_ninja.errors import ReadOnlyMapError


def _sharded_strings(tmp_path: Path) -> ShardedMap:
    texts = [f"text {i} " + "é" * (i % 3) for i in range(7)]
    StringsMmap.from_strings(tmp_path / "p0", texts[:4]).close()
    StringsMmap.from_strings(tmp_path / "p1", []).close()
    StringsMmap.from_strings(tmp_path / "p2", texts[4:]).close()
    return merge(tmp_path / "sharded", [tmp_path / "p0", tmp_path / "p1", tmp_path / "p2"])


def test_to_arrow_is_the_shards_own_arrays_as_chunks(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    sharded = _sharded_strings(tmp_path)
    array = sharded.to_arrow()
    assert isinstance(array, pa.ChunkedArray) and array.num_chunks == 3
    assert array.type == pa.large_string()
    assert array.to_pylist() == list(sharded)
    first_shard = sharded.shard(0)
    assert array.chunk(0).buffers()[2].address == first_shard.to_arrow().buffers()[2].address  # no copy


def test_other_kinds_attributes_are_absent_and_writes_refused(tmp_path: Path) -> None:
    sharded = _sharded_strings(tmp_path)
    assert not hasattr(sharded, "shapes") and not hasattr(sharded, "extend_flat") and not hasattr(sharded, "ndim")
    with pytest.raises(AttributeError, match="'strings' shards has no attribute 'shapes'"):
        sharded.shapes()
    with pytest.raises(ReadOnlyMapError, match="add_shards"):
        sharded.extend_utf8(b"ab", [1, 1])
    assert len(sharded) == 7


def test_ragged_shapes_join_the_shards_rows_in_the_order_asked(tmp_path: Path) -> None:
    samples = [np.zeros((i % 3 + 1, 2), np.int16) for i in range(9)]
    RaggedMmap.from_lists(tmp_path / "p0", samples[:5]).close()
    RaggedMmap.from_lists(tmp_path / "p1", samples[5:]).close()
    sharded = merge(tmp_path / "sharded", [tmp_path / "p0", tmp_path / "p1"])
    assert sharded.shapes().tolist() == [list(s.shape) for s in samples]
    assert sharded.shapes([8, 0, 5]).tolist() == [list(samples[i].shape) for i in (8, 0, 5)]
    single = RaggedMmap.from_lists(tmp_path / "single", samples)
    assert sharded.shapes([]).shape == single.shapes([]).shape
    assert sharded.shape(-1) == samples[-1].shape
    with pytest.raises(IndexError):
        sharded.shape(9)


def test_numpy_description_needs_no_shard_open(tmp_path: Path) -> None:
    np_from_ndarray(tmp_path / "p0", np.zeros((3, 2, 5), np.float32)).close()
    np_from_ndarray(tmp_path / "p1", np.zeros((4, 2, 5), np.float32)).close()
    sharded = ShardedMap(merge(tmp_path / "sharded", [tmp_path / "p0", tmp_path / "p1"]).path)
    assert (sharded.shape, sharded.sample_shape, sharded.ndim) == ((7, 2, 5), (2, 5), 3)
    assert (sharded.size, sharded.itemsize, sharded.nbytes) == (70, 4, 280)
    assert sharded.open_shards == 0
    assert not hasattr(sharded, "sum")  # NumPy's methods would join every shard in memory: m[:] does that


def test_random_crops_read_a_sharded_images_map_as_one_map(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mmap_ninja.adapters.torch import ImagesDataset, RandomResizedCropDecode

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8) for i in range(6)]
    ImagesMmap.from_generator(tmp_path / "p0", images[:2], batch_size=2, format="png").close()
    ImagesMmap.from_generator(tmp_path / "p1", images[2:], batch_size=4, format="png").close()
    ImagesMmap.from_generator(tmp_path / "single", images, batch_size=6, format="png").close()
    sharded = merge(tmp_path / "sharded", [tmp_path / "p0", tmp_path / "p1"])
    single = ImagesMmap(tmp_path / "single", mode="r")
    indices = [5, 0, 3, 1]
    got = ImagesDataset(sharded, decode=RandomResizedCropDecode(16, seed=3)).__getitems__(indices)
    want = ImagesDataset(single, decode=RandomResizedCropDecode(16, seed=3)).__getitems__(indices)
    assert got.shape == (4, 16, 16, 3) and np.array_equal(got, want)
    assert sharded.formats == ["PNG"] and bytes(sharded.raw(5)) == bytes(single.raw(5))


def test_a_sharded_map_of_keyed_records_names_its_key(tmp_path: Path) -> None:
    from mmap_ninja import RecordsMmap

    for k in range(2):
        RecordsMmap.from_dict(tmp_path / f"p{k}", {"id": [2 * k, 2 * k + 1], "text": ["a", "b"]}, key="id").close()
    sharded = merge(tmp_path / "sharded", [tmp_path / "p0", tmp_path / "p1"])
    assert sharded.key == RecordsMmap(tmp_path / "sharded" / "shards" / "shard-000000").key == "id"
    assert sharded.index_of(3) == 3


def test_ragged_ndims_are_the_shards_own_joined(tmp_path: Path) -> None:
    RaggedMmap.from_lists(tmp_path / "p0", [np.zeros(3), np.zeros((2, 2))]).close()
    RaggedMmap.from_lists(tmp_path / "p1", []).close()
    RaggedMmap.from_lists(tmp_path / "p2", [np.zeros((1, 1, 4))]).close()
    sharded = merge(tmp_path / "sharded", [tmp_path / "p0", tmp_path / "p1", tmp_path / "p2"])
    assert sharded.ndims == [1, 2, 3]
    assert RaggedMmap.from_lists(tmp_path / "single", [np.zeros(3), np.zeros((2, 2)), np.zeros((1, 1, 4))]).ndims \
        == sharded.ndims
    assert not hasattr(_sharded_strings(tmp_path / "strings"), "ndims")  # as a StringsMmap has none
