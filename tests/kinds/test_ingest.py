"""Records maps with images fields, built from an image folder, a Hugging Face Dataset and a Parquet file."""

import io
import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmap_ninja import Field, ImagesMmap, RecordsMmap
from mmap_ninja.kinds.ingest import from_image_folder, image_folder_samples


def _png(seed, shape=(6, 5, 3)):
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return array, buffer.getvalue()


def _jpeg(seed, size=(9, 7)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (seed * 40 % 256, 10, 200)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- images field

def test_an_images_field_stores_bytes_unchanged_and_decodes_on_read(tmp_path):
    images = [_png(i, (4 + i, 5, 3)) for i in range(5)]
    rows = ({"image": data, "label": i} for i, (_, data) in enumerate(images))
    rec = RecordsMmap.from_generator(tmp_path / "r", rows, 2, schema={"image": Field.images(), "label": int})
    assert rec.schema["image"] == Field.images() and RecordsMmap(tmp_path / "r").schema["image"].kind == "images"
    for i, (array, data) in enumerate(images):
        assert np.array_equal(rec[i]["image"], array)
        assert bytes(rec["image"].raw(i)) == data
    assert isinstance(rec["image"], ImagesMmap)
    assert json.loads((tmp_path / "r" / "header.json").read_text())["requires"] == ["records", "records.images"]
    with pytest.raises(PermissionError, match="read-only"):
        rec["image"].append(images[0][1])
    batch, lengths = rec.get_batch([1, 4], pad_value=0)
    assert batch["image"].shape == (2, 8, 5, 3) and lengths["image"].tolist() == [[5, 5, 3], [8, 5, 3]]
    assert np.array_equal(batch["image"][0, :5], images[1][0]) and not batch["image"][0, 5:].any()
    with pytest.raises(ValueError, match="different shapes"):
        rec.get_batch([1, 4])
    table = rec.to_arrow()
    assert str(table.schema.field("image").type) == "large_binary"
    assert table.column("image").to_pylist() == [data for _, data in images]


def test_a_bad_image_is_refused_naming_row_and_field_and_nothing_changes(tmp_path):
    rec = RecordsMmap.from_generator(tmp_path / "r", [{"image": _jpeg(1), "label": 0}], 1,
                                     schema={"image": "images", "label": int})
    with pytest.raises(ValueError, match="row 2, field 'image': is not an image"):
        rec.extend([{"image": _jpeg(2), "label": 1}, {"image": b"nope", "label": 2}])
    with pytest.raises(TypeError, match="row 1, field 'image': expected an image"):
        rec.append({"image": None, "label": 1})
    assert len(RecordsMmap(tmp_path / "r")) == 1
    with pytest.raises(TypeError, match="no dtype"):
        Field("images", np.dtype(np.uint8))


# ---------------------------------------------------------------------------------------------- image folder

def _folder(root, layout):
    """layout: class -> list of (relative file name, bytes)."""
    for cls, files in layout.items():
        for name, data in files:
            path = root / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def test_from_image_folder_orders_like_torchvision_and_keeps_the_bytes(tmp_path):
    root = tmp_path / "root"
    files = {"dog": [("b.JPG", _jpeg(1)), ("a.jpg", _jpeg(2)), ("sub/c.png", _png(3)[1]), ("notes.txt", b"x")],
             "cat": [("z.jpeg", _jpeg(4))], "bird": [("1.webp", _png(5)[1])]}
    _folder(root, {k: [f for f in v if not f[0].endswith("webp")] for k, v in files.items()})
    (root / "bird").mkdir()
    Image.fromarray(_png(5)[0]).save(root / "bird" / "1.webp", format="WEBP")
    (root / "stray.jpg").write_bytes(_jpeg(9))  # a file at the top level is not a class
    rec = RecordsMmap.from_image_folder(tmp_path / "m", root, batch_size=2)
    assert rec.metadata["classes"] == ["bird", "cat", "dog"]
    assert rec["path"][:] == ["bird/1.webp", "cat/z.jpeg", "dog/a.jpg", "dog/b.JPG", "dog/sub/c.png"]
    assert rec["label"][:].tolist() == [0, 1, 2, 2, 2] and rec["label"][:].dtype == np.int64
    for i, path in enumerate(rec["path"]):
        assert bytes(rec["image"].raw(i)) == (root / path).read_bytes()
    assert rec[4]["image"].shape == (6, 5, 3)
    classes, samples = image_folder_samples(root)
    assert classes == rec.metadata["classes"] and [s[0] for s in samples] == rec["path"][:]
    again = from_image_folder(tmp_path / "m2", root, extensions=[".PNG", "webp", "jpeg"])  # what the CLI calls
    assert again["path"][:] == ["bird/1.webp", "cat/z.jpeg", "dog/sub/c.png"]
    with pytest.raises(FileNotFoundError, match=r"bird holds no file ending with \.png"):
        from_image_folder(tmp_path / "m3", root, extensions=["png"])


def _progressive_jpeg(seed):
    array = np.random.default_rng(seed).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=85, progressive=True)
    return buffer.getvalue()


def _is_progressive(data):
    with Image.open(io.BytesIO(bytes(data))) as image:
        return bool(image.info.get("progressive"))


def test_baseline_jpeg_in_an_images_field_and_an_image_folder(tmp_path):
    with pytest.raises(TypeError, match="baseline_jpeg is an option of images fields"):
        Field("strings", baseline_jpeg=True)
    given = [_progressive_jpeg(k) for k in range(3)]
    pixels = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in given]
    rec = RecordsMmap.from_generator(tmp_path / "r", ({"image": d} for d in given[:2]), 1,
                                     schema={"image": Field.images(baseline_jpeg=True)})
    reopened = RecordsMmap(tmp_path / "r")
    assert reopened.schema["image"] == Field.images(baseline_jpeg=True)  # the rule is kept by the map
    reopened.append({"image": given[2]})
    rec.refresh()
    assert not any(_is_progressive(rec["image"].raw(i)) for i in range(3))
    assert all(np.array_equal(rec[i]["image"], pixels[i]) for i in range(3))
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", given[0])], "b": [("2.jpg", given[1])]})
    folder = RecordsMmap.from_image_folder(tmp_path / "f", root, baseline_jpeg=True)
    assert not _is_progressive(folder["image"].raw(0)) and np.array_equal(folder[1]["image"], pixels[1])
    assert _is_progressive(RecordsMmap.from_image_folder(tmp_path / "g", root)["image"].raw(0))


def test_from_image_folder_sorts_class_names_by_code_point_as_torchvision(tmp_path):
    # torchvision's find_classes: sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    root = tmp_path / "root"
    _folder(root, {"b": [("x.jpg", _jpeg(1))], "a": [("y.jpg", _jpeg(2)), ("Y2.jpg", _jpeg(3))],
                   "_c": [("z.jpg", _jpeg(4))], "B": [("w.jpg", _jpeg(5))]})
    rec = RecordsMmap.from_image_folder(tmp_path / "m", root)
    assert rec.metadata["classes"] == ["B", "_c", "a", "b"]
    assert list(zip(rec["path"], rec["label"].tolist())) == [("B/w.jpg", 0), ("_c/z.jpg", 1), ("a/Y2.jpg", 2),
                                                              ("a/y.jpg", 2), ("b/x.jpg", 3)]


def test_from_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.jpg").write_bytes(_jpeg(1))
    with pytest.raises(FileNotFoundError, match="has no class folders"):
        RecordsMmap.from_image_folder(tmp_path / "m", empty)
    assert not (tmp_path / "m").exists()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        RecordsMmap.from_image_folder(tmp_path / "m", tmp_path / "missing")
    (empty / "cls").mkdir()
    (empty / "cls" / "readme.txt").write_text("no images")
    with pytest.raises(FileNotFoundError, match="holds no file ending with"):
        RecordsMmap.from_image_folder(tmp_path / "m", empty)
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", _jpeg(1)), ("2.jpg", b"not a jpeg")]})
    with pytest.raises(ValueError, match=r"row 1, field 'image'.*file .*a/2\.jpg"):
        RecordsMmap.from_image_folder(tmp_path / "m", root)
    assert not (tmp_path / "m").exists()  # the bad file was in the first batch: nothing was written


# ---------------------------------------------------------------------------------------------- Hugging Face

def _hf_dataset(n=7):
    images = [_png(i)[1] for i in range(n)]
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=["even", "odd"]),
        "text": datasets.Value("string"), "tokens": datasets.List(datasets.Value("int32")),
        "emb": datasets.List(datasets.Value("float32"), length=4)})
    data = {"image": images, "label": [i % 2 for i in range(n)], "text": [f"t{i}" for i in range(n)],
            "tokens": [list(range(i)) for i in range(n)], "emb": [[i / 2] * 4 for i in range(n)]}
    return datasets.Dataset.from_dict(data, features=features), images


def _check_rows(rec, images, order):
    assert len(rec) == len(order)
    for j, i in enumerate(order):
        row = rec[j]
        assert bytes(rec["image"].raw(j)) == images[i]
        assert row["label"] == i % 2 and row["text"] == f"t{i}"
        assert row["tokens"].dtype == np.int32 and row["tokens"].tolist() == list(range(i))
        assert row["emb"].dtype == np.float32 and row["emb"].tolist() == [i / 2] * 4


def test_from_huggingface_keeps_image_bytes_types_and_order(tmp_path):
    ds, images = _hf_dataset()
    rec = RecordsMmap.from_huggingface(tmp_path / "r", ds, batch_size=3)
    kinds = {name: (f.kind, f.dtype, f.shape) for name, f in rec.schema.items()}
    assert kinds == {"image": ("images", None, None), "label": ("numpy", np.int64, ()),
                     "text": ("strings", None, None), "tokens": ("ragged", np.int32, None),
                     "emb": ("numpy", np.float32, (4,))}
    assert rec.metadata["class_labels"] == {"label": ["even", "odd"]}
    _check_rows(rec, images, range(7))
    shuffled = ds.shuffle(seed=3).select(range(5))
    rec = RecordsMmap.from_huggingface(tmp_path / "s", shuffled, batch_size=2, columns=["text", "image"])
    assert rec.fields == ("text", "image")
    assert rec["text"][:] == shuffled["text"]


def test_from_huggingface_reads_images_given_by_path(tmp_path):
    images = [_png(i)[1] for i in range(3)]
    for i, data in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(data)
    ds = datasets.Dataset.from_dict({"image": [str(tmp_path / f"{i}.png") for i in range(3)]})
    ds = ds.cast_column("image", datasets.Image())
    assert ds.data.column("image")[0]["bytes"].as_py() is None  # only the path: the file is read, unchanged
    rec = RecordsMmap.from_huggingface(tmp_path / "r", ds)
    assert [bytes(rec["image"].raw(i)) for i in range(3)] == images


@pytest.mark.parametrize("values, message", [
    ([1, 2, None, 4], "row 2, field 'x' is null"),
    ([1, 2, 3, 4, 5, None], "row 5, field 'x' is null"),
    ([[1], [2, 3], [], [4, None]], "row 3, field 'x' holds a null value in its list"),
    (["a", None], "row 1, field 'x' is null"),
])
def test_from_huggingface_refuses_nulls_naming_row_and_field(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        RecordsMmap.from_huggingface(tmp_path / "r", datasets.Dataset.from_dict({"x": values}), batch_size=3)


def test_from_huggingface_refuses_other_inputs(tmp_path):
    with pytest.raises(TypeError, match=r"takes a datasets\.Dataset"):
        RecordsMmap.from_huggingface(tmp_path / "r", datasets.DatasetDict({"train": _hf_dataset(2)[0]}))
    nested = datasets.Dataset.from_dict({"d": [{"a": 1}]})
    with pytest.raises(TypeError, match="field 'd' has Arrow type struct"):
        RecordsMmap.from_huggingface(tmp_path / "r", nested)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------- Parquet

def test_from_parquet_reads_batch_by_batch(tmp_path):
    ds, images = _hf_dataset(9)
    ds.to_parquet(str(tmp_path / "d.parquet"), batch_size=4)
    rec = RecordsMmap.from_parquet(tmp_path / "r", tmp_path / "d.parquet", batch_size=2)
    _check_rows(rec, images, range(9))
    assert rec.metadata["class_labels"] == {"label": ["even", "odd"]}  # from the features datasets wrote
    assert RecordsMmap.from_parquet(tmp_path / "t", tmp_path / "d.parquet", columns=["text"]).metadata == {}


def test_from_parquet_refuses_nulls_before_writing(tmp_path):
    pq.write_table(pa.table({"a": [1, 2, 3, None], "b": ["x", "y", "z", "w"]}), tmp_path / "n.parquet")
    with pytest.raises(ValueError, match=r"field 'a' of .* holds 1 null"):
        RecordsMmap.from_parquet(tmp_path / "r", tmp_path / "n.parquet")
    assert not (tmp_path / "r").exists()
    rec = RecordsMmap.from_parquet(tmp_path / "r", tmp_path / "n.parquet", columns=["b"])
    assert rec["b"][:] == ["x", "y", "z", "w"]
    pq.write_table(pa.table({"a": [1, 2, None]}), tmp_path / "nostats.parquet", write_statistics=False)
    with pytest.raises(ValueError, match="row 2, field 'a' is null"):
        RecordsMmap.from_parquet(tmp_path / "r2", tmp_path / "nostats.parquet")


# ---------------------------------------------------------------------------------------------- the benchmark

def test_bench_records_images_runs_on_a_small_flat_folder(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    images = tmp_path / "flat"
    images.mkdir()
    lines = ["file\tformat"]
    for i in range(8):
        name = f"{i}.png" if i % 2 else f"{i}.jpg"
        (images / name).write_bytes(_png(i)[1] if i % 2 else _jpeg(i))
        lines.append(f"{name}\t{'PNG' if i % 2 else 'JPEG'}")
    (images / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_records_images.py"
    result = subprocess.run([sys.executable, str(script), "--images", str(images), "--reads", "40", "--batch", "4",
                             "--repeats", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert "RecordsMmap" in table[0] and "HF Dataset + Image()" in table[0] and "ImagesMmap + NumpyMmap" in table[0]
    measures = [line.split("|")[1].strip() for line in table[1:]]
    assert measures == ["build from the files", "size on disk", "decoded row (µs)", "raw row, no decoding (µs)",
                        "decoded batch of 4 (ms)"]
    assert "8 images (jpeg: 4, png: 4)" in result.stdout


# ---------------------------------------------------------------------------------------------- adversarial round

def test_a_bad_image_after_the_first_batch_is_named_by_its_file(tmp_path):
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", _jpeg(1)), ("2.jpg", _jpeg(2)), ("3.png", b"hello, not an image")]})
    with pytest.raises(ValueError, match=r"row 2, field 'image'.*\(file .*a/3\.png\)$"):
        RecordsMmap.from_image_folder(tmp_path / "m", root, batch_size=1)


def test_from_image_folder_skips_hidden_files_and_folders(tmp_path):
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", _jpeg(1)), ("._1.jpg", b"\x00\x05\x16\x07AppleDouble")],
                   ".ipynb_checkpoints": [("x.jpg", _jpeg(2))], "b": [("2.JPG", _jpeg(3))]})
    (root / "a" / ".cache").mkdir()
    (root / "a" / ".cache" / "3.jpg").write_bytes(_jpeg(4))
    rec = RecordsMmap.from_image_folder(tmp_path / "m", root)
    assert rec.metadata["classes"] == ["a", "b"]
    assert rec["path"][:] == ["a/1.jpg", "b/2.JPG"] and rec["label"].tolist() == [0, 1]


def test_from_image_folder_follows_a_linked_folder_once(tmp_path):
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", _jpeg(1))], "b": [("2.jpg", _jpeg(2))]})
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)  # a cycle
    (root / "b" / "other").symlink_to(root / "a", target_is_directory=True)  # another class's folder
    _, samples = image_folder_samples(root)
    assert samples == [("a/1.jpg", 0), ("b/2.jpg", 1), ("b/other/1.jpg", 1)]


def test_from_huggingface_and_from_parquet_take_a_key(tmp_path):
    ds = datasets.Dataset.from_dict({"path": [f"img/{i}.jpg" for i in range(7)], "label": list(range(7))})
    rec = RecordsMmap.from_huggingface(tmp_path / "h", ds, key="path", batch_size=3)
    assert rec.key == "path" and [rec.index_of(f"img/{i}.jpg") for i in range(7)] == list(range(7))
    ds.to_parquet(str(tmp_path / "d.parquet"))
    rec = RecordsMmap.from_parquet(tmp_path / "p", tmp_path / "d.parquet", key="label", batch_size=2)
    assert rec.key == "label" and rec.index_of(5) == 5
    with pytest.raises(ValueError, match="key='nope' names no field"):
        RecordsMmap.from_huggingface(tmp_path / "x", ds, key="nope")
    repeated = datasets.Dataset.from_dict({"path": ["a", "b", "a"]})
    with pytest.raises(ValueError, match=r"row 2: key 'a' .*repeats the key of row 0"):
        RecordsMmap.from_huggingface(tmp_path / "y", repeated, key="path")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_from_huggingface_stores_array_features_as_fixed_shape_fields(tmp_path):
    values = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    features = datasets.Features({"a": datasets.Array2D((2, 3), "float32"), "y": datasets.Value("int8")})
    ds = datasets.Dataset.from_dict({"a": list(values), "y": [1, 2, 3, 4]}, features=features)
    rec = RecordsMmap.from_huggingface(tmp_path / "r", ds.select([3, 0, 2, 1]), batch_size=3)
    assert rec.schema["a"] == Field.numpy(np.float32, (2, 3))
    assert np.array_equal(rec["a"][:], values[[3, 0, 2, 1]]) and rec["y"].tolist() == [4, 1, 3, 2]
    dynamic = datasets.Dataset.from_dict({"a": [np.zeros((1, 3)), np.zeros((2, 3))]},
                                         features=datasets.Features({"a": datasets.Array2D((None, 3), "float32")}))
    with pytest.raises(TypeError, match="field 'a' has Arrow type extension"):
        RecordsMmap.from_huggingface(tmp_path / "d", dynamic)
    assert not (tmp_path / "d").exists()


def test_from_image_folder_can_key_rows_by_path(tmp_path):
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", _jpeg(1)), ("2.jpg", _jpeg(2))], "b": [("3.jpg", _jpeg(3))]})
    rec = RecordsMmap.from_image_folder(tmp_path / "m", root, key="path", batch_size=2)
    assert rec.key == "path" and rec.index_of("b/3.jpg") == 2 and "a/2.jpg" in rec
    with pytest.raises(ValueError, match="key='label'"):  # labels repeat: refused before anything is written
        RecordsMmap.from_image_folder(tmp_path / "n", root, key="label")
    assert not (tmp_path / "n").exists()


def test_an_image_file_that_cannot_be_read_is_named_with_its_row(tmp_path):
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", _jpeg(1)), ("2.jpg", _jpeg(2))]})
    (root / "a" / "3.jpg").symlink_to(tmp_path / "gone.jpg")  # a dangling link
    with pytest.raises(ValueError, match=r"^row 2, field 'image': file .*a/3\.jpg cannot be read: "):
        RecordsMmap.from_image_folder(tmp_path / "m", root, batch_size=2)
    with pytest.raises(ValueError, match=r"^row 2, field 'image': file .*a/3\.jpg cannot be read: "):
        RecordsMmap.from_image_folder(tmp_path / "n", root)
    assert not (tmp_path / "n").exists()


def test_columns_of_from_huggingface_and_from_parquet_are_checked(tmp_path):
    ds = datasets.Dataset.from_dict({"ab": [1, 2], "a": [3, 4], "b": ["x", "y"]})
    ds.to_parquet(str(tmp_path / "d.parquet"))
    for build in (lambda out, columns: RecordsMmap.from_huggingface(out, ds, columns=columns),
                  lambda out, columns: RecordsMmap.from_parquet(out, tmp_path / "d.parquet", columns=columns)):
        with pytest.raises(TypeError, match=r"columns=\['ab'\]"):
            build(tmp_path / "m", "ab")
        with pytest.raises(ValueError, match="columns names 'a' twice"):
            build(tmp_path / "m", ["a", "b", "a"])
        with pytest.raises(ValueError, match=r"columns names 'nope', which the data does not have \(its columns: "
                                             r"\['ab', 'a', 'b'\]\)"):
            build(tmp_path / "m", ["b", "nope"])
        assert not (tmp_path / "m").exists()
        assert build(tmp_path / "ok", ["b", "a"]).fields == ("b", "a")
        RecordsMmap(tmp_path / "ok").close()
        import shutil

        shutil.rmtree(tmp_path / "ok")


def test_from_image_folder_refuses_to_build_the_map_inside_the_folder(tmp_path):
    root = tmp_path / "root"
    _folder(root, {"a": [("1.jpg", _jpeg(1))]})
    with pytest.raises(ValueError, match="inside the image folder"):
        RecordsMmap.from_image_folder(root / "cache", root)
    assert sorted(p.name for p in root.iterdir()) == ["a"]
