"""Maps written by mmap_ninja 0.9.0 open with the same calls as native maps, read what 0.9.0 reads, and refuse writes
with the command that converts them."""

import pickle
import warnings

import numpy as np
import pytest

from mmap_ninja import KindMismatchError, NumpyMmap, RaggedMmap, StringsMmap, np_open_existing, open_existing

from tests.support import snapshot
from tests.support.legacy_090 import copy_map

CLASSES = {"strings": StringsMmap, "strings_zstd": StringsMmap, "strings_zstd_dict": StringsMmap,
           "ragged_flat": RaggedMmap, "ragged_nd": RaggedMmap, "numpy_c": NumpyMmap, "numpy_f": NumpyMmap}


def _same(ours, theirs):
    kind, value = theirs
    if kind == "array":
        np.testing.assert_array_equal(np.asarray(ours), value)
    else:
        assert ours == value or np.asarray(ours).item() == value


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_native_calls_open_a_0_9_0_map_and_read_what_0_9_0_reads(legacy_maps, legacy_reads, name):
    cls = CLASSES[name]
    for m in (cls(legacy_maps[name]), open_existing(legacy_maps[name])):
        assert type(m) is cls and m.legacy and "0.9.0" in repr(m)
        _, samples = legacy_reads[name]
        assert len(m) == len(samples)
        for i in (0, len(samples) // 2, len(samples) - 1):
            _same(m[i], samples[i])
        for sample, expected in zip(m[[0, len(m) - 1]], [samples[0], samples[-1]]):
            _same(sample, expected)
        copy = pickle.loads(pickle.dumps(m))
        assert len(pickle.dumps(m)) < 2048 and copy.legacy and len(copy) == len(m)
    if cls is NumpyMmap:
        np.testing.assert_array_equal(np_open_existing(legacy_maps[name]).array, [v for _, v in samples])


@pytest.mark.parametrize("name", ["strings", "ragged_flat", "numpy_c"])
def test_writing_to_a_0_9_0_map_is_refused_with_the_convert_command(legacy_maps, tmp_path, name):
    path = copy_map(legacy_maps[name], tmp_path / name)
    before = snapshot(path)
    m = CLASSES[name](path)
    sample = m[0]
    for write in (lambda: m.append(sample), lambda: m.extend([sample]), lambda: m.__setitem__(0, sample)):
        with pytest.raises(PermissionError, match=r"mmap-ninja convert .*"):
            write()
    assert m.refresh() == 0
    assert snapshot(path) == before


def test_opening_a_0_9_0_map_with_the_wrong_class_says_what_it_holds(legacy_maps):
    with pytest.raises(KindMismatchError, match=r"'strings' map written by mmap_ninja 0\.9\.0"):
        RaggedMmap(legacy_maps["strings"])


def test_ragged_batches_of_a_0_9_0_map_stack_and_pad(legacy_maps):
    m = RaggedMmap(legacy_maps["ragged_flat"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        padded, lengths = m.get_batch([0, 3, 4], pad_value=0)
    assert lengths.tolist() == [len(m[0]), len(m[3]), len(m[4])]
    np.testing.assert_array_equal(padded[2, :len(m[4])], m[4])
    with pytest.raises(TypeError, match="convert"):
        m.values  # noqa: B018
