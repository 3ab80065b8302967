"""Reading ``indexable[i]`` for every i, in order, optionally in worker processes (for ``from_indexable``).

A source is any of:

- an object with ``len()`` and ``[i]``: items ``0 .. len - 1`` are read; an ``IndexError`` (or any other
  exception) while reading one of them is an error naming the index;
- an object with ``[i]`` and no ``len()`` (``len()`` raises ``TypeError``): items ``0, 1, 2, ...`` are read
  until the source raises ``IndexError``, which marks its end, as in mmap_ninja 0.9.0;
- a function of one integer index (wrapped by `make_indexable`), read the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable

from mmap_ninja.errors import SampleFetchError


class FunctionIndexable:
    """``source[i]`` is ``func(i)``: a function of one integer index used as a source of unknown length."""

    def __init__(self, func: Callable[[int], Any]):
        if not callable(func):
            raise TypeError(f"make_indexable needs a function of one integer index, got {type(func).__name__}")
        self._func = func

    def __getitem__(self, index: int) -> Any:
        return self._func(index)

    @property
    def wrapped(self) -> Callable[[int], Any]:
        """The function given to `make_indexable`."""
        return self._func

    def __repr__(self) -> str:
        return f"make_indexable({self._func!r})"


class SizedFunctionIndexable(FunctionIndexable):
    """``source[i]`` is ``func(i)`` and ``len(source)`` is ``length``."""

    def __init__(self, func: Callable[[int], Any], length: int):
        super().__init__(func)
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"make_indexable's length must be a non-negative integer or None, got {length!r}")
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"make_indexable({self.wrapped!r}, length={self.length})"


def make_indexable(func: Callable[[int], Any], length: int | None = None) -> FunctionIndexable:
    """Turn a function of one integer index into a source for ``from_indexable`` (mmap_ninja 0.9.0's API).

    With ``length``, items ``func(0) .. func(length - 1)`` are read and an ``IndexError`` from ``func`` is an
    error. Without it, ``func(0), func(1), ...`` are read until ``func`` raises ``IndexError``.
    """
    if length is None:
        return FunctionIndexable(func)
    return SizedFunctionIndexable(func, length)


def fetch(indexable: Any, index: int) -> Any:
    try:
        return indexable[index]
    except Exception as e:
        raise SampleFetchError(f"reading item {index} of the source raised {type(e).__name__}: {e}") from e


def fetch_until_end(indexable: Any, start: int, stop: int) -> tuple[list[Any], bool]:
    """Items ``start .. stop - 1`` of a source of unknown length, and whether its end (an IndexError) was hit."""
    items: list[Any] = []
    for index in range(start, stop):
        try:
            item = indexable[index]
        except IndexError:
            return items, True
        except Exception as e:
            raise SampleFetchError(f"reading item {index} of the source raised {type(e).__name__}: {e}") from e
        items.append(item)
    return items, False


_worker_source: Any = None


def _init_worker(pickled_source: bytes) -> None:
    global _worker_source
    _worker_source = pickle.loads(pickled_source)


def pickled_for_workers(source: Any, workers: int) -> bytes:
    """``source`` pickled, as worker processes receive it under every start method (``spawn`` on macOS and
    Windows, ``forkserver`` on Linux from Python 3.14, ``fork`` before): pickling it here, before any worker
    starts, makes a source that cannot be sent fail at once on every OS, with a TypeError saying what to change."""
    try:
        return pickle.dumps(source, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # PicklingError, or the TypeError / AttributeError pickle raises for some objects
        method = multiprocessing.get_start_method()
        raise TypeError(
            f"from_indexable(n_jobs={workers}) sends the source to its worker processes by pickling it (this "
            f"Python starts them with {method!r}; macOS and Windows use 'spawn'), and the source {source!r:.200} "
            f"cannot be pickled: {type(e).__name__}: {e}. Define the function or class at the top level of a "
            f"module (not a lambda, a nested function or a class defined inside a function), bind its arguments "
            f"with functools.partial, and keep open files or connections out of it (open them on first use); or "
            f"read in this process with n_jobs=None") from e


def _fetch_range(start: int, stop: int) -> list[Any]:
    return [fetch(_worker_source, i) for i in range(start, stop)]


def _fetch_range_until_end(start: int, stop: int) -> tuple[list[Any], bool]:
    return fetch_until_end(_worker_source, start, stop)


def _workers(n_jobs: int | None) -> int:
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ValueError(f"n_jobs must be None, a positive number of processes or -1 (one per CPU), got {n_jobs!r}")
    if n_jobs < 0:  # -1: every CPU, -2: all but one, as in joblib
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return n_jobs


def as_source(indexable: Any) -> tuple[Any, int | None]:
    """``(source, length)``: the object to index (a bare function is wrapped) and its length, None if unknown."""
    if not hasattr(indexable, "__getitem__"):
        if not callable(indexable):
            raise TypeError(f"from_indexable needs an object with len() and [i], an object with [i] that raises "
                            f"IndexError past its end, or a function of one integer index; got "
                            f"{type(indexable).__name__} (use from_generator for iterables)")
        indexable = FunctionIndexable(indexable)
    try:
        length: int | None = len(indexable)
    except TypeError:
        length = None
    return indexable, length


def indexed_batches(indexable: Any, batch_size: int, n_jobs: int | None, verbose: bool,
                    desc: str) -> Iterator[list[Any]]:
    """Yield ``[indexable[i] for i in batch]`` batch after batch; with workers, the next batch is read
    while the caller writes the current one, so at most two batches are in memory.

    A source without ``len()`` (or a function) is read until it raises ``IndexError``; see the module's text.
    The source and ``n_jobs`` are checked here, before the caller creates anything: a source that worker
    processes cannot receive raises TypeError now (see `pickled_for_workers`).
    """
    source, length = as_source(indexable)
    workers = _workers(n_jobs)
    pickled = pickled_for_workers(source, workers) if workers > 1 else b""
    return _progress(source, length, batch_size, workers, pickled, verbose, desc)


def _progress(source: Any, length: int | None, batch_size: int, workers: int, pickled: bytes, verbose: bool,
              desc: str) -> Iterator[list[Any]]:
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=length, desc=desc, unit=" samples")
    try:
        batches = (_sized_batches(source, length, batch_size, workers, pickled) if length is not None
                   else _batches_until_end(source, batch_size, workers, pickled))
        for batch in batches:
            if bar is not None:
                bar.update(len(batch))
            yield batch
    finally:
        if bar is not None:
            bar.close()


def _split(start: int, stop: int, workers: int) -> list[tuple[int, int]]:
    step = max(1, -(-(stop - start) // (4 * workers)))  # ~4 tasks per worker per batch
    return [(s, min(s + step, stop)) for s in range(start, stop, step)]


def _sized_batches(source: Any, length: int, batch_size: int, workers: int,
                   pickled: bytes) -> Iterator[list[Any]]:
    starts = range(0, length, batch_size)
    if workers == 1 or length == 0:
        for start in starts:
            yield [fetch(source, i) for i in range(start, min(start + batch_size, length))]
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pickled,)) as pool:
        def submit(start: int) -> list[Future[Any]]:
            stop = min(start + batch_size, length)
            return [pool.submit(_fetch_range, a, b) for a, b in _split(start, stop, workers)]

        pending = submit(0)
        for start in starts:
            current = pending
            following = start + batch_size
            pending = submit(following) if following < length else []
            yield [sample for future in current for sample in future.result()]


def _batches_until_end(source: Any, batch_size: int, workers: int, pickled: bytes) -> Iterator[list[Any]]:
    if workers == 1:
        start = 0
        while True:
            batch, ended = fetch_until_end(source, start, start + batch_size)
            if batch:
                yield batch
            if ended:
                return
            start += batch_size
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pickled,)) as pool:
        def submit(start: int) -> list[Future[Any]]:
            return [pool.submit(_fetch_range_until_end, a, b) for a, b in _split(start, start + batch_size, workers)]

        start = 0
        pending = submit(0)
        while True:
            current = pending
            pending = submit(start + batch_size)  # read ahead; past the end it costs one IndexError per task
            collected: list[Any] = []
            ended = False
            for future in current:
                items, ended = future.result()
                collected.extend(items)
                if ended:  # items after the first IndexError are not the source's
                    break
            if ended:
                for future in pending:
                    future.cancel()
            if collected:
                yield collected
            if ended:
                return
            start += batch_size
