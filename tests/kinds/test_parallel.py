"""from_indexable sources as mmap_ninja 0.9.0 accepted them: make_indexable, bare functions, objects without len()."""

from __future__ import annotations

import functools
import pickle
from typing import Any

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, SampleFetchError, StringsMmap
from mmap_ninja.kinds.parallel import indexed_batches, make_indexable


def text(i: int) -> str:
    return f"item {i} " + "é" * (i % 3)


def first_23_texts(i: int) -> str:
    if not 0 <= i < 23:
        raise IndexError(i)
    return text(i)


def first_n_texts(n: int, i: int) -> str:
    if not 0 <= i < n:
        raise IndexError(i)
    return text(i)


def texts_failing_at_12(error: type, i: int) -> str:
    if i == 12:
        raise error("bad record")
    return text(i)


class Unsized:
    """``[i]`` for i < n, IndexError after, and no ``len()``; remembers the indices it was asked for."""

    def __init__(self, n: int):
        self.n = n
        self.read: list[int] = []

    def __getitem__(self, i: int) -> np.ndarray:
        self.read.append(i)
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.full(i % 4, i, dtype=np.int64)


class UnsizedWithLen(Unsized):
    """``len()`` raises TypeError, as in 0.9.0's own test of from_indexable."""

    def __len__(self) -> int:
        raise TypeError("this source does not know its length")


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("n", [0, 1, 23, 40])
def test_make_indexable_without_length_reads_until_index_error(tmp_path: Any, n: int, n_jobs: int | None) -> None:
    # Module-level function and functools.partial: worker processes receive the source pickled (under every
    # start method), so a nested function would be refused with n_jobs=2.
    m = StringsMmap.from_indexable(tmp_path / "m", make_indexable(functools.partial(first_n_texts, n)), 8,
                                   n_jobs=n_jobs)
    assert len(m) == n and list(m) == [text(i) for i in range(n)]


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_bare_function_is_a_source_of_unknown_length(tmp_path: Any, n_jobs: int | None) -> None:
    m = StringsMmap.from_indexable(tmp_path / "m", first_23_texts, 5, n_jobs=n_jobs, verbose=True)
    assert list(m) == [text(i) for i in range(23)]


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_make_indexable_with_length_reads_that_many_and_an_index_error_is_an_error(tmp_path: Any,
                                                                                   n_jobs: int | None) -> None:
    source = make_indexable(text, length=17)
    assert len(source) == 17 and source[3] == text(3)  # type: ignore[arg-type]
    m = StringsMmap.from_indexable(tmp_path / "m", source, 4, n_jobs=n_jobs)
    assert list(m) == [text(i) for i in range(17)]
    with pytest.raises(SampleFetchError, match="reading item 23 of the source raised IndexError"):
        StringsMmap.from_indexable(tmp_path / "short", make_indexable(first_23_texts, length=30), 10, n_jobs=n_jobs)


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("source_class", [Unsized, UnsizedWithLen])
def test_objects_without_len_are_read_until_index_error(tmp_path: Any, n_jobs: int | None,
                                                        source_class: type) -> None:
    source = source_class(30)
    m = RaggedMmap.from_indexable(tmp_path / "m", source, 7, n_jobs=n_jobs, verbose=True)
    assert len(m) == 30
    assert all(np.array_equal(m[i], np.full(i % 4, i)) for i in range(30))


def test_unknown_length_sources_are_streamed_batch_by_batch() -> None:
    source = UnsizedWithLen(10_000)
    batches = indexed_batches(source, 100, None, False, "test")
    first = next(batches)
    assert len(first) == 100
    assert max(source.read) == 99  # nothing beyond the first batch was read yet
    rest = sum(len(batch) for batch in batches)
    assert len(first) + rest == 10_000 and max(source.read) == 10_000


def test_unknown_length_sources_with_workers_read_at_most_one_batch_ahead() -> None:
    batches = indexed_batches(make_indexable(first_23_texts), 5, 2, False, "test")
    assert next(batches) == [text(i) for i in range(5)]
    assert [len(b) for b in batches] == [5, 5, 5, 3]


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("error", [KeyError, ValueError])
def test_other_errors_of_an_unknown_length_source_are_errors_naming_the_index(tmp_path: Any, n_jobs: int | None,
                                                                              error: type) -> None:
    source = make_indexable(functools.partial(texts_failing_at_12, error))
    with pytest.raises(SampleFetchError, match=f"reading item 12 of the source raised {error.__name__}"):
        StringsMmap.from_indexable(tmp_path / "m", source, 5, n_jobs=n_jobs)


def test_make_indexable_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="function of one integer index"):
        make_indexable(42)  # type: ignore[arg-type]
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="non-negative integer or None"):
            make_indexable(text, length=bad)  # type: ignore[arg-type]


def test_make_indexable_keeps_the_function_and_pickles() -> None:
    unsized, sized = make_indexable(first_23_texts), make_indexable(text, length=4)
    assert unsized.wrapped is first_23_texts and sized.wrapped is text
    assert not hasattr(unsized, "__len__")
    copy = pickle.loads(pickle.dumps(sized))
    assert len(copy) == 4 and copy[2] == text(2)
    assert repr(sized) == f"make_indexable({text!r}, length=4)"


def test_iterables_without_indexing_are_still_refused(tmp_path: Any) -> None:
    with pytest.raises(TypeError, match="needs an object with len"):
        StringsMmap.from_indexable(tmp_path / "m", (str(i) for i in range(3)), batch_size=2)
