"""Maps crossing process boundaries: pickling into spawned processes, parallel builds."""

import multiprocessing
import os

import numpy as np
import pytest

from mmap_ninja import RaggedMmap, SampleFetchError, StringsMmap, UnfinishedMapError, open_existing

from tests.support import build, equal, sample_for


def _read_in_child(m, positions):
    return os.getpid(), type(m).__name__, len(m), [m[i] for i in positions]


def test_pickled_map_is_read_in_a_spawned_process(kind, tmp_path):
    m = build(kind, tmp_path / "m", 300)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        pid, name, length, samples = pool.apply(_read_in_child, (m, [0, 299, 150]))
    assert pid != os.getpid() and name == type(m).__name__ and length == 300
    assert all(equal(s, sample_for(kind, i)) for s, i in zip(samples, [0, 299, 150]))


class Source:
    """An indexable that counts how often it is pickled (in a file, since pickling happens in the parent)."""

    def __init__(self, n, counter, fail_at=None, error=IndexError):
        self.n, self.counter, self.fail_at, self.error = n, counter, fail_at, error

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise self.error(f"bad record {i}")
        return np.arange(i % 5, dtype=np.int16)

    def __getstate__(self):
        with open(self.counter, "a") as f:
            f.write("x")
        return self.__dict__


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_from_indexable_keeps_order_and_sends_indices_not_copies(tmp_path, n_jobs):
    counter = tmp_path / "pickles"
    m = RaggedMmap.from_indexable(tmp_path / "m", Source(1000, counter), batch_size=64, n_jobs=n_jobs)
    assert len(m) == 1000 and all(m[i].tolist() == list(range(i % 5)) for i in range(1000))
    pickles = len(counter.read_text()) if counter.exists() else 0
    assert pickles <= (n_jobs or 0)  # at most once per worker, never once per item


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("error", [IndexError, KeyError])
def test_index_and_key_errors_in_the_data_are_errors_not_the_end(tmp_path, n_jobs, error):
    with pytest.raises(SampleFetchError, match=f"item 150 of the source raised {error.__name__}"):
        RaggedMmap.from_indexable(tmp_path / "m", Source(1000, tmp_path / "c", fail_at=150, error=error),
                                  batch_size=64, n_jobs=n_jobs)
    with pytest.raises(UnfinishedMapError):
        open_existing(tmp_path / "m")
    done = open_existing(tmp_path / "m", allow_unfinished=True)
    assert len(done) == 128  # the two batches committed before the failing one


def test_from_indexable_needs_a_length(tmp_path):
    with pytest.raises(TypeError, match="needs an object with len"):
        StringsMmap.from_indexable(tmp_path / "m", (str(i) for i in range(3)), batch_size=2)
    with pytest.raises(ValueError, match="n_jobs"):
        StringsMmap.from_indexable(tmp_path / "n", ["a"], batch_size=2, n_jobs=0)
