"""The shape lookup of a ragged batch (`RaggedView.shapes_at` / `checked_shapes`): one combined test on the usual
batch, and every refusal it made before that test was combined still made, naming the sample."""

import numpy as np
import pytest

from mmap_ninja import CorruptMapError, RaggedMmap


def _set_items(path, items):
    """Overwrite int64 items of the column file ``path``: ``items`` maps an item's index to its new value."""
    column = np.fromfile(path, dtype="<i8")
    for index, value in items.items():
        column[index] = value
    column.tofile(path)


@pytest.fixture
def flat(tmp_path):
    RaggedMmap.from_lists(tmp_path / "flat", [np.arange(i % 5 + 1, dtype=np.int32) for i in range(10)]).close()
    return tmp_path / "flat"


def test_a_batch_of_1d_samples_gets_their_lengths(flat):
    m = RaggedMmap(flat, mode="r")
    padded, lengths = m.get_batch([3, 0, 9], pad_value=-1)
    assert lengths.tolist() == [4, 1, 5] and padded.shape == (3, 5)
    assert m.shapes([3, 0, 9]).tolist() == [[4], [1], [5]]
    assert m.shapes([]).shape == (0, 1) and m.get_batch([], pad_value=0)[1].tolist() == []


@pytest.mark.parametrize("start", [1_000, -5, 10], ids=["far-past-dims", "negative", "just-past-dims"])
def test_shape_offsets_shifted_together_outside_dims_are_refused(flat, start):
    # Both ends of sample 3's shape moved: it still has one dimension, but not within the 10 committed dims.
    _set_items(flat / "shape_offsets.bin", {3: start, 4: start + 1})
    m = RaggedMmap(flat, mode="r")
    for call in (lambda: m.get_batch([3], pad_value=0), lambda: m.get_batch([3]), lambda: m.shapes([3])):
        with pytest.raises(CorruptMapError, match=r"shape_offsets\.bin is corrupt: the shape of sample 3 "):
            call()


def test_a_damaged_shape_offset_giving_a_number_of_dimensions_the_header_lacks_is_refused(flat):
    _set_items(flat / "shape_offsets.bin", {4: 5})  # sample 3: dims[3:5], two dimensions; sample 4: none
    m = RaggedMmap(flat, mode="r")
    with pytest.raises(CorruptMapError, match=r"sample 3 would have 2 dimensions, but the header says .*\[1\]"):
        m.get_batch([3], pad_value=0)
    with pytest.raises(CorruptMapError, match=r"sample 4 would have 0 dimensions"):
        m.get_batch([4], pad_value=0)


def test_a_dim_that_differs_from_the_offsets_is_refused_in_a_1d_batch(flat):
    _set_items(flat / "dims.bin", {6: 7})  # sample 6 holds 2 elements by its offsets
    m = RaggedMmap(flat, mode="r")
    assert m.get_batch([5, 7], pad_value=0)[1].tolist() == [1, 3]
    with pytest.raises(CorruptMapError, match=r"sample 6 has the shape \(7,\), but its offsets give it 2 elements"):
        m.get_batch([5, 6], pad_value=0)


def test_samples_of_different_numbers_of_dimensions_are_a_value_error(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "mixed", [np.arange(3), np.zeros((2, 2)), np.arange(4), np.float64(1)])
    with pytest.raises(ValueError, match=r"samples 0 and 1 have different numbers of dimensions") as error:
        m.get_batch([0, 1], pad_value=0)
    assert not isinstance(error.value, CorruptMapError)
    assert m.get_batch([0, 2], pad_value=0)[1].tolist() == [3, 4]
    assert m.get_batch([1], pad_value=0)[1].tolist() == [[2, 2]]
    padded, lengths = m.get_batch([3], pad_value=0)
    assert padded.shape == (1,) and lengths.shape == (1, 0)


@pytest.mark.parametrize("negative", [-1, -2], ids=["minus-one", "minus-two"])
@pytest.mark.parametrize("codec", [None, "lz4"])
def test_a_negative_dimension_is_refused_by_every_read_that_uses_the_shape(tmp_path, negative, codec):
    # NumPy reads a negative dimension in reshape as "the rest": (-2, 3) of 6 elements would give (2, 3).
    if codec is not None:
        pytest.importorskip("lz4")
    options = {} if codec is None else {"codec": codec}
    samples = [np.arange(6.0).reshape(2, 3), np.ones((2, 3)), np.arange(4.0)]
    RaggedMmap.from_lists(tmp_path / "m", samples, **options).close()
    _set_items(tmp_path / "m" / "dims.bin", {0: negative})
    m = RaggedMmap(tmp_path / "m", mode="r")
    reads = [lambda: m[0], lambda: m.shape(0), lambda: m.shapes([0, 1]), lambda: m[0:2], lambda: list(m),
             lambda: m.get_batch([1, 0]), lambda: m.window(0, 0, 1)]
    for read in reads:
        with pytest.raises(CorruptMapError, match=rf"dims\.bin .* sample 0 has the shape \({negative}, 3\): a "
                                                  r"dimension is negative"):
            read()
    np.testing.assert_array_equal(m[1], samples[1])  # the other samples read as before
    np.testing.assert_array_equal(m[2], samples[2])


def test_a_negative_length_of_a_1d_sample_is_refused_where_the_shape_is_read(flat):
    _set_items(flat / "dims.bin", {3: -4})
    m = RaggedMmap(flat, mode="r")
    for read in (lambda: m.shape(3), lambda: m.shapes(), lambda: m.get_batch([3])):
        with pytest.raises(CorruptMapError, match=r"sample 3 has the shape \(-4,\): a dimension is negative"):
            read()
    assert m[3].tolist() == [0, 1, 2, 3]  # a 1-D sample's elements are its offsets' span: the dim is not read
