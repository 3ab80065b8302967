import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import (
    NumpyMmap,
    np_append,
    np_extend,
    np_extend_dir,
    np_from_generator,
    np_from_ndarray,
    np_open_existing,
)
from mmap_ninja.kinds import numpy as np_module

from tests.support import snapshot

DTYPES = [np.dtype(d) for d in ["u1", "<i4", ">i4", ">f8", "c16", "?", "S5", "<U3", "M8[ms]",
                                 [("x", "<f4"), ("name", "S4"), ("pos", ">i2", (2,))]]]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dtypes_round_trip_with_extends(tmp_path, dtype):
    raw = np.frombuffer(np.random.default_rng(0).bytes(dtype.itemsize * 30), dtype=dtype)
    if dtype.kind == "U":
        raw = np.array(["ab", "ç", "数据"] * 10, dtype=dtype)
    if dtype.kind == "b":
        raw = raw.view(np.uint8).astype(bool)
    arr = raw.reshape(10, 3)
    m = np_from_ndarray(tmp_path / "m", arr[:4])
    np_extend(m, arr[4:9])
    np_append(m, arr[9])
    m.close()
    back = np_open_existing(tmp_path / "m")
    assert back.dtype == dtype and back.shape == (10, 3)
    assert np.asarray(back).tobytes() == arr.tobytes()


@pytest.mark.parametrize("order", ["C", "F"])
def test_memory_order_round_trips_with_extends(tmp_path, order):
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.int32).reshape(2, 3, 4, 5)
    arr = np.asfortranarray(arr) if order == "F" else arr
    m = np_from_ndarray(tmp_path / "m", arr)
    np_extend(m, np.asfortranarray(arr + 1000))  # any input order is accepted
    np_append(m, arr[0] + 2000)
    m.close()
    back = np_open_existing(tmp_path / "m")
    assert back.order == order and back.shape == (5, 3, 4, 5)
    assert np.array_equal(back[:2], arr) and np.array_equal(back[2:4], arr + 1000)
    assert np.array_equal(back[4], arr[0] + 2000)
    assert all(back[i].flags.f_contiguous == (order == "F") for i in range(5))


def test_numpy_indexing_is_numpy_own(tmp_path):
    arr = np.arange(60.0).reshape(10, 6)
    m = np_from_ndarray(tmp_path / "m", arr)
    assert np.array_equal(m[2:8:3, 1:3], arr[2:8:3, 1:3])
    assert np.array_equal(m[[1, -1]], arr[[1, -1]])
    assert np.array_equal(m[arr[:, 0] > 20], arr[arr[:, 0] > 20])
    assert np.array_equal(np.asarray(m) * 2, arr * 2) and np.shares_memory(np.asarray(m), m.array)
    assert not m[3].flags.writeable and m[3, 2] == arr[3, 2]
    with pytest.raises(IndexError, match="10"):
        m[10]
    assert np.array_equal(list(m)[4], arr[4])


def test_from_generator_returns_full_length_and_extends_work(tmp_path):
    m = np_from_generator(tmp_path / "m", (np.full((2, 2), i, np.int16) for i in range(10)), batch_size=4)
    assert isinstance(m, NumpyMmap) and m.shape == (10, 2, 2) and m[9, 0, 0] == 9
    m.close()
    np_extend_dir(tmp_path / "m", np.full((3, 2, 2), 7, np.int16))
    np_extend(tmp_path / "m", np.full((1, 2, 2), 8, np.int16))
    np_append(tmp_path / "m", np.full((2, 2), 9, np.int16))
    back = mmap_ninja.open_existing(tmp_path / "m")
    assert back.shape == (15, 2, 2) and back[-1, 1, 1] == 9 and back[12, 0, 0] == 7


def test_empty_generator_and_empty_array(tmp_path):
    m = np_from_generator(tmp_path / "g", iter([]), batch_size=4)
    assert len(m) == 0 and list(m) == []
    m.append(np.ones(3, np.float32))  # the first samples fix dtype and shape
    assert m.shape == (1, 3) and m.dtype == np.float32
    e = np_from_ndarray(tmp_path / "e", np.empty((0, 4), np.int8))
    assert e.shape == (0, 4) and e.dtype == np.int8
    e.extend(np.ones((2, 4), np.int8))
    assert e.shape == (2, 4)


@pytest.mark.parametrize("bad, error, message", [
    (np.ones((2, 3, 5)), ValueError, r"samples of shape \(3, 5\); the map's samples have shape \(3, 4\)"),
    (np.ones((2, 12)), ValueError, r"shape \(12,\)"),
    ([np.ones((3, 4)), np.ones((3, 5))], ValueError, r"item 3 has shape \(3, 5\), expected \(3, 4\)"),
    (np.full((1, 3, 4), 1e10), ValueError, "does not fit"),
    (np.full((1, 3, 4), "x"), TypeError, "cannot store dtype <U1 as int32"),
    (np.array([[[None] * 4] * 3]), TypeError, "dtype object"),
    (5, TypeError, "not iterable"),
    (np.float32(5), ValueError, "got a scalar"),
])
def test_shape_and_dtype_errors_leave_the_map_unchanged(tmp_path, bad, error, message):
    m = np_from_ndarray(tmp_path / "m", np.zeros((2, 3, 4), np.int32))
    before = snapshot(tmp_path / "m")
    with pytest.raises(error, match=message):
        m.extend(bad)
    assert snapshot(tmp_path / "m") == before and m.shape == (2, 3, 4)


def test_in_place_assignment_numpy_semantics(tmp_path):
    m = np_from_ndarray(tmp_path / "m", np.zeros((4, 3), np.uint8))
    m[1] = 7
    m[2:, 0] = [1, 2]
    with pytest.raises(ValueError, match="does not fit"):
        m[0] = 256
    m.close()
    back = np_open_existing(tmp_path / "m", mode="r+")
    assert back[:, 0].tolist() == [0, 7, 1, 2] and back[1].tolist() == [7, 7, 7]


def test_zero_size_samples_are_refused(tmp_path):
    with pytest.raises(ValueError, match="hold no elements"):
        np_from_ndarray(tmp_path / "m", np.zeros((3, 0)))


def test_module_names():
    assert np_module.from_ndarray is np_from_ndarray and np_module.open_existing is np_open_existing
    assert mmap_ninja.np_extend_dir is np_module.extend_dir


def test_path_based_writes_take_writer_options(tmp_path):
    m = np_from_ndarray(tmp_path / "m", np.zeros((1, 2)))
    with m.transaction(), pytest.raises(mmap_ninja.MapLockedError, match=r"waited 0\.1 s"):
        np_extend_dir(tmp_path / "m", np.ones((1, 2)), lock_timeout=0.1)
    m.close()
    np_extend(tmp_path / "m", np.ones((1, 2)), durable=True)
    np_append(tmp_path / "m", np.ones(2), durable=True, lock_timeout=None)
    assert np_open_existing(tmp_path / "m").shape == (3, 2)
