"""Reading ``indexable[i]`` for every i, in order, optionally in worker processes (for ``from_indexable``)."""

from __future__ import annotations

import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Iterator, List, Optional


class SampleFetchError(RuntimeError):
    """Reading one item of the source raised; the message names the index and the original error."""


def fetch(indexable: Any, index: int) -> Any:
    try:
        return indexable[index]
    except Exception as e:
        raise SampleFetchError(f"reading item {index} of the source raised {type(e).__name__}: {e}") from e


_worker_source: Any = None


def _init_worker(indexable: Any) -> None:
    global _worker_source
    _worker_source = indexable


def _fetch_range(start: int, stop: int) -> List[Any]:
    return [fetch(_worker_source, i) for i in range(start, stop)]


def _workers(n_jobs: Optional[int]) -> int:
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ValueError(f"n_jobs must be None, a positive number of processes or -1 (one per CPU), got {n_jobs!r}")
    if n_jobs < 0:  # -1: every CPU, -2: all but one, as in joblib
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return n_jobs


def indexed_batches(indexable: Any, batch_size: int, n_jobs: Optional[int], verbose: bool,
                    desc: str) -> Iterator[List[Any]]:
    """Yield ``[indexable[i] for i in batch]`` batch after batch; with workers, the next batch is read
    while the caller writes the current one, so at most two batches are in memory."""
    try:
        length = len(indexable)
    except TypeError:
        raise TypeError(f"from_indexable needs an object with len() and [i], got {type(indexable).__name__}; "
                        f"use from_generator for iterables of unknown length") from None
    if not hasattr(indexable, "__getitem__"):
        raise TypeError(f"from_indexable needs an object with [i], got {type(indexable).__name__}")
    bar = None
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=length, desc=desc, unit=" samples")
    starts = range(0, length, batch_size)
    workers = _workers(n_jobs)
    try:
        if workers == 1 or length == 0:
            for start in starts:
                batch = [fetch(indexable, i) for i in range(start, min(start + batch_size, length))]
                if bar is not None:
                    bar.update(len(batch))
                yield batch
            return
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(indexable,)) as pool:
            def submit(start: int) -> List[Future]:
                stop = min(start + batch_size, length)
                step = max(1, -(-(stop - start) // (4 * workers)))  # ~4 tasks per worker per batch
                return [pool.submit(_fetch_range, s, min(s + step, stop)) for s in range(start, stop, step)]

            pending = submit(0)
            for start in starts:
                current = pending
                following = start + batch_size
                pending = submit(following) if following < length else []
                batch = [sample for future in current for sample in future.result()]
                if bar is not None:
                    bar.update(len(batch))
                yield batch
    finally:
        if bar is not None:
            bar.close()
