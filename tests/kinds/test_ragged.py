import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmap_ninja import RaggedMmap, RaggedMmmap, RecordsMmap
from mmap_ninja.kinds.ragged import RaggedMmmap as seed_spelling

from tests.support import snapshot

settings_fast = settings(max_examples=50, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
dtypes = st.sampled_from(["u1", "i2", "<i4", ">i8", "f4", ">f8", "c8", "?", "S3", "U2", "M8[s]"])


@given(dtype=dtypes, data=st.data())
@settings_fast
def test_round_trip_any_shapes(tmp_path_factory, dtype, data):
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    samples = data.draw(st.lists(hnp.arrays(np.dtype(dtype), shapes), max_size=8))
    path = tmp_path_factory.mktemp("r") / "m"
    m = RaggedMmap.from_generator(path, iter(samples), batch_size=3, dtype=dtype)
    m.close()
    reopened = RaggedMmap(path)
    assert len(reopened) == len(samples)
    for got, want in zip(reopened, samples):
        assert got.shape == want.shape and got.dtype == np.dtype(dtype)
        assert got.tobytes() == want.tobytes()


def test_seed_spellings_are_aliases():
    assert RaggedMmmap is RaggedMmap and seed_spelling is RaggedMmap


def test_mixed_ndim_in_one_map(tmp_path):
    samples = [np.float32(1.5), np.arange(5, dtype=np.float32), np.ones((2, 3, 4), np.float32),
               np.zeros((0, 3), np.float32)]
    m = RaggedMmap.from_lists(tmp_path / "m", samples)
    assert m[0].shape == () and m[0] == 1.5
    assert [m[i].shape for i in range(4)] == [(), (5,), (2, 3, 4), (0, 3)]
    assert [m.shape(i) for i in range(-4, 0)] == [(), (5,), (2, 3, 4), (0, 3)]
    assert list(m.offsets) == [0, 1, 6, 30, 30]


def test_reads_are_zero_copy_views_of_the_map(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.arange(4), np.arange(6).reshape(2, 3)])
    assert np.shares_memory(m[1], m.values)
    batch = m[[0, 1]]
    assert all(np.shares_memory(b, m.values) for b in batch)


def test_dtype_from_first_sample_or_argument(tmp_path):
    assert RaggedMmap.from_lists(tmp_path / "a", [[1, 2], [3]]).dtype == np.int64
    m = RaggedMmap.from_lists(tmp_path / "b", [[1, 2], [3]], dtype=np.uint8)
    assert m.dtype == np.uint8 and m[0].dtype == np.uint8
    empty = RaggedMmap.from_lists(tmp_path / "c", [])
    assert empty.dtype is None and len(empty) == 0
    empty.extend([np.array([1.5], np.float16)])
    assert empty.dtype == np.float16


@pytest.mark.parametrize("dtype, bad, error, message", [
    (np.uint8, [[1, 300]], ValueError, "item 1: cannot store dtype int64 as uint8: value 300 does not fit"),
    (np.uint8, [[-1]], ValueError, "value -1 does not fit"),
    (np.int32, [[1.5]], ValueError, "value 1.5 does not fit"),
    (np.float32, [[1e300]], ValueError, "overflows float32"),
    (np.float64, [[1 + 2j]], TypeError, "cannot store dtype complex128 as float64"),
    (np.int64, [["12"]], TypeError, "cannot store dtype <U2 as int64"),
    (np.int64, [[object()]], TypeError, "dtype object"),
    (np.int64, [[[1, 2], [3]]], ValueError, "item 1 is not a regular array"),
    (np.int64, [None], TypeError, "item 1 is None"),
])
def test_unsafe_samples_raise_and_leave_the_map_unchanged(tmp_path, dtype, bad, error, message):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.array([7], dtype)])
    before = snapshot(tmp_path / "m")
    with pytest.raises(error, match=message):
        m.extend(bad)
    assert snapshot(tmp_path / "m") == before and len(m) == 1


def test_value_preserving_casts_are_accepted(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.array([1], np.uint8)])
    m.extend([[2, 255], np.array([3.0]), [True]])
    assert [m[i].tolist() for i in range(1, 4)] == [[2, 255], [3], [1]]
    f = RaggedMmap.from_lists(tmp_path / "f", [np.zeros(1, np.float32)])
    f.append([0.1])  # rounding to float32 precision is accepted, as in NumPy's same_kind casting
    assert f[1].dtype == np.float32 and f[1][0] == np.float32(0.1)


def test_object_dtype_argument_is_refused(tmp_path):
    with pytest.raises(TypeError, match="Python objects"):
        RaggedMmap.from_lists(tmp_path / "m", [[1]], dtype=object)


def test_in_place_assignment(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [np.zeros((2, 2), np.int16), np.zeros(3, np.int16)])
    m[0] = [[1, 2], [3, 4]]
    m[-1] = np.array([5, 6, 7])
    with pytest.raises(ValueError, match=r"item 1 has shape \(3,\) and the new value \(4,\)"):
        m[1] = [1, 2, 3, 4]
    with pytest.raises(ValueError, match="does not fit"):
        m[1] = [1, 2, 70000]
    m.close()
    reopened = RaggedMmap(tmp_path / "m")
    assert reopened[0].tolist() == [[1, 2], [3, 4]] and reopened[1].tolist() == [5, 6, 7]


def test_large_samples_written_without_concatenation(tmp_path):
    big = [np.full((300, 400, 3), i, np.uint8) for i in range(3)]
    m = RaggedMmap.from_lists(tmp_path / "m", big)
    assert all(np.array_equal(m[i], big[i]) for i in range(3))


def test_extend_flat_appends_1d_samples_from_one_buffer(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "m", [], dtype=np.int32)
    m.extend_flat(np.arange(6), [2, 0, 4])
    m.extend_flat([], [])
    assert [a.tolist() for a in m] == [[0, 1], [], [2, 3, 4, 5]] and m.dtype == np.int32
    before = snapshot(tmp_path / "m")
    with pytest.raises(ValueError, match="add up to 3, but 4 were given"):
        m.extend_flat(np.arange(4), [1, 2])
    with pytest.raises(ValueError, match=r"lengths\[1\] is -1"):
        m.extend_flat(np.arange(1), [2, -1])
    with pytest.raises(ValueError, match="value 3000000000 does not fit"):
        m.extend_flat(np.array([3_000_000_000]), [1])
    assert snapshot(tmp_path / "m") == before


def test_bool_samples_round_trip_as_bool_after_empty_lists(tmp_path):
    # An empty list is NumPy's float64 (np.asarray([])): it says nothing of the samples, so the first sample that
    # holds values (or has a dtype of its own) sets the map's dtype, as a records field's inference does.
    m = RaggedMmap.from_lists(tmp_path / "masks", [[], [True, False], [[False], [True]]])
    assert m.dtype == np.dtype(bool)
    assert [sample.dtype for sample in m] == [np.dtype(bool)] * 3
    assert m[1].tolist() == [True, False] and m[0].shape == (0,) and m[2].tolist() == [[False], [True]]
    padded, lengths = m.get_batch([1, 0], pad_value=False)
    assert lengths.tolist() == [2, 0]
    assert padded.dtype == np.dtype(bool) and padded.tolist() == [[True, False], [False, False]]
    records = RecordsMmap.from_dict(tmp_path / "rec", {"mask": [[], [True, False]], "flag": [True, False]})
    assert records[1]["mask"].tolist() == [True, False] and records[1]["mask"].dtype == np.dtype(bool)
    assert records[0]["flag"].dtype == np.dtype(bool)
    assert RaggedMmap.from_lists(tmp_path / "empty", [[], []]).dtype == np.dtype(np.float64)  # nothing else to go by
    assert RaggedMmap.from_lists(tmp_path / "typed", [np.array([]), [True]]).dtype == np.dtype(np.float64)
