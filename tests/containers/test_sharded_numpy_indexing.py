"""A sharded map of numpy samples indexes as one `NumpyMmap` does: a slice, a list or a mask of positions gives one
array in the stored dtype (a read-only result for a slice, a fresh copy for a list or a mask), not a list; the same
for a sharded records map's numpy field, a sharded map at a URL (whole or by blocks) and a map read by blocks."""

import numpy as np
import pytest

from mmap_ninja import RecordsMmap, np_from_ndarray
from mmap_ninja.containers.sharded import merge

ROWS = np.arange(13 * 6, dtype=np.float32).reshape(13, 2, 3)
SIZES = [3, 5, 1, 4]
INDEXES = [slice(0, 3), slice(2, 11), slice(None), slice(None, None, -3), slice(5, 5), [12, 0, 3, 3, -1], [],
           range(1, 9, 2), np.array([8, 9], dtype=np.uint8), np.arange(13) % 3 == 0]


def _numpy_shards(root):
    paths, first = [], 0
    for k, n in enumerate(SIZES):
        np_from_ndarray(root / f"src{k}", ROWS[first:first + n]).close()
        paths.append(root / f"src{k}")
        first += n
    return paths


def _records_shards(root):
    paths, first = [], 0
    for k, n in enumerate(SIZES):
        RecordsMmap.from_dict(root / f"rec{k}", {"x": ROWS[first:first + n],
                                                 "name": [f"row {i}" for i in range(first, first + n)]}).close()
        paths.append(root / f"rec{k}")
        first += n
    return paths


def assert_indexes_like(got, want):
    for index in INDEXES:
        expected, result = want[index], got[index]
        assert isinstance(result, np.ndarray), f"[{index!r}] gave a {type(result).__name__}"
        assert result.dtype == expected.dtype and result.shape == expected.shape, index
        np.testing.assert_array_equal(result, expected)
        assert result.flags.writeable == expected.flags.writeable, index
    np.testing.assert_array_equal(got[2, 1], want[2, 1])  # NumPy's m[i, j]: row j of sample i
    np.testing.assert_array_equal(got[[4, 1], 0], want[[4, 1], 0])
    batch = got.get_batch([4, 0, 12])
    assert isinstance(batch, np.ndarray) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, want.get_batch([4, 0, 12]))
    assert isinstance(got.__getitems__([1, 7]), list)  # torch's fetcher: a list of samples, as NumpyMmap's
    with pytest.raises(IndexError):
        got[[0, 13]]


def test_a_sharded_numpy_map_indexes_as_one_numpy_map(tmp_path):
    one = np_from_ndarray(tmp_path / "one", ROWS)
    assert_indexes_like(merge(tmp_path / "sharded", _numpy_shards(tmp_path)), one)


def test_a_sharded_records_maps_numpy_field_indexes_as_the_local_field(tmp_path):
    one = RecordsMmap.from_dict(tmp_path / "one", {"x": ROWS, "name": [f"row {i}" for i in range(13)]})
    sharded = merge(tmp_path / "sharded", _records_shards(tmp_path))
    assert_indexes_like(sharded["x"], one["x"])
    assert sharded["name"][0:2] == one["name"][0:2] == ["row 0", "row 1"]


@pytest.mark.parametrize("fetch", ["whole", "blocks"])
def test_a_sharded_numpy_map_at_a_url_indexes_as_one_numpy_map(tmp_path, fetch):
    pytest.importorskip("fsspec")
    from mmap_ninja import open_existing, upload

    one = np_from_ndarray(tmp_path / "one", ROWS)
    merge(tmp_path / "sharded", _numpy_shards(tmp_path)).close()
    url = f"memory://sharded-numpy-indexing/{fetch}"
    upload(tmp_path / "sharded", url)
    remote = open_existing(url, cache_dir=tmp_path / "cache", fetch=fetch, block_size=64)
    assert_indexes_like(remote, one)


def test_a_numpy_map_read_by_blocks_indexes_as_the_local_map(tmp_path):
    pytest.importorskip("fsspec")
    from mmap_ninja import open_existing, upload

    one = np_from_ndarray(tmp_path / "one", ROWS)
    upload(tmp_path / "one", "memory://sharded-numpy-indexing/blocks-one")
    remote = open_existing("memory://sharded-numpy-indexing/blocks-one", cache_dir=tmp_path / "cache",
                           fetch="blocks", block_size=64)
    assert len(remote.shards) > 1  # really read by blocks
    assert_indexes_like(remote, one)


@pytest.mark.parametrize("index", [(Ellipsis, 0), Ellipsis, (Ellipsis, 1, 2), (Ellipsis, 0, 1, 2), (2, Ellipsis),
                                   (slice(1, 9), Ellipsis, 1), (Ellipsis, None, 0)])
def test_an_ellipsis_indexes_as_numpy_does(tmp_path, index):
    one = np_from_ndarray(tmp_path / "one", ROWS)
    sharded = merge(tmp_path / "sharded", _numpy_shards(tmp_path))
    np.testing.assert_array_equal(sharded[index], one[index])
    assert sharded[index].shape == one[index].shape
    records = merge(tmp_path / "rec_sharded", _records_shards(tmp_path))["x"]
    np.testing.assert_array_equal(records[index], one[index])


def test_an_ellipsis_over_scalar_samples_leaves_the_rows_axis_to_the_index(tmp_path):
    paths = []
    for k, part in enumerate((np.arange(3), np.arange(3, 7))):
        np_from_ndarray(tmp_path / f"s{k}", part).close()
        paths.append(tmp_path / f"s{k}")
    sharded = merge(tmp_path / "sharded", paths)
    assert sharded[..., 4] == 4 and sharded[..., [1, 5]].tolist() == [1, 5]
    assert sharded[...].tolist() == list(range(7))
