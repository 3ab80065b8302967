import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mmap_ninja import open_existing
from mmap_ninja.errors import UnfinishedMapError
from mmap_ninja.kinds.images import ImagesMmap

from tests.support import snapshot

Image = pytest.importorskip("PIL.Image")
PngImagePlugin = pytest.importorskip("PIL.PngImagePlugin")


def picture(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """A smooth picture with some noise (JPEG-like content), uint8, (H, W) for one channel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    planes = [(127 + 100 * np.sin(x / (7 + c) + y / (11 + seed)) + rng.normal(0, 8, (height, width)))
              for c in range(channels)]
    array = np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)
    return array[:, :, 0] if channels == 1 else array


def encoded(array: np.ndarray, fmt: str, **save_options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def pillow_decode(data: bytes, mode: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert(mode))
    return array if array.ndim == 3 else array[:, :, None]


@pytest.fixture
def image_files(tmp_path):
    """Small JPEG, PNG and WebP files of several modes, and the Pillow mode each decodes to."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    palette = Image.fromarray(picture(20, 30, 3, 4)).quantize(16)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    files = {
        "rgb.jpg": (encoded(picture(40, 60, 3), "JPEG", quality=90), "RGB"),
        "gray.jpg": (encoded(picture(33, 17, 1, 1), "JPEG"), "L"),
        "rgba.png": (encoded(picture(25, 35, 4, 2), "PNG"), "RGBA"),
        "gray_alpha.png": (encoded(picture(12, 9, 2, 3), "PNG"), "LA"),
        "bilevel.png": (encoded(picture(10, 16, 1, 5) > 128, "PNG"), "L"),
        "rgb.webp": (encoded(picture(21, 22, 3, 6), "WEBP", quality=80), "RGB"),
    }
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    files["palette.png"] = (buffer.getvalue(), "RGB")
    buffer = io.BytesIO()
    transparent.save(buffer, format="PNG", transparency=3)
    files["palette_transparent.png"] = (buffer.getvalue(), "RGBA")
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {folder / name: mode for name, (_, mode) in files.items()}


def test_from_files_keeps_each_file_s_bytes_and_decodes_like_pillow(tmp_path, image_files):
    paths = list(image_files)
    m = ImagesMmap.from_files(tmp_path / "map", paths, batch_size=3, decoder=None)
    pillow_map = ImagesMmap(tmp_path / "map", decoder="pillow")
    assert len(m) == len(paths)
    channels_of = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
    for i, (path, mode) in enumerate(image_files.items()):
        data = path.read_bytes()
        assert bytes(m.raw(i)) == data
        assert m.raw(i).readonly
        expected = pillow_decode(data, mode)
        assert m.shape(i) == expected.shape
        assert pillow_map[i].dtype == np.uint8 and np.array_equal(pillow_map[i], expected)
        if m.format(i) != "JPEG":  # the same decoder (Pillow) either way: exactly equal
            assert np.array_equal(m[i], expected)
        assert m[i].shape[2] == channels_of[mode]
    assert m.format(0) == "JPEG" and m.format(2) == "PNG" and m.format(5) == "WEBP"
    assert m.formats == ["JPEG", "PNG", "WEBP"]
    assert np.array_equal(m.shapes(), np.array([m.shape(i) for i in range(len(m))]))
    # The map's data column is the files back to back: its disk is the files' plus a small index.
    assert (tmp_path / "map" / "data.bin").stat().st_size == sum(p.stat().st_size for p in paths)


def test_jpegs_decode_exactly_as_simplejpeg_does_with_its_default_flags(tmp_path, image_files):
    simplejpeg = pytest.importorskip("simplejpeg")
    m = ImagesMmap.from_files(tmp_path / "map", [p for p in image_files if p.suffix == ".jpg"])
    assert m.decoders == {"JPEG": "simplejpeg"}
    assert np.array_equal(m[0], simplejpeg.decode_jpeg(bytes(m.raw(0))))
    assert np.array_equal(m[1], simplejpeg.decode_jpeg(bytes(m.raw(1)), colorspace="GRAY"))
    fast = ImagesMmap(tmp_path / "map", fast=True)
    assert np.array_equal(fast[0], simplejpeg.decode_jpeg(bytes(m.raw(0)), fastdct=True, fastupsample=True))
    assert ImagesMmap(tmp_path / "map", decoder="pillow").decoders == {"JPEG": "Pillow"}


def test_grayscale_has_one_channel_and_alpha_is_kept_unless_channels_says_otherwise(tmp_path, image_files):
    paths = list(image_files)
    ImagesMmap.from_files(tmp_path / "map", paths)
    gray, rgba = paths.index(tmp_path / "pictures" / "gray.jpg"), paths.index(tmp_path / "pictures" / "rgba.png")
    m = ImagesMmap(tmp_path / "map")
    assert m[gray].ndim == 3 and m[gray].shape[2] == 1
    assert m[rgba].shape[2] == 4
    for channels in (1, 3, 4):
        converted = ImagesMmap(tmp_path / "map", channels=channels)
        assert all(image.shape[2] == channels for image in converted)
        assert converted.shape(rgba) == (*m.shape(rgba)[:2], channels)
        assert converted.shapes()[:, 2].tolist() == [channels] * len(paths)
    rgb = ImagesMmap(tmp_path / "map", channels=3)
    assert np.array_equal(rgb[rgba], pillow_decode(paths[rgba].read_bytes(), "RGB"))
    with pytest.raises(ValueError, match="channels must be"):
        ImagesMmap(tmp_path / "map", channels=2)


def test_shapes_come_from_the_index_without_decoding(tmp_path):
    data = encoded(picture(64, 48, 3), "JPEG")
    truncated = data[:len(data) * 2 // 3]  # the header is whole; the picture is not
    m = ImagesMmap.from_generator(tmp_path / "map", [truncated], batch_size=1)
    assert m.shape(0) == (64, 48, 3)
    assert m.shapes().tolist() == [[64, 48, 3]]
    with pytest.raises(ValueError, match=r"image 0 of .* cannot be decoded"):
        m[0]
    with pytest.raises(ValueError, match=r"item 0 cannot be decoded"):
        ImagesMmap.from_generator(tmp_path / "verified", [truncated], batch_size=1, verify=True)


def test_a_file_that_is_not_an_image_is_refused_by_name_and_the_map_is_unchanged(tmp_path, image_files):
    paths = list(image_files)
    m = ImagesMmap.from_files(tmp_path / "map", paths[:2])
    bad = tmp_path / "pictures" / "notes.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a JPEG" * 10)
    before = snapshot(tmp_path / "map")
    with pytest.raises(ValueError, match=r"item 3 \(.*notes\.jpg\) is not an image Pillow can read"):
        m.extend([paths[2], Path(bad)])
    assert snapshot(tmp_path / "map") == before
    assert len(ImagesMmap(tmp_path / "map")) == 2
    with pytest.raises(ValueError, match=r"notes\.jpg"):
        ImagesMmap.from_files(tmp_path / "other", [*paths, bad])
    with pytest.raises(ValueError, match=r"missing\.png\) cannot be read"):
        ImagesMmap.from_files(tmp_path / "third", [tmp_path / "missing.png"])


def test_from_generator_encodes_arrays_and_pil_images_and_keeps_bytes(tmp_path):
    rgb, rgba, gray = picture(30, 40, 3), picture(16, 16, 4, 1), picture(20, 10, 1, 2)
    png = encoded(picture(8, 9, 3, 3), "PNG")
    samples = [rgb, rgba, gray, Image.fromarray(rgb), png, np.frombuffer(png, np.uint8), picture(5, 6, 2, 4)]
    m = ImagesMmap.from_generator(tmp_path / "map", samples, batch_size=4)
    assert [m.format(i) for i in range(len(m))] == ["PNG"] * 7  # arrays and PIL images: PNG, lossless
    assert np.array_equal(m[0], rgb) and np.array_equal(m[3], rgb)
    assert np.array_equal(m[1], rgba)
    assert m[2].shape == (20, 10, 1)
    assert bytes(m.raw(4)) == png and bytes(m.raw(5)) == png
    assert np.array_equal(m[6], picture(5, 6, 2, 4))
    lossy = ImagesMmap.from_generator(tmp_path / "jpeg", [rgb], batch_size=1, format="jpeg", quality=90)
    assert bytes(lossy.raw(0)) == encoded(rgb, "JPEG", quality=90)  # JPEG at the quality asked for
    assert np.abs(lossy[0].astype(int) - rgb).mean() < 10  # lossy, but close


def test_format_png_is_lossless_and_is_kept_for_later_appends(tmp_path):
    arrays = [picture(12, 14, 3, i) for i in range(3)]
    ImagesMmap.from_generator(tmp_path / "map", arrays[:2], batch_size=1, format="png").close()
    m = ImagesMmap(tmp_path / "map")
    m.append(arrays[2])
    assert m.format(2) == "PNG"
    assert all(np.array_equal(m[i], arrays[i]) for i in range(3))
    webp = ImagesMmap.from_generator(tmp_path / "webp", arrays, batch_size=2, format="webp", quality=100)
    assert webp.formats == ["WEBP"] and all(np.array_equal(webp[i], arrays[i]) for i in range(3))


@pytest.mark.parametrize(("sample", "error", "message"), [
    (np.zeros((4, 4, 3), np.float32), TypeError, "dtype float32"),
    (np.zeros((4, 4, 5), np.uint8), ValueError, r"shape \(4, 4, 5\)"),
    ("picture.jpg", TypeError, "pathlib.Path"),
    (42, TypeError, "int"),
    (np.zeros((4, 4), np.uint16), TypeError, "uint16"),
])
def test_what_is_not_an_8_bit_image_is_refused(tmp_path, sample, error, message):
    with pytest.raises(error, match=message):
        ImagesMmap.from_generator(tmp_path / "map", [sample], batch_size=1)


def test_16_bit_images_and_alpha_in_jpeg_are_refused(tmp_path):
    sixteen = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(sixteen, format="PNG")
    with pytest.raises(ValueError, match="16-bit PNG"):
        ImagesMmap.from_generator(tmp_path / "map", [sixteen.getvalue()], batch_size=1)
    with pytest.raises(ValueError, match="alpha channel"):
        ImagesMmap.from_generator(tmp_path / "jpeg", [picture(4, 4, 4)], batch_size=1, format="jpeg")
    with pytest.raises(ValueError, match="quality"):
        ImagesMmap.from_generator(tmp_path / "q", [picture(4, 4, 3)], batch_size=1, quality=0)


def test_extend_refuses_one_image_and_points_to_append(tmp_path):
    m = ImagesMmap(tmp_path / "map")
    for one in (picture(4, 4, 3), encoded(picture(4, 4, 3), "PNG"), Path("x.png")):
        with pytest.raises(TypeError, match="append"):
            m.extend(one)
    m.append(picture(4, 4, 3))
    assert len(m) == 1 and open_existing(tmp_path / "map").shape(0) == (4, 4, 3)


def test_get_batch_stacks_pads_and_gives_the_same_result_on_threads(tmp_path):
    same = [picture(20, 30, 3, i) for i in range(6)]
    m = ImagesMmap.from_generator(tmp_path / "map", [*same, picture(10, 50, 4, 9)], batch_size=4)
    batch = m.get_batch(range(6))
    assert batch.shape == (6, 20, 30, 3) and batch.dtype == np.uint8
    assert all(np.array_equal(batch[k], m[k]) for k in range(6))
    assert np.array_equal(m.get_batch([5, 0, 3], threads=3), batch[[5, 0, 3]])
    out = np.empty((2, 20, 30, 3), np.uint8)
    assert m.get_batch(slice(1, 3), out=out) is out and np.array_equal(out, batch[1:3])
    with pytest.raises(ValueError, match=r"images 0 and 6 have different shapes \(\(20, 30, 3\) and \(10, 50, 4\)\)"):
        m.get_batch([0, 6])
    padded, shapes = m.get_batch([0, 6], pad_value=7, threads=2)
    assert padded.shape == (2, 20, 50, 4) and shapes.tolist() == [[20, 30, 3], [10, 50, 4]]
    assert np.array_equal(padded[0, :20, :30, :3], m[0]) and (padded[0, :, 30:] == 7).all()
    assert (padded[0, :, :, 3] == 7).all() and np.array_equal(padded[1, :10], m[6])
    sequential = m.get_batch(range(7), pad_value=0)
    threaded = m.get_batch(range(7), pad_value=0, threads=4)
    assert np.array_equal(sequential[0], threaded[0])
    with pytest.raises(ValueError, match="threads"):
        m.get_batch([0], threads=0)


def test_indexing_iteration_and_wrapper_fn(tmp_path):
    arrays = [picture(8, 8 + i, 3, i) for i in range(5)]
    ImagesMmap.from_generator(tmp_path / "map", arrays, batch_size=2, format="png")
    m = ImagesMmap(tmp_path / "map", wrapper_fn=lambda a: a.shape)
    assert m[-1] == (8, 12, 3) and m[np.int64(1)] == (8, 9, 3)
    assert m[1:3] == [(8, 9, 3), (8, 10, 3)] and m.__getitems__([4, 0]) == [(8, 12, 3), (8, 8, 3)]
    assert list(m) == [a.shape for a in arrays]
    plain = ImagesMmap(tmp_path / "map", mode="r")
    assert all(np.array_equal(a, b) for a, b in zip(plain, arrays))
    assert plain[0].flags.writeable
    with pytest.raises(IndexError):
        plain[5]
    with pytest.raises(TypeError, match="boolean"):
        plain[True]


def test_in_place_assignment_needs_the_same_size_format_and_shape(tmp_path):
    def png_with_text(text: str) -> bytes:
        info = PngImagePlugin.PngInfo()
        info.add_text("note", text)
        buffer = io.BytesIO()
        Image.fromarray(picture(6, 7, 3)).save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()

    m = ImagesMmap.from_generator(tmp_path / "map", [png_with_text("aaaa"), picture(6, 7, 3)], batch_size=2)
    reader = ImagesMmap(tmp_path / "map", mode="r")
    m[0] = png_with_text("bbbb")
    assert bytes(reader.raw(0)) == png_with_text("bbbb")  # in place: readers see it at once
    before = snapshot(tmp_path / "map")
    with pytest.raises(ValueError, match="same format, shape and encoded size"):
        m[0] = png_with_text("longer text")
    with pytest.raises(ValueError, match="same format, shape and encoded size"):
        m[1] = picture(6, 7, 3, 1)
    assert snapshot(tmp_path / "map") == before


def test_pickling_keeps_reading_options_and_transactions_commit_once(tmp_path):
    m = ImagesMmap.from_generator(tmp_path / "map", [picture(5, 5, 4)], batch_size=1)
    copy = pickle.loads(pickle.dumps(ImagesMmap(tmp_path / "map", channels=3, fast=True, decoder="pillow")))
    assert copy.decoder.channels == 3 and copy.decoder.fast and copy.decoder.requested == "pillow"
    assert copy[0].shape == (5, 5, 3) and copy.mode == "r+"
    reader = ImagesMmap(tmp_path / "map", mode="r")
    with m.transaction():
        m.append(picture(5, 5, 3))
        m.extend([picture(6, 6, 3), picture(7, 7, 1)])
        assert len(m) == 4
        reader.refresh()
        assert len(reader) == 1
    reader.refresh()
    assert len(reader) == 4 and reader.shape(3) == (7, 7, 1)
    assert isinstance(open_existing(tmp_path / "map"), ImagesMmap)


def test_an_interrupted_build_is_unfinished_and_keeps_its_committed_batches(tmp_path):
    def images():
        for i in range(5):
            yield picture(6, 6, 3, i)
        raise RuntimeError("the source failed")

    with pytest.raises(RuntimeError):
        ImagesMmap.from_generator(tmp_path / "map", images(), batch_size=2)
    with pytest.raises(UnfinishedMapError):
        ImagesMmap(tmp_path / "map")
    partial = ImagesMmap(tmp_path / "map", allow_unfinished=True)
    assert len(partial) == 4 and partial[3].shape == (6, 6, 3)
    assert len(ImagesMmap.from_generator(tmp_path / "map", [picture(3, 3, 3)], batch_size=1)) == 1


def test_cmyk_jpegs_and_animated_images_decode_as_pillow_does(tmp_path):
    cmyk = io.BytesIO()
    Image.fromarray(picture(9, 11, 4, 1), mode="CMYK").save(cmyk, format="JPEG")
    frames = [Image.fromarray(picture(8, 8, 3, i)).quantize(8) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    m = ImagesMmap.from_generator(tmp_path / "map", [cmyk.getvalue(), gif.getvalue()], batch_size=2)
    assert m.shape(0) == (9, 11, 3) and np.array_equal(m[0], pillow_decode(cmyk.getvalue(), "RGB"))
    assert m.format(1) == "GIF" and np.array_equal(m[1], pillow_decode(gif.getvalue(), "RGB"))
    assert bytes(m.raw(1)) == gif.getvalue()


def test_an_empty_handle_and_an_empty_batch(tmp_path):
    m = ImagesMmap(tmp_path / "map")
    assert len(m) == 0 and m.formats == [] and m.shapes().shape == (0, 3)
    assert m.get_batch([]).shape == (0, 0, 0, 0)
    assert not (tmp_path / "map").exists()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_image_that_decodes_to_another_shape_than_recorded_is_an_error(tmp_path, fmt):
    ImagesMmap.from_generator(tmp_path / "map", [encoded(picture(8, 6, 3), fmt)], batch_size=1).close()
    shapes = np.fromfile(tmp_path / "map" / "shapes.bin", dtype="<i8")
    shapes[0] = 9  # a damaged index: the height recorded no longer matches the image
    shapes.tofile(tmp_path / "map" / "shapes.bin")
    m = ImagesMmap(tmp_path / "map")
    assert m.shape(0) == (9, 6, 3)
    with pytest.raises(ValueError, match=r"image 0 of .* decodes to shape \(8, 6, 3\), expected \(9, 6, 3\)"):
        m[0]


def test_importing_the_module_loads_no_decoder():
    import subprocess
    import sys

    code = "import sys, mmap_ninja.kinds.images; print('PIL' in sys.modules, 'simplejpeg' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    assert result.stdout.split() == ["False", "False"]


def _png_of_every_mode():
    from PIL import Image

    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (9, 13, 4), dtype=np.uint8)
    images = [Image.fromarray(rgba[..., 0], "L"), Image.fromarray(rgba[..., :2], "LA"),
              Image.fromarray(rgba[..., :3], "RGB"), Image.fromarray(rgba, "RGBA")]
    palette = Image.fromarray(rgba[..., :3], "RGB").quantize(16)
    images.append(palette)
    with_index = palette.copy()
    with_index.info["transparency"] = 3
    images.append(with_index)
    with_bytes = palette.copy()
    with_bytes.info["transparency"] = bytes(range(0, 256, 16))
    images.append(with_bytes)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


@pytest.mark.parametrize("channels", [None, 1, 3, 4])
def test_the_fast_png_decoder_gives_pillows_exact_pixels(tmp_path, channels):
    """pyspng (the png extra) decodes only where its pixels equal Pillow's: every mode, every channels option."""
    ImagesMmap.from_generator(tmp_path / "png", _png_of_every_mode(), batch_size=8)
    default = ImagesMmap(tmp_path / "png", channels=channels)
    pillow = ImagesMmap(tmp_path / "png", channels=channels, decoder="pillow")
    assert default.decoders == {"PNG": "pyspng"} and pillow.decoders == {"PNG": "Pillow"}
    for i in range(len(default)):
        np.testing.assert_array_equal(default[i], pillow[i], err_msg=f"image {i}")
    assert default.get_batch(range(4), pad_value=0, threads=2)[0].shape[0] == 4


def test_a_file_pillow_cannot_identify_is_named_without_a_memory_address(tmp_path):
    """Pillow's message for an unreadable image names the BytesIO object it was given (``<_io.BytesIO object at
    0x...>``), which tells the user nothing and changes from run to run."""
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError) as caught:
        ImagesMmap.from_files(tmp_path / "m", [bad])
    message = str(caught.value)
    assert "broken.jpg" in message and "0x" not in message and "BytesIO" not in message
    assert "b'not an i'" in message  # the first bytes, which say what the file is


def test_sixteen_bit_and_float_images_are_refused_naming_the_file(tmp_path):
    """As the README says: uint8 decoding would change their values, so they are refused when written."""
    from PIL import Image

    Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(tmp_path / "depth.png")
    Image.fromarray(np.zeros((4, 5), np.float32)).save(tmp_path / "float.tif")
    for name in ("depth.png", "float.tif"):
        with pytest.raises(ValueError, match=rf"{name}\) is a (\w+ image of mode .*\(not 8-bit samples\)|16-bit PNG)"):
            ImagesMmap.from_files(tmp_path / f"m-{name}", [tmp_path / name])


def test_an_image_damaged_on_disk_is_named_without_a_memory_address(tmp_path):
    """Decoding bytes Pillow cannot identify gave "cannot identify image file <_io.BytesIO object at 0x...>"."""
    m = ImagesMmap.from_generator(tmp_path / "m", [np.zeros((4, 4, 3), np.uint8)] * 2, 2)
    m.close()
    data = tmp_path / "m" / "data.bin"
    raw = bytearray(data.read_bytes())
    raw[:4] = b"XXXX"
    data.write_bytes(bytes(raw))
    m = ImagesMmap(tmp_path / "m")
    for read in (lambda: m[0], lambda: m.get_batch([0, 1], threads=2)):
        with pytest.raises(ValueError) as caught:
            read()
        message = str(caught.value)
        assert "image 0" in message and "0x" not in message and "b'XXXX" in message and "verify" in message


def is_progressive(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as image:
        return bool(image.info.get("progressive") or image.info.get("progression"))


def test_baseline_jpeg_rewrites_progressive_jpegs_losslessly_and_keeps_the_rest(tmp_path):
    simplejpeg = pytest.importorskip("simplejpeg")
    progressive = {"rgb": encoded(picture(70, 90, 3, 7), "JPEG", quality=90, progressive=True),
                   "gray": encoded(picture(31, 45, 1, 8), "JPEG", quality=80, progressive=True),
                   "subsampled": encoded(picture(50, 33, 3, 9), "JPEG", progressive=True, subsampling="4:2:0")}
    others = [encoded(picture(40, 60, 3), "JPEG", quality=90), encoded(picture(25, 35, 4, 2), "PNG")]
    assert all(map(is_progressive, progressive.values())) and not is_progressive(others[0])
    paths = []
    for k, data in enumerate([*progressive.values(), *others]):
        paths.append(tmp_path / f"{k}.img")
        paths[-1].write_bytes(data)
    m = ImagesMmap.from_files(tmp_path / "m", paths, baseline_jpeg=True)
    for k, data in enumerate(progressive.values()):
        stored = m.raw(k).tobytes()
        assert not is_progressive(stored) and stored != data
        channels = 1 if k == 1 else 3
        assert np.array_equal(m[k], pillow_decode(data, "L" if channels == 1 else "RGB"))
        assert np.array_equal(simplejpeg.decode_jpeg(stored), simplejpeg.decode_jpeg(data))
    assert [m.raw(k).tobytes() for k in (3, 4)] == others  # baseline JPEGs and PNGs are stored as given
    m.extend([progressive["rgb"]])  # the map keeps the rule for later writes, from any handle
    assert not is_progressive(ImagesMmap(m.path).raw(5).tobytes())
    plain = ImagesMmap.from_files(tmp_path / "plain", paths)
    assert plain.raw(0).tobytes() == progressive["rgb"]  # the default stores every file's bytes as given
    with pytest.raises(TypeError, match="baseline_jpeg must be True or False"):
        ImagesMmap.from_files(tmp_path / "bad", paths, baseline_jpeg="yes")
    assert not (tmp_path / "bad").exists()
