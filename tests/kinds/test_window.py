"""`RaggedMmap.window(i, offset, length)`: a zero-copy slice of one sample, on single, sharded and remote maps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmap_ninja import RaggedMmap, merge, open_existing, upload


def test_a_window_is_a_read_only_view_of_the_sample(tmp_path):
    samples = [np.arange(10, dtype=np.int32), np.arange(100, 105, dtype=np.int32), np.empty(0, np.int32)]
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    w = m.window(0, 3, 4)
    np.testing.assert_array_equal(w, [3, 4, 5, 6])
    assert not w.flags.writeable
    assert np.shares_memory(w, m.values)
    np.testing.assert_array_equal(m.window(-2, 0, 5), samples[1])
    assert m.window(1, 5, 0).shape == (0,)
    assert m.window(2, 0, 0).shape == (0,)


def test_out_of_range_windows_name_the_sample_and_its_length(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(10, dtype=np.int16), np.arange(3, dtype=np.int16)])
    with pytest.raises(IndexError, match=r"window \[8, 12\) is out of range for sample 0, whose length is 10"):
        m.window(0, 8, 4)
    with pytest.raises(IndexError, match="sample 1, whose length is 3"):
        m.window(1, -1, 2)
    with pytest.raises(ValueError, match="length cannot be negative, got -1"):
        m.window(1, 0, -1)
    with pytest.raises(IndexError, match="index 2 is out of range"):
        m.window(2, 0, 1)


def test_windows_of_nd_samples_run_along_the_first_axis(tmp_path):
    images = [np.arange(24, dtype=np.uint8).reshape(4, 3, 2), np.arange(6, dtype=np.uint8).reshape(1, 6)]
    m = RaggedMmap.from_lists(tmp_path / "m", images)
    np.testing.assert_array_equal(m.window(0, 1, 2), images[0][1:3])
    assert np.shares_memory(m.window(0, 1, 2), m.values)
    np.testing.assert_array_equal(m.window(1, 0, 1), images[1])
    with pytest.raises(IndexError, match="sample 0, whose length is 4"):
        m.window(0, 3, 2)
    scalars = RaggedMmap.from_lists(tmp_path / "s", [np.array(5, dtype=np.int64)])
    with pytest.raises(IndexError, match="sample 0 is 0-d"):
        scalars.window(0, 0, 1)


def test_a_compressed_map_gives_a_copy_of_the_window(tmp_path):
    pytest.importorskip("lz4")
    samples = [np.arange(i * 7, dtype=np.int64) for i in range(1, 6)]
    m = RaggedMmap.from_lists(tmp_path / "m", samples, codec="lz4")
    np.testing.assert_array_equal(m.window(4, 10, 20), samples[4][10:30])
    with pytest.raises(IndexError, match="sample 1, whose length is 14"):
        m.window(1, 10, 5)


def test_windows_of_a_map_with_checked_reads(tmp_path):
    RaggedMmap.from_lists(tmp_path / "m", [np.arange(9, dtype=np.int32)]).close()
    m = RaggedMmap(tmp_path / "m", mode="r", verify_reads=True)
    np.testing.assert_array_equal(m.window(0, 2, 3), [2, 3, 4])


def _sharded(tmp_path, parts):
    paths = []
    for k, samples in enumerate(parts):
        RaggedMmap.from_lists(tmp_path / f"part{k}", samples).close()
        paths.append(tmp_path / f"part{k}")
    merge(tmp_path / "sharded", paths)
    return tmp_path / "sharded"


def test_a_sharded_map_delegates_to_the_shard_and_names_the_global_sample(tmp_path):
    parts = [[np.arange(5, dtype=np.int32)], [np.arange(50, 58, dtype=np.int32), np.arange(3, dtype=np.int32)]]
    m = open_existing(_sharded(tmp_path, parts))
    np.testing.assert_array_equal(m.window(1, 2, 4), [52, 53, 54, 55])
    np.testing.assert_array_equal(m.window(-1, 1, 2), [1, 2])
    with pytest.raises(IndexError, match=r"length is 8.*sample 1 of .* is sample 0 of shard 1"):
        m.window(1, 5, 4)
    with pytest.raises(IndexError, match="out of range"):
        m.window(3, 0, 1)


def test_remote_single_and_sharded_maps_window_their_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("MMAP_NINJA_CACHE", str(tmp_path / "cache"))
    RaggedMmap.from_lists(tmp_path / "single", [np.arange(20, dtype=np.int16)]).close()
    upload(tmp_path / "single", "memory://window-test/single")
    upload(_sharded(tmp_path, [[np.arange(4, dtype=np.int16)], [np.arange(9, dtype=np.int16)]]),
           "memory://window-test/sharded")
    single = open_existing("memory://window-test/single")
    np.testing.assert_array_equal(single.window(0, 15, 5), np.arange(15, 20))
    pytest.importorskip("torch")
    from mmap_ninja.adapters.torch import PackedTokens

    windows = PackedTokens(single, 8, stride=6)  # a remote map is read through its cached local copy
    assert len(windows) == 3 and windows[2]["input_ids"].tolist() == list(range(12, 20))
    sharded = open_existing("memory://window-test/sharded")
    np.testing.assert_array_equal(sharded.window(1, 6, 3), [6, 7, 8])
    with pytest.raises(IndexError, match="length is 4"):
        sharded.window(0, 1, 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 12), min_size=1, max_size=6), st.data())
def test_windows_equal_slices_of_the_sample(tmp_path_factory, lengths, data):
    samples = [np.arange(n, dtype=np.int32) * (i + 1) for i, n in enumerate(lengths)]
    m = RaggedMmap.from_lists(tmp_path_factory.mktemp("w") / "m", samples)
    i = data.draw(st.integers(0, len(samples) - 1))
    offset = data.draw(st.integers(-2, lengths[i] + 2))
    length = data.draw(st.integers(0, lengths[i] + 2))
    if offset >= 0 and offset + length <= lengths[i]:
        np.testing.assert_array_equal(m.window(i, offset, length), samples[i][offset:offset + length])
    else:
        with pytest.raises(IndexError, match=f"whose length is {lengths[i]}"):
            m.window(i, offset, length)
    m.close()
