"""A map at a URL read by blocks is an instance of its kind's class (``RemoteBlockRaggedMmap`` is a `RaggedMmap` and
a `RemoteBlockMap`): ``isinstance`` and ``open_existing(url, kind=...)`` hold under every fetch mode, the kind's
methods, operators and read options behave as on the local map, and writes are refused naming the URL."""

from __future__ import annotations

import pickle
import uuid

import numpy as np
import pytest

pytest.importorskip("fsspec")

from mmap_ninja import ImagesMmap, NumpyMmap, RaggedMmap, StringsMmap, merge, np_from_ndarray, open_existing, upload
from mmap_ninja.adapters._block_map import RemoteBlockMap
from mmap_ninja.errors import KindMismatchError, ReadOnlyMapError
from mmap_ninja.storage import _granularity
from mmap_ninja.testing.registry import image_sample

BLOCK = 4096


@pytest.fixture(autouse=True)
def fine(monkeypatch):
    """New maps split their checksum records every 1 KiB, so that blocks of 4 KiB are checked record by record."""
    monkeypatch.setattr(_granularity, "DEFAULT_GRANULARITY", 1024)


def _url():
    return f"memory://ranged-kinds/{uuid.uuid4().hex}"


def _tokens(n=300):
    return [np.arange(k % 13 + 20, dtype=np.int32) * (k + 1) for k in range(n)]


def _uploaded(local, url):
    upload(local, url)
    return url


def _ragged(tmp_path):
    local = RaggedMmap.from_lists(tmp_path / "ragged", [*_tokens(), np.ones((2, 3), np.int32)])
    return local, _uploaded(tmp_path / "ragged", _url())


@pytest.mark.parametrize("kind", ["strings", "ragged", "numpy", "images"])
def test_a_map_read_by_blocks_is_an_instance_of_its_kind(tmp_path, kind):
    if kind == "strings":
        local = StringsMmap.from_strings(tmp_path / "m", [f"text {i} " * (i % 9) for i in range(400)])
    elif kind == "ragged":
        local = RaggedMmap.from_lists(tmp_path / "m", _tokens())
    elif kind == "numpy":
        local = np_from_ndarray(tmp_path / "m", np.arange(4000, dtype=np.float64).reshape(500, 8))
    else:
        local = ImagesMmap.from_generator(tmp_path / "m", [image_sample(i) for i in range(40)], 8)
    url = _uploaded(tmp_path / "m", _url())
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=1024 if kind == "images" else 512)
    assert isinstance(m, type(local)) and isinstance(m, RemoteBlockMap) and len(m.shards) > 2
    assert type(m).__name__ == f"RemoteBlock{type(local).__name__}"
    for i in (0, len(local) // 2, len(local) - 1):
        assert np.array_equal(np.asarray(m[i]), np.asarray(local[i])) if kind != "strings" else m[i] == local[i]
    copy = pickle.loads(pickle.dumps(m))
    assert type(copy) is type(m) and len(copy) == len(local)


def test_kind_works_under_every_fetch_mode_and_a_mismatch_names_what_the_url_holds(tmp_path):
    local, url = _ragged(tmp_path)
    for fetch in ("whole", "blocks", "auto"):
        m = open_existing(url, cache_dir=tmp_path / "cache", fetch=fetch, block_size=BLOCK, kind=RaggedMmap)
        assert isinstance(m, RaggedMmap) and np.array_equal(m[7], local[7])
        assert isinstance(m, RemoteBlockMap) == (fetch != "whole")  # auto: fine records and many blocks
        with pytest.raises(KindMismatchError, match=r"holds a map of kind 'ragged' \(Remote.*RaggedMmap\), not the "
                                                    r"StringsMmap"):
            open_existing(url, cache_dir=tmp_path / "cache", fetch=fetch, block_size=BLOCK, kind=StringsMmap)


def test_the_kinds_methods_read_the_blocks_or_the_whole_map(tmp_path):
    local, url = _ragged(tmp_path)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    assert m.shape(3) == local.shape(3) and m.shape(-1) == (2, 3)
    picked = [250, 3, 120, 4]
    assert np.array_equal(m.shapes(picked), local.shapes(picked))
    with pytest.raises(ValueError, match="different numbers of dimensions"):
        m.shapes()  # as the local map: one 2-D sample among 1-D ones
    with pytest.raises(ValueError):
        local.shapes()
    assert m.ndims == local.ndims == [1, 2] and m.codec is None and m.dtype == np.int32
    with pytest.raises(IndexError):
        m.shape(len(local))
    assert np.array_equal(m.window(5, 2, 3), local.window(5, 2, 3))
    assert np.array_equal(m.values, local.values) and np.array_equal(m.offsets, local.offsets)  # (downloaded whole)
    assert np.array_equal(m[len(local) - 1], local[len(local) - 1])


def test_numpy_operators_and_functions_behave_as_the_local_maps(tmp_path):
    array = np.arange(2000, dtype=np.int64).reshape(500, 4) % 7
    local = np_from_ndarray(tmp_path / "n", array)
    url = _uploaded(tmp_path / "n", _url())
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=512, kind=NumpyMmap)
    assert isinstance(m, NumpyMmap) and isinstance(m, RemoteBlockMap)
    assert np.array_equal(m == 0, local == 0) and np.array_equal(m + 1, local + 1)
    assert np.array_equal(np.asarray(m), array) and int(m.sum()) == int(array.sum()) and m.shape == (500, 4)
    assert np.array_equal(np.maximum(m, 3), np.maximum(array, 3))
    assert (6 in m) and (7 not in m)
    assert np.array_equal(m.get_batch([499, 0, 250]), local.get_batch([499, 0, 250]))


def test_images_read_options_reach_the_kinds_methods(tmp_path):
    local = ImagesMmap.from_generator(tmp_path / "i", [image_sample(i) for i in range(40)], 8)
    url = _uploaded(tmp_path / "i", _url())
    gray = ImagesMmap(tmp_path / "i", mode="r", channels=1)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=1024, channels=1)
    assert isinstance(m, ImagesMmap) and len(m.shards) > 2
    assert m.decoder.channels == 1 and m.shape(5) == gray.shape(5)
    picked = [39, 0, 17]
    assert np.array_equal(m.shapes(picked), gray.shapes(picked))
    assert np.array_equal(m.decoded_shapes(picked), gray.decoded_shapes(picked))
    assert bytes(m.raw(17)) == bytes(local.raw(17)) and m.format(17) == local.format(17)
    assert m[17].shape[2] == 1 and np.array_equal(m[17], gray[17])
    assert m.formats == local.formats


def test_writes_are_refused_naming_the_url_before_anything_is_fetched(tmp_path):
    local, url = _ragged(tmp_path)
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK, kind=RaggedMmap)
    writes = [lambda: m.append(np.arange(3, dtype=np.int32)), lambda: m.extend([np.arange(2, dtype=np.int32)]),
              lambda: m.extend_flat(np.arange(4, dtype=np.int32), [4]), lambda: m.set_metadata({"a": 1}),
              lambda: m.__setitem__(0, local[0])]
    for write in writes:
        with pytest.raises(ReadOnlyMapError, match=url):
            write()
    assert not (tmp_path / "cache" / "entries").exists() or not list((tmp_path / "cache" / "entries").iterdir())
    with pytest.raises(ReadOnlyMapError, match=url), m.transaction():
        pass
    m.flush()  # nothing to flush
    assert len(m) == len(local)


def test_the_shards_of_a_sharded_map_read_by_blocks_are_instances_of_their_kind(tmp_path):
    tokens = _tokens()
    RaggedMmap.from_lists(tmp_path / "a", tokens[:150]).close()
    RaggedMmap.from_lists(tmp_path / "b", tokens[150:]).close()
    merge(tmp_path / "s", [tmp_path / "a", tmp_path / "b"]).close()
    url = _uploaded(tmp_path / "s", _url())
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=BLOCK)
    shard = m.shard(1)
    assert isinstance(shard, RaggedMmap) and isinstance(shard, RemoteBlockMap)
    assert shard.shape(0) == tokens[150].shape and np.array_equal(m[200], tokens[200])


def test_numpy_indexing_is_numpys_over_the_blocks(tmp_path):
    array = np.arange(3000, dtype=np.float32).reshape(500, 6)
    np_from_ndarray(tmp_path / "n", array).close()
    url = _uploaded(tmp_path / "n", _url())
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=512)
    for index in (slice(10, 400, 7), [499, 0, 250], np.arange(500) % 3 == 0, (7, 2), (slice(3, 9), 1),
                  ([4, 400], slice(1, 3)), np.int64(-1), (-2, -1)):
        got = m[index]
        assert isinstance(got, (np.ndarray, np.floating)) and np.array_equal(got, array[index]), index
    assert np.array_equal(m[..., 0], array[..., 0])  # another NumPy index: read whole
    m.wrapper_fn = list
    assert m[2:4] == [list(array[2]), list(array[3])]


def test_maps_whose_header_requires_features_are_read_by_blocks(tmp_path):
    # A records map's header requires "records", a compressed map's its codec: the block index's shards.json (whose
    # requires are features of the sharded format) must not copy them, or no block could be read.
    from mmap_ninja import RecordsMmap

    rows = [{"text": f"doc {i} " * 5, "tokens": np.arange(i % 7 + 3, dtype=np.int32), "label": i % 3}
            for i in range(300)]
    local = RecordsMmap.from_generator(tmp_path / "r", rows, 100)
    url = _uploaded(tmp_path / "r", _url())
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=1024, kind=RecordsMmap)
    assert isinstance(m, RemoteBlockMap) and len(m.shards) > 2 and m.fields == local.fields
    assert m[299]["text"] == rows[299]["text"] and m.columns([1, 2])["text"] == local.columns([1, 2])["text"]
    got, want = m.get_batch([299, 0, 150], pad_value=0), local.get_batch([299, 0, 150], pad_value=0)
    assert all(np.array_equal(got[0][name], want[0][name]) for name in ("tokens", "label"))
    assert m.to_arrow().equals(local.to_arrow())
    with pytest.raises(ReadOnlyMapError, match=url):
        m.append(rows[0])
    RaggedMmap.from_lists(tmp_path / "z", [np.arange(k % 50 + 100) for k in range(300)], codec="zstd").close()
    zstd_url = _uploaded(tmp_path / "z", _url())
    z = open_existing(zstd_url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=4096, kind=RaggedMmap)
    assert len(z.shards) > 2 and z.codec == "zstd" and np.array_equal(z[299], np.arange(299 % 50 + 100))


def test_it_has_the_methods_its_kinds_maps_have(tmp_path):
    StringsMmap.from_strings(tmp_path / "s", [f"text {i} " * (i % 9) for i in range(400)]).close()
    url = _uploaded(tmp_path / "s", _url())
    m = open_existing(url, cache_dir=tmp_path / "cache", fetch="blocks", block_size=512)
    assert isinstance(m, StringsMmap) and len(m.shards) > 2
    for name in ("get_batch", "window", "index_of"):  # a ShardedMap has them for every kind; a StringsMmap not
        assert not hasattr(m, name) and not hasattr(type(m), name)
    with pytest.raises(AttributeError, match="get_batch"):
        m.get_batch([0])
    assert np.array_equal(m.offsets, StringsMmap(tmp_path / "s", mode="r").offsets)
