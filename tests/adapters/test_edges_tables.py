"""Tables at the edges (issue 20): fill values follow the no-silent-cast rule, and every tabular reader
(from_arrow, from_pandas, from_parquet, from_huggingface, convert) stores times, dates and bytes alike."""

import datetime

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

import mmap_ninja  # noqa: E402
from mmap_ninja import RecordsMmap  # noqa: E402


@pytest.mark.parametrize(("arrow_type", "value", "error", "message"), [
    ("int64", 2.9, ValueError, "would become 2"),
    ("float32", 1e300, ValueError, "1e\\+300"),
    ("uint8", -1, ValueError, "-1 does not fit"),
    ("int64", "7", TypeError, "holds int64 numbers"),
    ("string", 3, TypeError, "holds str"),
])
def test_fill_values_follow_the_no_silent_cast_rule(tmp_path, arrow_type, value, error, message):
    table = pa.table({"ok": pa.array([1, 2]), "label": pa.array(
        ["a", None] if arrow_type == "string" else [1, None], type=pa.type_for_alias(arrow_type))})
    with pytest.raises(error, match=f"field 'label'.*{message}|{message}.*field 'label'"):
        RecordsMmap.from_arrow(tmp_path / "m", table, fill_null={"label": value})
    assert not (tmp_path / "m").exists()


def test_exact_fill_values_are_stored(tmp_path):
    table = pa.table({"i": pa.array([1, None]), "f": pa.array([0.5, None], pa.float32()),
                      "u": pa.array([1, None], pa.uint8())})
    m = RecordsMmap.from_arrow(tmp_path / "m", table, fill_null={"i": 2.0, "f": 0.1, "u": 255})
    assert m[1]["i"] == 2 and m[1]["f"] == np.float32(0.1) and m[1]["u"] == 255


def test_pandas_fill_values_follow_the_rule_too(tmp_path):
    frame = pd.DataFrame({"label": pd.array([1, None], dtype="Int64")})
    with pytest.raises(ValueError, match=r"field 'label'.*2\.9"):
        RecordsMmap.from_pandas(tmp_path / "m", frame, fill_null={"label": 2.9})
    frame = pd.DataFrame({"label": pd.array([1, None], dtype="UInt8")})
    with pytest.raises(ValueError, match=r"field 'label'.*-1"):
        RecordsMmap.from_pandas(tmp_path / "m", frame, fill_null={"label": -1})
    assert RecordsMmap.from_pandas(tmp_path / "m", frame, fill_null={"label": 7})[1]["label"] == 7


def test_a_none_in_an_object_column_is_named_none(tmp_path):
    for column in (["a", None, "c"], pd.Series(["a", None, "c"], dtype=object), [[1], None, [2]]):
        with pytest.raises(ValueError, match=r"row 1, field 's' is missing \(None, index label 1\)"):
            RecordsMmap.from_pandas(tmp_path / "m", pd.DataFrame({"s": column}))


def _table():
    paris = pa.array([0, 3_600_000_000], pa.timestamp("us", tz="Europe/Paris"))
    return pa.table({
        "at": paris,
        "naive": pa.array([5, 6], pa.timestamp("ns")),
        "day": pa.array([datetime.date(2024, 2, 29), datetime.date(1969, 12, 31)], pa.date32()),
        "day64": pa.array([datetime.date(2000, 1, 1), datetime.date(2000, 1, 2)], pa.date64()),
        "blob": pa.array([b"\x00\xff", b""], pa.binary()),
        "n": pa.array([1, 2]),
    })


def _readers(tmp_path):
    import pyarrow.parquet as pq

    table = _table()
    pq.write_table(table, tmp_path / "t.parquet")
    yield "from_arrow", RecordsMmap.from_arrow(tmp_path / "arrow", table)
    yield "from_parquet", RecordsMmap.from_parquet(tmp_path / "parquet", tmp_path / "t.parquet")
    yield "convert", RecordsMmap(mmap_ninja.convert(tmp_path / "t.parquet", tmp_path / "c", verbose=False).path)
    yield "from_pandas", RecordsMmap.from_pandas(tmp_path / "pandas", table.drop_columns(["day64"]).to_pandas())
    yield "from_pandas(ArrowDtype)", RecordsMmap.from_pandas(tmp_path / "pandas-arrow",
                                                            table.to_pandas(types_mapper=pd.ArrowDtype))
    datasets = pytest.importorskip("datasets")
    from datasets.table import InMemoryTable

    dataset = datasets.Dataset(InMemoryTable(table))
    yield "from_huggingface", RecordsMmap.from_huggingface(tmp_path / "hf", dataset)


def test_every_reader_stores_times_dates_and_bytes_alike(tmp_path):
    expected_at = np.array(["1970-01-01T00:00:00", "1970-01-01T01:00:00"], dtype="datetime64[us]")
    for reader, m in _readers(tmp_path):
        schema = m.schema
        assert schema["at"].dtype == np.dtype("datetime64[us]") and schema["at"].timezone == "Europe/Paris", reader
        assert np.array_equal(m.field("at")[:], expected_at), reader  # UTC values
        assert schema["naive"].dtype == np.dtype("datetime64[ns]") and schema["naive"].timezone is None, reader
        assert m.field("naive")[:].astype(np.int64).tolist() == [5, 6], reader
        assert schema["day"].dtype == np.dtype("datetime64[D]"), reader
        assert m.field("day")[:].tolist() == [datetime.date(2024, 2, 29), datetime.date(1969, 12, 31)], reader
        if "day64" in schema:
            assert schema["day64"].dtype == np.dtype("datetime64[D]"), reader
            assert str(m[1]["day64"]) == "2000-01-02", reader
        assert schema["blob"].kind == "ragged" and schema["blob"].dtype == np.uint8, reader
        assert [bytes(v) for v in m.field("blob")[:]] == [b"\x00\xff", b""], reader
        back = m.to_arrow()
        assert back.schema.field("at").type == pa.timestamp("us", tz="Europe/Paris"), reader
        assert back.column("at").equals(_table().column("at")), reader
        assert back.schema.field("day").type == pa.date32(), reader
        m.close()


def test_pandas_zones_and_dates(tmp_path):
    frame = pd.DataFrame({
        "paris": pd.to_datetime(["2024-06-01 12:00"]).tz_localize("Europe/Paris").as_unit("ms"),
        "offset": pd.to_datetime(["2024-06-01 12:00"]).tz_localize(datetime.timezone(datetime.timedelta(hours=-5))),
        "day": [datetime.date(2024, 6, 1)],
    })
    m = RecordsMmap.from_pandas(tmp_path / "m", frame)
    assert m.schema["paris"].dtype == np.dtype("datetime64[ms]") and m.schema["paris"].timezone == "Europe/Paris"
    assert str(m[0]["paris"]) == "2024-06-01T10:00:00.000"  # UTC
    assert m.schema["offset"].timezone == "-05:00" and str(m[0]["offset"]).startswith("2024-06-01T17:00")
    assert m.schema["day"].dtype == np.dtype("datetime64[D]")
    back = m.to_arrow().to_pandas()
    assert back["paris"].iloc[0] == frame["paris"].iloc[0] and str(back["paris"].dt.tz) == "Europe/Paris"
    m.close()
    reopened = RecordsMmap(tmp_path / "m", mode="r")  # the zone is in the header
    assert reopened.schema["paris"].timezone == "Europe/Paris"


def test_a_date64_that_is_not_a_whole_day_is_refused(tmp_path):
    table = pa.table({"d": pa.array([86_400_000, 86_400_001], pa.date64())})
    with pytest.raises(ValueError, match=r"row 1, field 'd'.*not a whole day"):
        RecordsMmap.from_arrow(tmp_path / "m", table)
