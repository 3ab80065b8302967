"""Turning user samples into arrays of a map's dtype without ever changing a value silently.

The rule: a cast NumPy calls "safe" is always taken. Otherwise a sample is stored only if its values survive:
integers (and integral floats) must fit the target integer type, numbers going to a float type must not
overflow to infinity (rounding to the target's precision is accepted, as NumPy's ``same_kind`` does),
and strings must not be cut short. Everything else is refused with an error naming the item.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def storable_dtype(dtype: Any, what: str) -> np.dtype:
    """``dtype`` as a ``np.dtype``, or a TypeError if it cannot live in a memory map."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise TypeError(f"{what}: dtype {dtype} holds Python objects, which cannot be memory-mapped")
    if dtype.itemsize == 0:
        raise TypeError(f"{what}: dtype {dtype} has zero-size items")
    return dtype


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` as an ndarray of a memory-mappable dtype."""
    if value is None:
        raise TypeError(f"{what} is None, expected an array-like")
    try:
        array = np.asarray(value)
    except ValueError as e:  # e.g. nested lists of unequal lengths
        raise ValueError(f"{what} is not a regular array: {e}") from None
    if array.dtype.hasobject:
        raise TypeError(f"{what} has dtype object (nested lists of unequal lengths, or Python objects); "
                        f"only numeric, bool, string and structured dtypes can be memory-mapped")
    return array


def cast(array: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """``array`` converted to ``dtype``, or an error if that would change a value (see the module docstring)."""
    if array.dtype == dtype:
        return array
    if np.can_cast(array.dtype, dtype, "safe"):
        return array.astype(dtype)
    source, target = array.dtype.kind, dtype.kind
    refusal = f"{what}: cannot store dtype {array.dtype} as {dtype}"
    if source in "biuf" and target in "fc":
        with np.errstate(over="ignore", invalid="ignore"):
            out = array.astype(dtype)
        overflow = ~np.isfinite(out) & np.isfinite(array)
        if not overflow.any():
            return out
        raise ValueError(f"{refusal}: value {array[overflow].flat[0].item()!r} overflows {dtype}")
    if source in "biuf" and target in "biu":
        with np.errstate(invalid="ignore", over="ignore"):
            out = array.astype(dtype)
        changed = out != array
        if not changed.any():
            return out
        raise ValueError(f"{refusal}: value {array[changed].flat[0].item()!r} does not fit (it would become "
                         f"{out[changed].flat[0].item()!r})")
    if source in "SU" and target in "SU":
        try:
            out = array.astype(dtype)
            changed = out.astype(array.dtype) != array
        except UnicodeEncodeError as e:
            raise ValueError(f"{refusal}: {e}") from None
        if not changed.any():
            return out
        raise ValueError(f"{refusal}: {array[changed].flat[0].item()!r} would be cut short")
    raise TypeError(f"{refusal} without changing values")


def as_sample(value: Any, dtype: Optional[np.dtype], what: str) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype`` (of its own dtype if ``dtype`` is None)."""
    array = as_array(value, what)
    if dtype is not None:
        array = cast(array, dtype, what)
    # Not np.ascontiguousarray, which turns a 0-d sample into a 1-d one.
    return array if array.flags.c_contiguous else array.copy(order="C")


def raw_bytes(array: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a flat uint8 view (works for 0-d arrays and any dtype)."""
    return array.reshape(-1).view(np.uint8)
