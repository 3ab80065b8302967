"""Records maps in PyTorch: RecordsDataset's batched fetch, RecordsCollate, and DataLoader workers in every start
method."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mmap_ninja import Field, RecordsMmap
from mmap_ninja.adapters.torch import FieldBatch, RecordsCollate, RecordsDataset

N = 11  # not a multiple of the batch size


def _image(i):
    array = np.random.default_rng(i).integers(0, 256, (3 + i % 3, 4, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return array, buffer.getvalue()


IMAGES = [_image(i) for i in range(N)]
TOKENS = [np.arange(i % 4, dtype=np.int32) + i for i in range(N)]


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "r"
    rows = [{"image": IMAGES[i][1], "label": i, "tokens": TOKENS[i], "name": f"n{i}"} for i in range(N)]
    built = RecordsMmap.from_generator(path, rows, 4, schema={"image": Field.images(), "label": np.int64,
                                                             "tokens": ("ragged", np.int32), "name": "strings"})
    built.close()
    return RecordsMmap(path)


def _check_batches(batches, order, padded_images=True):
    seen = 0
    for batch, lengths in batches:
        k = len(batch["label"])
        indices = order[seen:seen + k]
        assert batch["label"].dtype == torch.int64 and batch["label"].tolist() == indices
        assert batch["name"] == [f"n{i}" for i in indices]
        assert batch["tokens"].dtype == torch.int32
        for j, i in enumerate(indices):
            size = len(TOKENS[i])
            assert lengths["tokens"][j].item() == size
            assert batch["tokens"][j, :size].tolist() == TOKENS[i].tolist()
            assert (batch["tokens"][j, size:] == -1).all()
            height = IMAGES[i][0].shape[0]
            assert lengths["image"][j].tolist() == [height, 4, 3]
            assert np.array_equal(batch["image"][j, :height].numpy(), IMAGES[i][0])
            assert (batch["image"][j, height:] == 0).all()
        seen += k
    assert seen == len(order)


def test_getitems_reads_a_batch_with_one_get_batch(rec):
    calls = []

    class Counted(RecordsMmap):  # a real map that records how it is read
        def get_batch(self, *args, **kwargs):
            calls.append(args[0])
            return super().get_batch(*args, **kwargs)

        def __getitem__(self, index):
            calls.append(("getitem", index))
            return super().__getitem__(index)

    dataset = RecordsDataset(Counted(rec.path), pad_value={"tokens": -1, "image": 0})
    got = dataset.__getitems__([5, 1, 2])
    assert isinstance(got, FieldBatch) and calls == [[5, 1, 2]]
    order = list(range(N))[::-1]
    loader = DataLoader(dataset, batch_size=4, sampler=order, collate_fn=dataset.collate)
    _check_batches(loader, order)
    assert len(calls) == 1 + 3  # one get_batch per DataLoader batch, no per-row reads


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_in_every_start_method(rec, method):
    dataset = RecordsDataset(rec, pad_value={"tokens": -1, "image": 0})
    order = np.random.default_rng(5).permutation(N).tolist()
    loader = DataLoader(dataset, batch_size=3, sampler=order, num_workers=2, multiprocessing_context=method,
                        collate_fn=dataset.collate)
    _check_batches(loader, order)


def _resize_row(row):
    image = row["image"]
    rows = np.linspace(0, image.shape[0] - 1, 2).astype(int)
    return {"image": image[rows], "label": row["label"] * 10}


def test_transform_rows_then_collate_per_field(rec):
    dataset = RecordsDataset(rec, fields=["image", "label"], transform=_resize_row)
    assert set(dataset[3]) == {"image", "label"} and dataset[3]["label"] == 30
    order = [7, 0, 3, 9, 10]
    loader = DataLoader(dataset, batch_size=2, sampler=order, num_workers=2, multiprocessing_context="fork",
                        collate_fn=dataset.collate)
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (2, 4, 3) and batch["image"].dtype == torch.uint8
        seen += (batch["label"] // 10).tolist()
        for image, label in zip(batch["image"], batch["label"].tolist()):
            source = IMAGES[label // 10][0]
            assert np.array_equal(image.numpy(), source[[0, source.shape[0] - 1]])
    assert seen == order


def test_records_collate_on_rows_stacks_or_pads_each_field(rec):
    rows = rec[[0, 1, 2]]  # RecordsMmap.__getitems__: a list of row dicts
    batch, lengths = RecordsCollate({"tokens": 7, "image": 255})(rows)
    assert set(lengths) == {"tokens", "image"}
    assert batch["tokens"].shape == (3, 2) and batch["tokens"][0].tolist() == [7, 7]
    assert batch["image"].shape == (3, 5, 4, 3) and (batch["image"][0, 3:] == 255).all()
    assert batch["label"].tolist() == [0, 1, 2] and batch["name"] == ["n0", "n1", "n2"]
    with pytest.raises(ValueError, match="field 'image': cannot stack samples of shapes"):
        RecordsCollate({"tokens": 0})(rows)
    with pytest.raises(ValueError, match="cannot store"):  # 300 is no uint8: refused, not wrapped
        RecordsCollate({"tokens": 0, "image": 300})(rows)
    with pytest.raises(ValueError, match="row 1 of the batch has no field 'label'"):
        RecordsCollate()([{"label": 1}, {"x": 2}])
    stacked = RecordsCollate()([{"a": np.array([1, 2]), "b": np.int64(1)}, {"a": np.array([3, 4]), "b": np.int64(2)}])
    assert stacked["a"].tolist() == [[1, 2], [3, 4]] and stacked["b"].tolist() == [1, 2]


def test_records_dataset_refuses_unknown_fields(rec):
    with pytest.raises(KeyError, match="no field 'nope'"):
        RecordsDataset(rec, fields=["label", "nope"])
    with pytest.raises(TypeError, match="transform must be callable"):
        RecordsDataset(rec, transform=3)


# ---------------------------------------------------------------------------------------------- adversarial round

def test_records_dataset_refuses_a_str_for_fields_and_pad_values_for_unknown_fields(rec):
    with pytest.raises(TypeError, match=r"fields=\['tokens'\]"):
        RecordsDataset(rec, fields="tokens")
    with pytest.raises(KeyError, match="pad_value names no field 'tokenz'"):
        RecordsDataset(rec, pad_value={"tokenz": 0})


def _tensor_row(row):
    return {"tokens": torch.from_numpy(np.array(row["tokens"], dtype=np.int64)), "label": torch.tensor(row["label"])}


def test_a_transform_returning_tensors_is_padded_like_arrays(rec):
    dataset = RecordsDataset(rec, fields=["tokens", "label"], pad_value={"tokens": -1}, transform=_tensor_row)
    batch, lengths = next(iter(DataLoader(dataset, batch_size=4, collate_fn=dataset.collate)))
    assert batch["tokens"].tolist() == [[-1, -1, -1], [1, -1, -1], [2, 3, -1], [3, 4, 5]]
    assert lengths["tokens"].tolist() == [0, 1, 2, 3] and batch["label"].tolist() == [0, 1, 2, 3]


def test_the_default_collate_on_a_field_batch_says_to_pass_the_datasets_collate(rec):
    loader = DataLoader(RecordsDataset(rec, fields=["label"]), batch_size=4)
    with pytest.raises(TypeError, match=r"collate_fn=dataset\.collate"):
        next(iter(loader))


def test_records_dataset_refuses_what_is_not_a_records_map(tmp_path):
    from mmap_ninja import NumpyMmap

    numbers = NumpyMmap.from_generator(tmp_path / "n", [np.arange(3)], 1)
    for wrong in (numbers, [{"a": 1}]):
        with pytest.raises(TypeError, match=r"RecordsDataset takes a records map .*got (NumpyMmap|list)"):
            RecordsDataset(wrong)


def test_a_field_torch_cannot_hold_is_named_by_the_collate(tmp_path):
    when = RecordsMmap.from_dict(tmp_path / "d", {"when": np.array(["2020-01-01", "2021-01-01"], "datetime64[D]"),
                                                  "y": np.arange(2)})
    for transform in (None, dict):
        dataset = RecordsDataset(when, transform=transform)
        with pytest.raises(TypeError, match=r"^field 'when' \(datetime64\[D\]\): "):
            next(iter(DataLoader(dataset, batch_size=2, collate_fn=dataset.collate)))
