"""Turning user values into arrays of a map's dtype without ever changing a value silently.

Every container and adapter converts what it is given (lists, NumPy arrays, scalars, PyTorch tensors) with
these functions, so they all follow one rule, which is also what a user of the library can rely on:

**A value is cast to the target dtype only if it survives exactly; the only change accepted is float
rounding.** In detail:

- integers (and bools) going to an integer type must fit it (300 into ``uint8`` is refused);
- floats going to an integer or bool type must be integral and fit it (1.7 into ``int64`` is refused, and so
  are NaN and infinities);
- integers going to a float (or complex) type must be represented exactly: the value converted back must
  equal the original (``int64`` 16777217 into ``float32``, which would become 16777216, is refused);
- floats going to another float (or complex) type may be rounded to its precision (0.1 into ``float32`` is
  accepted, as NumPy's ``same_kind`` casting does), but a finite value must stay finite: a value that would
  overflow to infinity (1e300 into ``float32``) is refused; NaN and infinities stay what they are;
- strings must not be cut short or fail to encode;
- any other change of kind (complex to real, numbers to strings, ...) is refused.

A refusal is a ``ValueError`` (a value does not survive) or ``TypeError`` (the kinds cannot convert), whose
message names the item (the ``what`` argument) and the first value that does not survive.

`as_array` also turns PyTorch tensors into arrays without changing a value: a tensor that requires grad is
detached, a tensor on another device is copied to the CPU (``.cpu()``), and a tensor of a float type NumPy
lacks (``bfloat16``, the ``float8`` types, ``complex32``) is converted to ``float32`` (``complex64``), which
holds each of its values exactly. Other tensors NumPy cannot hold are refused with a hint.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["as_array", "as_sample", "cast", "raw_bytes", "storable_dtype"]


def storable_dtype(dtype: Any, what: str) -> np.dtype:
    """``dtype`` as a ``np.dtype``, or a TypeError naming ``what`` if it cannot live in a memory map
    (object dtypes hold pointers; zero-size items hold nothing)."""
    checked: np.dtype = np.dtype(dtype)
    if checked.hasobject:
        raise TypeError(f"{what}: dtype {checked} holds Python objects, which cannot be memory-mapped")
    if checked.itemsize == 0:
        raise TypeError(f"{what}: dtype {checked} has zero-size items")
    return checked


def as_array(value: Any, what: str, dtype: np.dtype | None = None) -> np.ndarray:
    """``value`` as an ndarray of a memory-mappable dtype (no copy when ``value`` already is one).

    ``what`` names the value in error messages (``"item 7"``). ``dtype``, the dtype the caller will cast
    to (if known), only makes errors more precise; the result is *not* cast (use `cast` or `as_sample`).
    PyTorch tensors are converted as the module docstring says. Raises ``ValueError`` for ragged nested
    lists and for Python ints beyond 64 bits, ``TypeError`` for other values that are no regular array.
    """
    if value is None:
        raise TypeError(f"{what} is None, expected an array-like")
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported; never import it here
    if torch is not None and isinstance(value, torch.Tensor):
        return _tensor_as_array(value, what, dtype)
    try:
        array = np.asarray(value)
    except ValueError as e:  # e.g. nested lists of unequal lengths
        raise ValueError(f"{what} is not a regular array: {e}") from None
    except (TypeError, RuntimeError):
        # A list of tensors NumPy cannot read as they are (requiring grad, bfloat16, on a GPU): convert each.
        if torch is None or not isinstance(value, (list, tuple)):
            raise
        if not any(isinstance(element, torch.Tensor) for element in value):
            raise
        array = np.asarray([_tensor_as_array(element, f"{what}[{k}]", dtype)
                            if isinstance(element, torch.Tensor) else element for k, element in enumerate(value)])
    if array.dtype.hasobject:
        _raise_if_int_too_large(array, what, dtype)
        raise TypeError(f"{what} has dtype object (nested lists of unequal lengths, or Python objects); "
                        f"only numeric, bool, string and structured dtypes can be memory-mapped")
    return array


def _raise_if_int_too_large(array: np.ndarray, what: str, dtype: np.dtype | None) -> None:
    """NumPy gives a list holding a Python int beyond 64 bits dtype object: say which value does not fit."""
    for item in array.flat:
        if isinstance(item, int) and not isinstance(item, bool) and not -2**63 <= item < 2**64:
            if dtype is not None and dtype.kind in "fc":
                raise ValueError(f"{what}: value {item} is a Python int too large for any NumPy integer type; "
                                 f"NumPy cannot convert it to {dtype} exactly as part of an array: pass it as "
                                 f"a float (float(x)) if rounding it is acceptable")
            target = f"dtype {dtype}" if dtype is not None else "any NumPy integer type (int64 or uint64)"
            raise ValueError(f"{what}: value {item} does not fit {target}")


def _tensor_as_array(tensor: Any, what: str, dtype: np.dtype | None) -> np.ndarray:
    """A torch tensor as an ndarray with the same values (see the module docstring)."""
    import torch

    if tensor.requires_grad:
        tensor = tensor.detach()  # the values are unchanged; a stored sample carries no autograd graph
    if tensor.device.type == "meta":
        raise ValueError(f"{what} is a tensor on the 'meta' device, which holds no values")
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()  # an exact copy to host memory, as writing it to disk needs anyway
    if tensor.layout != torch.strided:
        raise TypeError(f"{what} is a {tensor.layout} tensor; convert it to a dense one first (.to_dense())")
    try:
        readable: np.ndarray = tensor.resolve_conj().resolve_neg().numpy()
        return readable
    except TypeError:  # a dtype NumPy lacks (bfloat16, float8_*, complex32, ...)
        pass
    source = tensor.dtype
    if source.is_floating_point or source.is_complex:
        wide = torch.complex64 if source.is_complex else torch.float32
        converted = tensor.to(wide)
        back = converted.to(source)
        if bool(((back == tensor) | (tensor != tensor)).all()):  # every value (NaN aside) survived
            array: np.ndarray = converted.numpy()
            if dtype is not None:
                try:
                    return cast(array, dtype, what)
                except (TypeError, ValueError) as e:
                    raise type(e)(f"{e} ({what} is a {source} tensor, which NumPy lacks; its values, "
                                  f"converted exactly to {array.dtype}, do not fit {dtype})") from None
            return array
    raise TypeError(f"{what} is a tensor of dtype {source}, which NumPy has no type for; convert it first "
                    f"(e.g. .float(), or .dequantize() for a quantized tensor)")


def _integer_bounds(int_dtype: np.dtype, float_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``int_dtype``'s range as ``[low, high)`` in ``float_dtype``: both bounds are 0 or powers of two, so
    exact (or infinite, when the float type's range is smaller, which keeps every comparison right)."""
    info = np.iinfo(int_dtype)
    with np.errstate(over="ignore"):
        return np.asarray(float(info.min), dtype=float_dtype), np.asarray(float(info.max + 1), dtype=float_dtype)


def _float_precision_bits(dtype: np.dtype) -> int:
    return int(np.finfo(dtype).nmant) + 1


def _integer_magnitude_bits(dtype: np.dtype) -> int:
    """Every integer of ``dtype`` has an absolute value of at most 2**bits."""
    return dtype.itemsize * 8 - (1 if dtype.kind == "i" else 0)


def _integers_to_float(array: np.ndarray, dtype: np.dtype, refusal: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(dtype)
    if array.dtype.kind == "b" or _integer_magnitude_bits(array.dtype) <= _float_precision_bits(dtype):
        return out  # every integer of the source type is a float of the target type
    real = out.real if dtype.kind == "c" else out
    low, high = _integer_bounds(array.dtype, real.dtype)
    in_range = (real >= low) & (real < high)  # False for inf and NaN too
    with np.errstate(invalid="ignore"):
        back = np.where(in_range, real, 0).astype(array.dtype)
    changed = ~in_range | (back != array)
    if not changed.any():
        return out
    value, becomes = array[changed].flat[0].item(), out[changed].flat[0].item()
    reason = "overflows" if not np.isfinite(becomes) else "cannot hold it exactly"
    raise ValueError(f"{refusal}: value {value!r} would become {becomes!r} ({dtype} {reason})")


def _floats_to_float(array: np.ndarray, dtype: np.dtype, refusal: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(dtype)
    overflow = ~np.isfinite(out) & np.isfinite(array)
    if not overflow.any():
        return out
    raise ValueError(f"{refusal}: value {array[overflow].flat[0].item()!r} overflows {dtype}")


def _numbers_to_integer(array: np.ndarray, dtype: np.dtype, refusal: str) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        out = array.astype(dtype)
    changed = out != array
    if array.dtype.kind == "f" and dtype.kind in "iu":
        # Out-of-range floats convert to whatever the platform gives (they may saturate, and then compare
        # equal after rounding): check the range explicitly.
        low, high = _integer_bounds(dtype, array.dtype)
        changed |= ~((array >= low) & (array < high))
    if not changed.any():
        return out
    raise ValueError(f"{refusal}: value {array[changed].flat[0].item()!r} does not fit (it would become "
                     f"{out[changed].flat[0].item()!r})")


def _strings_to_strings(array: np.ndarray, dtype: np.dtype, refusal: str) -> np.ndarray:
    try:
        out = array.astype(dtype)
        changed = out.astype(array.dtype) != array
    except UnicodeEncodeError as e:
        raise ValueError(f"{refusal}: {e}") from None
    if not changed.any():
        return out
    raise ValueError(f"{refusal}: {array[changed].flat[0].item()!r} would be cut short")


def cast(array: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """``array`` converted to ``dtype``, or an error naming ``what`` and the first value that would change.

    Follows the rule of the module docstring; returns ``array`` itself when it already has ``dtype``. The
    checks are vectorised (a few temporary arrays the size of ``array``).
    """
    if array.dtype == dtype:
        return array
    source, target = array.dtype.kind, dtype.kind
    refusal = f"{what}: cannot store dtype {array.dtype} as {dtype}"
    if source in "biu" and target in "fc":  # before "safe": NumPy calls int64 -> float64 safe, yet it rounds
        return _integers_to_float(array, dtype, refusal)
    if np.can_cast(array.dtype, dtype, "safe"):
        return array.astype(dtype)
    if source == "f" and target in "fc":
        return _floats_to_float(array, dtype, refusal)
    if source in "biuf" and target in "biu":
        return _numbers_to_integer(array, dtype, refusal)
    if source in "SU" and target in "SU":
        return _strings_to_strings(array, dtype, refusal)
    raise TypeError(f"{refusal} without changing values")


def as_sample(value: Any, dtype: np.dtype | None, what: str) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype`` (of its own dtype if ``dtype`` is None), converted by
    `as_array` and `cast`: an error naming ``what`` if that would change a value."""
    array = as_array(value, what, dtype)
    if dtype is not None:
        array = cast(array, dtype, what)
    # Not np.ascontiguousarray, which turns a 0-d sample into a 1-d one.
    return array if array.flags.c_contiguous else array.copy(order="C")


def raw_bytes(array: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a flat uint8 view (works for 0-d arrays and any dtype)."""
    return array.reshape(-1).view(np.uint8)
