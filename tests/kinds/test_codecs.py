"""Per-sample codecs (zstd, lz4): random access kept, declared in the header, chosen once and kept by extends."""

import json
import threading

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import RaggedMmap, StringsMmap, UnknownFeatureError
from mmap_ninja.kinds.codecs import Zstd
from mmap_ninja.storage.format import FORMAT_VERSION

TEXTS = [f"document {i}: " + "the quick brown fox jumps over the lazy dog " * (i % 17) + "ünïcödé" * (i % 3)
         for i in range(3000)]


def _header(path):
    return json.loads((path / "header.json").read_text())


@pytest.mark.parametrize("codec", ["zstd", "lz4", Zstd(level=9, dictionary_size=0)])
def test_compressed_strings_read_like_plain_ones(tmp_path, codec):
    m = StringsMmap.from_strings(tmp_path / "m", TEXTS, codec=codec, batch_size=700)
    assert len(m) == len(TEXTS) and m[5] == TEXTS[5] and m[-1] == TEXTS[-1]
    assert list(m) == TEXTS and m[[3, 1, 2999]] == [TEXTS[3], TEXTS[1], TEXTS[2999]]
    reopened = StringsMmap(tmp_path / "m")
    assert reopened.codec == m.codec and reopened[1234] == TEXTS[1234]
    data_bytes = (tmp_path / "m" / "data.bin").stat().st_size
    assert data_bytes < sum(len(t.encode()) for t in TEXTS) / 2  # the corpus is repetitive: it must shrink


def test_the_codec_is_declared_and_an_old_reader_refuses_it(tmp_path, monkeypatch):
    StringsMmap.from_strings(tmp_path / "m", TEXTS[:100], codec="zstd")
    header = _header(tmp_path / "m")
    assert header["requires"] == ["codec.zstd"] and header["version"] == list(FORMAT_VERSION)
    monkeypatch.setattr(mmap_ninja.storage.format, "_FEATURES", set())  # a reader that knows no codec
    with pytest.raises(UnknownFeatureError, match=r"codec\.zstd"):
        StringsMmap(tmp_path / "m")


def test_dictionary_is_trained_on_samples_from_several_batches(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "m", TEXTS, codec=Zstd(dictionary_size=8192, train_samples=1000),
                                 batch_size=100)
    header = _header(tmp_path / "m")
    assert header["attrs"]["trained"] is True and header["columns"]["dictionary"]["length"] > 0
    # Published with the first batch: no commit holds compressed data without the dictionary.
    assert m[0] == TEXTS[0]


def test_training_that_fails_on_small_input_falls_back_to_no_dictionary(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "m", ["a", "b", "c"], codec="zstd")
    assert m[:] == ["a", "b", "c"]
    assert _header(tmp_path / "m")["columns"]["dictionary"]["length"] == 0
    m.extend(["d" * 1000])  # later extends keep the codec
    assert StringsMmap(tmp_path / "m")[3] == "d" * 1000 and m.codec == "zstd"


def test_0_9_0_keywords_map_onto_the_zstd_codec(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "m", TEXTS[:500], zstd_level=5, zstd_train_dictionary_size=4096)
    codec = _header(tmp_path / "m")["attrs"]["codec"]
    assert codec["name"] == "zstd" and codec["level"] == 5 and codec["dictionary_size"] == 4096
    assert m[499] == TEXTS[499]
    g = StringsMmap.from_generator(tmp_path / "g", iter(TEXTS[:50]), 10, zstd_level=1)
    assert g.codec == "zstd" and list(g) == TEXTS[:50]
    with pytest.raises(TypeError, match="either codec"):
        StringsMmap.from_strings(tmp_path / "x", ["a"], codec="lz4", zstd_level=3)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_ragged_maps_keep_shapes_dtype_and_batches(tmp_path, codec):
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 50, size=(i % 5 + 1, 3), dtype=np.int16) for i in range(300)] + [np.int16(7)]
    m = RaggedMmap.from_lists(tmp_path / "m", samples, codec=codec, batch_size=64)
    assert m.dtype == np.int16 and len(m) == len(samples)
    for i in (0, 7, 299, 300):
        np.testing.assert_array_equal(m[i], samples[i])
        assert not m[i].flags.writeable and m.shape(i) == np.shape(samples[i])
    stacked = m.get_batch([5, 10])  # both of shape (1, 3)
    np.testing.assert_array_equal(stacked, np.stack([samples[5], samples[10]]))
    padded, lengths = m.get_batch([0, 1, 2], pad_value=-1)
    assert padded.shape == (3, 3, 3) and padded[0, 1, 0] == -1 and lengths.tolist() == [[1, 3], [2, 3], [3, 3]]
    m.extend_flat(np.arange(6, dtype=np.int16), [2, 4])
    np.testing.assert_array_equal(RaggedMmap(tmp_path / "m")[-1], [2, 3, 4, 5])


def test_what_a_compressed_map_cannot_do_is_refused_clearly(tmp_path):
    s = StringsMmap.from_strings(tmp_path / "s", TEXTS[:20], codec="zstd")
    r = RaggedMmap.from_lists(tmp_path / "r", [np.arange(3)], codec="lz4")
    before = (tmp_path / "s" / "data.bin").read_bytes()
    with pytest.raises(ValueError, match="item 0 cannot be assigned in place: the map is compressed") as caught:
        s[0] = TEXTS[0]  # even the value it holds: the message said "a new value compresses to a different size"
    assert "different size" not in str(caught.value) and "never assigned in place" in str(caught.value)
    assert (tmp_path / "s" / "data.bin").read_bytes() == before
    with pytest.raises(TypeError, match=r"to_arrow\(\) needs the samples' own bytes.*compressed \(zstd\)"):
        s.to_arrow()
    with pytest.raises(TypeError, match="compressed"):
        r.values  # noqa: B018
    with pytest.raises(ValueError, match="unknown codec 'brotli'"):
        StringsMmap.from_strings(tmp_path / "b", ["a"], codec="brotli")
    with pytest.raises(TypeError, match="codec"):
        mmap_ninja.np_from_generator(tmp_path / "n", [np.zeros(2)], 1, codec="zstd")
    assert not (tmp_path / "b").exists() and not (tmp_path / "n").exists()


def test_threads_read_a_compressed_map_each_with_its_own_decompressor(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "m", TEXTS, codec="zstd")
    errors = []

    def read(seed):
        rng = np.random.default_rng(seed)
        for i in rng.integers(0, len(TEXTS), 3000).tolist():
            if m[i] != TEXTS[i]:
                errors.append(i)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
