"""A map read by blocks from a URL is its kind's map: a records field of it (``m["label"]``) indexes as the local
map's field does (NumPy's indexing for a numpy field), and its repr names its kind."""

import numpy as np
import pytest

pytest.importorskip("fsspec")

from mmap_ninja import RecordsMmap, open_existing, upload


def _block_records(tmp_path, url):
    rows = {"text": [f"document {i} " * 30 for i in range(300)], "label": np.arange(300, dtype=np.int64) % 7,
            "tokens": [np.arange(i % 40, dtype=np.int32) for i in range(300)]}
    local = RecordsMmap.from_dict(tmp_path / "rec", rows, batch_size=40)
    upload(tmp_path / "rec", url)
    remote = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=4096)
    assert remote.fetch_block_size == 4096 and len(remote.shards) > 1  # really read by blocks
    return local, remote


def test_a_numpy_field_of_a_map_read_by_blocks_indexes_as_the_local_maps_field(tmp_path):
    local, remote = _block_records(tmp_path, "memory://block-fields/rec")
    want, got = local["label"], remote["label"]
    for index in (slice(None), slice(5, 290, 7), slice(None, None, -3), [299, 0, 150], [],
                  np.array([4, 200]), np.arange(300) % 5 == 0):
        expected, result = want[index], got[index]
        assert isinstance(result, np.ndarray), f"m['label'][{index!r}] gave a {type(result).__name__}"
        assert result.dtype == expected.dtype and result.shape == expected.shape
        np.testing.assert_array_equal(result, expected)
    assert got[-1] == want[-1] and got[np.int64(3)] == want[3]
    with pytest.raises(IndexError, match="300"):
        got[300]
    assert isinstance(remote["text"][0:2], list) and remote["text"][0:2] == local["text"][0:2]


def test_the_repr_of_a_map_read_by_blocks_names_its_kind(tmp_path):
    _, remote = _block_records(tmp_path, "memory://block-fields/repr")
    text = repr(remote)
    assert text.startswith("RemoteBlockRecordsMmap('memory://block-fields/repr')"), text
    assert "records" in text and "4096" in text and "300" in text
    assert repr(remote["label"]).startswith("field 'label' (numpy) of RemoteBlockRecordsMmap("), repr(remote["label"])


def test_a_field_of_a_map_read_by_blocks_has_the_local_fields_to_arrow(tmp_path):
    pytest.importorskip("pyarrow")
    local, remote = _block_records(tmp_path, "memory://block-fields/arrow")
    for name in ("text", "tokens", "label"):
        assert hasattr(remote[name], "to_arrow") == hasattr(local[name], "to_arrow"), name
        if hasattr(local[name], "to_arrow"):
            assert remote[name].to_arrow().equals(local[name].to_arrow()), name


def test_an_empty_map_read_by_blocks_reads_as_the_empty_local_map(tmp_path):
    from mmap_ninja import RaggedMmap
    from mmap_ninja.kinds.numpy import from_ndarray

    ragged = RaggedMmap.from_lists(tmp_path / "r", [], dtype=np.int32)
    numpy = from_ndarray(tmp_path / "n", np.zeros((0, 2), np.float32))
    for local, name in ((ragged, "r"), (numpy, "n")):
        upload(local.path, f"memory://block-fields/empty-{name}")
        remote = open_existing(f"memory://block-fields/empty-{name}", cache_dir=tmp_path / "cache", fetch="blocks")
        assert len(remote) == 0 and list(remote) == []
        options = {"pad_value": 0} if name == "r" else {}
        want, got = local.get_batch([], **options), remote.get_batch([], **options)
        for a, b in zip(want, got) if name == "r" else [(want, got)]:
            assert a.dtype == b.dtype and a.shape == b.shape
        if name == "n":
            assert remote[:].shape == (0, 2) and remote[[]].dtype == np.float32
