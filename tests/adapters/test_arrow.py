"""Arrow interchange: zero-copy to_arrow, from_arrow from arrays, chunked arrays and datasets columns."""

import numpy as np
import pyarrow as pa
import pytest

from mmap_ninja import RaggedMmap, StringsMmap

STRINGS = ["", "héllo", "wörld ✓", "a" * 1000, "", "last"]


def _address(array):
    return array.__array_interface__["data"][0]


def test_strings_to_arrow_is_zero_copy(tmp_path):
    m = StringsMmap.from_strings(tmp_path / "s", STRINGS)
    arr = m.to_arrow()
    assert isinstance(arr, pa.LargeStringArray)
    assert arr.to_pylist() == STRINGS and arr.null_count == 0
    _, offsets, data = arr.buffers()
    assert offsets.address == _address(m.offsets)
    assert data.address == _address(m.values)
    arr.validate(full=True)
    m.close()
    assert arr.to_pylist() == STRINGS  # the buffers keep the mapping alive


def test_ragged_to_arrow_is_zero_copy(tmp_path):
    samples = [np.arange(n, dtype=np.float32) * 0.5 for n in (3, 0, 5, 1)]
    m = RaggedMmap.from_lists(tmp_path / "r", samples)
    arr = m.to_arrow()
    assert isinstance(arr, pa.LargeListArray) and arr.type == pa.large_list(pa.float32())
    assert arr.buffers()[1].address == _address(m.offsets)
    assert arr.values.buffers()[1].address == _address(m.values)
    arr.validate(full=True)
    assert [np.asarray(x, np.float32).tolist() for x in arr.to_pylist()] == [s.tolist() for s in samples]


def test_ragged_to_arrow_refuses_multidimensional_samples(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(2), np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r"needs 1-D samples.*samples 0 and 1 .*\(2, 2\)"):
        m.to_arrow()


def test_bool_ragged_to_arrow_copies_into_bits(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.array([True, False]), np.array([True])])
    assert m.to_arrow().to_pylist() == [[True, False], [True]]


@pytest.mark.parametrize("arrow_type", ["string", "large_string"])
def test_strings_round_trip(tmp_path, arrow_type):
    source = pa.array(STRINGS, type=getattr(pa, arrow_type)())
    m = StringsMmap.from_arrow(tmp_path / "s", source)
    assert list(m) == STRINGS
    back = m.to_arrow()
    assert back.equals(source.cast(pa.large_string()))
    again = StringsMmap.from_arrow(tmp_path / "s2", back)
    assert list(again) == STRINGS


def test_strings_from_sliced_chunked_array_in_small_batches(tmp_path):
    chunked = pa.chunked_array([pa.array(STRINGS[:3]), pa.array(["zz", *STRINGS[3:]]).slice(1)])
    m = StringsMmap.from_arrow(tmp_path / "s", chunked, batch_size=2)
    assert list(m) == STRINGS
    reopened = StringsMmap(tmp_path / "s")
    assert list(reopened) == STRINGS


def test_ragged_round_trip(tmp_path):
    source = pa.array([[1, 2, 3], [], [4], [5, 6]], type=pa.list_(pa.int32()))
    m = RaggedMmap.from_arrow(tmp_path / "r", source.slice(1), batch_size=2)
    assert m.dtype == np.int32
    assert [s.tolist() for s in m] == [[], [4], [5, 6]]
    back = m.to_arrow()
    assert back.to_pylist() == [[], [4], [5, 6]]
    again = RaggedMmap.from_arrow(tmp_path / "r2", pa.chunked_array([back, back]), dtype=np.int64)
    assert again.dtype == np.int64 and [s.tolist() for s in again] == [[], [4], [5, 6]] * 2


def test_ragged_from_fixed_size_list(tmp_path):
    source = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.uint8)), 2)
    m = RaggedMmap.from_arrow(tmp_path / "r", source)
    assert [s.tolist() for s in m] == [[0, 1], [2, 3], [4, 5]]


def test_from_arrow_refuses_nulls_and_wrong_types(tmp_path):
    with pytest.raises(ValueError, match="item 2 is null"):
        StringsMmap.from_arrow(tmp_path / "a", pa.array(["x", "y", None]))
    with pytest.raises(ValueError, match="null"):
        RaggedMmap.from_arrow(tmp_path / "b", pa.array([[1, None]]))
    with pytest.raises(TypeError, match="string"):
        StringsMmap.from_arrow(tmp_path / "c", pa.array([1, 2]))
    with pytest.raises(TypeError, match="list"):
        RaggedMmap.from_arrow(tmp_path / "d", pa.array(["x"]))
    with pytest.raises(ValueError, match="does not fit"):
        RaggedMmap.from_arrow(tmp_path / "e", pa.array([[300]]), dtype=np.uint8)
    with pytest.raises(ValueError, match="one column"):
        StringsMmap.from_arrow(tmp_path / "f", pa.table({"a": ["x"], "b": ["y"]}))


def test_from_one_column_table(tmp_path):
    m = StringsMmap.from_arrow(tmp_path / "s", pa.table({"text": STRINGS}))
    assert list(m) == STRINGS


def test_from_hugging_face_datasets_columns(tmp_path):
    import datasets
    ds = datasets.Dataset.from_dict({"text": STRINGS, "ids": [[i] * i for i in range(len(STRINGS))]})
    assert list(StringsMmap.from_arrow(tmp_path / "s", ds["text"])) == STRINGS
    ids = RaggedMmap.from_arrow(tmp_path / "r", ds["ids"])
    assert [s.tolist() for s in ids] == [[i] * i for i in range(len(STRINGS))]
    shuffled = ds.shuffle(seed=0)  # an indices mapping: rows come out in the dataset's order
    m = StringsMmap.from_arrow(tmp_path / "s2", shuffled["text"])
    assert list(m) == shuffled["text"][:]
    assert list(StringsMmap.from_arrow(tmp_path / "s3", ds.select_columns(["text"]))) == STRINGS


# ------------------------------------------------------------------------------ dictionaries and list views


@pytest.mark.parametrize("value_type", [pa.string(), pa.large_string(), pa.string_view()])
def test_strings_from_dictionary_encoded_data(tmp_path, value_type):
    # Parquet and pandas categoricals give dictionary-encoded strings; chunks carry their own dictionaries.
    first = pa.DictionaryArray.from_arrays(pa.array([2, 0, 0, 1], pa.int32()), pa.array(["é", "b", "ccc"], value_type))
    second = pa.array(["x", "é", "x", ""]).cast(pa.dictionary(pa.int32(), value_type)).slice(1)
    m = StringsMmap.from_arrow(tmp_path / "s", pa.chunked_array([first, second]), batch_size=3)
    assert list(m) == ["ccc", "é", "é", "b", "é", "x", ""]
    categorical = pa.table({"c": pa.array(["lo", "hi", "lo"]).dictionary_encode()})
    assert list(StringsMmap.from_arrow(tmp_path / "t", categorical)) == ["lo", "hi", "lo"]


def test_dictionary_nulls_are_refused_with_the_item(tmp_path):
    null_index = pa.array(["a", None, "b"]).dictionary_encode()
    with pytest.raises(ValueError, match="item 1 is null"):
        StringsMmap.from_arrow(tmp_path / "a", null_index)
    null_value = pa.DictionaryArray.from_arrays(pa.array([0, 1]), pa.array(["a", None]))
    with pytest.raises(ValueError, match="item 1 is null"):
        StringsMmap.from_arrow(tmp_path / "b", null_value)
    with pytest.raises(TypeError, match="string"):
        StringsMmap.from_arrow(tmp_path / "c", pa.array([1, 2]).dictionary_encode())


@pytest.mark.parametrize("list_view", [pa.list_view, pa.large_list_view])
def test_ragged_from_list_views_with_overlapping_out_of_order_offsets(tmp_path, list_view):
    offset_type = pa.int32() if list_view is pa.list_view else pa.int64()
    values = pa.array([1, 2, 3, 4, 5, 6], pa.int16())
    offsets, sizes = [4, 0, 2, 5, 1], [2, 3, 3, 0, 1]  # backwards, overlapping, empty
    array_type = pa.ListViewArray if list_view is pa.list_view else pa.LargeListViewArray
    views = array_type.from_arrays(pa.array(offsets, offset_type), pa.array(sizes, offset_type), values)
    assert views.type == list_view(pa.int16())
    expected = [[5, 6], [1, 2, 3], [3, 4, 5], [], [2]]
    assert views.to_pylist() == expected
    m = RaggedMmap.from_arrow(tmp_path / "r", views, batch_size=2)
    assert m.dtype == np.int16 and [s.tolist() for s in m] == expected
    sliced = RaggedMmap.from_arrow(tmp_path / "s", views.slice(1, 3), dtype=np.int64)
    assert [s.tolist() for s in sliced] == expected[1:4]
    mixed = pa.chunked_array([views, views.slice(3)])
    assert [s.tolist() for s in RaggedMmap.from_arrow(tmp_path / "c", mixed)] == expected + expected[3:]


def test_list_view_nulls_are_refused_only_where_read(tmp_path):
    values = pa.array([1.5, None, 2.5, 3.5])
    skips_the_null = pa.ListViewArray.from_arrays(pa.array([2, 0]), pa.array([2, 1]), values)
    m = RaggedMmap.from_arrow(tmp_path / "ok", skips_the_null)
    assert [s.tolist() for s in m] == [[2.5, 3.5], [1.5]]
    reads_the_null = pa.ListViewArray.from_arrays(pa.array([2, 0]), pa.array([2, 2]), values)
    with pytest.raises(ValueError, match="null"):
        RaggedMmap.from_arrow(tmp_path / "bad", reads_the_null)
    null_list = pa.ListViewArray.from_arrays(pa.array([0, 0]), pa.array([1, 1]), values, mask=pa.array([False, True]))
    with pytest.raises(ValueError, match="item 1 is null"):
        RaggedMmap.from_arrow(tmp_path / "bad2", null_list)
    flags = pa.ListViewArray.from_arrays(pa.array([1, 0]), pa.array([2, 1]), pa.array([True, False, True]))
    assert [s.tolist() for s in RaggedMmap.from_arrow(tmp_path / "b", flags)] == [[False, True], [True]]
