"""Building batches: many samples assembled into one array, and the checks every batched API shares.

`assemble` stacks samples of equal shapes, or pads samples of unequal shapes to a common one, in one
vectorised pass. It is what `RaggedMmap.get_batch`, `NumpyMmap.get_batch` and the PyTorch collate functions
(`mmap_ninja.adapters.torch`) are built on; use it to batch samples that live in one flat array yourself.
The samples are described by where their elements start in a flat ``values`` array, how many they hold, and
their shapes (a ``(k, ndim)`` array), so that NumPy gathers them with one fancy index instead of one Python
step per sample.

The helpers check what users pass to batched calls, with the errors the library gives everywhere:
`pad_scalar` (a ``pad_value`` must fit the dtype: padding ``uint8`` with -1 is refused, as the casting rule
of `mmap_ninja.kinds.casting` says), `check_out` (a caller's ``out=`` buffer) and `check_batch_size` (the
``batch_size`` of the ``from_*`` builders).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmap_ninja.kinds.casting import as_array, cast

__all__ = ["GATHER_BELOW", "PAD_GATHER_BELOW", "assemble", "check_batch_size", "check_out", "check_samples_iterable",
           "gather_index", "join_batches", "pad_scalar"]

GATHER_BELOW = 4096
"""When stacking: above this many elements per sample on average, copy sample by sample (a memcpy each)
rather than build an int64 gather index eight times the size of the data."""
PAD_GATHER_BELOW = 256
"""When padding, the boolean mask and gather index cost more per element: gather only below this many
elements per sample on average."""


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int, or a ValueError if it is not a positive integer (bools are refused)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def check_samples_iterable(samples: Any, call: str) -> None:
    """Refuse a single ``str``/``bytes`` given where an iterable of samples is expected (iterating it would store
    one sample per character or byte), as ``from_strings`` does; ``call`` names the public call."""
    if isinstance(samples, (str, bytes, bytearray, memoryview)):
        head = samples[:40] if isinstance(samples, (str, bytes, bytearray)) else bytes(samples[:40])
        shown = repr(head) + ("..." if len(samples) > 40 else "")
        raise TypeError(f"{call}() takes an iterable of samples, not a single {type(samples).__name__} ({shown}): "
                        f"pass [value] for one sample")


def gather_index(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The positions ``starts[0]..starts[0]+sizes[0]-1, starts[1]..`` as one int64 array, without a loop."""
    total = int(sizes.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    shift = starts - (np.cumsum(sizes) - sizes)
    return np.repeat(shift, sizes) + np.arange(total, dtype=np.int64)


def pad_scalar(pad_value: Any, dtype: np.dtype) -> np.ndarray:
    """``pad_value`` as a 0-d array of ``dtype``; an error if it does not fit (padding uint8 with -1)."""
    if type(pad_value) in (int, float, bool) and dtype.kind in "biuf":  # the usual case, checked cheaply
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                pad = np.array(pad_value, dtype=dtype)
        except (OverflowError, ValueError, TypeError):
            pass  # the general path below says what is wrong
        else:
            if pad.item() == pad_value:  # Python compares int and float exactly (NumPy would round the int)
                return pad
    return cast(as_array(pad_value, "pad_value", dtype), dtype, "pad_value").reshape(())


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, *, at_least: bool = False) -> np.ndarray:
    """Validate a caller's ``out=`` buffer: an ndarray of ``dtype``, C-contiguous and writable, of ``shape``
    (with ``at_least``: the same number of samples and every other dimension at least as large)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, but the samples have dtype {dtype}; "
                        f"pass an array of dtype {dtype} (cast the result afterwards if needed)")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if at_least:
        ok = (out.ndim == len(shape) and out.shape[0] == shape[0]
              and all(o >= s for o, s in zip(out.shape[1:], shape[1:])))
        if not ok:
            raise ValueError(f"out has shape {out.shape}; padding these samples needs shape {shape} "
                             f"(or larger in any dimension but the first)")
    elif out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}; these samples stack into shape {tuple(shape)}")
    return out


def _first_mismatch(shapes: np.ndarray) -> int:
    """The first row of ``shapes`` that differs from row 0."""
    return int(np.flatnonzero((shapes != shapes[0]).any(axis=1))[0])


def assemble(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray, shapes: np.ndarray,
             positions: np.ndarray, pad_value: Any, out: np.ndarray | None) -> Any:
    """Stack (``pad_value=None``) or pad the samples ``values[starts[j]:starts[j]+sizes[j]].reshape(shapes[j])``.

    ``positions`` are the samples' indices in the map, for error messages. Returns the stacked array, or
    ``(padded, lengths)`` with ``lengths`` of shape ``(k,)`` for 1-D samples and ``(k, ndim)`` otherwise.
    """
    dtype = values.dtype
    k, ndim = shapes.shape
    if pad_value is None:
        if k and (shapes != shapes[0]).any():
            j = _first_mismatch(shapes)
            raise ValueError(f"cannot stack samples of different shapes: item {positions[0]} has shape "
                             f"{tuple(shapes[0].tolist())} and item {positions[j]} has shape "
                             f"{tuple(shapes[j].tolist())}; pass pad_value= to pad them to a common shape")
        sample_shape = tuple(shapes[0].tolist()) if k else (0,) * ndim
        shape = (k, *sample_shape)
        out = np.empty(shape, dtype) if out is None else check_out(out, shape, dtype)
        _stack_into(values, starts, math.prod(sample_shape), out)
        return out

    pad = pad_scalar(pad_value, dtype)
    max_shape = tuple(shapes.max(axis=0).tolist()) if k else (0,) * ndim
    if out is None:
        out = np.empty((k, *max_shape), dtype)
    else:
        check_out(out, (k, *max_shape), dtype, at_least=True)
    lengths = shapes[:, 0].copy() if ndim == 1 else shapes.copy()
    if k == 0:
        return out, lengths
    target_shape = out.shape[1:]
    if ndim == 0 or (shapes == np.asarray(target_shape)).all():
        _stack_into(values, starts, math.prod(target_shape), out)  # nothing to pad
        return out, lengths
    if ndim == 1 and int(sizes.sum()) <= PAD_GATHER_BELOW * k:
        # Row j of ``out`` starts at j * width in the flat buffer: scatter every element with one index.
        flat = out.reshape(-1)
        flat.fill(pad)
        width = target_shape[0]
        flat[gather_index(np.arange(k, dtype=np.int64) * width, sizes)] = values[gather_index(starts, sizes)]
    elif int(sizes.sum()) <= PAD_GATHER_BELOW * k:
        # Which cells of ``out`` hold data: for C-ordered samples, the cells a boolean mask selects in
        # C order are exactly every sample's elements in its own C order, sample after sample.
        valid = np.ones((k, *target_shape), dtype=bool)
        for axis in range(ndim):
            along = np.arange(target_shape[axis]) < shapes[:, axis, None]  # (k, target_shape[axis])
            view = [k] + [1] * ndim
            view[axis + 1] = target_shape[axis]
            valid &= along.reshape(view)
        np.copyto(out, pad, where=~valid)
        out[valid] = values[gather_index(starts, sizes)]
    else:  # large samples: one bulk fill, then one memcpy-like copy per sample
        out[...] = pad
        if ndim == 1:
            for j, (start, size) in enumerate(zip(starts.tolist(), sizes.tolist())):
                out[j, :size] = values[start:start + size]
        else:
            for j, (start, size, shape) in enumerate(zip(starts.tolist(), sizes.tolist(), shapes.tolist())):
                corner: tuple[int | slice, ...] = (j, *(slice(0, s) for s in shape))
                out[corner] = values[start:start + size].reshape(shape)
    return out, lengths


def join_batches(parts: Sequence[tuple[np.ndarray, Any]], positions: np.ndarray, pad_value: Any,
                 out: np.ndarray | None) -> Any:
    """Join batches of disjoint rows into the batch of all of them (a sharded map's batch, one part per shard).

    ``parts`` are ``(rows, batch)``: ``rows`` the rows of the result that ``batch`` fills (together the parts
    fill every row once) and ``batch`` what `assemble` gives for them: a stacked array, or ``(padded, lengths)``
    when ``pad_value`` is given. The result is what `assemble` gives for all the samples at once: stacked (the
    parts must share one sample shape, or a ValueError names an item of each), or padded to the largest size in
    every dimension, with the parts' lengths in their rows; into ``out`` if given. ``positions`` are the
    samples' indices, for error messages.
    """
    count = len(positions)
    first_rows, first = parts[0][0], parts[0][1] if pad_value is None else parts[0][1][0]
    for rows, part in parts[1:]:
        array = part if pad_value is None else part[0]
        a, b = positions[first_rows[0]], positions[rows[0]]
        if array.ndim != first.ndim:
            raise ValueError(f"samples {a} and {b} have different numbers of dimensions ({first.ndim - 1} and "
                             f"{array.ndim - 1})")
        if pad_value is None and array.shape[1:] != first.shape[1:]:
            raise ValueError(f"cannot stack samples of different shapes: item {a} has shape {first.shape[1:]} and "
                             f"item {b} has shape {array.shape[1:]}; pass pad_value= to pad them to a common shape")
    if pad_value is None:
        shape = (count, *first.shape[1:])
        result = np.empty(shape, first.dtype) if out is None else check_out(out, shape, first.dtype)
        for rows, part in parts:
            result[rows] = part
        return result
    largest = tuple(max(padded.shape[axis] for _, (padded, _) in parts) for axis in range(1, first.ndim))
    shape = (count, *largest)
    result = np.empty(shape, first.dtype) if out is None else check_out(out, shape, first.dtype, at_least=True)
    result[...] = pad_scalar(pad_value, first.dtype)
    first_lengths = parts[0][1][1]
    lengths = np.empty((count, *first_lengths.shape[1:]), first_lengths.dtype)
    for rows, (padded, part_lengths) in parts:
        corner: tuple[Any, ...] = (rows, *(slice(0, size) for size in padded.shape[1:]))
        result[corner] = padded
        lengths[rows] = part_lengths
    return result, lengths


def _stack_into(values: np.ndarray, starts: np.ndarray, size: int, out: np.ndarray) -> None:
    k = len(starts)
    flat = out.reshape(k, size)
    if k == 0 or size == 0:
        return
    first = int(starts[0])
    if k == 1 or (np.diff(starts) == size).all():  # consecutive samples: one slice
        flat[...] = values[first:first + k * size].reshape(k, size)
    elif size <= GATHER_BELOW:
        np.take(values, starts[:, None] + np.arange(size, dtype=np.int64), out=flat)
    else:
        for j, start in enumerate(starts.tolist()):
            flat[j] = values[start:start + size]
