"""`convert` / `mmap-ninja convert` from sources other than maps: folders of images and text files, JSON lines,
Parquet, Arrow and Hugging Face datasets, and sharded maps; each made here from small local data."""

import io
import json
import os
import re

import numpy as np
import pytest

from mmap_ninja import NotAMapError, RecordsMmap, StringsMmap
from mmap_ninja.containers.generic import open_existing
from mmap_ninja.tools.cli import main
from mmap_ninja.tools.conversion import convert, source_kind


def _image_bytes(color, fmt):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), color).save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_folder_of_images_becomes_an_images_map_in_sorted_path_order(tmp_path):
    from mmap_ninja.kinds.images import ImagesMmap

    src = tmp_path / "pictures"
    (src / "b").mkdir(parents=True)
    files = {"b/z.png": _image_bytes("red", "PNG"), "a.JPG": _image_bytes("blue", "JPEG"),
             "b/c.png": _image_bytes("green", "PNG")}
    for name, raw in files.items():
        (src / name).write_bytes(raw)
    (src / ".DS_Store").write_bytes(b"hidden files are skipped")
    assert source_kind(src) == "images"
    assert main(["convert", "-q", str(src), str(tmp_path / "out")]) == 0
    m = ImagesMmap(tmp_path / "out", mode="r")
    assert len(m) == 3
    assert [bytes(m.raw(i)) for i in range(3)] == [files["a.JPG"], files["b/c.png"], files["b/z.png"]]
    assert m[2].shape == (4, 6, 3) and tuple(m[2][0, 0]) == (255, 0, 0)


def test_baseline_jpeg_option_on_a_folder_of_images(tmp_path, capsys):
    from PIL import Image

    from mmap_ninja.kinds.images import ImagesMmap

    src = tmp_path / "pictures"
    src.mkdir()
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(buffer, format="JPEG", progressive=True)
    (src / "a.jpg").write_bytes(buffer.getvalue())
    (src / "b.png").write_bytes(_image_bytes("red", "PNG"))
    assert main(["convert", "-q", "--baseline-jpeg", str(src), str(tmp_path / "out")]) == 0
    m = ImagesMmap(tmp_path / "out", mode="r")
    with Image.open(io.BytesIO(bytes(m.raw(0)))) as stored, Image.open(src / "a.jpg") as given:
        assert given.info.get("progressive") and not stored.info.get("progressive")
        assert np.array_equal(np.asarray(stored), np.asarray(given)) and np.array_equal(m[0], np.asarray(given))
    assert bytes(m.raw(1)) == (src / "b.png").read_bytes()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("words")
    assert main(["convert", "-q", "--baseline-jpeg", str(tmp_path / "texts"), str(tmp_path / "out2")]) == 1
    assert "--baseline-jpeg" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_records_option_on_a_class_folder(tmp_path):
    src = tmp_path / "classes"
    for label in ("cat", "dog"):
        (src / label).mkdir(parents=True)
        (src / label / "1.png").write_bytes(_image_bytes("white", "PNG"))
    assert main(["convert", "-q", "--records", str(src), str(tmp_path / "out")]) == 0
    m = open_existing(tmp_path / "out", mode="r")
    assert isinstance(m, RecordsMmap) and len(m) == 2 and m.metadata["classes"] == ["cat", "dog"]
    assert [row["label"] for row in m] == [0, 1] and m[1]["image"].shape == (4, 6, 3)
    (src / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.txt"):
        convert(src, tmp_path / "other", verbose=False, records=True)


def test_a_folder_of_text_files_becomes_a_strings_map_one_sample_per_file(tmp_path):
    src = tmp_path / "texts"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("second ünïcode", encoding="utf-8")
    (src / "a.md").write_text("first", encoding="utf-8")
    (src / "sub" / "c.txt").write_text("", encoding="utf-8")
    assert source_kind(src) == "text"
    done = convert(src, tmp_path / "out", verbose=False, codec="zstd")
    assert done.kind == "strings" and done.length == 3
    m = StringsMmap(tmp_path / "out", mode="r")
    assert list(m) == ["first", "second ünïcode", ""] and m.codec == "zstd"


def test_a_text_file_that_is_not_utf8_is_named_and_nothing_is_written(tmp_path):
    src = tmp_path / "texts"
    src.mkdir()
    (src / "good.txt").write_text("fine")
    (src / "photo.jpg.txt").write_bytes(_image_bytes("red", "JPEG"))
    with pytest.raises(ValueError, match=r"photo\.jpg\.txt is not UTF-8 text"):
        convert(src, tmp_path / "out", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts"]  # no output, no temporary directory


def test_json_lines_of_objects_become_records_and_strings_become_strings(tmp_path):
    rows = [{"text": f"row {i}", "label": i % 3, "score": i / 2, "tokens": list(range(i))} for i in range(7)]
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    done = convert(src, tmp_path / "records", verbose=False, batch_size=3)
    assert done.kind == "records" and done.length == 7
    m = RecordsMmap(tmp_path / "records", mode="r")
    assert m[5]["text"] == "row 5" and m[5]["label"] == 2 and m[5]["score"] == 2.5
    np.testing.assert_array_equal(m[4]["tokens"], [0, 1, 2, 3])
    assert main(["convert", "-q", "--field", "text", str(src), str(tmp_path / "texts")]) == 0
    assert list(StringsMmap(tmp_path / "texts", mode="r")) == [f"row {i}" for i in range(7)]
    plain = tmp_path / "plain.ndjson"
    plain.write_text('"one"\n"two"\n')
    assert list(StringsMmap(convert(plain, tmp_path / "plain", verbose=False).path)) == ["one", "two"]


@pytest.mark.parametrize("content, message", [('{"a": 1}\n{"a": 2\n', r"line 2 column \d+ is not valid JSON"),
                                              ('{"a": 1}\n"text"\n', "line 2 holds str, not an object"),
                                              ('[1, 2]\n', "line 1 holds list")])
def test_bad_json_lines_name_the_line(tmp_path, content, message):
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    with pytest.raises(ValueError, match=message):
        convert(src, tmp_path / "out", verbose=False, batch_size=1)
    assert not (tmp_path / "out").exists()
    status = main(["convert", "-q", "--field", "missing", str(src), str(tmp_path / "out")])
    assert status == 1 and not (tmp_path / "out").exists()


def _table():
    import pyarrow as pa

    return pa.table({"id": pa.array(range(10), pa.int64()), "text": [f"doc {i}" for i in range(10)],
                     "values": [[float(j) for j in range(i % 4)] for i in range(10)],
                     "vec": pa.array([[i, i + 1] for i in range(10)], pa.list_(pa.float32(), 2))})


def _check_records(path):
    m = RecordsMmap(path, mode="r")
    assert len(m) == 10 and m.fields == ("id", "text", "values", "vec")
    assert m[7]["id"] == 7 and m[7]["text"] == "doc 7"
    np.testing.assert_array_equal(m[7]["values"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(m[7]["vec"], np.array([7, 8], np.float32))


def test_parquet_is_read_a_batch_at_a_time(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(_table(), tmp_path / "t.parquet", row_group_size=4)
    done = convert(tmp_path / "t.parquet", tmp_path / "out", verbose=False, batch_size=3)
    assert done.kind == "records" and done.length == 10
    _check_records(tmp_path / "out")
    header = json.loads((tmp_path / "out" / "header.json").read_text())
    assert header["commit"] >= 4  # one commit per batch of 3 rows, not one for the whole file


def test_arrow_ipc_files_and_streams(tmp_path):
    import pyarrow as pa

    table = _table()
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=6)
    with pa.OSFile(str(tmp_path / "s.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert main(["convert", "-q", "--batch-size", "4", str(tmp_path / "t.arrow"), str(tmp_path / "out")]) == 0
    _check_records(tmp_path / "out")
    convert(tmp_path / "s.arrow", tmp_path / "out2", verbose=False, codec="zstd")
    _check_records(tmp_path / "out2")
    assert RecordsMmap(tmp_path / "out2").schema["text"].codec is not None


def test_nulls_in_a_parquet_column_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, None, 3]}), tmp_path / "n.parquet")
    with pytest.raises(ValueError, match="row 1, field 'x' is null"):
        convert(tmp_path / "n.parquet", tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_a_hugging_face_dataset_saved_to_disk(tmp_path):
    import datasets

    data = {"text": [f"hello {i}" for i in range(10)], "label": list(range(10))}
    datasets.Dataset.from_dict(data).save_to_disk(str(tmp_path / "hf"))
    assert source_kind(tmp_path / "hf") == "huggingface"
    done = convert(tmp_path / "hf", tmp_path / "out", verbose=False, batch_size=4)
    m = RecordsMmap(done.path, mode="r")
    assert len(m) == 10 and m[9] == {"text": "hello 9", "label": 9}
    pictures = {"image": [{"bytes": _image_bytes(c, "PNG"), "path": None} for c in ("red", "blue")], "label": [1, 0]}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    datasets.Dataset.from_dict(pictures, features=features).save_to_disk(str(tmp_path / "hfimages"))
    assert main(["convert", "-q", str(tmp_path / "hfimages"), str(tmp_path / "images")]) == 0
    m = RecordsMmap(tmp_path / "images", mode="r")
    assert m.metadata["class_labels"] == {"label": ["cat", "dog"]} and m[0]["label"] == 1
    assert tuple(m[0]["image"][0, 0]) == (255, 0, 0)  # the PNG's bytes kept, decoded on read
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(data)}).save_to_disk(str(tmp_path / "hfdict"))
    with pytest.raises(ValueError, match=r"DatasetDict.*hfdict/train"):
        convert(tmp_path / "hfdict", tmp_path / "out2", verbose=False)


def test_a_sharded_map_becomes_one_map(tmp_path):
    from mmap_ninja import merge

    StringsMmap.from_strings(tmp_path / "a", ["x", "y"])
    StringsMmap.from_strings(tmp_path / "b", ["z"])
    merge(tmp_path / "sharded", [tmp_path / "a", tmp_path / "b"])
    done = convert(tmp_path / "sharded", tmp_path / "one", verbose=False, codec="lz4")
    assert done.kind == "strings" and list(StringsMmap(done.path)) == ["x", "y", "z"]


def test_unknown_files_are_refused_with_what_convert_takes(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    assert main(["convert", "-q", str(tmp_path / "data.csv"), str(tmp_path / "out")]) == 3
    (tmp_path / "empty").mkdir()
    assert main(["convert", "-q", str(tmp_path / "empty"), str(tmp_path / "out")]) == 3
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad, message", [('{"a": null}', "field 'a'"), ('{"b": 1}', "no field 'a'"),
                                          ('{"a": "x"}', "field 'a'"), ('{"a": 2.5}', "does not fit")])
def test_a_bad_row_after_blank_lines_names_its_line_in_the_file(tmp_path, bad, message):
    """A value the records map refuses is named by its line in the JSON-lines file (blank lines make a row's
    number and its line differ), also in a later batch."""
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(f'{{"a": {i}}}\n\n' for i in range(6)) + bad + "\n")  # the bad row is line 13, row 6
    with pytest.raises((ValueError, TypeError), match=rf"rows\.jsonl line 13: .*{message}"):
        convert(src, tmp_path / "out", verbose=False, batch_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_invalid_json_names_the_line_and_column_of_the_file(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"a": 1}\n{"a": 2}\n{"a": \n')
    with pytest.raises(ValueError) as caught:
        convert(src, tmp_path / "out", verbose=False)
    assert str(caught.value) == f"{src} line 3 column 7 is not valid JSON: Expecting value"


def test_a_bad_first_row_names_its_line(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text('\n\n{"a": {"nested": 1}}\n')
    with pytest.raises((ValueError, TypeError), match=r"rows\.jsonl line 3: row 0, field 'a'"):
        convert(src, tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_a_folder_of_images_with_one_other_file_is_refused_naming_both(tmp_path):
    """A folder of images holding one stray file (a README) was taken for a folder of text files, and the error
    then blamed an image for not being UTF-8 text."""
    src = tmp_path / "photos"
    src.mkdir()
    (src / "a.png").write_bytes(_image_bytes((1, 2, 3), "PNG"))
    (src / "README.txt").write_text("notes")
    with pytest.raises(ValueError, match=r"images \(e\.g\. a\.png\).*other files \(e\.g\. README\.txt\)"):
        convert(src, tmp_path / "out", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_an_option_for_another_source_is_refused_for_that_reason(tmp_path):
    """--field on a map said the map was "already in the current format (pass a codec)", not that --field is for
    JSON lines; a records or images map given --codec is named with its kind."""
    StringsMmap.from_strings(tmp_path / "s", ["a"])
    with pytest.raises(ValueError, match=r"field= .* picks a field of a JSON-lines file"):
        convert(tmp_path / "s", tmp_path / "out", verbose=False, field="x")
    with pytest.raises(ValueError, match=r"records=True .* is for a root/<class>/<file> folder of images"):
        convert(tmp_path / "s", tmp_path / "out", verbose=False, records=True)
    from mmap_ninja.kinds.images import ImagesMmap

    ImagesMmap.from_generator(tmp_path / "i", [np.zeros((2, 2, 3), np.uint8)], 1)
    with pytest.raises(ValueError, match="holds an images map; convert copies"):
        convert(tmp_path / "i", tmp_path / "out", verbose=False, codec="zstd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i", "s"]


def test_a_hugging_face_dataset_with_images_converts_with_a_codec(tmp_path):
    """--codec sent Arrow sources through another column reader, which refused an Image() column ("field 'img' is a
    dict"); with a codec the fields are the same, only strings and ragged ones compressed."""
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"]),
                                  "text": datasets.Value("string"),
                                  "tokens": datasets.Sequence(datasets.Value("int32"))})
    dataset = datasets.Dataset.from_dict({"img": [Image.new("RGB", (4, 3), (i, 0, 0)) for i in range(3)],
                                          "label": [0, 1, 0], "text": ["a", "bb", ""], "tokens": [[1], [], [2, 3]]},
                                         features=features)
    dataset.save_to_disk(str(tmp_path / "hf"))
    done = convert(tmp_path / "hf", tmp_path / "out", verbose=False, codec="lz4")
    m = RecordsMmap(done.path, mode="r")
    assert m.schema["img"].kind == "images" and m.schema["text"].codec.name == m.schema["tokens"].codec.name == "lz4"
    assert m[1]["text"] == "bb" and m[2]["img"][0, 0].tolist() == [2, 0, 0] and m[2]["tokens"].tolist() == [2, 3]
    assert m.metadata == {"class_labels": {"label": ["cat", "dog"]}}


def test_a_folder_with_only_hidden_files_is_not_called_empty(tmp_path):
    src = tmp_path / "repo"
    (src / ".git").mkdir(parents=True)
    (src / ".env").write_text("x")
    with pytest.raises(NotAMapError, match=r"no files to convert \(only hidden files and folders, which are skipped"):
        convert(src, tmp_path / "out", verbose=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAMapError, match=r"no files to convert \(it is empty\)"):
        convert(tmp_path / "empty", tmp_path / "out", verbose=False)


def test_json_lines_of_strings_name_the_line_of_a_string_that_cannot_be_stored(tmp_path):
    src = tmp_path / "texts.jsonl"
    src.write_text('"fine"\n\n"also fine"\n"\\ud800"\n')  # a lone surrogate: valid JSON, not UTF-8
    with pytest.raises(ValueError, match=r"texts\.jsonl line 4: item 2 cannot be stored as UTF-8"):
        convert(src, tmp_path / "out", verbose=False, batch_size=2)
    src.write_text('"fine"\n{"a": 1}\n')  # an error the line book already names is not named twice
    with pytest.raises(ValueError) as caught:
        convert(src, tmp_path / "out", verbose=False)
    assert str(caught.value) == f"{src} line 2 holds dict, not a string like line 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.jsonl"]


def test_a_field_error_naming_a_row_names_its_line_and_one_line_is_not_a_range(tmp_path):
    src = tmp_path / "rows.jsonl"
    src.write_text('{"a": ["x"]}\n\n{"a": ["abc"]}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl line 3: row 1, field 'a'"):
        convert(src, tmp_path / "out", verbose=False, batch_size=1)
    src.write_text('{"a b": 1}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl line 1: field names must be"):
        convert(src, tmp_path / "out", verbose=False)


@pytest.mark.parametrize("name", ["fake.parquet", "fake.arrow", "nocols.parquet", "nulls.parquet"])
def test_a_bad_parquet_or_arrow_file_is_named(tmp_path, name):
    """pyarrow's own messages ("Parquet magic bytes not found in footer", "Expected to read 1651663207 metadata
    bytes") and the records map's ("the table has no columns", "row 2, field 's' is null") did not say which
    file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / name
    if name.startswith("fake"):
        src.write_text("garbage")
    elif name == "nocols.parquet":
        pq.write_table(pa.table({}), src)
    else:
        pq.write_table(pa.table({"s": ["a", "b", None]}), src)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(src))}: "):
        convert(src, tmp_path / "out", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("kind", ["fifo", "broken link"])
def test_a_file_that_is_not_a_regular_file_is_refused_before_anything_is_read(tmp_path, kind):
    """A FIFO in a folder of text files made convert wait forever for a writer; a broken link gave a bare
    "[Errno 2] No such file or directory"."""
    src = tmp_path / "texts"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    odd = src / "sub" / "b.txt"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.symlink_to(tmp_path / "missing")
    what = "a FIFO" if kind == "fifo" else "a broken link"
    with pytest.raises(ValueError, match=rf"{re.escape(str(odd))} is {what}"):
        convert(src, tmp_path / "out", verbose=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts"]


def test_a_compressed_sharded_map_stays_compressed_without_codec(tmp_path):
    """Without --codec a sharded map of zstd strings became one uncompressed map (decompressed, silently, many
    times the disk); its codec is kept, at its level, and --codec none still stores it uncompressed."""
    from mmap_ninja import RaggedMmap, merge

    StringsMmap.from_strings(tmp_path / "a", ["x" * 50, "y"], codec="zstd")
    StringsMmap.from_strings(tmp_path / "b", ["z"], codec="zstd")
    merge(tmp_path / "sharded", [tmp_path / "a", tmp_path / "b"])
    kept = StringsMmap(convert(tmp_path / "sharded", tmp_path / "one", verbose=False).path, mode="r")
    assert kept.codec == "zstd" and list(kept) == ["x" * 50, "y", "z"]
    plain = StringsMmap(convert(tmp_path / "sharded", tmp_path / "plain", verbose=False, codec="none").path)
    assert plain.codec is None and list(plain) == ["x" * 50, "y", "z"]
    RaggedMmap.from_lists(tmp_path / "c", [np.arange(3)], codec="lz4")
    RaggedMmap.from_lists(tmp_path / "d", [np.arange(2)], codec="lz4")
    merge(tmp_path / "ragged", [tmp_path / "c", tmp_path / "d"])
    assert RaggedMmap(convert(tmp_path / "ragged", tmp_path / "r1", verbose=False).path).codec == "lz4"


@pytest.mark.parametrize("kind", ["text", "images"])
def test_a_folder_of_big_files_is_read_a_bounded_number_of_bytes_at_a_time(tmp_path, monkeypatch, kind):
    """The default batch of a folder was 1,024 text files (256 images) whatever their size: 1,024 books of 100 MB
    would be held in memory at once. It is now as many files as fit in the batch budget (64 MiB), by their mean
    size, as for maps; here the budget is made 2.5 MB to see it with 1 MB files."""
    import mmap_ninja.tools.conversion as convert_module

    monkeypatch.setattr(convert_module, "_BATCH_BYTES", 2_500_000)
    src = tmp_path / "folder"
    src.mkdir()
    for i in range(5):
        if kind == "text":
            (src / f"{i}.txt").write_text(f"{i}" * 1_000_000)
        else:
            noise = np.random.default_rng(i).integers(0, 256, (600, 600, 3), dtype=np.uint8)
            from PIL import Image

            Image.fromarray(noise).save(src / f"{i}.png")  # about 1 MB: noise does not compress
    done = convert(src, tmp_path / "out", verbose=False)
    header = json.loads((done.path / "header.json").read_text())
    # 3 batches of at most 2 files (3 commits, then the one that finishes the build), not 1 (2 in all)
    assert done.length == 5 and header["commit"] >= 4


def test_json_lines_of_big_rows_are_read_a_bounded_number_of_bytes_at_a_time(tmp_path, monkeypatch):
    """4,096 rows at a time whatever their size: rows of 1 MB each would be 4 GB in memory. The default now
    fits the batch budget by the mean length of the file's first lines (budget made 2.5 MB here)."""
    import mmap_ninja.tools.conversion as convert_module

    monkeypatch.setattr(convert_module, "_BATCH_BYTES", 2_500_000)
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": str(i) * 1_000_000}) + "\n" for i in range(5)))
    done = convert(src, tmp_path / "out", verbose=False)
    header = json.loads((done.path / "header.json").read_text())
    assert done.length == 5 and header["commit"] >= 4  # 3 batches of at most 2 rows (and the end), not 1 (2 in all)
