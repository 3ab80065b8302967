"""Values that would change silently on the way in (issue 18): a bool in a numeric field (JSON lines, rows,
``fill_null``) is refused naming the line or row and the field, and a DataFrame's named index is kept."""

import numpy as np
import pytest

import mmap_ninja
from mmap_ninja import RecordsMmap

from tests.support import snapshot


def test_json_lines_refuse_a_bool_in_an_int_field_naming_the_line_and_field(tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text('{"a": 1}\n{"a": true}\n')
    before = snapshot(tmp_path)
    with pytest.raises(TypeError, match=r"rows\.jsonl line 2: row 1, field 'a': expected a scalar of dtype int64, "
                                        r"got the bool True, which would be stored as 1"):
        mmap_ninja.convert(source, tmp_path / "rows", verbose=False)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("rows", [[{"a": 1}, {"a": True}], [{"a": 1.5}, {"a": np.bool_(False)}]],
                         ids=["int-then-bool", "float-then-numpy-bool"])
def test_rows_refuse_a_bool_in_a_numeric_field(tmp_path, rows):
    with pytest.raises(TypeError, match=r"row 1, field 'a': expected a scalar of dtype (int64|float64), got the "
                                        r"bool (True|False)"):
        RecordsMmap.from_generator(tmp_path / "r", rows)


def test_a_bool_field_takes_bools_and_an_int_field_appended_a_bool_is_refused(tmp_path):
    flags = RecordsMmap.from_generator(tmp_path / "flags", [{"a": False}, {"a": True}])
    assert [bool(row["a"]) for row in flags] == [False, True]
    counts = RecordsMmap.from_generator(tmp_path / "counts", [{"a": 1}, {"a": 2}])
    before = snapshot(tmp_path)
    with pytest.raises(TypeError, match=r"row 2, field 'a': .* got the bool True"):
        counts.append({"a": True})
    assert snapshot(tmp_path) == before and len(counts) == 2


def test_fill_null_refuses_a_bool_for_an_int_field(tmp_path):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"a": pa.array([1, None, 3], pa.int64())})
    with pytest.raises(TypeError, match=r"field 'a': cannot fill its nulls with the bool True: the field holds "
                                        r"int64 numbers"):
        RecordsMmap.from_arrow(tmp_path / "t", table, fill_null={"a": True})
    assert not (tmp_path / "t").exists()
    flags = pa.table({"a": pa.array([True, None])})
    assert [bool(row["a"]) for row in RecordsMmap.from_arrow(tmp_path / "f", flags, fill_null={"a": False})] == \
        [True, False]


def test_fill_null_refuses_a_bool_for_a_nullable_pandas_int_column(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": pd.array([1, None], dtype="Int64")})
    with pytest.raises(TypeError, match="cannot fill its nulls with the bool True"):
        RecordsMmap.from_pandas(tmp_path / "p", frame, fill_null={"a": True})


def test_from_pandas_keeps_a_named_index_as_a_leading_field(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": [1, 2, 3]}, index=pd.Index(["a", "b", "c"], name="id"))
    rows = RecordsMmap.from_pandas(tmp_path / "p", frame)
    assert list(rows.schema) == ["id", "x"]
    assert [(row["id"], int(row["x"])) for row in rows] == [("a", 1), ("b", 2), ("c", 3)]


def test_from_pandas_keeps_the_named_levels_of_a_multi_index_and_drops_unnamed_positions(tmp_path):
    pd = pytest.importorskip("pandas")
    index = pd.MultiIndex.from_tuples([(1, "a"), (2, "b")], names=["k", None])
    rows = RecordsMmap.from_pandas(tmp_path / "m", pd.DataFrame({"x": [5, 6]}, index=index))
    assert list(rows.schema) == ["k", "x"] and int(rows[1]["k"]) == 2
    filtered = pd.DataFrame({"x": [1, 2, 3]})[lambda d: d.x > 1]  # index 1, 2: unnamed positions, not data
    assert list(RecordsMmap.from_pandas(tmp_path / "f", filtered).schema) == ["x"]


def test_from_pandas_refuses_an_index_named_like_a_column_saying_how_to_keep_or_drop_it(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": [1, 2]}, index=pd.Index([7, 8], name="x"))
    with pytest.raises(ValueError, match=r"index 'x' has the name of one of its columns.*rename_axis.*"
                                         r"reset_index\(drop=True\)"):
        RecordsMmap.from_pandas(tmp_path / "p", frame)
    assert not (tmp_path / "p").exists()
