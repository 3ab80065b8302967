"""What an `ImagesMmap` does to the values it is given: arrays and PIL images are stored losslessly unless a lossy
format is asked for, 16-bit images are refused, lossless WebP keeps the channels and pixels given, and
``channels=1`` matches Pillow's gray conversion."""

import io
import json
import struct
import zlib

import numpy as np
import pytest

from mmap_ninja.kinds.images import ImagesMmap

from tests.support import write_header

Image = pytest.importorskip("PIL.Image")


def noisy(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return array[:, :, 0] if channels == 1 else array


def png_16bit(height: int, width: int, colour_type: int) -> bytes:
    """A 16-bit PNG of ``colour_type`` (0 gray, 2 RGB, 4 gray + alpha, 6 RGBA), written chunk by chunk."""
    samples = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    rows = np.random.default_rng(1).integers(0, 65536, (height, width * samples), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------------- defaults

@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_arrays_are_stored_losslessly_by_default(tmp_path, channels):
    mask = noisy(64, 64, channels)
    m = ImagesMmap.from_generator(tmp_path / "m", [mask], batch_size=1)
    assert m.format(0) == "PNG"
    expected = mask if mask.ndim == 3 else mask[:, :, None]
    assert np.array_equal(m[0], expected)


def test_pil_images_are_stored_losslessly_by_default(tmp_path):
    array = noisy(20, 30, 3)
    m = ImagesMmap.from_generator(tmp_path / "m", [Image.fromarray(array)], batch_size=1)
    assert m.format(0) == "PNG" and np.array_equal(m[0], array)


def test_new_maps_record_their_format(tmp_path):
    ImagesMmap.from_generator(tmp_path / "m", [noisy(8, 8, 3)], batch_size=1)
    encode = json.loads((tmp_path / "m" / "header.json").read_text())["attrs"]["encode"]
    assert encode["format"] == "PNG"
    ImagesMmap.from_generator(tmp_path / "j", [noisy(8, 8, 3)], batch_size=1, format="jpeg", quality=80)
    encode = json.loads((tmp_path / "j" / "header.json").read_text())["attrs"]["encode"]
    assert encode["format"] == "JPEG" and encode["quality"] == 80


def test_jpeg_only_when_asked(tmp_path):
    m = ImagesMmap.from_generator(tmp_path / "m", [noisy(16, 16, 3)], batch_size=1, format="jpeg", quality=90)
    assert m.format(0) == "JPEG"
    m.append(noisy(16, 16, 1))  # the map keeps its rule for later writes
    assert m.format(1) == "JPEG"


def test_existing_map_without_a_recorded_format_keeps_encoding_jpeg(tmp_path):
    """A map written before the format was recorded (``format`` null, no ``lossless`` key) keeps its rule:
    JPEG for arrays without alpha, PNG with alpha."""
    path = tmp_path / "old"
    ImagesMmap.from_generator(path, [noisy(16, 16, 3)], batch_size=1, format="jpeg")
    content = json.loads((path / "header.json").read_text())
    content["attrs"]["encode"] = {"format": None, "quality": 95, "verify": False, "baseline_jpeg": False}
    write_header(path, content)
    m = ImagesMmap(path)
    m.extend([noisy(16, 16, 3, 1), noisy(16, 16, 4, 2)])
    assert [m.format(i) for i in range(3)] == ["JPEG", "JPEG", "PNG"]
    assert json.loads((path / "header.json").read_text())["attrs"]["encode"]["format"] is None


# ---------------------------------------------------------------------------------------------------- 16 bits

@pytest.mark.parametrize("colour_type, name", [(0, "gray"), (2, "RGB"), (4, "gray + alpha"), (6, "RGBA")])
def test_every_16_bit_png_is_refused_naming_the_file(tmp_path, colour_type, name):
    file = tmp_path / f"deep_{colour_type}.png"
    file.write_bytes(png_16bit(5, 7, colour_type))
    with pytest.raises(ValueError, match=r"16-bit") as error:
        ImagesMmap.from_files(tmp_path / "m", [file], batch_size=1)
    message = str(error.value)
    assert str(file) in message and "RaggedMmap" in message and "item 0" in message
    if (tmp_path / "m" / "header.json").exists():  # the failed build stays unfinished, holding nothing
        assert len(ImagesMmap(tmp_path / "m", allow_unfinished=True)) == 0


def test_16_bit_png_bytes_are_refused_naming_the_sample(tmp_path):
    m = ImagesMmap.from_generator(tmp_path / "m", [noisy(4, 4, 3)], batch_size=1)
    with pytest.raises(ValueError, match=r"item 1 .*16-bit.*RaggedMmap"):
        m.append(png_16bit(3, 3, 2))
    assert len(m) == 1


# ---------------------------------------------------------------------------------------------------- WebP

@pytest.mark.parametrize("options", [{"quality": 100}, {"lossless": True}, {"lossless": True, "quality": 50}])
def test_lossless_webp_keeps_opaque_alpha_and_hidden_rgb(tmp_path, options):
    rgba = noisy(24, 32, 4)
    rgba[:, :16, 3] = 0  # fully transparent: the RGB under it must survive
    rgba[:, 16:, 3] = 255
    opaque = noisy(24, 32, 4, 1)
    opaque[..., 3] = 255  # libwebp stores no alpha for it: the map still gives 4 channels
    gray, gray_alpha = noisy(10, 12, 1, 2), noisy(10, 12, 2, 3)
    m = ImagesMmap.from_generator(tmp_path / "m", [rgba, opaque, gray, gray_alpha], batch_size=4, format="webp",
                                  **options)
    assert m.formats == ["WEBP"]
    assert np.array_equal(m[0], rgba)
    assert np.array_equal(m[1], opaque)
    assert np.array_equal(m[2], gray[:, :, None])
    assert np.array_equal(m[3], gray_alpha)
    assert m.shape(1) == (24, 32, 4)


def test_lossy_webp_stays_lossy_and_lossless_jpeg_is_refused(tmp_path):
    array = noisy(16, 16, 3)
    m = ImagesMmap.from_generator(tmp_path / "m", [array], batch_size=1, format="webp", quality=80)
    assert not np.array_equal(m[0], array)
    with pytest.raises(ValueError, match="lossless"):
        ImagesMmap.from_generator(tmp_path / "j", [array], batch_size=1, format="jpeg", lossless=True)
    assert not (tmp_path / "j").exists() or not any((tmp_path / "j").iterdir())


# ---------------------------------------------------------------------------------------------------- gray

def test_channels_1_on_colour_jpegs_matches_pillow_convert_l(tmp_path):
    y, x = np.mgrid[0:48, 0:64]
    colour = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    files = []
    for array in [colour, noisy(33, 47, 3)]:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=85)
        files.append(buffer.getvalue())
    m = ImagesMmap.from_generator(tmp_path / "m", files, batch_size=2)
    for decoder in (None, "pillow"):
        gray = ImagesMmap(tmp_path / "m", channels=1, decoder=decoder)
        for k, data in enumerate(files):
            with Image.open(io.BytesIO(data)) as image:
                expected = np.asarray(image.convert("L"))[:, :, None]
            assert np.array_equal(gray[k], expected), (decoder, k)
        assert np.array_equal(gray.get_batch([1])[0], gray[1])
    assert len(m) == 2


# ---------------------------------------------------------------------------------------------------- records

def test_records_images_fields_are_lossless_unless_the_field_asks(tmp_path):
    from mmap_ninja import RecordsMmap
    from mmap_ninja.kinds.records import Field

    mask = noisy(32, 32, 1)
    rec = RecordsMmap.from_generator(tmp_path / "r", [{"mask": mask}], batch_size=1, schema={"mask": Field.images()})
    assert rec["mask"].format(0) == "PNG" and np.array_equal(rec[0]["mask"], mask[:, :, None])
    lossy = RecordsMmap.from_generator(tmp_path / "j", [{"photo": noisy(32, 32, 3)}], batch_size=1,
                                      schema={"photo": Field.images(format="jpeg", quality=80)})
    assert lossy["photo"].format(0) == "JPEG"
    assert lossy.schema["photo"] == Field.images(format="jpeg", quality=80)
    webp = RecordsMmap.from_generator(tmp_path / "w", [{"rgba": noisy(8, 8, 4)}], batch_size=1,
                                     schema={"rgba": Field.images(format="webp", lossless=True)})
    assert webp["rgba"].format(0) == "WEBP" and np.array_equal(webp[0]["rgba"], noisy(8, 8, 4))
    with pytest.raises(ValueError, match="format"):
        Field.images(format="gif")


def test_a_pil_image_opened_from_a_16_bit_png_is_refused(tmp_path):
    """Pillow opens a 16-bit RGB PNG as mode "RGB" and would cut it to 8 bits on load."""
    image = Image.open(io.BytesIO(png_16bit(4, 5, 2)))
    with pytest.raises(ValueError, match=r"item 0 .*16-bit.*RaggedMmap"):
        ImagesMmap.from_generator(tmp_path / "m", [image], batch_size=1)
