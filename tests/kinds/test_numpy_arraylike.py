"""NumpyMmap reads like the read-only ndarray it maps (as the np.memmap of mmap_ninja 0.9.0 did).

Every result is compared with the same operation on the plain ndarray the map was built from; no result may be a
map, and no result may let a write reach the map (results either own their memory or are read-only views).
"""

from __future__ import annotations

import operator
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import NumpyMmap, np_extend, np_from_ndarray, np_open_existing

from tests.support import snapshot

SHAPES = {
    "1d-float32": np.arange(1, 13, dtype=np.float32) - 6.5,
    "2d-int32": np.arange(20, dtype=np.int32).reshape(5, 4) % 7 - 2,
    "3d-float64-F": np.asfortranarray(np.linspace(-3, 3, 4 * 3 * 2).reshape(4, 3, 2)),
}
STRUCTURED = np.array([(1.5, b"ab", 3), (-2.0, b"cd", 4), (1.5, b"ab", 3)],
                      dtype=[("x", "<f4"), ("name", "S2"), ("n", ">i2")])


def make_map(path: Path, reference: np.ndarray) -> NumpyMmap:
    m = np_from_ndarray(path, reference)
    assert np.asarray(m).dtype == reference.dtype
    np.testing.assert_array_equal(np.asarray(m), reference)
    return m


def same_outcome(compute: Callable[[Any], Any], m: NumpyMmap, a: np.ndarray) -> None:
    """``compute(m)`` gives what ``compute(a)`` gives, or raises the same exception type."""
    try:
        expected = compute(a)
    except Exception as error:
        with pytest.raises(type(error)):
            compute(m)
        return
    check_result(compute(m), expected, m)


@pytest.fixture(params=sorted(SHAPES))
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[NumpyMmap, np.ndarray]:
    """A writable map and a plain ndarray with its values and its memory layout (a map of order "F" keeps each
    sample Fortran-ordered but the samples one after another, so its strides, and the order in which a float
    reduction adds, differ from those of the Fortran array it was built from)."""
    reference = SHAPES[request.param]
    m = make_map(tmp_path / "m", reference)
    return m, np.asarray(m).copy(order="K")


def check_result(result: Any, expected: Any, m: NumpyMmap) -> None:
    """``result`` equals ``expected`` (values, shape and dtype), is not a map, and cannot write into ``m``."""
    assert not isinstance(result, NumpyMmap)
    if isinstance(expected, np.ndarray):
        assert type(result) is np.ndarray
        assert result.shape == expected.shape and result.dtype == expected.dtype
        if np.shares_memory(result, m.array):
            assert not result.flags.writeable
    elif isinstance(expected, tuple):
        assert type(result) is tuple and len(result) == len(expected)
        for r, e in zip(result, expected):
            check_result(r, e, m)
        return
    else:
        assert type(result) is type(expected)
    np.testing.assert_array_equal(result, expected)


BINARY_OPERATORS = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.add,
                    operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod, operator.pow]


@pytest.mark.parametrize("op", BINARY_OPERATORS, ids=lambda op: op.__name__)
def test_binary_operators_are_element_wise(pair: tuple[NumpyMmap, np.ndarray], op: Callable[[Any, Any], Any]) -> None:
    m, a = pair
    with np.errstate(all="ignore"):  # integer ** negative raises for both
        for other in (2, 0.5, a[::-1].copy()):
            same_outcome(lambda x, other=other: op(x, other), m, a)
            same_outcome(lambda x, other=other: op(other, x), m, a)
        same_outcome(lambda x: op(x, x), m, a)


def test_equality_counts_like_the_array(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    value = a.flat[3]
    assert np.sum(m == value) == np.sum(a == value) >= 1  # 0.9.0's memmap counted; object == gave 0
    assert (m == value).tolist() == (a == value).tolist()


def test_unary_operators(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    check_result(-m, -a, m)
    check_result(+m, +a, m)
    check_result(abs(m), abs(a), m)


def test_integer_operators(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.int64).reshape(6, 4) - 5
    m = make_map(tmp_path / "m", a)
    for op in (operator.and_, operator.or_, operator.xor, operator.lshift, operator.rshift):
        check_result(op(m, 3), op(a, 3), m)
        check_result(op(3, m), op(3, a), m)
    check_result(~m, ~a, m)
    check_result(divmod(m, 4), divmod(a, 4), m)
    weights = np.arange(4, dtype=np.int64)
    check_result(m @ weights, a @ weights, m)
    check_result(np.ones((2, 6), np.int64) @ m, np.ones((2, 6), np.int64) @ a, m)


@pytest.mark.parametrize("ufunc", [np.exp, np.sqrt, np.negative, np.isfinite, np.sign, np.floor], ids=str)
def test_unary_ufuncs(pair: tuple[NumpyMmap, np.ndarray], ufunc: np.ufunc) -> None:
    m, a = pair
    with np.errstate(all="ignore"):
        check_result(ufunc(m), ufunc(a), m)


def test_binary_ufuncs_and_their_methods(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    check_result(np.add(m, 1), np.add(a, 1), m)
    check_result(np.maximum(m, 0), np.maximum(a, 0), m)
    check_result(np.add(m, m), a + a, m)
    check_result(np.add.reduce(m, axis=0), np.add.reduce(a, axis=0), m)
    check_result(np.maximum.accumulate(m), np.maximum.accumulate(a), m)
    check_result(np.subtract.outer(m, [1, 2]), np.subtract.outer(a, [1, 2]), m)
    check_result(np.add.reduceat(m, [0, 2]), np.add.reduceat(a, [0, 2]), m)


def test_ufunc_out_may_be_a_plain_array(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    out = np.empty_like(a)
    assert np.add(m, 1, out=out) is out
    np.testing.assert_array_equal(out, a + 1)


def test_numpy_functions(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    calls: list[Callable[[Any], Any]] = [
        np.mean, np.sum, np.min, np.max, np.std, np.argmax, np.ravel, np.transpose, np.sort, np.unique, np.cumsum,
        np.shape, np.ndim, np.size, np.abs, np.nonzero, np.flatnonzero, np.count_nonzero,
        lambda x: np.sum(x, axis=0), lambda x: np.mean(x, axis=-1), lambda x: np.concatenate([x, x]),
        lambda x: np.stack((x, a)), lambda x: np.where(x > 0, x, 0), lambda x: np.clip(x, -1, 1),
        lambda x: np.isin(x, [1, 2, 3]), lambda x: np.percentile(x, 30), lambda x: np.diff(x, axis=0),
        lambda x: np.reshape(x, -1), lambda x: np.take(x, [0, -1], axis=0), lambda x: np.flip(x, axis=0),
        lambda x: np.expand_dims(x, 0), lambda x: np.broadcast_to(x, (2, *x.shape)), np.copy, np.ascontiguousarray,
    ]
    for call in calls:
        check_result(call(m), call(a), m)
    assert np.array_equal(m, a) and np.allclose(m, a)
    np.testing.assert_array_equal(m, a)


def test_methods(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    for name in ["mean", "sum", "min", "max", "std", "var", "argmax", "argmin", "prod", "any", "all", "cumsum",
                 "copy", "flatten", "ravel", "transpose", "squeeze", "argsort", "nonzero", "round", "conj"]:
        check_result(getattr(m, name)(), getattr(a, name)(), m)
    check_result(m.sum(axis=0), a.sum(axis=0), m)
    check_result(m.mean(axis=0, keepdims=True), a.mean(axis=0, keepdims=True), m)
    check_result(m.reshape(-1), a.reshape(-1), m)
    check_result(m.reshape((1, *a.shape)), a.reshape((1, *a.shape)), m)
    check_result(m.astype(np.float16), a.astype(np.float16), m)
    check_result(m.clip(-1, 1), a.clip(-1, 1), m)
    check_result(m.take([0, -1], axis=0), a.take([0, -1], axis=0), m)
    check_result(m.repeat(2, axis=0), a.repeat(2, axis=0), m)
    check_result(m.view(), a.view(), m)
    assert m.tolist() == a.tolist()
    assert m.tobytes() == a.tobytes()
    assert m.item(0) == a.item(0)
    check_result(m.T, a.T, m)
    if a.ndim > 1:
        check_result(m.swapaxes(0, 1), a.swapaxes(0, 1), m)
        check_result(m.diagonal(), a.diagonal(), m)
        check_result(m.trace(), a.trace(), m)


def test_properties(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    for name in ["shape", "ndim", "dtype", "size", "nbytes", "itemsize", "strides"]:
        assert getattr(m, name) == getattr(a, name), name
    check_result(m.real, a.real, m)
    check_result(m.imag, a.imag, m)
    assert list(m.flat) == list(a.flat)
    assert not m.flags.writeable


def test_len_iteration_contains_and_bool(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    assert len(m) == len(a)
    rows = list(m)
    assert len(rows) == len(a)
    for row, expected in zip(rows, a):
        check_result(row, expected, m)
    assert (a.flat[5] in m) and (a.flat[5] in a)
    assert (1000 in m) is (1000 in a) is False
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(m)


def test_bool_of_a_single_element(tmp_path: Path) -> None:
    for value in (0, 3):
        a = np.array([value], dtype=np.int16)
        m = make_map(tmp_path / f"m{value}", a)
        assert bool(m) is bool(a) is (value != 0)


def test_structured_dtype(tmp_path: Path) -> None:
    a = STRUCTURED
    m = make_map(tmp_path / "m", a)
    check_result(m == a[0], a == a[0], m)
    check_result(m != a[::-1], a != a[::-1], m)
    check_result(np.concatenate([m, m]), np.concatenate([a, a]), m)
    check_result(m.copy(), a.copy(), m)
    check_result(m["x"] + 1, a["x"] + 1, m)
    check_result(np.unique(m), np.unique(a), m)
    check_result(m.astype([("x", "<f8"), ("name", "S2"), ("n", "<i4")]),
                 a.astype([("x", "<f8"), ("name", "S2"), ("n", "<i4")]), m)
    assert m.tolist() == a.tolist()
    assert (a[1] in m) and (m.itemsize == a.itemsize)


def test_asarray_is_the_mapping_itself_and_read_only(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    view = np.asarray(m)
    assert view is m.array and type(view) is np.ndarray
    assert not view.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 0
    copied = np.array(m)
    assert copied.flags.writeable and not np.shares_memory(copied, view)
    np.testing.assert_array_equal(copied, a)
    converted = np.asarray(m, dtype=np.complex128)
    np.testing.assert_array_equal(converted, a.astype(np.complex128))
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":  # the copy= keyword of np.asarray
        assert np.asarray(m, copy=False) is view
        for target in (a, m):
            with pytest.raises(ValueError):
                np.asarray(target, dtype=np.complex128, copy=False)


def test_writes_through_numpy_are_refused_and_change_nothing(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    m = make_map(tmp_path / "m", a)
    before = snapshot(tmp_path / "m")
    attempts: list[Callable[[], Any]] = [
        lambda: np.add(a, 1, out=m),
        lambda: np.add(a, 1, out=(m,)),
        lambda: np.negative(a, m),
        lambda: np.add.reduce(np.stack([a, a]), axis=0, out=m),
        lambda: np.add.at(m, [0], 1),
        lambda: np.copyto(m, 0),
        lambda: np.put(m, [0], 5),
        lambda: np.putmask(m, a > 1, 0),
        lambda: np.cumsum(a, axis=0, out=m),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="NumpyMmap"):
            attempt()
    for in_place in (operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ipow):
        with pytest.raises(ValueError, match=r"NumpyMmap.*in-place"):
            in_place(m, 2)
    np.testing.assert_array_equal(m, a)
    m.close()
    assert snapshot(tmp_path / "m") == before
    np.testing.assert_array_equal(np_open_existing(tmp_path / "m"), a)


def test_setitem_still_writes_and_operations_see_growth(tmp_path: Path) -> None:
    a = np.arange(6, dtype=np.int32).reshape(3, 2)
    m = make_map(tmp_path / "m", a)
    m[0] = [10, 11]
    np_extend(m, np.full((2, 2), 7, np.int32))
    expected = np.concatenate([np.array([[10, 11]], np.int32), a[1:], np.full((2, 2), 7, np.int32)])
    check_result(m + 0, expected, m)
    assert m.sum() == expected.sum() and len(m) == 5
    check_result(pickle.loads(pickle.dumps(m)) * 2, expected * 2, m)


def test_maps_are_unhashable_like_ndarrays(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, a = pair
    assert NumpyMmap.__hash__ is None
    for value in (a, m):
        with pytest.raises(TypeError, match="unhashable"):
            hash(value)


def test_closed_map_refuses_clearly(pair: tuple[NumpyMmap, np.ndarray]) -> None:
    m, _ = pair
    m.close()
    for attempt in (lambda: m + 1, lambda: np.mean(m), lambda: m.sum(), lambda: np.asarray(m), lambda: m.size):
        with pytest.raises(ValueError, match="closed"):
            attempt()


TORCH_PROBE = """
import sys, warnings
import numpy as np, torch
from mmap_ninja import np_open_existing
source = (np.memmap(sys.argv[2], dtype=np.float32, mode="r", shape=(4, 3)) if sys.argv[1] == "memmap"
          else np_open_existing(sys.argv[2]))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tensor = torch.as_tensor(np.asarray(source))
assert tensor.data_ptr() == np.asarray(source).ctypes.data, "copied"
assert tensor.tolist() == np.asarray(source).tolist()
print(sorted({(w.category.__name__, "not writable" in str(w.message)) for w in caught}))
"""


def test_torch_as_tensor_behaves_as_on_a_read_only_memmap(tmp_path: Path) -> None:
    # torch warns about a read-only array once per process, so each source gets a fresh interpreter.
    pytest.importorskip("torch")
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    make_map(tmp_path / "m", a).close()
    a.tofile(tmp_path / "raw.bin")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(mmap_ninja.__file__).parents[1]), *sys.path])}
    outputs = []
    for kind, path in (("memmap", tmp_path / "raw.bin"), ("map", tmp_path / "m")):
        proc = subprocess.run([sys.executable, "-c", TORCH_PROBE, kind, str(path)], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout.strip())
    assert outputs[0] == outputs[1] == "[('UserWarning', True)]"


def test_with_a_wrapper_fn_numpy_sees_the_wrapped_samples(tmp_path):
    m = np_from_ndarray(tmp_path / "w", np.arange(6.0).reshape(3, 2))
    wrapped = NumpyMmap(tmp_path / "w", wrapper_fn=lambda x: x / 20.0)
    np.testing.assert_allclose(np.asarray(wrapped), np.arange(6.0).reshape(3, 2) / 20.0)
    assert np.allclose(m / 20.0, wrapped) and float(wrapped.sum()) == 15.0 / 20.0
    np.testing.assert_array_equal(np.asarray(m), np.arange(6.0).reshape(3, 2))  # no wrapper: the raw array
