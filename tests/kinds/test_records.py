"""RecordsMmap: rows of named fields (strings, ragged, fixed-shape numpy, scalar) committed together."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import (
    KindMismatchError,
    MapLockedError,
    StringsMmap,
    UnfinishedMapError,
    UnknownFeatureError,
    open_existing,
)
from mmap_ninja.kinds.records import Field, RecordsMmap, infer_schema, parse_schema
from mmap_ninja.storage import format as mformat

from tests.support import snapshot

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


def test_inference_is_not_decided_by_an_empty_list(tmp_path):
    # An empty list is float64 to NumPy; a row of token ids that starts with [] must still be an integer field.
    assert infer_schema([{"tok": []}, {"tok": [1, 2]}]) == {"tok": Field.ragged(np.int64)}
    assert infer_schema([{"tok": np.zeros(0, np.int8)}, {"tok": [1, 2]}]) == {"tok": Field.ragged(np.int64)}
    assert infer_schema([{"tok": []}, {"tok": []}]) == {"tok": Field.ragged(np.float64)}
    m = RecordsMmap.from_generator(tmp_path / "m", [{"tok": []}, {"tok": [7, 8]}], batch_size=4)
    assert m[1]["tok"].dtype == np.int64 and m[1]["tok"].tolist() == [7, 8]


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
    ({"text": "a", "tokens": [1.5], "label": 1}, ValueError, "row 11, field 'tokens': "),
    ({"text": "a", "tokens": "abc", "label": 1}, TypeError, "row 11, field 'tokens': expected an array of int32"),
    ({"text": "a", "tokens": None, "label": 1}, TypeError, "row 11, field 'tokens'"),
    ({"text": "\ud800", "tokens": [1], "label": 1}, ValueError, "row 11, field 'text': cannot be stored as UTF-8"),
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
from mmap_ninja.kinds.records import RecordsMmap

path, log_path, seed, fresh = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "fresh"
key = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else None
log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
rng = random.Random(seed)
print("READY", flush=True)
if fresh:  # killed while building: the build is unfinished, every committed batch aligned
    RecordsMmap.from_generator(path, (make_row(i) for i in range(10**9)), batch_size=rng.randint(1, 40), key=key)
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


def _crash_trial(workdir: Path, seed: int, key: str | None = None) -> None:
    rng = random.Random(seed)
    path, log_path = workdir / "map", workdir / "log"
    fresh = rng.random() < 0.25
    initial = 0 if fresh else rng.randint(1, 30)
    if not fresh:
        RecordsMmap.from_generator(path, rows(0, initial), batch_size=7, key=key).close()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(log_path), str(seed),
                             "fresh" if fresh else "extend", key or "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
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
    if unfinished and not any(column["length"] for column in header(path)["columns"].values()):
        # Killed after the build claimed its folder and before its first batch was published (a few
        # milliseconds, which a loaded machine can move into the kill's range): an empty unfinished build, whose
        # schema and initial items come with that first batch.
        assert n == 0
        m.close()
        return
    assert {len(m[name]) for name in m.fields} == {n}
    lengths = header(path)["columns"]
    assert lengths["text.offsets"]["length"] - 1 == lengths["tokens.offsets"]["length"] - 1 == n
    assert lengths["label.data"]["length"] == 8 * n
    if not unfinished:
        assert n in (committed, in_flight), (n, committed, in_flight)
    for i in range(n):
        assert same_row(m[i], make_row(i)), (seed, i)
    if key is not None:  # every committed row is found by its key, nothing else is
        assert all(m.index_of(make_row(i)[key]) == i for i in range(n)), seed
        assert not any(make_row(i)[key] in m for i in range(n, in_flight + 41)), seed
    m.close()
    if not unfinished:
        writer = RecordsMmap(path)
        if key is not None:
            with pytest.raises(ValueError, match=f"row {n}: key .* is already the key of row 0"):
                writer.extend([make_row(0)])
        writer.extend(rows(n, n + 2))
        again = RecordsMmap(path, mode="r")
        assert len(again) == n + 2 and same_row(again[n + 1], make_row(n + 1))
        if key is not None:
            assert again.index_of(make_row(n + 1)[key]) == n + 1 and again.index_of(make_row(0)[key]) == 0


@pytest.mark.parametrize("key", [None, "text"], ids=["plain", "keyed"])
@pytest.mark.parametrize("trials", [pytest.param(10, id="10"),
                                    pytest.param(300, id="300", marks=pytest.mark.slow)])
def test_sigkill_while_extending_never_misaligns_fields(tmp_path, trials, key):
    for seed in range(trials):
        workdir = tmp_path / f"trial{seed}"
        workdir.mkdir()
        _crash_trial(workdir, seed, key)


# ---------------------------------------------------------------------------------------------- fixed bugs

def test_arrow_nulls_are_refused_naming_row_and_field_or_filled_when_asked(tmp_path):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"name": ["a", "b", "c"], "label": pa.array([1, None, 3], pa.int64())})
    with pytest.raises(ValueError, match=r"row 1, field 'label' is null.*fill_null=\{'label': value\}"):
        RecordsMmap.from_arrow(tmp_path / "m", table)
    assert not (tmp_path / "m").exists()
    nested = pa.table({"tok": pa.array([[1], [2, 3], [None, 4]], pa.list_(pa.int64()))})
    with pytest.raises(ValueError, match="row 2, field 'tok' holds a null element"):
        RecordsMmap.from_arrow(tmp_path / "m", nested)
    fixed = pa.table({"v": pa.array([[1, 2], [3, None]], pa.list_(pa.int32(), 2))})
    with pytest.raises(ValueError, match="row 1, field 'v' holds a null element"):
        RecordsMmap.from_arrow(tmp_path / "m", fixed)
    assert not (tmp_path / "m").exists()
    m = RecordsMmap.from_arrow(tmp_path / "m", table, fill_null={"label": -1})
    assert m.schema["label"] == Field.scalar(np.int64) and m["label"].array.tolist() == [1, -1, 3]
    t = RecordsMmap.from_arrow(tmp_path / "t", nested, fill_null={"tok": 0})
    assert t["tok"][2].tolist() == [0, 4] and t["tok"][2].dtype == np.int64
    with pytest.raises(ValueError, match="fill_null names a field 'nope'"):
        RecordsMmap.from_arrow(tmp_path / "u", table, fill_null={"nope": 0})


def test_pandas_missing_values_are_refused_naming_row_and_field_or_filled_when_asked(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"label": pd.array([4, 5, None], dtype="Int64"), "name": ["a", "b", "c"]},
                         index=[10, 11, 12])
    with pytest.raises(ValueError, match=r"row 2, field 'label' is missing \(<NA>, index label 12\)"):
        RecordsMmap.from_pandas(tmp_path / "m", frame)
    with pytest.raises(ValueError, match="row 1, field 'name' is missing"):
        RecordsMmap.from_pandas(tmp_path / "m", pd.DataFrame({"name": ["a", None]}))
    assert not (tmp_path / "m").exists()
    m = RecordsMmap.from_pandas(tmp_path / "m", frame, fill_null={"label": -1})
    assert m.schema["label"] == Field.scalar(np.int64) and m["label"].array.tolist() == [4, 5, -1]
    # NaN in a float column is a value, kept
    f = RecordsMmap.from_pandas(tmp_path / "f", pd.DataFrame({"x": [1.5, float("nan")]}))
    assert np.isnan(f[1]["x"])


def test_a_first_batch_refused_only_when_encoded_creates_nothing(tmp_path):
    with pytest.raises(TypeError, match="row 1, field 'flag'"):
        RecordsMmap.from_dict(tmp_path / "m", {"flag": np.array([True, None], dtype=object)})
    assert not (tmp_path / "m").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(TypeError, match="row 1, field 'flag'"):
        RecordsMmap.from_dict(tmp_path / "empty", {"flag": np.array([True, None], dtype=object)})
    assert snapshot(tmp_path / "empty") == {}


def test_a_field_follows_its_handles_own_writes(rec):
    label, text = rec["label"], rec.field("text")
    rec.extend(rows(10, 13))
    assert len(label) == len(rec) == 13 and label[12] == make_row(12)["label"]
    assert text[-1] == make_row(12)["text"]
    with rec.transaction():
        rec.append(make_row(13))
        assert len(label) == len(rec) == 14
    other = RecordsMmap(rec.path)
    other.append(make_row(14))
    assert rec.refresh() == 1 and len(label) == len(rec) == 15


def test_an_aborted_transaction_on_a_new_handle_leaves_nothing(tmp_path):
    m = RecordsMmap(tmp_path / "a" / "m")
    with pytest.raises(RuntimeError, match="boom"), m.transaction():
        m.extend(rows(0, 3))
        m.append(make_row(3))
        assert len(m) == 4
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists() and len(m) == 0 and not m.exists
    (tmp_path / "b").mkdir()
    m = RecordsMmap(tmp_path / "b")
    with pytest.raises(RuntimeError), m.transaction():
        m.extend(rows(0, 3))
        raise RuntimeError("boom")
    assert snapshot(tmp_path / "b") == {}
    with m.transaction():  # the handle still works, and a block that ends well commits once
        m.extend(rows(0, 3))
        m.append(make_row(3))
    assert header(tmp_path / "b").get("building") is None
    again = RecordsMmap(tmp_path / "b")
    assert len(again) == 4 and same_row(again[3], make_row(3))


def test_a_block_on_a_new_handle_stays_one_transaction_when_another_process_created_the_map_first(tmp_path):
    """A handle opened before the map existed joins the map a racing writer created at its block's first write:
    the block must still hold the lock and commit once (it committed each write on its own, so the other writer's
    rows could land between them: found by the kit's concurrent writers, one run in ~30)."""
    late = RecordsMmap(tmp_path / "m")  # no map yet
    RecordsMmap.from_generator(tmp_path / "m", rows(0, 2), batch_size=2).close()  # the racing writer wins
    other = RecordsMmap(tmp_path / "m", lock_timeout=0)
    with late.transaction():
        late.extend(rows(2, 3))
        with pytest.raises(MapLockedError):  # the block holds the lock: nobody writes inside it
            other.append(make_row(99))
        assert len(RecordsMmap(tmp_path / "m", mode="r")) == 2  # and readers see none of it yet
        late.extend(rows(3, 5))
    again = RecordsMmap(tmp_path / "m", mode="r")
    assert [int(row["label"]) for row in again] == [make_row(i)["label"] for i in range(5)]
    other.append(make_row(5))
    assert len(RecordsMmap(tmp_path / "m", mode="r")) == 6


# ---------------------------------------------------------------------------------------------- keys

def keyed_rows(start: int, stop: int) -> list[dict]:
    return [{"path": f"images/{i:06d}.jpg", "label": i % 10} for i in range(start, stop)]


def test_index_of_finds_every_row_by_its_key(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 500), batch_size=37, key="path")
    assert m.key == "path" and all(m.index_of(f"images/{i:06d}.jpg") == i for i in range(500))
    assert "images/000007.jpg" in m and "images/000500.jpg" not in m and 7 not in m
    with pytest.raises(KeyError, match=r"has the key 'images/x.jpg' \(field 'path';"):
        m.index_of("images/x.jpg")
    with pytest.raises(TypeError, match="holds str keys, got int"):
        m.index_of(3)
    h = header(tmp_path / "m")
    assert h["requires"] == ["records", "records.keys"] and h["attrs"]["key"]["field"] == "path"
    assert "derived-key.slots" in h["columns"] and mmap_ninja.verify(tmp_path / "m", deep=True).ok
    assert RecordsMmap.from_generator(tmp_path / "plain", rows(0, 3), batch_size=2).key is None
    with pytest.raises(TypeError, match="has no key field"):
        RecordsMmap(tmp_path / "plain").index_of("row 1")


def test_integer_keys(tmp_path):
    ids = np.array([-5, 0, 7, 2**62, -(2**63)], dtype=np.int64)
    m = RecordsMmap.from_dict(tmp_path / "m", {"id": ids, "x": np.arange(5.0)}, key="id", batch_size=2)
    assert [m.index_of(int(v)) for v in ids] == list(range(5)) and m.index_of(np.int64(7)) == 2
    assert 1 not in m and "7" not in m
    with pytest.raises(TypeError, match="holds integer keys"):
        m.index_of("7")
    u = RecordsMmap.from_dict(tmp_path / "u", {"id": np.array([2**64 - 1, 3], np.uint64)}, key="id")
    assert u.index_of(2**64 - 1) == 0 and u.index_of(3) == 1


def test_a_key_must_name_a_str_or_integer_field(tmp_path):
    with pytest.raises(ValueError, match="key='nope' names no field"):
        RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 3), batch_size=2, key="nope")
    with pytest.raises(TypeError, match="key field 'x' is a scalar of dtype float64"):
        RecordsMmap.from_dict(tmp_path / "m", {"x": np.arange(3.0)}, key="x")
    with pytest.raises(TypeError, match="key field 'tokens' is an array"):
        RecordsMmap.from_generator(tmp_path / "m", rows(0, 3), batch_size=2, key="tokens")
    assert not (tmp_path / "m").exists()


def test_duplicate_keys_are_refused_naming_row_and_key_and_nothing_changes(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 50), batch_size=16, key="path")
    before = snapshot(tmp_path / "m")
    with pytest.raises(ValueError, match=r"row 51: key 'images/000003.jpg' .*already the key of row 3"):
        m.extend(keyed_rows(50, 51) + keyed_rows(3, 4))
    with pytest.raises(ValueError, match=r"row 52: key 'images/000060.jpg' .*repeats the key of row 50"):
        m.extend([*keyed_rows(60, 61), *keyed_rows(61, 62), *keyed_rows(60, 61)])
    with pytest.raises(ValueError, match="already the key of row 0"):
        m.append(keyed_rows(0, 1)[0])
    assert snapshot(tmp_path / "m") == before and len(m) == 50
    with m.transaction():  # refused inside a block: the block goes on
        m.extend(keyed_rows(50, 52))
        with pytest.raises(ValueError, match=r"row 53: key 'images/000051.jpg'"):
            m.extend(keyed_rows(52, 53) + keyed_rows(51, 52))
        m.extend(keyed_rows(52, 53))
    assert len(m) == 53 and m.index_of("images/000052.jpg") == 52


def test_duplicate_keys_when_building(tmp_path):
    data = keyed_rows(0, 5) + keyed_rows(2, 3)
    with pytest.raises(ValueError, match=r"row 5: key 'images/000002.jpg' .*repeats the key of row 2"):
        RecordsMmap.from_generator(tmp_path / "m", data, batch_size=10, key="path")
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match=r"row 5: key 'images/000002.jpg' .*already the key of row 2"):
        RecordsMmap.from_generator(tmp_path / "m", data, batch_size=3, key="path")
    partial = RecordsMmap(tmp_path / "m", allow_unfinished=True)  # the batches before it, indexed
    assert len(partial) == 3 and partial.index_of("images/000002.jpg") == 2


def test_the_index_grows_over_many_batches_and_reopens(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 10), batch_size=4, key="path")
    start = 10
    for size in [1, 1, 2, 3, 50, 1, 300, 7, 1000, 1, 1]:
        m.extend(keyed_rows(start, start + size))
        start += size
    with m.transaction():
        for i in range(start, start + 100):
            m.append(keyed_rows(i, i + 1)[0])
    start += 100
    again = RecordsMmap(tmp_path / "m", mode="r")
    assert len(again) == start and all(again.index_of(f"images/{i:06d}.jpg") == i for i in range(start))
    table = header(tmp_path / "m")["attrs"]["key"]["table"]
    slots = header(tmp_path / "m")["columns"]["derived-key.slots"]["length"] // 2
    assert start <= 0.7 * table[1] and table[0] + table[1] == slots and slots <= 2 * table[1]
    copy = pickle.loads(pickle.dumps(again))
    assert copy.index_of(f"images/{start - 1:06d}.jpg") == start - 1 and copy.key == "path"


def test_undone_writes_leave_no_key_behind(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 20), batch_size=8, key="path")
    before = snapshot(tmp_path / "m")
    with pytest.raises(RuntimeError), m.transaction():  # the slots it filled in place are put back
        m.extend(keyed_rows(20, 23))
        with pytest.raises(RuntimeError), m.transaction():
            m.extend(keyed_rows(23, 24))
            raise RuntimeError("inner")
        assert "images/000023.jpg" not in m and m.index_of("images/000022.jpg") == 22
        raise RuntimeError("outer")
    assert snapshot(tmp_path / "m") == before
    for attempt in range(3):  # rows 20.. written, their slots filled, then undone: the row numbers are reused
        with pytest.raises(RuntimeError), m.transaction():
            m.extend([{"path": f"undone/{attempt}/{i}", "label": 0} for i in range(5)])
            assert m.index_of(f"undone/{attempt}/4") == 24
            raise RuntimeError("undo")
        assert f"undone/{attempt}/0" not in m and len(m) == 20
    m.extend(keyed_rows(20, 400))  # reuses rows 20..24, and replaces the table (stale slots dropped)
    assert all(m.index_of(f"images/{i:06d}.jpg") == i for i in range(400))
    assert not any(f"undone/{a}/{i}" in m for a in range(3) for i in range(5))
    assert m["path"][22] == "images/000022.jpg"


def test_a_reader_sees_new_keys_after_refresh(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 10), batch_size=8, key="path")
    reader = RecordsMmap(tmp_path / "m", mode="r")
    m.extend(keyed_rows(10, 12))
    assert "images/000011.jpg" not in reader and "images/000011.jpg" in m
    reader.refresh()
    assert reader.index_of("images/000011.jpg") == 11


def test_a_reader_without_the_keys_feature_refuses_a_keyed_map(tmp_path, monkeypatch):
    RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 3), batch_size=2, key="path")
    monkeypatch.setattr(mformat, "_FEATURES", mformat._FEATURES - {"records.keys"})
    with pytest.raises(UnknownFeatureError, match=r"'records.keys'"):
        RecordsMmap(tmp_path / "m")


# ---------------------------------------------------------------------------------------------- adding a field

def test_add_field_fills_old_rows_with_the_default_in_one_commit(rec, tmp_path):
    other = RecordsMmap(tmp_path / "rec")
    commit = header(tmp_path / "rec")["commit"]
    rec.add_field("score", float, default=0.5)
    rec.add_field("caption", "strings", default="none")
    rec.add_field("emb", ("numpy", np.float32, (2,)), default=[1, 2])
    rec.add_field("extra", ("ragged", np.int16), default=np.arange(3))
    assert header(tmp_path / "rec")["commit"] == commit + 4
    assert rec.fields == ("text", "tokens", "label", "score", "caption", "emb", "extra") and len(rec) == 10
    assert all(rec[i]["score"] == 0.5 and rec[i]["caption"] == "none" and same_row(rec[i], {
        **make_row(i), "score": 0.5, "caption": "none", "emb": np.array([1, 2], np.float32),
        "extra": np.arange(3, dtype=np.int16)}) for i in range(10))
    assert rec["score"].array.tolist() == [0.5] * 10 and len(rec["extra"]) == 10
    rec.append({**make_row(10), "score": 2.0, "caption": "new", "emb": [0, 0], "extra": [7]})
    with pytest.raises(ValueError, match="row 11 has no field 'score'"):
        rec.append(make_row(11))
    assert other.fields == ("text", "tokens", "label") and other.refresh() == 1
    assert other.fields == rec.fields and other[10]["caption"] == "new" and other[3]["caption"] == "none"
    assert mmap_ninja.verify(tmp_path / "rec", deep=True).ok
    again = RecordsMmap(tmp_path / "rec", mode="r")
    assert len(again) == 11 and again.schema["emb"] == Field.numpy(np.float32, (2,))


def test_add_field_refusals_change_nothing(rec, tmp_path):
    before = snapshot(tmp_path / "rec")
    with pytest.raises(ValueError, match="already has a field 'label'"):
        rec.add_field("label", int, default=0)
    with pytest.raises(ValueError, match=r"'label', which differs from 'LABEL' only by case"):
        rec.add_field("LABEL", int, default=0)
    with pytest.raises(TypeError, match=r"field 'n': the default 'x' cannot be stored: expected a scalar"):
        rec.add_field("n", np.int32, default="x")
    with pytest.raises(ValueError, match="field 'n': the default 3000000000 cannot be stored"):
        rec.add_field("n", np.int32, default=3_000_000_000)
    with pytest.raises(TypeError, match=r"field 'z' \(strings, compressed\) needs the feature\(s\) \['codec.lz4'\]"):
        rec.add_field("z", Field.strings("lz4"), default="")
    with pytest.raises(TypeError, match=r"field 'picture' \(images\) needs .*records.images"):
        rec.add_field("picture", "images", default=b"")
    with pytest.raises(ValueError, match="field names must be ASCII identifiers"):
        rec.add_field("a b", int, default=0)
    assert snapshot(tmp_path / "rec") == before
    with pytest.raises(RuntimeError), rec.transaction():  # undone with its block: no field, no files
        rec.add_field("gone", int, default=1)
        assert rec[0]["gone"] == 1
        raise RuntimeError("undo")
    assert "gone" not in rec.fields and snapshot(tmp_path / "rec") == before
    assert "gone" not in RecordsMmap(tmp_path / "rec").fields


ADD_FIELD_CHILD = r'''
import sys
from mmap_ninja.kinds.records import RecordsMmap
rec = RecordsMmap(sys.argv[1])
if sys.argv[2] == "before-commit":  # the field's files all written, the commit not yet made: killed there
    with rec.transaction():
        rec.add_field("tok", ("ragged", "int32"), default=[1, 2, 3])
        print("READY", flush=True)
        sys.stdin.readline()
else:
    print("READY", flush=True)
    rec.add_field("tok", ("ragged", "int32"), default=[1, 2, 3])  # about a second: killed midway or before
print("DONE", flush=True)
'''


def test_sigkill_while_adding_a_field_leaves_the_map_with_or_without_it_whole(tmp_path):
    n = 100_000
    RecordsMmap.from_dict(tmp_path / "m", {"label": np.arange(n)}).close()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    outcomes = set()
    for trial in range(4):
        # The first kill comes, decided by state, once every file of the field is written but before the commit
        # (the child adds it inside a transaction and waits there); the others land at a random point of it.
        where = "before-commit" if trial == 0 else "anywhere"
        proc = subprocess.Popen([sys.executable, "-c", ADD_FIELD_CHILD, str(tmp_path / "m"), where],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, env=env)
        assert proc.stdout.readline().strip() == b"READY", proc.stderr.read().decode()[-2000:]
        if trial:
            time.sleep(0.02 + 0.15 * trial)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
        m = RecordsMmap(tmp_path / "m", mode="r")
        assert len(m) == n and m["label"][n - 1] == n - 1
        if "tok" in m.fields:
            outcomes.add("added")
            assert len(m["tok"]) == n and m["tok"].values.tolist() == [1, 2, 3] * n
            assert mmap_ninja.verify(tmp_path / "m", deep=True).ok
            break
        outcomes.add("not added")
    writer = RecordsMmap(tmp_path / "m")
    if "tok" not in writer.fields:  # a later attempt replaces what the killed one left
        writer.add_field("tok", ("ragged", "int32"), default=[1, 2, 3])
    assert writer[n - 1]["label"] == n - 1 and writer[n - 1]["tok"].tolist() == [1, 2, 3]
    assert "not added" in outcomes  # the first kill came before the commit


def test_integer_keys_refuse_duplicates_naming_the_row_and_key(tmp_path):
    m = RecordsMmap.from_dict(tmp_path / "m", {"id": np.array([5, 9, 2]), "x": np.zeros(3)}, key="id")
    with pytest.raises(ValueError, match=r"row 3: key 9 .*already the key of row 1"):
        m.extend({"id": np.array([9]), "x": np.zeros(1)})
    with pytest.raises(ValueError, match=r"row 5: key 7 .*repeats the key of row 3"):
        m.extend({"id": np.array([7, 8, 7, 8]), "x": np.zeros(4)})
    assert len(m) == 3


def test_keys_from_other_builders_and_two_writers(tmp_path):
    pa = pytest.importorskip("pyarrow")
    a = RecordsMmap.from_arrow(tmp_path / "a", pa.table({"id": [3, 1, 2], "s": ["x", "y", "z"]}), key="s")
    assert a.index_of("z") == 2
    b = RecordsMmap.from_indexable(tmp_path / "b", keyed_rows(0, 40), batch_size=8, n_jobs=2, key="path")
    assert b.index_of("images/000039.jpg") == 39
    other = RecordsMmap(tmp_path / "b")  # two handles extend one map in turn: each catches up with the index
    for start in range(40, 400, 60):
        b.extend(keyed_rows(start, start + 30))
        with pytest.raises(ValueError, match="already the key of row"):
            other.extend(keyed_rows(start + 29, start + 31))
        other.extend(keyed_rows(start + 30, start + 60))
    assert all(other.index_of(f"images/{i:06d}.jpg") == i for i in range(400))
    assert b.refresh() and b.index_of("images/000399.jpg") == 399


GHOST_CHILD = r'''
import os, sys
from mmap_ninja.kinds.records import RecordsMmap
rec = RecordsMmap(sys.argv[1])
with rec.transaction():
    rec.extend([{"path": f"ghost/{i}", "label": 0} for i in range(int(sys.argv[2]))])
    os._exit(0)  # dies inside the transaction: its slots are written, its rows never published, nothing undone
'''


def test_slots_left_by_a_dead_writer_never_name_a_row(tmp_path):
    m = RecordsMmap.from_generator(tmp_path / "m", keyed_rows(0, 100), batch_size=50, key="path")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = header(tmp_path / "m")["attrs"]["key"]["table"]
    subprocess.run([sys.executable, "-c", GHOST_CHILD, str(tmp_path / "m"), "30"], check=True, env=env)
    slots = np.fromfile(tmp_path / "m" / "derived-key.slots.bin", dtype=np.int64).reshape(-1, 2)
    table = slots[before[0]:before[0] + before[1]]
    assert ((table[:, 1] >= 100) & (table[:, 1] < 130)).sum() == 30  # the dead writer's slots are there
    m.refresh()
    assert len(m) == 100 and "ghost/3" not in m
    m.extend(keyed_rows(100, 140))  # rows 100..129 now exist, with other keys than the slots left name
    assert not any(f"ghost/{i}" in m for i in range(30))
    assert all(m.index_of(f"images/{i:06d}.jpg") == i for i in range(140))
    m.extend(keyed_rows(140, 1000))  # a new table: the stale slots are not carried over
    key = header(tmp_path / "m")["attrs"]["key"]["table"]
    assert key[0] > before[0]
    slots = np.fromfile(tmp_path / "m" / "derived-key.slots.bin", dtype=np.int64).reshape(-1, 2)
    rows = slots[key[0]:key[0] + key[1], 1]
    assert sorted(rows[rows >= 0].tolist()) == list(range(1000))
    assert all(m.index_of(f"images/{i:06d}.jpg") == i for i in range(1000)) and "ghost/0" not in m


# ---------------------------------------------------------------------------------------------- adversarial round

def test_a_value_refused_when_encoded_names_its_row_and_field(tmp_path):
    m = RecordsMmap.from_dict(tmp_path / "m", {"path": ["a", "b"], "y": np.arange(2)}, key="path")
    before = snapshot(m._path)
    with pytest.raises(ValueError, match=r"^row 2, field 'path': cannot be stored as UTF-8"):
        m.append({"path": "\ud800", "y": 2})
    assert snapshot(m._path) == before and len(m) == 2



def test_get_batch_refuses_a_field_name_given_as_one_str_and_pad_values_for_unknown_fields(rec):
    with pytest.raises(TypeError, match=r"fields=\['text'\]"):
        rec.get_batch([0, 1], fields="text")
    with pytest.raises(KeyError, match="pad_value names no field 'tokenz'"):
        rec.get_batch([0, 1], pad_value={"tokenz": 0})
    _, lengths = rec.get_batch([0, 1], pad_value={"tokens": 0})
    assert set(lengths) == {"tokens"}


def test_from_pandas_refuses_two_columns_of_one_name(tmp_path):
    import pandas as pd

    frame = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(ValueError, match="two columns named 'a'"):
        RecordsMmap.from_pandas(tmp_path / "m", frame)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("column, arrow_type", [
    ([["a"], ["b", "c"]], "list<item: string>"),
    ([{"x": 1}, {"x": 2}], "struct<x: int64>"),
    ([[[1, 2], [3]], [[4]]], "list<item: list<item: int64>>"),
    ([datetime.time(1, 2)], "time64[us]"),
])
def test_from_arrow_refuses_a_type_no_field_holds_naming_field_and_type(tmp_path, column, arrow_type):
    import pyarrow as pa

    with pytest.raises(TypeError, match=rf"field 'a' has Arrow type {re.escape(arrow_type)}, which no records field"):
        RecordsMmap.from_arrow(tmp_path / "m", pa.table({"a": pa.array(column)}))
    assert not (tmp_path / "m").exists()


def test_indexing_by_field_names_says_how_to_read_fields(rec):
    for index in (["text", "label"], ("text", "label")):
        with pytest.raises(TypeError, match=r"rec\['text'\].*get_batch\(.*fields="):
            rec[index]


def test_from_pandas_stores_datetime_columns_as_from_arrow_does_zones_included(tmp_path):
    import pandas as pd
    import pyarrow as pa

    frame = pd.DataFrame({"when": pd.to_datetime(["2020-01-01 00:00", "2021-06-30 12:00"]),
                          "took": pd.to_timedelta([1, 2], unit="s")})
    rec = RecordsMmap.from_pandas(tmp_path / "m", frame)
    assert rec["when"].dtype == frame["when"].dtype and rec["took"].dtype == frame["took"].dtype
    assert rec[1]["when"] == np.datetime64("2021-06-30T12:00")
    from_arrow = RecordsMmap.from_arrow(tmp_path / "a", pa.Table.from_pandas(frame))
    assert np.array_equal(rec["when"][:], from_arrow["when"][:])
    zoned = pd.DataFrame({"when": pd.to_datetime(["2020-01-01"]).tz_localize("UTC")})
    stored = RecordsMmap.from_pandas(tmp_path / "z", zoned)  # UTC values, the zone in the field (issue 20)
    also = RecordsMmap.from_arrow(tmp_path / "za", pa.Table.from_pandas(zoned))
    assert stored.schema["when"] == also.schema["when"] and stored.schema["when"].timezone == "UTC"
    assert np.array_equal(stored["when"][:], also["when"][:])


def test_a_missing_key_error_says_how_many_rows_were_searched_and_about_refresh(tmp_path):
    writer = RecordsMmap.from_dict(tmp_path / "m", {"k": ["a"]}, key="k")
    reader = RecordsMmap(tmp_path / "m", mode="r")
    writer.append({"k": "b"})
    with pytest.raises(KeyError, match=r"no row of .* has the key 'b' \(field 'k'; 1 row seen by this handle: "
                                       r"refresh\(\) shows rows other handles added since"):
        reader.index_of("b")
    reader.refresh()
    assert reader.index_of("b") == 1


def test_a_numpy_array_of_str_is_a_strings_column(tmp_path):
    rec = RecordsMmap.from_dict(tmp_path / "m", {"path": np.array(["a.jpg", "bb.jpg"]), "y": np.arange(2)}, key="path")
    assert rec.schema["path"] == Field.strings() and rec.index_of("bb.jpg") == 1
    rec.append({"path": "a much longer file name.jpg", "y": 2})
    assert rec[2]["path"] == "a much longer file name.jpg" and type(rec[0]["path"]) is str


def test_to_arrow_reads_compressed_fields_and_names_a_field_it_cannot_convert(tmp_path):
    rows = [{"s": "x" * i, "z": np.arange(i, dtype=np.int32), "m": np.zeros((i + 1, 2))} for i in range(5)]
    rec = RecordsMmap.from_generator(tmp_path / "m", rows, 2, schema={"s": ("strings", "zstd"),
                                                                      "z": ("ragged", np.int32, "zstd"),
                                                                      "m": ("ragged", np.float64)})
    with pytest.raises(ValueError, match=r"field 'm': to_arrow\(\) needs 1-D samples"):
        rec.to_arrow()
    rec = RecordsMmap.from_generator(tmp_path / "c", [{"s": r["s"], "z": r["z"]} for r in rows], 2,
                                     schema={"s": ("strings", "zstd"), "z": ("ragged", np.int32, "zstd")})
    table = rec.to_arrow()
    assert table.column("s").to_pylist() == [r["s"] for r in rows]
    assert table.column("z").to_pylist() == [r["z"].tolist() for r in rows]
    assert str(table.schema.field("z").type) == "large_list<item: int32>"


def test_extending_an_empty_handle_by_no_rows_writes_nothing(tmp_path):
    m = RecordsMmap(tmp_path / "m")
    m.extend([])
    m.extend(iter([]))
    m.extend({"text": [], "label": []})
    assert not (tmp_path / "m").exists() and len(m) == 0
    m.extend(rows(0, 2))  # the first rows still give the schema
    assert m.fields == ("text", "tokens", "label") and len(m) == 2
    with pytest.raises(TypeError, match="column 'text' is a single value"):
        RecordsMmap(tmp_path / "n").extend({"text": np.array("one")})


def test_get_batch_names_the_field_whose_samples_cannot_be_stacked(tmp_path):
    m = RecordsMmap.from_dict(tmp_path / "m", {"t": [np.arange(1), np.arange(2)], "y": [0, 1]},
                              schema={"t": ("ragged", np.int64), "y": int})
    with pytest.raises(ValueError, match=r"^field 't': cannot stack samples of different shapes"):
        m.get_batch([0, 1])
