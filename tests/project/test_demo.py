"""The demo's data script and its build/read functions, on real files that ship with installed packages.

Texts come from Python's standard library, pictures from matplotlib's sample data; no network.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
import sysconfig
from contextlib import redirect_stdout
from pathlib import Path
from types import ModuleType

import matplotlib
import numpy as np
import pytest
from PIL import Image

from mmap_ninja import RaggedMmap, StringsMmap

REPO = Path(__file__).resolve().parents[2]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
MPL_DATA = Path(matplotlib.get_data_path())
SAMPLE_PICTURES = [MPL_DATA / "sample_data" / n for n in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png",
                                                          "logo2.png")]
ICONS = sorted((MPL_DATA / "images").glob("*.png"))  # real pictures, 24x24 and 48x48


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


demo = _load("mmap_ninja_demo", REPO / "examples" / "demo.py")
get_data = _load("mmap_ninja_get_data", REPO / "scripts" / "get_data.py")


@pytest.fixture(scope="module")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A few real documents: stdlib sources (ASCII and not) as .txt files."""
    folder = tmp_path_factory.mktemp("text")
    sources = [STDLIB / "pydoc_data" / "topics.py", STDLIB / "json" / "__init__.py",
               STDLIB / "email" / "charset.py", STDLIB / "encodings" / "cp1252.py", STDLIB / "this.py"]
    files = []
    for k, src in enumerate(sources):
        dst = folder / f"{k:02d}_{src.stem}.txt"
        shutil.copyfile(src, dst)
        files.append(dst)
    return files


@pytest.fixture(scope="module")
def picture_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    files = []
    for src in SAMPLE_PICTURES + ICONS[:3]:
        dst = folder / src.name
        shutil.copyfile(src, dst)
        files.append(dst)
    return files


# ----------------------------------------------------------------------------- get_data


def test_inspect_image_reads_real_sizes_and_rejects_truncated_files() -> None:
    for path in SAMPLE_PICTURES + ICONS[:5]:
        raw = path.read_bytes()
        info = get_data.inspect_image(raw)
        with Image.open(path) as im:
            assert (info.width, info.height) == im.size
            assert info.format == im.format
        with pytest.raises(ValueError):
            get_data.inspect_image(raw[: len(raw) // 2])
    png = SAMPLE_PICTURES[1].read_bytes()
    damaged = bytearray(png)
    damaged[len(png) // 2] ^= 0xFF  # one flipped byte inside the image data breaks a chunk CRC
    with pytest.raises(ValueError, match="CRC"):
        get_data.inspect_image(bytes(damaged))
    with pytest.raises(ValueError, match="neither"):
        get_data.inspect_image((STDLIB / "this.py").read_bytes())


def test_add_pictures_keeps_real_ones_and_counts_what_it_leaves_out(tmp_path: Path) -> None:
    collector = get_data.Collector(tmp_path / "images", ("file", "source", "bytes", "format", "width",
                                                         "height", "origin"))
    pictures = [(f"a/{p.name}", p.read_bytes()) for p in SAMPLE_PICTURES]
    pictures.append(("b/copy_of_grace.jpg", SAMPLE_PICTURES[0].read_bytes()))  # duplicate content
    pictures.append(("b/cut.jpg", SAMPLE_PICTURES[0].read_bytes()[:20000]))  # truncated download
    pictures += [(f"icons/{p.name}", p.read_bytes()) for p in ICONS]  # all shorter than 64 px
    pictures.append(("class_diagram.png", ICONS[0].read_bytes()))
    skipped: dict = {}
    get_data.add_pictures(collector, "pkg", "pkg=1.0", pictures, set(), skipped, 64,
                          exclude=get_data._DOXYGEN_DRAWING)
    collector.publish({"request": {"format": get_data.FORMAT_VERSION}})
    out = tmp_path / "images"
    kept = sorted(p.name for p in out.iterdir() if p.suffix in (".jpg", ".png"))
    assert kept == sorted(f"pkg__a__{p.name}" for p in SAMPLE_PICTURES)
    assert skipped == {"duplicate": 1, "broken": 1, "small": len(ICONS), "drawing": 1}
    for p in SAMPLE_PICTURES:  # copied byte for byte
        assert (out / f"pkg__a__{p.name}").read_bytes() == p.read_bytes()
    rows = (out / "MANIFEST.tsv").read_text().splitlines()
    assert rows[0] == "file\tsource\tbytes\tformat\twidth\theight\torigin"
    size = SAMPLE_PICTURES[0].stat().st_size
    assert f"pkg__a__grace_hopper.jpg\tpkg=1.0\t{size}\tJPEG\t512\t600\ta/grace_hopper.jpg" in rows
    assert not (tmp_path / "images.partial").exists()


def test_ensure_data_is_instant_when_stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("ensure_data tried to download although the stamps match")

    monkeypatch.setattr(get_data.Fetcher, "deb", no_network)
    monkeypatch.setattr(get_data.Fetcher, "npm", no_network)
    for name, request in (("text", {"sources": ["linuxdoc"]}),
                          ("images", {"sources": ["opencv-doc"], "min_side": 32})):
        (tmp_path / name).mkdir()
        stamp = {"request": {"format": get_data.FORMAT_VERSION, **request}, "count": 0}
        (tmp_path / name / ".complete").write_text(json.dumps(stamp))
    paths = get_data.ensure_data(tmp_path, ["linuxdoc"], ["opencv-doc"])
    assert (paths.text, paths.images) == (tmp_path.resolve() / "text", tmp_path.resolve() / "images")
    with pytest.raises(AssertionError, match="tried to download"):  # a different request rebuilds
        get_data.ensure_data(tmp_path, ["linuxdoc"], ["opencv-doc"], min_side=16)
    with pytest.raises(get_data.DataError, match="unknown text source"):
        get_data.ensure_data(tmp_path, ["wikipedia"], [])


# ----------------------------------------------------------------------------- demo


def test_list_files_spreads_a_limit_over_the_whole_folder(text_files: list[Path]) -> None:
    folder = text_files[0].parent
    assert demo.list_files(folder, (".txt",)) == text_files
    picked = demo.list_files(folder, (".txt",), 3)
    assert len(picked) == 3 and picked[0] == text_files[0] and picked == sorted(picked)
    assert demo.list_files(folder, (".txt",), 0) == []
    assert demo.list_files(folder, (".png",)) == []


def test_strings_map_holds_every_text_exactly(text_files: list[Path], tmp_path: Path) -> None:
    built = demo.build_strings(text_files, tmp_path / "texts", batch_size=2, verbose=False)
    assert built.replaced == 0 and built.sources == text_files
    with StringsMmap(tmp_path / "texts") as m:
        assert len(m) == len(text_files)
        for i, path in enumerate(text_files):
            assert m[i] == path.read_text(encoding="utf-8")
        assert any(not m[i].isascii() for i in range(len(m)))  # charset.py/cp1252.py hold non-ASCII
        assert demo.check_strings(m, text_files) == len(text_files)
        assert not m[demo.most_non_ascii(m)].isascii()
        timings = demo.time_strings(m, text_files, reads=20)
        assert [t.unit for t in timings] == ["µs/item", "s"]
        assert all(t.files > 0 and t.mmap > 0 for t in timings)
    assert demo.bytes_on_disk(tmp_path / "texts") >= sum(p.stat().st_size for p in text_files)


def test_texts_that_are_not_utf8_are_replaced_and_counted(tmp_path: Path) -> None:
    legacy = tmp_path / "latin1.txt"  # a legacy-encoded file: Latin-1 bytes are not valid UTF-8
    legacy.write_bytes("Grüße aus Köln, naïve café".encode("latin-1"))
    files = [legacy, STDLIB / "this.py"]
    built = demo.build_strings(files, tmp_path / "texts", verbose=False)
    assert built.replaced == 1
    with StringsMmap(tmp_path / "texts") as m:
        assert m[0] == legacy.read_bytes().decode("utf-8", errors="replace") and "\ufffd" in m[0]
        assert m[1] == files[1].read_text(encoding="utf-8")


def test_ragged_map_holds_every_picture_decoded(picture_files: list[Path], tmp_path: Path) -> None:
    built = demo.build_images(picture_files, tmp_path / "images", batch_size=2, verbose=False)
    assert built.sources == picture_files and built.skipped == []
    with RaggedMmap(tmp_path / "images") as m:
        assert len(m) == len(picture_files) and m.dtype == np.uint8
        for i, path in enumerate(picture_files):
            with Image.open(path) as im:
                width, height = im.size
                alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
            assert m.shape(i) == (height, width, 3)
            assert np.array_equal(m[i], demo.decode_image(path))
            assert not m[i].flags.writeable
            if (alpha == 0).any():  # fully transparent pixels are composited over white
                assert (m[i][alpha == 0] == 255).all()
        with Image.open(picture_files[0]) as im:  # an RGB JPEG is stored exactly as Pillow decodes it
            assert np.array_equal(m[0], np.asarray(im))
        assert demo.check_images(m, picture_files, sample=3) == 3
        timings = demo.time_images(m, picture_files, reads=5)
        assert all(t.files > 0 and t.mmap > 0 for t in timings)
    stored = sum(int(np.prod(demo.decode_image(p).shape)) for p in picture_files)
    assert demo.bytes_on_disk(tmp_path / "images") >= stored


def test_pictures_pillow_cannot_decode_are_left_out(picture_files: list[Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(picture_files[0].read_bytes()[:3000])
    files = [picture_files[1], cut, picture_files[2]]
    built = demo.build_images(files, tmp_path / "images", verbose=False)
    assert built.sources == [files[0], files[2]] and [p for p, _ in built.skipped] == [cut]
    with RaggedMmap(tmp_path / "images") as m:
        assert demo.check_images(m, built.sources) == 2


def test_demo_main_end_to_end_without_network(text_files: list[Path], picture_files: list[Path],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    for name, files, request in (
            ("text", text_files, {"sources": get_data.default_text_sources()}),
            ("images", picture_files, {"sources": list(get_data.IMAGE_SOURCES), "min_side": 32})):
        (data / name).mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, data / name / f.name)
        stamp = {"request": {"format": get_data.FORMAT_VERSION, **request}, "count": len(files)}
        (data / name / ".complete").write_text(json.dumps(stamp))
    monkeypatch.setattr(get_data.Fetcher, "deb", lambda *a: pytest.fail("no download expected"))
    monkeypatch.setattr(demo, "load_get_data", lambda: get_data)
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        code = demo.main(["--data", str(data), "--out", str(tmp_path / "maps"), "--limit-images", "4",
                          "--reads", "10"])
    report = stdout.getvalue()
    assert code == 0, report
    lines = report.splitlines()
    assert any(line.startswith("StringsMmap") and f" {len(text_files)} " in line for line in lines), report
    assert any(line.startswith("RaggedMmap") and " 4 " in line for line in lines), report
    for label in ("text    random read", "text    full pass", "images  random read (copy)",
                  "images  full pass (copy)"):
        assert any(line.startswith(label) and line.rstrip().endswith("x") for line in lines), report
    with StringsMmap(tmp_path / "maps" / "texts") as m:
        assert len(m) == len(text_files)
    with RaggedMmap(tmp_path / "maps" / "images") as m:
        assert len(m) == 4


def test_demo_reuses_sound_maps_of_the_same_files_and_rebuilds_otherwise(
        text_files: list[Path], picture_files: list[Path], tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    texts = demo.build_or_reuse_strings(text_files, maps / "texts")
    images = demo.build_or_reuse_images(picture_files, maps / "images")
    assert not texts.reused and not images.reused
    again = demo.build_or_reuse_strings(text_files, maps / "texts")
    pictures_again = demo.build_or_reuse_images(picture_files, maps / "images")
    assert again.reused and pictures_again.reused
    assert again.sources == texts.sources and again.replaced == texts.replaced
    assert pictures_again.sources == images.sources and pictures_again.skipped == images.skipped
    assert not demo.build_or_reuse_strings(text_files, maps / "texts", rebuild=True).reused

    # Another set of files, a damaged map or an unfinished one: built again, never trusted.
    assert not demo.build_or_reuse_strings(text_files[:-1], maps / "texts").reused
    demo.build_strings(text_files, maps / "texts", verbose=False)
    with (maps / "texts" / "offsets.bin").open("r+b") as f:
        f.truncate(8)
    rebuilt = demo.build_or_reuse_strings(text_files, maps / "texts")
    assert not rebuilt.reused
    with StringsMmap(maps / "texts") as m:
        assert demo.check_strings(m, text_files) == len(text_files)
