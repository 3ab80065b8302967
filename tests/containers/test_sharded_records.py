"""A sharded map of records maps (what merge and from_dask build) offers the records API: fields, schema,
columns(), m["field"] (a read-only sharded field container), get_batch, and RecordsDataset reads it."""

import pickle

import numpy as np
import pytest

from mmap_ninja import Field, RaggedMmap, RecordsMmap
from mmap_ninja.containers.sharded import ShardedMap, merge

SCHEMA = {"text": "strings", "tokens": ("ragged", "int32"), "label": ("scalar", "int64"),
          "vec": ("numpy", "float32", (2,))}


def row(i):
    return {"text": f"row {i}", "tokens": np.arange(i % 4 + 1, dtype=np.int32) + i, "label": np.int64(i),
            "vec": np.array([i, -i], dtype=np.float32)}


def sharded_records(root, sizes=(4, 0, 5, 3)):
    paths, first = [], 0
    for k, size in enumerate(sizes):
        RecordsMmap.from_generator(root / f"p{k}", [row(first + i) for i in range(size)], 4, schema=SCHEMA).close()
        paths.append(root / f"p{k}")
        first += size
    RecordsMmap.from_generator(root / "one", [row(i) for i in range(first)], 4, schema=SCHEMA).close()
    return merge(root / "s", paths), RecordsMmap(root / "one", mode="r")


def test_fields_schema_and_columns(tmp_path):
    m, one = sharded_records(tmp_path)
    assert m.fields == one.fields == ("text", "tokens", "label", "vec")
    assert m.schema == one.schema and isinstance(m.schema["label"], Field)
    for indices in ([11, 0, 5, 4], slice(2, 10, 3), np.arange(12) % 2 == 0, []):
        got, want = m.columns(indices), one.columns(indices)
        assert got.keys() == want.keys()
        assert got["text"] == want["text"] and [int(v) for v in got["label"]] == [int(v) for v in want["label"]]
        assert [t.tolist() for t in got["tokens"]] == [t.tolist() for t in want["tokens"]]


def test_a_field_is_a_read_only_sharded_container(tmp_path):
    m, one = sharded_records(tmp_path)
    for name in m.fields:
        field, single = m[name], one[name]
        assert m.field(name).kind == field.kind == single.layout.kind and len(field) == len(single) == 12
        for i in (0, 3, 4, 11, -1):
            np.testing.assert_array_equal(field[i], single[i])
        np.testing.assert_array_equal(np.asarray(field[[11, 0, 5]], dtype=object) if name == "text" else
                                      np.stack(field[[11, 0, 5]]) if name != "tokens" else 0,
                                      np.asarray(single[[11, 0, 5]], dtype=object) if name == "text" else
                                      np.stack(single[[11, 0, 5]]) if name != "tokens" else 0)
        assert [np.asarray(v).tolist() for v in field] == [np.asarray(v).tolist() for v in single]
        copy = pickle.loads(pickle.dumps(field))
        assert len(copy) == 12 and np.asarray(copy[7]).tolist() == np.asarray(single[7]).tolist()
    padded, lengths = m["tokens"].get_batch([1, 9, 4], pad_value=-1)
    want_padded, want_lengths = one["tokens"].get_batch([1, 9, 4], pad_value=-1)
    np.testing.assert_array_equal(padded, want_padded)
    np.testing.assert_array_equal(lengths, want_lengths)
    np.testing.assert_array_equal(m["vec"].get_batch([11, 2, 5]), one["vec"].get_batch([11, 2, 5]))
    assert m["label"].dtype == np.int64
    with pytest.raises(KeyError, match="no field 'nope'"):
        m["nope"]
    with pytest.raises(PermissionError):
        m["text"].add_shards([tmp_path / "elsewhere"])


def test_get_batch_combines_the_shards_batches(tmp_path):
    m, one = sharded_records(tmp_path)
    indices = [11, 0, 5, 4, 1]
    got, want = m.get_batch(indices, pad_value={"tokens": -1}), one.get_batch(indices, pad_value={"tokens": -1})
    assert got[0]["text"] == want[0]["text"]
    for name in ("tokens", "label", "vec"):
        np.testing.assert_array_equal(got[0][name], want[0][name])
    np.testing.assert_array_equal(got[1]["tokens"], want[1]["tokens"])
    only = m.get_batch(indices, fields=["label"])
    assert list(only) == ["label"] and only["label"].tolist() == indices


def test_other_kinds_have_no_records_api(tmp_path):
    RaggedMmap.from_lists(tmp_path / "r", [np.arange(3)]).close()
    m = merge(tmp_path / "s", [tmp_path / "r"])
    assert not hasattr(m, "fields") and not hasattr(m, "schema")
    with pytest.raises(AttributeError, match="no fields"):
        m.columns([0])
    with pytest.raises(TypeError, match="indexed by positions"):
        m["text"]
    with pytest.raises(TypeError):
        RaggedMmap(tmp_path / "s" / m.shards[0].path, mode="r")["text"]  # as a single map of the kind


def test_records_dataset_reads_a_sharded_records_map_as_one_map(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from mmap_ninja.adapters.torch import RecordsDataset

    m, one = sharded_records(tmp_path)
    order = np.random.default_rng(3).permutation(12).tolist()
    batches = []
    for records in (m, one):
        dataset = RecordsDataset(records, pad_value={"tokens": -1})
        loader = DataLoader(dataset, batch_size=5, sampler=order, collate_fn=dataset.collate)
        batches.append(list(loader))
    for (got, got_lengths), (want, want_lengths) in zip(*batches):
        assert got["text"] == want["text"]
        for name in ("tokens", "label", "vec"):
            assert torch.equal(got[name], want[name]), name
        assert torch.equal(got_lengths["tokens"], want_lengths["tokens"])
    dataset = RecordsDataset(ShardedMap(m.path), fields=["label"])
    assert pickle.loads(pickle.dumps(dataset))[7]["label"] == 7
