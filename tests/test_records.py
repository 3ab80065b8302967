"""RecordsMmap: rows of named fields (strings, ragged, fixed-shape numpy, scalar) committed together."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import KindMismatchError, StringsMmap, UnfinishedMapError, UnknownFeatureError, open_existing
from mmap_ninja import format as mformat
from mmap_ninja.records import Field, RecordsMmap, infer_schema, parse_schema

from conftest import snapshot

SRC = str(Path(mmap_ninja.__file__).resolve().parents[1])

# One definition of a row, derivable from its index: used here and, as source, by the crash child.
ROW_SOURCE = '''
def make_row(i):
    return {"text": f"row {i} " + "\\u00e9" * (i % 4) + "x" * (i % 9),
            "tokens": np.arange(i % 7, dtype=np.int32) * (i + 1),
            "label": i * 3 - 7}
'''


def make_row(i: int) -> dict:
    return {"text": f"row {i} " + "\u00e9" * (i % 4) + "x" * (i % 9),
            "tokens": np.arange(i % 7, dtype=np.int32) * (i + 1),
            "label": i * 3 - 7}


def rows(start: int, stop: int) -> list[dict]:
    return [make_row(i) for i in range(start, stop)]


def same_row(got: dict, expected: dict) -> bool:
    if got.keys() != expected.keys():
        return False
    for name, value in expected.items():
        if isinstance(value, str):
            if got[name] != value:
                return False
        else:
            a, b = np.asarray(got[name]), np.asarray(value)
            if a.shape != b.shape or not np.array_equal(a, b):
                return False
    return True


def header(path: Path) -> dict:
    return json.loads((path / "header.json").read_text())


@pytest.fixture
def rec(tmp_path):
    return RecordsMmap.from_generator(tmp_path / "rec", rows(0, 10), batch_size=4)


# ---------------------------------------------------------------------------------------------- round trips

def test_round_trip_of_every_field_kind(tmp_path):
    rng = np.random.default_rng(0)
    data = [{
        "text": "" if i == 3 else f"caption {i} \u20ac\U0001f600",
        "tokens": rng.integers(-5, 5, size=i % 5).astype(np.int32),
        "image": rng.integers(0, 255, size=(i % 3 + 1, 2, 3)).astype(np.uint8),
        "vector": rng.random(4).astype(np.float32),
        "label": i,
        "score": float(i) / 4,
        "flag": i % 2 == 0,
    } for i in range(13)]
    schema = {"text": "strings", "tokens": ("ragged", np.int32), "image": Field.ragged(np.uint8),
              "vector": ("numpy", np.float32, (4,)), "label": ("scalar", np.int64), "score": np.float32,
              "flag": bool}
    m = RecordsMmap.from_generator(tmp_path / "m", data, batch_size=5, schema=schema)
    assert len(m) == 13 and m.fields == tuple(schema)
    for i, expected in enumerate(data):
        got = m[i]
        assert same_row(got, expected), i
        assert isinstance(got["text"], str)
        assert isinstance(got["label"], np.int64) and isinstance(got["score"], np.float32)
        assert isinstance(got["flag"], np.bool_)
        assert got["image"].dtype == np.uint8 and not got["image"].flags.writeable
        assert got["vector"].shape == (4,) and not got["vector"].flags.writeable
    reopened = RecordsMmap(tmp_path / "m", mode="r")
    assert all(same_row(a, b) for a, b in zip(reopened, data))


def test_compressed_fields_round_trip(tmp_path):
    pytest.importorskip("zstandard")
    pytest.importorskip("lz4")
    texts = [f"the same words again and again {i} " * (i % 5 + 1) for i in range(300)]
    data = [{"text": t, "tokens": np.arange(i % 11, dtype=np.int16)} for i, t in enumerate(texts)]
    m = RecordsMmap.from_generator(tmp_path / "m", data, batch_size=100,
                                   schema={"text": Field.strings(codec="zstd"),
                                           "tokens": Field.ragged(np.int16, codec="lz4")})
    assert all(same_row(m[i], data[i]) for i in range(300))
    h = header(tmp_path / "m")
    assert h["requires"] == ["records", "codec.lz4", "codec.zstd"]
    assert "text.dictionary" in h["columns"]
    assert h["attrs"]["fields"]["text"]["attrs"]["trained"] is True
    m.extend(data[:3])
    assert same_row(RecordsMmap(tmp_path / "m")[301], data[1])


def test_files_are_the_fields_columns_with_a_prefix(rec, tmp_path):
    h = header(tmp_path / "rec")
    assert h["kind"] == "records" and h["requires"] == ["records"]
    assert list(h["attrs"]["fields"]) == ["text", "tokens", "label"]
    assert h["attrs"]["fields"]["label"] == {"kind": "numpy",
                                             "attrs": {"dtype": "<i8", "sample_shape": [], "order": "C"}}
    expected = {"text.data", "text.offsets", "tokens.data", "tokens.offsets", "tokens.shape_offsets", "tokens.dims",
                "label.data", "checksums"}
    assert set(h["columns"]) == expected
    assert {p.name for p in (tmp_path / "rec").glob("*.bin")} == {c + ".bin" for c in expected}
    assert h["columns"]["text.offsets"]["length"] == 11 and h["columns"]["label.data"]["length"] == 80
    assert mmap_ninja.verify(tmp_path / "rec", deep=True).problems == []


# ---------------------------------------------------------------------------------------------- schemas

def test_schema_inference(tmp_path):
    data = [{"s": "a", "i": 1, "f": 1, "b": True, "n": np.float32(2), "z": np.array(3, dtype=np.int16),
             "arr": np.zeros(3, np.float32), "lst": [1, 2]},
            {"s": "b", "i": 2, "f": 2.5, "b": False, "n": np.float32(3), "z": np.array(4, dtype=np.int16),
             "arr": np.ones(3, np.float32), "lst": [3, 4]}]
    schema = infer_schema(data)
    assert schema["s"] == Field.strings()
    assert schema["i"] == Field.scalar(np.int64)
    assert schema["f"] == Field.scalar(np.float64)  # the first batch's values together: [1, 2.5]
    assert schema["b"] == Field.scalar(np.bool_)
    assert schema["n"] == Field.scalar(np.float32)
    assert schema["z"] == Field.scalar(np.int16)
    # Arrays are ragged even when the first batch's shapes agree: later rows may differ.
    assert schema["arr"] == Field.ragged(np.float32)
    assert schema["lst"] == Field.ragged(np.int64)
    m = RecordsMmap.from_generator(tmp_path / "m", data, batch_size=2)
    assert m.schema == schema
    m.append({"s": "c", "i": 3, "f": 4.0, "b": True, "n": np.float32(1), "z": np.array(1, np.int16),
              "arr": np.zeros(5, np.float32), "lst": [1]})
    assert m[2]["arr"].shape == (5,)
    assert m[1]["f"] == 2.5
    # Only the first batch is looked at: with one row in it, "f" is int64 and 2.5 is refused, never rounded.
    with pytest.raises(ValueError, match="row 1, field 'f': cannot store dtype float64 as int64"):
        RecordsMmap.from_generator(tmp_path / "one", data, batch_size=1)


def test_inference_from_columns_makes_ndarray_columns_numpy_fields():
    schema = infer_schema({"emb": np.zeros((4, 8), np.float16), "y": np.arange(4, dtype=np.uint8),
                           "text": ["a", "b", "c", "d"], "tok": [np.arange(2)] * 4})
    assert schema == {"emb": Field.numpy(np.float16, (8,)), "y": Field.scalar(np.uint8), "text": Field.strings(),
                      "tok": Field.ragged(np.int64)}


@pytest.mark.parametrize("value, message", [(None, "missing values"), (b"ab", "ragged uint8"),
                                            ({"a": 1}, "is a dict")])
def test_inference_refuses_values_it_cannot_store(tmp_path, value, message):
    with pytest.raises(TypeError, match=message) as info:
        RecordsMmap.from_generator(tmp_path / "m", [{"x": value}], batch_size=1)
    assert "row 0, field 'x'" in str(info.value)
    assert not (tmp_path / "m").exists()


def test_explicit_schema_forms():
    schema = parse_schema({"a": "strings", "b": "ragged", "c": ("ragged", "int16"), "d": ("numpy", "f4", [2, 3]),
                           "e": ("scalar", np.uint8), "f": int, "g": np.float32, "h": Field.strings(),
                           "i": str, "j": np.dtype("i2")})
    assert schema["a"] == schema["h"] == schema["i"] == Field.strings()
    assert schema["b"] == Field("ragged")
    assert schema["c"] == Field.ragged(np.int16)
    assert schema["d"] == Field.numpy(np.float32, (2, 3))
    assert schema["e"] == Field.scalar(np.uint8) and schema["e"].is_scalar
    assert schema["f"] == Field.scalar(np.int64)
    assert schema["g"] == Field.scalar(np.float32)
    assert schema["j"] == Field.scalar(np.int16)


@pytest.mark.parametrize("name", ["a.b", "1x", "../x", "", "x y", "é", "a" * 65, 3])
def test_field_names_must_be_simple_identifiers(tmp_path, name):
    with pytest.raises(ValueError, match="ASCII identifiers"):
        RecordsMmap.from_generator(tmp_path / "m", [{name: 1}], batch_size=1)
    assert not (tmp_path / "m").exists()


def test_schema_errors():
    with pytest.raises(ValueError, match="differ only by case"):
        parse_schema({"Label": int, "label": int})
    with pytest.raises(ValueError, match="at least one field"):
        parse_schema({})
    with pytest.raises(TypeError, match="field 'x': cannot read the schema entry"):
        parse_schema({"x": "videos"})
    with pytest.raises(TypeError, match="needs a dtype and a shape"):
        Field("numpy", np.dtype(np.int8))
    with pytest.raises(ValueError, match="positive sizes"):
        Field.numpy(np.int8, (0,))
    with pytest.raises(TypeError, match="not compressed"):
        Field("numpy", np.dtype(np.int8), (), codec="lz4")
    with pytest.raises(TypeError, match="Python objects"):
        Field.ragged(object)


def test_building_needs_rows_or_a_schema(tmp_path):
    with pytest.raises(ValueError, match="pass schema="):
        RecordsMmap.from_generator(tmp_path / "m", [], batch_size=3)
    m = RecordsMmap.from_generator(tmp_path / "m", [], batch_size=3, schema={"t": "strings", "y": int})
    assert len(m) == 0 and m.fields == ("t", "y")
    m.append({"t": "x", "y": 1})
    assert m[0] == {"t": "x", "y": 1}


# ---------------------------------------------------------------------------------------------- bad rows

BAD_ROWS = [
    ({"text": "a", "tokens": [1]}, ValueError, "row 11 has no field 'label'"),
    ({"text": "a", "tokens": [1], "label": 1, "extra": 2}, ValueError, "row 11 has a field 'extra'"),
    ({"text": 5, "tokens": [1], "label": 1}, TypeError, "row 11, field 'text': expected str, got int"),
    ({"text": "a", "tokens": [1], "label": "7"}, TypeError,
     "row 11, field 'label': expected a scalar of dtype int64, got str"),
    ({"text": "a", "tokens": [1], "label": [1, 2]}, ValueError,
     r"row 11, field 'label': expected a scalar of dtype int64, got shape \(2,\)"),
    ({"text": "a", "tokens": [1], "label": 2.5}, ValueError, "row 11, field 'label': cannot store"),
    ({"text": "a", "tokens": [1.5], "label": 1}, ValueError, "field 'tokens': item 11"),
    ({"text": "a", "tokens": "abc", "label": 1}, TypeError, "row 11, field 'tokens': expected an array of int32"),
    ({"text": "a", "tokens": None, "label": 1}, TypeError, "row 11, field 'tokens'"),
    ({"text": "\ud800", "tokens": [1], "label": 1}, ValueError, "field 'text': item 11 cannot be stored as UTF-8"),
    (["not", "a", "dict"], TypeError, "row 11 is list"),
]


@pytest.mark.parametrize("bad, error, message", BAD_ROWS)
def test_a_bad_row_is_refused_naming_row_and_field_and_nothing_changes(rec, tmp_path, bad, error, message):
    before = snapshot(tmp_path / "rec")
    with pytest.raises(error, match=message):
        rec.extend([make_row(10), bad, make_row(12)])
    assert snapshot(tmp_path / "rec") == before
    assert len(rec) == 10 and len(RecordsMmap(tmp_path / "rec")) == 10
    rec.append(make_row(10))  # the map still takes good rows
    assert same_row(RecordsMmap(tmp_path / "rec")[10], make_row(10))


def test_scalar_fields_never_round(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", [{"y": 1}], batch_size=1, schema={"y": np.uint8})
    before = snapshot(tmp_path / "m")
    with pytest.raises(ValueError, match="row 2, field 'y'"):
        m.extend([{"y": 2}, {"y": 300}])
    assert snapshot(tmp_path / "m") == before


def test_a_bad_first_batch_creates_nothing(tmp_path):
    data = [make_row(0), {**make_row(1), "label": "x"}]
    with pytest.raises(TypeError, match="row 1, field 'label'"):
        RecordsMmap.from_generator(tmp_path / "m", data, batch_size=10)
    assert not (tmp_path / "m").exists()


def test_a_bad_row_in_a_later_batch_leaves_an_unfinished_build_with_aligned_fields(tmp_path):
    data = [*rows(0, 6), {**make_row(6), "tokens": "oops"}]
    with pytest.raises(TypeError, match="row 6, field 'tokens'"):
        RecordsMmap.from_generator(tmp_path / "m", data, batch_size=3)
    with pytest.raises(UnfinishedMapError):
        RecordsMmap(tmp_path / "m")
    partial = RecordsMmap(tmp_path / "m", allow_unfinished=True)
    assert len(partial) == 6 and all(len(partial[name]) == 6 for name in partial.fields)


def test_extend_from_columns(rec, tmp_path):
    rec.extend({"text": ["p", "q"], "tokens": [np.arange(2), np.arange(3)], "label": np.array([5, 6])})
    assert len(rec) == 12 and rec[11]["text"] == "q" and rec[11]["label"] == 6
    before = snapshot(tmp_path / "rec")
    with pytest.raises(ValueError, match=r"different lengths \(text: 2, tokens: 1, label: 2\)"):
        rec.extend({"text": ["p", "q"], "tokens": [np.arange(2)], "label": [5, 6]})
    with pytest.raises(TypeError, match=r"single value .*append"):
        rec.extend({"text": "p", "tokens": [1], "label": 5})
    with pytest.raises(ValueError, match="no field 'label'"):
        rec.extend({"text": ["p"], "tokens": [[1]]})
    assert snapshot(tmp_path / "rec") == before


def test_append_takes_one_row(rec):
    with pytest.raises(TypeError, match="append\\(\\) takes one row"):
        rec.append([make_row(10)])
    with pytest.raises(TypeError, match="cannot be assigned in place"):
        rec[0] = make_row(0)


# ---------------------------------------------------------------------------------------------- commits

def test_one_commit_per_batch_and_per_write(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", rows(0, 10), batch_size=4)
    built = header(tmp_path / "m")["commit"]
    lone = RecordsMmap.from_generator(tmp_path / "one", rows(0, 4), batch_size=4)
    # 2 more batches, 2 more commits: a batch is one commit for all fields together.
    assert built - header(tmp_path / "one")["commit"] == 2
    lone.close()
    m.extend(rows(10, 17))
    assert header(tmp_path / "m")["commit"] == built + 1
    m.append(make_row(17))
    assert header(tmp_path / "m")["commit"] == built + 2
    with m.transaction():
        for i in range(18, 22):
            m.append(make_row(i))
    assert header(tmp_path / "m")["commit"] == built + 3
    assert len(RecordsMmap(tmp_path / "m")) == 22


def test_an_empty_handle_creates_the_map_on_its_first_rows(tmp_path):
    m = RecordsMmap(tmp_path / "m")
    assert len(m) == 0 and not m.exists and m.fields == () and m.schema == {}
    with pytest.raises(ValueError, match="schema comes from its first rows"):
        m.set_metadata({"a": 1})
    m.extend(rows(0, 3))
    assert m.exists and len(RecordsMmap(tmp_path / "m")) == 3
    assert header(tmp_path / "m")["requires"] == ["records"]


# ---------------------------------------------------------------------------------------------- reading

def test_indexing_slices_lists_and_masks(rec):
    assert same_row(rec[-1], make_row(9)) and same_row(rec[np.int64(3)], make_row(3))
    with pytest.raises(IndexError):
        rec[10]
    assert all(same_row(a, make_row(i)) for a, i in zip(rec[2:5], range(2, 5)))  # a list of rows, as every map
    columns = rec.columns(slice(2, 5))  # a dict of lists, as a Hugging Face Dataset gives
    assert list(columns) == ["text", "tokens", "label"]
    assert columns["text"] == [make_row(i)["text"] for i in range(2, 5)]
    assert [int(v) for v in columns["label"]] == [make_row(i)["label"] for i in range(2, 5)]
    assert all(np.array_equal(a, make_row(i)["tokens"]) for a, i in zip(columns["tokens"], range(2, 5)))
    assert rec.columns([7, 1])["text"] == [make_row(7)["text"], make_row(1)["text"]]
    mask = np.zeros(10, bool)
    mask[[0, 9]] = True
    assert [int(row["label"]) for row in rec[mask]] == [make_row(0)["label"], make_row(9)["label"]]
    listed = rec.__getitems__([4, 2])  # PyTorch's batched fetch: a list of rows
    assert same_row(listed[0], make_row(4)) and same_row(listed[1], make_row(2))
    assert all(same_row(a, make_row(i)) for i, a in enumerate(rec))
    with pytest.raises(KeyError, match="no field 'nope'"):
        rec["nope"]


def test_wrapper_fn_applies_to_rows(tmp_path):
    RecordsMmap.from_generator(tmp_path / "m", rows(0, 5), batch_size=5).close()
    m = RecordsMmap(tmp_path / "m", wrapper_fn=lambda row: row["label"] * 2)
    assert m[1] == make_row(1)["label"] * 2
    assert m[1:3] == [make_row(1)["label"] * 2, make_row(2)["label"] * 2]


def test_get_batch(tmp_path):
    data = [{"t": f"s{i}", "tok": np.arange(i % 3 + 1, dtype=np.int32), "same": np.full(2, i, np.int16),
             "emb": np.full(3, i, np.float32), "y": i} for i in range(8)]
    m = RecordsMmap.from_generator(tmp_path / "m", data, batch_size=3,
                                   schema={"t": "strings", "tok": ("ragged", np.int32), "same": ("ragged", np.int16),
                                           "emb": ("numpy", np.float32, (3,)), "y": int})
    batch = m.get_batch([1, 4], fields=["same", "emb", "y", "t"])
    assert list(batch) == ["same", "emb", "y", "t"]
    assert np.array_equal(batch["same"], [[1, 1], [4, 4]]) and batch["same"].dtype == np.int16
    assert np.array_equal(batch["emb"], [[1] * 3, [4] * 3]) and batch["emb"].flags.writeable
    assert np.array_equal(batch["y"], [1, 4]) and batch["y"].dtype == np.int64
    assert batch["t"] == ["s1", "s4"]
    with pytest.raises(ValueError, match="pass pad_value="):
        m.get_batch([0, 1], fields=["tok"])
    padded, lengths = m.get_batch([0, 1, 2], pad_value=-1)
    assert np.array_equal(padded["tok"], [[0, -1, -1], [0, 1, -1], [0, 1, 2]])
    assert np.array_equal(lengths["tok"], [1, 2, 3]) and set(lengths) == {"tok", "same"}
    padded, lengths = m.get_batch(slice(0, 2), pad_value={"tok": 9})
    assert np.array_equal(padded["tok"], [[0, 9], [0, 1]]) and set(lengths) == {"tok"}
    with pytest.raises(ValueError, match="pad_value"):
        m.get_batch([0, 1], fields=["tok"], pad_value=-1.5)
    with pytest.raises(KeyError, match="no field 'x'"):
        m.get_batch([0], fields=["x"])


# ---------------------------------------------------------------------------------------------- fields

def test_a_field_is_a_read_only_container_equal_to_the_column(rec, tmp_path):
    label, text, tokens = rec["label"], rec["text"], rec["tokens"]
    assert isinstance(label, mmap_ninja.NumpyMmap) and isinstance(text, StringsMmap)
    assert isinstance(tokens, mmap_ninja.RaggedMmap)
    assert np.array_equal(label.array, [make_row(i)["label"] for i in range(10)])
    assert label.array.dtype == np.int64 and label.mode == "r"
    assert list(text) == [make_row(i)["text"] for i in range(10)]
    assert all(np.array_equal(tokens[i], make_row(i)["tokens"]) for i in range(10))
    assert "field 'label'" in repr(label)
    before = snapshot(tmp_path / "rec")
    for write in (lambda: label.append(np.int64(1)), lambda: label.extend(np.arange(2)),
                  lambda: label.__setitem__(0, 5), lambda: text.append("x"), lambda: tokens.extend_flat([1], [1]),
                  lambda: text.set_metadata({"a": 1}), lambda: text.extend_utf8(b"ab", [2])):
        with pytest.raises(PermissionError, match="read-only: write whole rows through the RecordsMmap"):
            write()
    with pytest.raises(ValueError, match="read-only"):  # NumPy's own refusal: the array is a read-only view
        np.asarray(label)[0] = 3
    assert snapshot(tmp_path / "rec") == before
    label.close()  # closing a field leaves the records map open
    assert same_row(rec[0], make_row(0))


def test_a_field_refreshes_with_its_map(rec, tmp_path):
    label = rec["label"]
    other = RecordsMmap(tmp_path / "rec")
    other.extend(rows(10, 13))
    assert len(label) == 10 and len(rec) == 10
    assert label.refresh() == 3
    assert len(label) == 13 and len(rec) == 13  # the records handle sees what its field saw
    assert label.refresh() == 0
    rec.append(make_row(13))
    assert len(rec["label"]) == 14


def test_fields_of_an_unfinished_build_and_to_arrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    m = RecordsMmap.from_dict(tmp_path / "m", {"text": ["a", "bé"], "tok": [np.arange(2), np.arange(3)],
                                               "y": np.array([1, 2], np.int32), "emb": np.ones((2, 2, 3), np.float32)})
    table = m.to_arrow()
    assert table.column_names == ["text", "tok", "y", "emb"]
    assert table.column("text").to_pylist() == ["a", "bé"]
    assert table.column("tok").to_pylist() == [[0, 1], [0, 1, 2]]
    assert table.column("y").type == pa.int32() and table.column("y").to_pylist() == [1, 2]
    assert table.column("emb").to_pylist()[1] == [[1.0] * 3] * 2
    # zero-copy: the Arrow buffers are the map's own bytes
    text_chunk = table.column("text").chunk(0)
    assert text_chunk.buffers()[2].address == m["text"].values.ctypes.data
    assert table.column("y").chunk(0).buffers()[1].address == m["y"].array.ctypes.data
    back = RecordsMmap.from_arrow(tmp_path / "back", table)
    assert back.schema == {"text": Field.strings(), "tok": Field.ragged(np.int64), "y": Field.scalar(np.int32),
                           "emb": Field.numpy(np.float32, (2, 3))}
    assert all(same_row(back[i], m[i]) for i in range(2))


def test_from_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"name": ["a", "b", "c"], "value": [1.5, 2.0, 3.25], "n": np.array([1, 2, 3], np.int16)})
    m = RecordsMmap.from_pandas(tmp_path / "m", frame, batch_size=2)
    assert m.schema == {"name": Field.strings(), "value": Field.scalar(np.float64), "n": Field.scalar(np.int16)}
    assert m[2] == {"name": "c", "value": 3.25, "n": 3}


# ---------------------------------------------------------------------------------------------- opening

def test_open_existing_and_kind_checks(rec, tmp_path):
    opened = open_existing(tmp_path / "rec")
    assert isinstance(opened, RecordsMmap) and same_row(opened[3], make_row(3))
    with pytest.raises(KindMismatchError):
        StringsMmap(tmp_path / "rec")
    StringsMmap.from_strings(tmp_path / "s", ["a"])
    with pytest.raises(KindMismatchError):
        RecordsMmap(tmp_path / "s")


def test_a_reader_without_the_records_feature_refuses_the_map(rec, tmp_path, monkeypatch):
    monkeypatch.setattr(mformat, "_FEATURES", mformat._FEATURES - {"records"})
    with pytest.raises(UnknownFeatureError, match="requires the feature 'records'"):
        open_existing(tmp_path / "rec")
    with pytest.raises(UnknownFeatureError, match="'records'"):
        RecordsMmap(tmp_path / "rec")


def test_a_damaged_header_with_fields_of_different_lengths_is_refused(rec, tmp_path):
    h = header(tmp_path / "rec")
    h.pop("checksum")
    h["columns"]["label.data"]["length"] = 72  # one row fewer than the other fields
    (tmp_path / "rec" / "header.json").write_text(json.dumps(h))
    with pytest.raises(mmap_ninja.CorruptMapError, match=r"different lengths \(text: 10, tokens: 10, label: 9\)"):
        RecordsMmap(tmp_path / "rec")


def test_pickling_by_path(rec):
    again = pickle.loads(pickle.dumps(rec))
    assert isinstance(again, RecordsMmap) and again.path == rec.path and same_row(again[5], make_row(5))
    label = pickle.loads(pickle.dumps(rec["label"]))
    assert np.array_equal(label.array, rec["label"].array) and label.mode == "r"
    with pytest.raises(PermissionError):
        label.append(1)


def _keep_batch(batch):
    return batch


def test_dataloader_with_two_forked_workers(rec):
    torch = pytest.importorskip("torch")
    loader = torch.utils.data.DataLoader(rec, batch_size=3, num_workers=2, multiprocessing_context="fork",
                                         collate_fn=_keep_batch)
    seen = [row for batch in loader for row in batch]
    assert len(seen) == 10 and all(same_row(a, make_row(i)) for i, a in enumerate(seen))


def test_from_indexable_with_workers(tmp_path):
    data = rows(0, 25)
    m = RecordsMmap.from_indexable(tmp_path / "m", data, batch_size=4, n_jobs=2)
    assert len(m) == 25 and all(same_row(m[i], data[i]) for i in range(25))


# ---------------------------------------------------------------------------------------------- crashes

CHILD = ROW_SOURCE + r'''
import os, random, sys
import numpy as np
from mmap_ninja.records import RecordsMmap

path, log_path, seed, fresh = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "fresh"
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
rng = random.Random(seed)
print("READY", flush=True)
if fresh:  # killed while building: the build is unfinished, every committed batch aligned
    RecordsMmap.from_generator(path, (make_row(i) for i in range(10**9)), batch_size=rng.randint(1, 40))
rec = RecordsMmap(path)
while True:
    n = len(rec)
    k = rng.randint(1, 40)
    os.write(log, b"I %d\n" % (n + k))
    if rng.random() < 0.3:
        with rec.transaction():
            for i in range(n, n + k):
                rec.append(make_row(i))
    else:
        rec.extend([make_row(i) for i in range(n, n + k)])
    os.write(log, b"C %d\n" % (n + k))
'''


def test_the_crash_child_builds_the_same_rows():
    namespace = {"np": np}
    exec(ROW_SOURCE, namespace)
    assert all(same_row(namespace["make_row"](i), make_row(i)) for i in range(50))


def _crash_trial(workdir: Path, seed: int) -> None:
    rng = random.Random(seed)
    path, log_path = workdir / "map", workdir / "log"
    fresh = rng.random() < 0.25
    initial = 0 if fresh else rng.randint(1, 30)
    if not fresh:
        RecordsMmap.from_generator(path, rows(0, initial), batch_size=7).close()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(log_path), str(seed),
                             "fresh" if fresh else "extend"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)
    try:
        assert proc.stdout.readline().strip() == b"READY", proc.stderr.read().decode()[-2000:]
        time.sleep(rng.uniform(0.02, 0.25))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    if not (path / "header.json").exists():
        return  # killed before the build published its first header: nothing to check
    events = [line.split() for line in log_path.read_text().splitlines()] if log_path.exists() else []
    committed = max([initial] + [int(n) for kind, n in events if kind == "C"])
    in_flight = max([committed] + [int(n) for kind, n in events if kind == "I"])
    unfinished = header(path).get("building", False)
    m = RecordsMmap(path, mode="r", allow_unfinished=unfinished)  # refuses fields of different lengths
    n = len(m)
    assert {len(m[name]) for name in m.fields} == {n}
    lengths = header(path)["columns"]
    assert lengths["text.offsets"]["length"] - 1 == lengths["tokens.offsets"]["length"] - 1 == n
    assert lengths["label.data"]["length"] == 8 * n
    if not unfinished:
        assert n in (committed, in_flight), (n, committed, in_flight)
    for i in range(n):
        assert same_row(m[i], make_row(i)), (seed, i)
    m.close()
    if not unfinished:
        writer = RecordsMmap(path)
        writer.extend(rows(n, n + 2))
        again = RecordsMmap(path, mode="r")
        assert len(again) == n + 2 and same_row(again[n + 1], make_row(n + 1))


@pytest.mark.parametrize("trials", [pytest.param(20, id="20"),
                                    pytest.param(300, id="300", marks=pytest.mark.slow)])
def test_sigkill_while_extending_never_misaligns_fields(tmp_path, trials):
    for seed in range(trials):
        workdir = tmp_path / f"trial{seed}"
        workdir.mkdir()
        _crash_trial(workdir, seed)
