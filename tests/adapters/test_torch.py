"""PyTorch integration: maps as DataLoader datasets in every start method, collate functions, DDP sharding."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from mmap_ninja import NumpyMmap, RaggedMmap, StringsMmap, np_from_ndarray
from mmap_ninja.adapters.torch import PadCollate, RankSampler, as_tensor, collate, rank_indices

N = 23  # not a multiple of the batch size or the number of workers
STRINGS = [f"sample {i} " + "é" * (i % 5) + "x" * (i * 3 % 11) for i in range(N)]
RAGGED = [np.arange(i % 6, dtype=np.int32) * (i + 1) for i in range(N)]
DENSE = np.arange(N * 6, dtype=np.float32).reshape(N, 2, 3)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    root = tmp_path_factory.mktemp("maps")
    built = {
        "strings": StringsMmap.from_strings(root / "strings", STRINGS),
        "ragged": RaggedMmap.from_lists(root / "ragged", RAGGED),
        "numpy": np_from_ndarray(root / "numpy", DENSE),
    }
    for m in built.values():
        m.close()
    return {"strings": StringsMmap(root / "strings"), "ragged": RaggedMmap(root / "ragged"),
            "numpy": NumpyMmap(root / "numpy")}


SOURCES = {"strings": STRINGS, "ragged": RAGGED, "numpy": list(DENSE)}


def _check_same(kind, got, expected):
    if kind == "strings":
        assert got == expected
    else:
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["strings", "ragged", "numpy"])
def test_dataloader_fork_workers_deliver_every_sample_once(maps, kind):
    # The map itself is the dataset; with a batch size the workers fetch through __getitems__.
    m = maps[kind]
    order = np.random.default_rng(7).permutation(N).tolist()
    collate_fn = {"strings": list, "ragged": PadCollate(-1), "numpy": collate}[kind]
    loader = DataLoader(m, batch_size=4, sampler=order, num_workers=2, multiprocessing_context="fork",
                        collate_fn=collate_fn)
    seen = []
    for batch in loader:
        if kind == "strings":
            assert all(isinstance(s, str) for s in batch)
            seen.extend(batch)
        elif kind == "ragged":
            padded, lengths = batch
            assert padded.dtype == torch.int32 and lengths.dtype == torch.int64
            for row, length in zip(padded, lengths.tolist()):
                assert (row[length:] == -1).all()
                seen.append(row[:length].numpy())
        else:
            assert isinstance(batch, torch.Tensor) and batch.shape[1:] == (2, 3)
            seen.extend(batch.numpy())
    assert len(seen) == N
    for got, index in zip(seen, order):  # the loader keeps the sampler's order: each index exactly once
        _check_same(kind, got, SOURCES[kind][index])


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_in_every_start_method(maps, method):
    # One loader over all three kinds at once (spawned workers are slow to start): the workers receive
    # the maps pickled as paths and reopen them; every sample must arrive once, equal to its source.
    from torch.utils.data import ConcatDataset

    kinds = ["strings", "ragged", "numpy"]
    dataset = ConcatDataset([maps[k] for k in kinds])
    order = np.random.default_rng(3).permutation(len(dataset)).tolist()
    loader = DataLoader(dataset, batch_size=5, sampler=order, num_workers=2, multiprocessing_context=method,
                        collate_fn=_views_as_list, worker_init_fn=_check_worker_maps)
    seen = [sample for batch in loader for sample in batch]
    assert len(seen) == 3 * N
    for got, index in zip(seen, order):
        kind = kinds[index // N]
        _check_same(kind, got, SOURCES[kind][index % N])


def _views_as_list(batch):
    # Runs in the worker: the arrays it gets are views of the worker's own mapping, not pickled copies.
    assert all(isinstance(s, str) or not s.flags.writeable for s in batch)
    return list(batch)


def _check_worker_maps(worker_id):
    from torch.utils.data import get_worker_info

    for m in get_worker_info().dataset.datasets:
        assert m.mode == "r+" and len(m) == N  # the copy keeps the mode of the map it was pickled from


def test_getitems_returns_a_list_of_the_samples(maps):
    for kind, m in maps.items():
        got = m.__getitems__([3, 0, -1, 3])
        assert isinstance(got, list) and len(got) == 4
        for sample, index in zip(got, [3, 0, N - 1, 3]):
            expected = SOURCES[kind][index]
            if kind == "strings":
                assert sample == expected
            else:
                np.testing.assert_array_equal(sample, expected)
                assert not sample.flags.writeable  # a view into the map, not a copy
        with pytest.raises(IndexError):
            m.__getitems__([0, N])


def test_getitems_applies_wrapper_fn(maps, tmp_path):
    m = RaggedMmap(maps["ragged"].path, wrapper_fn=lambda a: a.sum())
    assert m.__getitems__([2, 5]) == [RAGGED[2].sum(), RAGGED[5].sum()]


_COLLATE_WARNINGS = """
import sys, warnings
from torch.utils.data import default_collate
from mmap_ninja import NumpyMmap
from mmap_ninja.adapters.torch import collate
batch = NumpyMmap(sys.argv[1]).__getitems__([1, 4, 2])  # read-only views, as a DataLoader fetches them
with warnings.catch_warnings(record=True) as ours:
    warnings.simplefilter("always")
    collate(batch)
with warnings.catch_warnings(record=True) as theirs:
    warnings.simplefilter("always")
    default_collate(batch)
print(len(ours), sum("not writable" in str(w.message) for w in theirs))
"""


def test_collate_makes_one_tensor_without_the_read_only_warning(maps):
    m = maps["numpy"]
    out = collate(m.__getitems__([1, 4, 2]))
    assert out.shape == (3, 2, 3) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), DENSE[[1, 4, 2]])
    out += 1  # a fresh, writable tensor
    np.testing.assert_array_equal(m[1], DENSE[1])
    # PyTorch warns about read-only arrays only once per process, so count in a fresh one: none from
    # collate, and the one default_collate gives (what collate avoids).
    result = subprocess.run([sys.executable, "-c", _COLLATE_WARNINGS, str(m.path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1"]


def test_collate_nested_fields(maps):
    m = maps["numpy"]
    batch = [(m[i], i, STRINGS[i]) for i in range(3)]
    arrays, labels, texts = collate(batch)
    np.testing.assert_array_equal(arrays.numpy(), DENSE[:3])
    assert labels.tolist() == [0, 1, 2] and texts == STRINGS[:3]
    assert collate([{"x": m[0], "y": 1.5}])["y"].tolist() == [1.5]
    with pytest.raises(ValueError, match="PadCollate"):
        collate([np.zeros(2), np.zeros(3)])


def test_as_tensor_copy_false_shares_the_mapping(maps):
    sample = maps["ragged"][5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shared = as_tensor(sample, copy=False)
        copied = as_tensor(sample)
    assert shared.data_ptr() == sample.__array_interface__["data"][0]
    assert copied.data_ptr() != sample.__array_interface__["data"][0]
    np.testing.assert_array_equal(shared.numpy(), RAGGED[5])
    np.testing.assert_array_equal(copied.numpy(), RAGGED[5])
    writable = np.arange(4)
    assert as_tensor(writable).data_ptr() == writable.__array_interface__["data"][0]


def test_pad_collate_pads_every_axis_and_keeps_other_fields():
    samples = [np.ones((2, 3), np.uint8), np.full((1, 5), 2, np.uint8), np.full((3, 1), 3, np.uint8)]
    padded, lengths, labels = PadCollate(pad_value=9)([(s, k) for k, s in enumerate(samples)])
    assert padded.shape == (3, 3, 5) and padded.dtype == torch.uint8
    assert lengths.tolist() == [[2, 3], [1, 5], [3, 1]] and labels.tolist() == [0, 1, 2]
    for row, s in zip(padded.numpy(), samples):
        np.testing.assert_array_equal(row[:s.shape[0], :s.shape[1]], s)
        assert (row == 9).sum() == row.size - s.size
    big = [np.arange(5000, dtype=np.int64), np.arange(7000, dtype=np.int64)]  # the per-sample path
    padded, lengths = PadCollate(0, dtype=np.int64)(big)
    assert padded.shape == (2, 7000) and lengths.tolist() == [5000, 7000]
    assert padded[0, 5000:].abs().sum() == 0 and padded[0, :5000].tolist() == list(range(5000))
    with pytest.raises(ValueError, match="-1"):
        PadCollate(-1)([np.zeros(2, np.uint8)])


@pytest.mark.parametrize("n", [0, 1, 7, 10, 13])
@pytest.mark.parametrize("world_size", [1, 3, 4])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_rank_indices_match_distributed_sampler(n, world_size, shuffle, drop_last):
    data = list(range(n))
    for epoch in (0, 3):
        shards = []
        for rank in range(world_size):
            reference = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=11,
                                           drop_last=drop_last)
            reference.set_epoch(epoch)
            ours = RankSampler(data, rank=rank, world_size=world_size, shuffle=shuffle, seed=11,
                               drop_last=drop_last)
            ours.set_epoch(epoch)
            assert list(ours) == list(reference)
            assert len(ours) == len(reference)
            shards.append(rank_indices(n, rank=rank, world_size=world_size, epoch=epoch, seed=11,
                                       shuffle=shuffle, drop_last=drop_last))
        union = np.concatenate(shards)
        if drop_last:
            assert len(set(union.tolist())) == len(union)  # disjoint
        else:
            assert set(union.tolist()) == set(data)  # everything read


def test_rank_indices_change_with_epoch_and_validate():
    a = rank_indices(100, rank=0, world_size=2, epoch=0, seed=1)
    b = rank_indices(100, rank=0, world_size=2, epoch=1, seed=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, rank_indices(100, rank=0, world_size=2, epoch=0, seed=1))
    with pytest.raises(ValueError, match="rank"):
        rank_indices(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        RankSampler(10, rank=0, world_size=0)


def test_the_old_names_of_the_rank_sampler_still_work_and_warn():
    from mmap_ninja.adapters.torch import ShardedSampler, shard_indices

    with pytest.warns(DeprecationWarning, match="ShardedSampler is now RankSampler .*ShardAwareSampler"):
        old = ShardedSampler(10, rank=1, world_size=3, seed=4)
    assert isinstance(old, RankSampler) and list(old) == list(RankSampler(10, rank=1, world_size=3, seed=4))
    with pytest.warns(DeprecationWarning, match=r"shard_indices\(\) is now rank_indices\(\)"):
        got = shard_indices(10, rank=1, world_size=3, seed=4)
    np.testing.assert_array_equal(got, rank_indices(10, rank=1, world_size=3, seed=4))


# ------------------------------------------------------------------------------ values are never changed


def test_pad_collate_dtype_refuses_values_that_do_not_survive():
    with pytest.raises(ValueError, match=r"sample 1 of the batch: .*value 300 does not fit"):
        PadCollate(dtype=np.uint8)([np.array([1, 2]), np.array([300, 1])])
    with pytest.raises(ValueError, match=r"sample 0 of the batch: .*value 1\.7 does not fit"):
        PadCollate(dtype="int64")([np.array([1.7, 2.0]), np.array([3.0])])
    padded, lengths = PadCollate(dtype="int64")([np.array([1.0, 2.0]), np.array([255], np.uint8)])
    assert padded.dtype == torch.int64 and padded.tolist() == [[1, 2], [255, 0]] and lengths.tolist() == [2, 1]


def test_pad_collate_mixed_dtypes_promote_without_losing_values():
    # Without dtype=, mixed samples pad into their common dtype, as collate stacks them; never into the first's.
    padded, _ = PadCollate()([np.array([1, 2]), np.array([1.5])])
    assert padded.dtype == torch.float64 and padded.tolist() == [[1.0, 2.0], [1.5, 0.0]]
    with pytest.raises(ValueError, match=r"sample 0 of the batch: .*9007199254740993"):
        PadCollate()([np.array([2**53 + 1]), np.array([0.5], np.float32)])


def test_collate_mixed_dtypes_refuse_precision_loss():
    out = collate([np.array([1, 2]), np.array([0.5, 1.5], np.float32)])
    assert out.dtype == torch.float64 and out.tolist() == [[1.0, 2.0], [0.5, 1.5]]
    with pytest.raises(ValueError, match=r"sample 1 of the batch: .*9007199254740993"):
        collate([np.array([0.5]), np.array([2**53 + 1])])


def test_big_endian_samples_convert_to_native_order(tmp_path):
    samples = [(np.arange(n) * 1000 - 7).astype(">i4") for n in (3, 1, 3)]
    m = RaggedMmap.from_lists(tmp_path / "be", samples)
    assert m.dtype == np.dtype(">i4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stacked = collate([m[0], m[2]])
        assert stacked.dtype == torch.int32 and stacked.tolist() == [samples[0].tolist(), samples[2].tolist()]
        for copy in (None, False, True):
            tensor = as_tensor(m[0], copy=copy)
            assert tensor.dtype == torch.int32 and tensor.tolist() == samples[0].tolist()
        padded, lengths = PadCollate(-1)([m[0], m[1]])
        assert padded.tolist() == [samples[0].tolist(), [samples[1][0], -1, -1]] and lengths.tolist() == [3, 1]
        padded, _ = PadCollate(0, dtype=">i8")([m[1]])
        assert padded.dtype == torch.int64 and padded.tolist() == [samples[1].tolist()]
    m.close()


def test_as_tensor_of_a_numpy_map(maps):
    m = maps["numpy"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shared = as_tensor(m, copy=False)  # the whole map, zero-copy, no non-writable warning
        copied = as_tensor(m)
    assert shared.data_ptr() == m.array.__array_interface__["data"][0]
    assert copied.data_ptr() != shared.data_ptr()
    np.testing.assert_array_equal(shared.numpy(), DENSE)
    np.testing.assert_array_equal(copied.numpy(), DENSE)
    tensor = torch.arange(3)
    assert as_tensor(tensor) is tensor and as_tensor(tensor, copy=True).data_ptr() != tensor.data_ptr()


# ------------------------------------------------------------------------------ tensors as samples


def test_tensor_that_requires_grad_is_stored_detached(tmp_path):
    weights = torch.tensor([0.5, -1.25, 3.0], requires_grad=True)
    m = RaggedMmap.from_lists(tmp_path / "r", [weights, weights[:1]])
    m.append(weights * 2)
    m[0] = weights.flip(0)
    assert [m[i].tolist() for i in range(3)] == [[3.0, -1.25, 0.5], [0.5], [1.0, -2.5, 6.0]]
    dense = np_from_ndarray(tmp_path / "n", np.zeros((1, 3), np.float32))
    dense.extend([weights, weights])  # a list of tensors that require grad
    dense.append(weights)
    assert dense.array[1:].tolist() == [[0.5, -1.25, 3.0]] * 3


def test_bfloat16_tensor_is_stored_exactly_as_float32(tmp_path):
    values = torch.tensor([1.5, -0.0078125, 3.0e38, float("inf")], dtype=torch.bfloat16)
    m = RaggedMmap.from_lists(tmp_path / "new", [values])  # a new map: bfloat16 values are float32 values
    assert m.dtype == np.float32 and m[0].tolist() == values.float().tolist()
    wide = RaggedMmap.from_lists(tmp_path / "f64", [np.zeros(1)])
    wide.append(values)
    assert wide[1].tolist() == values.float().tolist()
    ints = RaggedMmap.from_lists(tmp_path / "i64", [np.zeros(1, np.int64)])
    ints.append(torch.tensor([3.0, -2.0], dtype=torch.bfloat16))
    assert ints[1].tolist() == [3, -2]
    with pytest.raises(ValueError, match=r"item 2: .*1\.5 does not fit.*bfloat16"):
        ints.append(torch.tensor([1.5], dtype=torch.bfloat16))
    assert len(ints) == 2


def test_tensor_failures_name_the_item(tmp_path):
    m = RaggedMmap.from_lists(tmp_path / "r", [np.zeros(2, np.float32)])
    with pytest.raises(ValueError, match="item 3 is a tensor on the 'meta' device"):
        m.extend([torch.ones(1), torch.ones(2), torch.ones(2, device="meta")])
    with pytest.raises(TypeError, match=r"item 1 is a torch.sparse_coo tensor; .*to_dense"):
        m.append(torch.ones(2).to_sparse())
    assert len(m) == 1

