"""A map opened from a URL behaves as the local one under every operator and protocol: it is a container of its
kind (RemoteMap and the kind's class both), opened on the cached copy at first use."""

import pickle

import numpy as np
import pytest

pytest.importorskip("fsspec")

from mmap_ninja import ImagesMmap, RecordsMmap, StringsMmap, merge, open_existing, upload
from mmap_ninja.adapters.remote import RemoteMap, RemoteShardedMap
from mmap_ninja.kinds.numpy import NumpyMmap, from_ndarray
from mmap_ninja.testing.registry import image_sample


def keyed_rows(first, n):
    return [{"path": f"img/{first + i}.jpg", "label": np.int64(first + i)} for i in range(n)]


def test_operators_and_protocols_are_the_local_maps(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(6, 4) - 3
    local = from_ndarray(tmp_path / "n", array)
    upload(tmp_path / "n", "memory://remote-containers/n")
    m = open_existing("memory://remote-containers/n", cache_dir=tmp_path / "cache")
    assert isinstance(m, RemoteMap) and isinstance(m, NumpyMmap) and len(m) == 6
    assert not list((tmp_path / "cache" / "entries").glob("*"))  # the length came from the header
    np.testing.assert_array_equal(m == 0, local == 0)
    np.testing.assert_array_equal(m + 1, local + 1)
    np.testing.assert_array_equal(np.asarray(m), array)
    assert (5 in m) == (5 in local) and (100 in m) == (100 in local)
    np.testing.assert_array_equal(m[1:3, 2], local[1:3, 2])
    np.testing.assert_array_equal(m.get_batch([5, 0]), local.get_batch([5, 0]))
    assert m.sum() == local.sum() and m.shape == local.shape
    copy = pickle.loads(pickle.dumps(m))
    assert type(copy) is type(m) and np.array_equal(copy[2], array[2])
    for write in (lambda: m.append(array[0]), lambda: m.__setitem__(0, array[1]), lambda: m.extend(array)):
        with pytest.raises(PermissionError, match="memory://remote-containers/n is a map at a URL, read-only"):
            write()
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m[0]


def test_writes_are_refused_before_anything_is_downloaded(tmp_path):
    RecordsMmap.from_generator(tmp_path / "rec", keyed_rows(0, 4), 3, key="path").close()
    upload(tmp_path / "rec", "memory://remote-containers/refused")
    m = open_existing("memory://remote-containers/refused", cache_dir=tmp_path / "cache")
    row = keyed_rows(4, 1)[0]
    for write in (lambda: m.append(row), lambda: m.extend([row]),
                  lambda: m.add_field("extra", "strings", ""), lambda: m.set_metadata({}),
                  lambda: m.transaction().__enter__()):
        with pytest.raises(PermissionError, match="memory://remote-containers/refused is a map at a URL, read-only"):
            write()
    assert not (tmp_path / "cache" / "entries").exists() or not list((tmp_path / "cache" / "entries").iterdir())
    assert len(m) == 4 and m[3]["path"] == "img/3.jpg"


def test_key_in_a_records_map_at_a_url_is_what_index_of_finds(tmp_path):
    RecordsMmap.from_generator(tmp_path / "rec", keyed_rows(0, 8), 3, key="path").close()
    upload(tmp_path / "rec", "memory://remote-containers/rec")
    m = open_existing("memory://remote-containers/rec", cache_dir=tmp_path / "cache")
    assert "img/5.jpg" in m and m.index_of("img/5.jpg") == 5 and "img/9.jpg" not in m
    assert m.fields == ("path", "label") and m["label"][3] == 3 and m.key == "path"
    assert m.get_batch([7, 2])["path"] == ["img/7.jpg", "img/2.jpg"]
    assert [row["label"] for row in m] == list(range(8))
    with pytest.raises(PermissionError, match="read-only"):
        m.append(keyed_rows(8, 1)[0])
    m.close()

    for k in range(2):
        RecordsMmap.from_generator(tmp_path / f"p{k}", keyed_rows(4 * k, 4), 3, key="path").close()
    merge(tmp_path / "s", [tmp_path / "p0", tmp_path / "p1"])
    upload(tmp_path / "s", "memory://remote-containers/s")
    s = open_existing("memory://remote-containers/s", cache_dir=tmp_path / "cache")
    assert isinstance(s, RemoteShardedMap) and "img/6.jpg" in s and s.index_of("img/6.jpg") == 6
    assert s.fields == ("path", "label") and s["path"][5] == "img/5.jpg" and s.columns([0, 7])["label"] == [0, 7]
    s.close()


def test_read_options_reach_the_local_map(tmp_path):
    ImagesMmap.from_generator(tmp_path / "im", [image_sample(i) for i in range(3)], 2).close()
    upload(tmp_path / "im", "memory://remote-containers/im")
    m = open_existing("memory://remote-containers/im", cache_dir=tmp_path / "cache", channels=1)
    assert m.decoder.channels == 1 and m[0].shape[-1] == 1 and m.get_batch([0, 1], pad_value=0)[0].shape[-1] == 1
    assert pickle.loads(pickle.dumps(m))[2].shape[-1] == 1
    with pytest.raises(TypeError):
        open_existing("memory://remote-containers/im", cache_dir=tmp_path / "cache", no_such_option=1)


def test_a_single_map_at_a_url_is_reopened_as_the_new_version_after_refresh(tmp_path):
    StringsMmap.from_strings(tmp_path / "v1", ["a", "b"]).close()
    upload(tmp_path / "v1", "memory://remote-containers/refresh")
    m = open_existing("memory://remote-containers/refresh", cache_dir=tmp_path / "cache")
    assert m[1] == "b" and "b" in list(m)
    StringsMmap.from_strings(tmp_path / "v2", ["x", "y", "z"]).close()
    upload(tmp_path / "v2", "memory://remote-containers/refresh")
    assert m.refresh() == 1 and m[2] == "z" and list(m) == ["x", "y", "z"] and m[:2] == ["x", "y"]


def test_operators_on_the_loopback_s3_server(tmp_path, s3_server):
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    from_ndarray(tmp_path / "n", array).close()
    url = f"s3://{s3_server.bucket()}/n"
    upload(tmp_path / "n", url, storage_options=s3_server.options())
    m = open_existing(url, cache_dir=tmp_path / "cache", storage_options=s3_server.options())
    np.testing.assert_array_equal(m * 2, array * 2)
    np.testing.assert_array_equal(m == 4, array == 4)
    assert 7 in m and len(m) == 4
    m.close()


def test_threads_touching_a_map_at_a_url_first_open_it_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    ImagesMmap.from_generator(tmp_path / "im", [image_sample(i) for i in range(6)], 2).close()
    upload(tmp_path / "im", "memory://remote-containers/threads")
    m = open_existing("memory://remote-containers/threads", cache_dir=tmp_path / "cache", channels=1)
    with ThreadPoolExecutor(6) as pool:
        shapes = list(pool.map(lambda i: m[i].shape, range(6)))
    assert [shape[-1] for shape in shapes] == [1] * 6
    assert len(list((tmp_path / "cache" / "entries").iterdir())) == 1


def test_a_kind_whose_init_reads_its_class_defaults_opens_at_a_url(tmp_path):
    # A kind's __init__ (records' view building) reads per-handle defaults before setting them: opening the map
    # at first use must give it the default, not wait for itself (it deadlocked).
    RecordsMmap.from_generator(tmp_path / "rec", [{"image": image_sample(i), "label": i} for i in range(3)], 2,
                               schema={"image": "images", "label": ("scalar", "int64")}).close()
    upload(tmp_path / "rec", "memory://remote-containers/defaults")
    m = open_existing("memory://remote-containers/defaults", cache_dir=tmp_path / "cache")
    assert m[2]["label"] == 2 and m["image"][1].shape == image_sample(1).shape


def test_a_write_to_a_field_of_a_sharded_map_at_a_url_names_the_url(tmp_path):
    """The refusal names the URL the user opened, not the cache folder the shards were downloaded to, and says how
    such a map grows (a shard added locally, then uploaded again)."""
    RecordsMmap.from_dict(tmp_path / "p0", {"text": ["a", "b"], "label": np.arange(2)}).close()
    merge(tmp_path / "sharded", [tmp_path / "p0"]).close()
    upload(tmp_path / "sharded", "memory://remote-containers/sharded-field")
    m = open_existing("memory://remote-containers/sharded-field", cache_dir=tmp_path / "cache")
    for container, what in ((m, "memory://remote-containers/sharded-field, a sharded map,"),
                            (m["text"], "field 'text' of the sharded map memory://remote-containers/sharded-field")):
        with pytest.raises(PermissionError, match=f"^{what} is read-only .* and upload it again$"):
            container.append({"text": "c", "label": 1} if container is m else "c")
    m.close()
