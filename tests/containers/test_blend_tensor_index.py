"""A blend takes the indices every map takes: a 0-d PyTorch tensor reads one sample, a 1-D one a list."""

import numpy as np
import pytest

from mmap_ninja import blend, np_from_ndarray

torch = pytest.importorskip("torch")


def test_a_blend_is_indexed_by_tensors_as_a_map_is(tmp_path):
    source = np_from_ndarray(tmp_path / "n", np.arange(10, dtype=np.int64) * 3)
    mixed = blend([source], [1.0], length=10, seed=0)
    expected = [mixed[i] for i in range(10)]
    assert mixed[torch.tensor(4)] == expected[4] and mixed[torch.tensor(-1)] == expected[9]
    assert [int(v) for v in mixed[torch.tensor([2, 7])]] == [expected[2], expected[7]]
    assert source[torch.tensor(4)] == 12  # as the source map itself takes it
    with pytest.raises(IndexError, match="10"):
        mixed[torch.tensor(10)]
