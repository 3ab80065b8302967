"""The casting rule (mmap_ninja.kinds.casting): a value is cast only if it survives; float rounding is the one
change."""

import numpy as np
import pytest

import mmap_ninja.kinds.casting as casting
from mmap_ninja import RaggedMmap, np_from_ndarray
from mmap_ninja.kinds.casting import as_array, as_sample, cast

# (source values, source dtype, target dtype): integers a float type cannot hold exactly.
INEXACT_INTEGERS = [
    ([16777217], np.int64, np.float32),  # 2**24 + 1: float32 has a 24-bit significand
    ([16777217], np.int32, np.float32),
    ([2**53 + 1], np.int64, np.float64),  # NumPy calls int64 -> float64 "safe"
    ([2**64 - 1], np.uint64, np.float64),
    ([2049], np.int16, np.float16),
    ([2**53 + 1], np.int64, np.complex128),
    ([2**63 - 1], np.int64, np.float64),  # rounds up to 2**63, which is out of int64's range
]


@pytest.mark.parametrize(("values", "source", "target"), INEXACT_INTEGERS)
def test_integer_to_float_precision_loss_is_refused(values, source, target):
    array = np.array(values, dtype=source)
    with pytest.raises(ValueError, match=f"item 3: .*value {values[0]} would become"):
        cast(array, np.dtype(target), "item 3")


@pytest.mark.parametrize(("values", "source", "target"), [
    ([16777216, -16777216, 0, 3], np.int64, np.float32),
    ([2**53, -2**53, -2**63], np.int64, np.float64),  # powers of two are exact at any size
    ([2048, -2048, 32767 - 32767 % 32], np.int16, np.float16),
    ([2**31 - 1, -2**31], np.int32, np.float64),  # the fast path: every int32 is a float64
    ([255, 0], np.uint8, np.float16),
    ([True, False], np.bool_, np.float16),
])
def test_integer_to_float_exact_values_are_accepted(values, source, target):
    array = np.array(values, dtype=source)
    out = cast(array, np.dtype(target), "x")
    assert out.dtype == target
    assert [int(v) for v in out.tolist()] == [int(v) for v in values]


def test_integer_overflowing_a_float_type_is_refused():
    with pytest.raises(ValueError, match=r"value 70000 would become inf \(float16 overflows\)"):
        cast(np.array([1, 70000]), np.dtype(np.float16), "item 0")


def test_float_rounding_is_accepted_but_overflow_to_inf_is_not():
    out = cast(np.array([0.1, np.nan, np.inf, -np.inf, 1e-50]), np.dtype(np.float32), "x")
    assert out.dtype == np.float32 and out[0] == np.float32(0.1) and np.isnan(out[1])
    assert out[2] == np.inf and out[3] == -np.inf and out[4] == 0  # rounding (here to 0) is allowed
    with pytest.raises(ValueError, match="value 1e\\+300 overflows float32"):
        cast(np.array([1.0, 1e300]), np.dtype(np.float32), "x")
    with pytest.raises(ValueError, match="overflows float16"):
        cast(np.array([65520.0], np.float32), np.dtype(np.float16), "x")


@pytest.mark.parametrize(("value", "target"), [
    (2.0**63, np.int64), (-(2.0**63) - 2048, np.int64), (2.0**64, np.uint64), (-1.0, np.uint64),
    (256.0, np.uint8), (1.7, np.int64), (np.nan, np.int32), (np.inf, np.int64), (0.5, np.bool_),
])
def test_float_to_integer_must_be_integral_and_in_range(value, target):
    with pytest.raises(ValueError, match="does not fit"):
        cast(np.array([0.0, value]), np.dtype(target), "x")


def test_float_to_integer_edges_that_fit():
    out = cast(np.array([-(2.0**63), 2.0**62, -0.0]), np.dtype(np.int64), "x")
    assert out.tolist() == [-2**63, 2**62, 0]
    assert cast(np.array([255.0, 0.0], np.float16), np.dtype(np.uint8), "x").tolist() == [255, 0]


def test_integer_to_integer_must_fit():
    with pytest.raises(ValueError, match="value 300 does not fit"):
        cast(np.array([1, 300]), np.dtype(np.uint8), "x")
    with pytest.raises(ValueError, match="value -1 does not fit"):
        cast(np.array([-1]), np.dtype(np.uint64), "x")
    with pytest.raises(ValueError, match=f"value {2**63} does not fit"):
        cast(np.array([2**63], np.uint64), np.dtype(np.int64), "x")
    assert cast(np.array([2**63 - 1], np.uint64), np.dtype(np.int64), "x").tolist() == [2**63 - 1]


def test_other_kinds_are_refused():
    with pytest.raises(TypeError, match="without changing values"):
        cast(np.array([1 + 2j]), np.dtype(np.float64), "x")
    with pytest.raises(TypeError, match="without changing values"):
        cast(np.array([1]), np.dtype("U3"), "x")
    with pytest.raises(ValueError, match="cut short"):
        cast(np.array(["abcd"]), np.dtype("U2"), "x")


def test_ragged_map_refuses_precision_loss_naming_the_item(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(2, np.float32)])
    m.append(np.array([16777216, 1]))  # exact: accepted
    with pytest.raises(ValueError, match=r"item 2: .*16777217"):
        m.append(np.array([1, 16777217], dtype=np.int64))
    with pytest.raises(ValueError, match=r"the new value of item 0: .*16777217"):
        m[0] = np.array([16777217, 0])
    assert len(m) == 2 and m[0].tolist() == [0, 0] and m[1].tolist() == [16777216, 1]
    m.close()


def test_numpy_map_refuses_precision_loss(tmp_path):
    m = np_from_ndarray(tmp_path / "n", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="16777217"):
        m.extend(np.array([[16777217, 0]], dtype=np.int64))
    with pytest.raises(ValueError, match="16777217"):
        m[0] = [16777217, 0]
    assert len(m) == 2 and not m.array.any()
    m.close()


def test_python_int_beyond_64_bits_is_named_not_blamed_on_nested_lists(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(3, np.int64)])
    with pytest.raises(ValueError, match=f"the new value of item 0: value {2**70} does not fit dtype int64"):
        m[0] = [1, 2, 2**70]
    with pytest.raises(ValueError, match=f"item 1: value {-2**70} does not fit dtype int64"):
        m.append([-2**70])
    assert m[0].tolist() == [0, 0, 0] and len(m) == 1
    m.close()
    dense = np_from_ndarray(tmp_path / "n", np.zeros((1, 3), np.int64))
    with pytest.raises(ValueError, match=f"value {2**70} does not fit"):
        dense[0] = [1, 2, 2**70]
    dense.close()
    with pytest.raises(ValueError, match="float"):  # a float map: say how to accept rounding
        as_array([1, 2**70], "x", np.dtype(np.float64))
    with pytest.raises(TypeError, match="nested lists"):  # real objects are still blamed on their kind
        as_array([1, "a", None], "x")


def test_as_sample_is_c_contiguous_and_keeps_0d():
    assert as_sample(5, np.dtype(np.int16), "x").shape == ()
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    out = as_sample(fortran, None, "x")
    assert out.flags.c_contiguous and out.tolist() == fortran.tolist()


def test_module_is_public_and_documented():
    assert set(casting.__all__) == {"storable_dtype", "as_array", "cast", "as_sample", "raw_bytes"}
    assert "only if it survives" in casting.__doc__
    for name in casting.__all__:
        assert getattr(casting, name).__doc__
