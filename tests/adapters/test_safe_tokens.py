"""`PackedTokens` at its edges (issue 18): maps that do not hold integer token ids are refused by kind or dtype,
and slices and lists of window positions give lists of windows, as a map's indexing does."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmap_ninja import RaggedMmap, RecordsMmap, StringsMmap, np_from_ndarray  # noqa: E402
from mmap_ninja.adapters.torch import PackedTokens  # noqa: E402


def test_a_strings_map_is_refused_naming_its_kind(tmp_path):
    strings = StringsMmap.from_strings(tmp_path / "s", ["hello world"])
    with pytest.raises(TypeError, match=r"needs a ragged map .* of integer token ids, but .*s is a 'strings' map"):
        PackedTokens(strings, 4)


def test_a_strings_field_and_a_numpy_map_are_refused_naming_their_kind(tmp_path):
    rows = RecordsMmap.from_dict(tmp_path / "r", {"text": ["hello world"], "ids": [np.arange(5)]})
    with pytest.raises(TypeError, match="is a 'strings' map"):
        PackedTokens(rows["text"], 4)
    assert len(PackedTokens(rows["ids"], 4)) == 1
    with pytest.raises(TypeError, match="is a 'numpy' map"):
        PackedTokens(np_from_ndarray(tmp_path / "n", np.arange(12).reshape(3, 4)), 4)


def test_float_samples_are_refused_naming_their_dtype(tmp_path):
    floats = RaggedMmap.from_lists(tmp_path / "f", [np.ones(5, dtype=np.float32)])
    with pytest.raises(TypeError, match=r"needs integer token ids .* holds float32 values"):
        PackedTokens(floats, 4)


def test_slices_and_lists_give_the_list_of_windows(tmp_path):
    docs = RaggedMmap.from_lists(tmp_path / "d", [np.arange(5, dtype=np.int32), np.arange(7, dtype=np.int32)])
    windows = PackedTokens(docs, 3)
    assert len(windows) == 4
    for got, position in [(windows[0:2], [0, 1]), (windows[::-2], [3, 1]), (windows[[2, -1]], [2, 3]),
                          (windows[np.array([1, 0])], [1, 0]), (windows[1:1], [])]:
        assert isinstance(got, list) and len(got) == len(position)
        for item, k in zip(got, position):
            expected = windows[k]
            for name in ("input_ids", "cu_seqlens", "doc_ids"):
                np.testing.assert_array_equal(item[name], expected[name])
    with pytest.raises(IndexError, match="window 4 is out of range"):
        windows[[0, 4]]
    with pytest.raises(TypeError, match="indexed by an int, a slice, or a list"):
        windows["0"]
