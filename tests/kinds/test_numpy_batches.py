"""Same-shape batches of a numpy map (issue 21): ``__getitems__`` rows that gather into the batch in one
``np.take``, and the torch collate using that gather; every batch equal to the per-sample path's."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mmap_ninja.kinds import numpy as np_ninja


@pytest.fixture(params=["C", "F"])
def numpy_map(tmp_path, request):
    data = np.arange(40 * 6, dtype=np.int32).reshape(40, 2, 3)
    m = np_ninja.from_ndarray(tmp_path / "n", data if request.param == "C" else np.asfortranarray(data))
    yield m, data
    m.close()


def test_getitems_rows_gather_in_one_take(numpy_map):
    m, data = numpy_map
    indices = [5, 0, 39, 5, -1]
    rows = m.__getitems__(indices)
    assert isinstance(rows, list) and len(rows) == 5
    for row, i in zip(rows, indices):
        np.testing.assert_array_equal(row, data[i])
        assert not row.flags.writeable
    out = np.empty((5, 2, 3), dtype=np.int32)
    assert rows.gather_into(out) is out
    np.testing.assert_array_equal(out, np.stack([data[i] for i in indices]))
    with pytest.raises(ValueError, match="out must have shape"):
        rows.gather_into(np.empty((5, 3, 2), dtype=np.int32))


def test_rows_pickle_as_a_plain_list(numpy_map):
    m, data = numpy_map
    rows = m.__getitems__([1, 2])
    copied = pickle.loads(pickle.dumps(rows))
    assert type(copied) is list
    np.testing.assert_array_equal(np.stack(copied), data[[1, 2]])


def test_torch_collate_of_rows_equals_the_per_sample_batch(numpy_map):
    torch = pytest.importorskip("torch")
    from mmap_ninja.adapters.torch import collate

    m, data = numpy_map
    indices = np.random.default_rng(0).integers(0, 40, size=16).tolist()
    batch = collate(m.__getitems__(indices))
    per_sample = collate([m[i] for i in indices])
    assert batch.dtype == per_sample.dtype == torch.int32 and batch.shape == (16, 2, 3)
    assert torch.equal(batch, per_sample)
    assert torch.equal(batch, torch.from_numpy(data[indices]))
    assert collate(m.__getitems__([])) == []


def test_dataloader_batches_of_a_numpy_map_equal_the_per_sample_path(numpy_map):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from mmap_ninja.adapters.torch import collate

    m, data = numpy_map
    batches = list(DataLoader(m, batch_size=7, collate_fn=collate))
    assert torch.equal(torch.cat(batches), torch.from_numpy(data))
