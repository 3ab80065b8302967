"""`ReadOnlyArrayMixin`: make a map behave like a read-only ndarray in NumPy expressions.

A class that holds its data as one read-only ndarray (exposed through the ``array`` property) gets,
by listing the mixin among its bases, what a user of ``np.memmap`` expects for reading:

- element-wise operators (``m == 0``, ``m + 1``, ``m / 20.0``, ``-m``, ``m @ w``) and every ufunc
  (``np.exp(m)``, ``np.add(m, 1)``, ``np.maximum.reduce(m)``);
- NumPy functions (``np.mean(m)``, ``np.concatenate([m, m])``, ``np.sum(m, axis=0)``, ``np.where(m > 0, m, 0)``);
- the common ndarray methods and properties (``.mean()``, ``.T``, ``.reshape``, ``.astype``, ``.tolist()``,
  ``.nbytes`` ...), ``x in m`` and ``bool(m)`` with ndarray's meaning;
- ``np.asarray(m)``: the array itself, without a copy and read-only.

Results are plain ndarrays (or NumPy scalars), never maps: a result computed from the map is a new array, and
a result that is a view of the map (``m.T``, ``m.reshape(...)``, ``np.ravel(m)``) is read-only like the
array it views. Nothing writes through the mixin: a ufunc's ``out=`` or an in-place operator (``m += 1``)
aimed at the map raises `ValueError`; the host writes with its own ``__setitem__``.

Like an ndarray, an object whose ``==`` is element-wise cannot be hashed (``__hash__`` is None).
The host provides ``__len__``, ``__iter__`` and ``__getitem__`` itself (so per-sample reads stay its own).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt
from numpy.lib.mixins import NDArrayOperatorsMixin

from mmap_ninja.errors import ClosedMapError

__all__ = ["ReadOnlyArrayMixin"]

# NumPy functions that write into their first argument.
_IN_PLACE_FUNCTIONS = frozenset(
    getattr(np, name)
    for name in ("copyto", "place", "put", "put_along_axis", "putmask", "fill_diagonal")
    if hasattr(np, name)
)


def _forward(name: str) -> Callable[..., Any]:
    """A method that calls the ndarray method ``name`` on the host's read-only array."""
    ndarray_method = getattr(np.ndarray, name)

    def method(self: ReadOnlyArrayMixin, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._readable_array(), name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Same as ``ndarray.{name}`` on the read-only array.\n\n{ndarray_method.__doc__ or ''}"
    return method


class ReadOnlyArrayMixin(NDArrayOperatorsMixin):
    """Makes the host read like the read-only ndarray its ``array`` property returns (see the module doc)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # element-wise == makes instances unhashable, as ndarray

    @property
    def array(self) -> npt.NDArray[Any]:
        """The host's data as one read-only ndarray (the one hook a host must define)."""
        raise NotImplementedError(f"{type(self).__name__} must define the `array` property")

    def _readable_array(self) -> npt.NDArray[Any]:
        array = self.array
        if not isinstance(array, np.ndarray):  # a closed map swaps its array for a placeholder
            raise ClosedMapError(f"I/O operation on a closed {type(self).__name__}")
        return array

    def _described_array(self) -> npt.NDArray[Any]:
        """The array the properties that do not read values (``dtype``, ``shape``, ``nbytes``, ...) describe; a
        host that checks reads of its values (``verify_reads=True``) returns it unchecked here."""
        return self._readable_array()

    # -------------------------------------------------------------- conversion

    def __array__(self, dtype: Optional[npt.DTypeLike] = None, copy: Optional[bool] = None) -> npt.NDArray[Any]:
        """``np.asarray(m)``: the read-only array itself (no copy) unless a copy or another dtype is asked for."""
        array = self.array
        if not isinstance(array, np.ndarray):
            array = self._readable_array()  # raises the closed-map error
        if copy:
            return np.array(array, dtype=dtype, copy=True)
        if dtype is None or np.dtype(dtype) == array.dtype:
            return array
        if copy is False:
            raise ValueError(f"{type(self).__name__} of dtype {array.dtype} cannot be converted to {np.dtype(dtype)} "
                             f"without a copy (copy=False was given)")
        return array.astype(dtype)

    # -------------------------------------------------------------- ufuncs and NumPy functions

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        targets = out if isinstance(out, tuple) else (out,)
        if any(isinstance(target, ReadOnlyArrayMixin) for target in targets):
            raise ValueError(f"np.{ufunc.__name__} cannot write into a {type(self).__name__} (out= or an in-place "
                             f"operator such as +=): NumPy may only read it; compute a new array and assign it "
                             f"with m[index] = result")
        if method == "at" and isinstance(inputs[0], ReadOnlyArrayMixin):
            raise ValueError(f"np.{ufunc.__name__}.at would write into a {type(self).__name__}, which NumPy may "
                             f"only read; assign with m[index] = value instead")
        inputs = tuple(_unwrap(value) for value in inputs)
        kwargs = {key: _unwrap(value) for key, value in kwargs.items()}
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> Any:
        writes_first = func in _IN_PLACE_FUNCTIONS and bool(args) and isinstance(args[0], ReadOnlyArrayMixin)
        if writes_first or isinstance(kwargs.get("out"), ReadOnlyArrayMixin):
            raise ValueError(f"np.{getattr(func, '__name__', func)} would write into a {type(self).__name__}, "
                             f"which NumPy may only read; assign with m[index] = value instead")
        # Calling the public function again dispatches on what remains (another library's arrays, say).
        return func(*_unwrap_nested(args), **{key: _unwrap_nested(value) for key, value in kwargs.items()})

    # -------------------------------------------------------------- Python protocols, with ndarray's meaning

    # ndarray's own == and != (not the np.equal ufunc the operator mixin uses), which also compare structured
    # dtypes field by field.
    def __eq__(self, other: object) -> Any:
        return self._readable_array() == _unwrap(other)

    def __ne__(self, other: object) -> Any:
        return self._readable_array() != _unwrap(other)

    def __contains__(self, value: Any) -> bool:
        return bool((self._readable_array() == value).any())

    def __bool__(self) -> bool:
        return bool(self._readable_array())

    # -------------------------------------------------------------- properties

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._described_array().dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._described_array().shape

    @property
    def ndim(self) -> int:
        return self._described_array().ndim

    @property
    def size(self) -> int:
        """The number of elements."""
        return self._described_array().size

    @property
    def nbytes(self) -> int:
        """The size of the elements in bytes."""
        return self._described_array().nbytes

    @property
    def itemsize(self) -> int:
        """The size of one element in bytes."""
        return self._described_array().itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        return self._described_array().strides

    @property
    def flags(self) -> Any:
        """The array's flags (``writeable`` is False)."""
        return self._described_array().flags

    @property
    def T(self) -> npt.NDArray[Any]:
        """The transposed array (a read-only view)."""
        return self._readable_array().transpose()

    @property
    def real(self) -> npt.NDArray[Any]:
        return self._readable_array().real

    @property
    def imag(self) -> npt.NDArray[Any]:
        return self._readable_array().imag

    @property
    def flat(self) -> Any:
        """A read-only flat iterator over the elements."""
        return self._readable_array().flat

    # -------------------------------------------------------------- ndarray methods that only read

    # Methods that write in place (sort, fill, put, resize, partition, setflags, byteswap(inplace=True))
    # are deliberately absent: the host's __setitem__ is the one way to write.
    all = _forward("all")
    any = _forward("any")
    argmax = _forward("argmax")
    argmin = _forward("argmin")
    argpartition = _forward("argpartition")
    argsort = _forward("argsort")
    astype = _forward("astype")
    choose = _forward("choose")
    clip = _forward("clip")
    compress = _forward("compress")
    conj = _forward("conj")
    conjugate = _forward("conjugate")
    copy = _forward("copy")
    cumprod = _forward("cumprod")
    cumsum = _forward("cumsum")
    diagonal = _forward("diagonal")
    dot = _forward("dot")
    flatten = _forward("flatten")
    item = _forward("item")
    max = _forward("max")
    mean = _forward("mean")
    min = _forward("min")
    nonzero = _forward("nonzero")
    prod = _forward("prod")
    ravel = _forward("ravel")
    repeat = _forward("repeat")
    reshape = _forward("reshape")
    round = _forward("round")
    searchsorted = _forward("searchsorted")
    squeeze = _forward("squeeze")
    std = _forward("std")
    sum = _forward("sum")
    swapaxes = _forward("swapaxes")
    take = _forward("take")
    tobytes = _forward("tobytes")
    tofile = _forward("tofile")
    tolist = _forward("tolist")
    trace = _forward("trace")
    transpose = _forward("transpose")
    var = _forward("var")
    view = _forward("view")


def _unwrap(value: Any) -> Any:
    return value._readable_array() if isinstance(value, ReadOnlyArrayMixin) else value


def _unwrap_nested(value: Any) -> Any:
    """``value`` with every mixin instance replaced by its array, looking inside lists and tuples
    (``np.concatenate([m, m])``, ``np.stack((m, x))``)."""
    if isinstance(value, ReadOnlyArrayMixin):
        return value._readable_array()
    if isinstance(value, (list, tuple)) and any(isinstance(item, (ReadOnlyArrayMixin, list, tuple)) for item in value):
        return type(value)(_unwrap_nested(item) for item in value)
    return value
