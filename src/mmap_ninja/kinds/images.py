"""`ImagesMmap`: a memory-mapped list of images kept in their encoded form (JPEG, PNG, WebP, ... as given) and
decoded on read into ``(H, W, C)`` uint8 arrays.

The map takes about the disk of the image files (their bytes are stored unchanged, back to back) instead of the
decoded pixels' 10x or more. Each image's decoded shape and format are parsed once, when it is written, from the
image's header, so ``shape(i)`` and batching decisions need no decoding. JPEGs are decoded with simplejpeg when it
is installed (libjpeg-turbo, with its exact default settings unless ``fast=True``), PNGs with pyspng (libspng)
when it is installed and gives Pillow's pixels exactly (8-bit images read in their own channels, or as RGB; not
palette images read with alpha, whose transparency Pillow resolves its own way), everything else (and what those
refuse, such as CMYK JPEGs) with Pillow. Each is imported only when a map of this kind is used.

Columns (FORMAT.md, kind ``images``): ``data`` (the encoded bytes back to back), ``offsets`` (n + 1 int64 byte
offsets), ``shapes`` (3 int64 per image: decoded height, width, channels) and ``formats`` (one uint8 per image,
an index into the header attribute ``formats``, the list of Pillow format names the map holds, e.g.
``["JPEG", "PNG"]``).
"""

from __future__ import annotations

import io
import operator
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, ClassVar, Optional, overload

import numpy as np
import numpy.typing as npt

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.kinds.batch import check_batch_size, check_out, pad_scalar
from mmap_ninja.kinds.fields import Field, FieldKind, register_field_kind
from mmap_ninja.kinds.image_decoding import (
    _MODE_OF_CHANNELS,
    DEFAULT_DECODER,
    Decoder,
    _optional,
    _pillow,
    _simplejpeg,
    drafted_sizes,
    image_column_problems,
)
from mmap_ninja.kinds.layouts import Columns, Encoded, Layout, OffsetsView, View
from mmap_ninja.kinds.maps import MapBase, SampleIndex, SampleIndices, resolve_index, resolve_positions
from mmap_ninja.storage.format import register_feature
from mmap_ninja.storage.store import DEFAULT_LOCK_TIMEOUT, PathLike

__all__ = ["DEFAULT_QUALITY", "Decoder", "ImagesLayout", "ImagesMmap"]

DEFAULT_QUALITY = 95
RECORDS_FEATURE = "records.images"
"""Listed in ``requires`` by a records map with an images field (a reader knowing only the first field kinds
refuses it by name instead of calling its schema corrupt)."""
_READ_OPTIONS = ("channels", "fast", "decoder", "draft")  # from_generator's options for the handle
DEFAULT_BATCH_SIZE = 256  # images per commit of a build: encoded images are large, a batch is held in memory
"""The quality of ``format="jpeg"`` / lossy ``"webp"`` unless ``quality=`` says otherwise (the default format,
PNG, is lossless)."""

# Decoded channels of each Pillow mode that holds 8-bit samples ("P", a palette, is decided by its transparency).
_CHANNELS_OF_MODE = {"1": 1, "L": 1, "LA": 2, "La": 2, "PA": 4, "RGB": 3, "RGBX": 3, "YCbCr": 3, "LAB": 3,
                     "HSV": 3, "CMYK": 3, "RGBA": 4, "RGBa": 4}
_ENCODE_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
_MAX_FORMATS = 256  # the formats column holds one uint8 per image
_UINT8 = np.dtype(np.uint8)


def _encoded_size(raw: Any, format_name: str) -> Optional[tuple[int, int]]:
    """The ``(height, width)`` an encoded image's header declares (read without decoding), or None if its header
    cannot be read."""
    head = bytes(memoryview(raw)[:24])
    if format_name == "PNG" and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    jpeg = _simplejpeg() if format_name == "JPEG" else None
    if jpeg is not None:
        try:
            height, width = jpeg.decode_jpeg_header(raw)[:2]
            return int(height), int(width)
        except ValueError:
            pass  # Pillow reads more JPEGs' headers
    try:
        with _pillow().open(io.BytesIO(raw), formats=(format_name,)) as image:
            width, height = image.size
            return int(height), int(width)
    except Exception:  # Pillow's plugins raise many kinds for damaged headers
        return None


# ---------------------------------------------------------------------------------------------------- encoding

def _channels_of(image: Any) -> Optional[int]:
    """How many channels a PIL image decodes to (None: not an 8-bit image this map can hold)."""
    if image.mode == "P":
        palette = image.palette
        return 4 if "transparency" in image.info or (palette is not None and palette.mode == "RGBA") else 3
    return _CHANNELS_OF_MODE.get(image.mode)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEAD = 24  # signature, IHDR length and type, width, height: what _encoded_size reads of a PNG
_PNG_LEADER = np.frombuffer(_PNG_SIGNATURE + b"\x00\x00\x00\x0dIHDR", dtype=np.uint8)
_PNG_COLOUR_TYPES = {0: "gray", 2: "RGB", 3: "palette", 4: "gray + alpha", 6: "RGBA"}


def _png_bit_depth(data: Any) -> Optional[int]:
    """The bit depth a PNG's IHDR chunk states (bits per sample), or None for anything else."""
    head = bytes(memoryview(data)[:26])
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def inspect_image(data: Any, what: str) -> tuple[str, tuple[int, int, int]]:
    """The Pillow format name and decoded ``(H, W, C)`` shape of an encoded image, read from its header only.
    A ValueError naming ``what`` if it is not an image Pillow can read, or not one of 8-bit samples."""
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data)) as image:
            format_name, mode, (width, height) = image.format, image.mode, image.size
            channels = _channels_of(image)
    except Image.UnidentifiedImageError:  # its message names the BytesIO object, at its memory address
        raise ValueError(f"{what} is not an image Pillow can read: its first bytes are of no image format Pillow "
                         f"knows ({bytes(memoryview(data)[:8])!r})") from None
    except Exception as e:  # Pillow's plugins raise many kinds (OSError, SyntaxError, struct.error, ...)
        raise ValueError(f"{what} is not an image Pillow can read: {type(e).__name__}: {e}") from None
    bit_depth = _png_bit_depth(data)
    if bit_depth is not None and bit_depth > 8:
        colour = _PNG_COLOUR_TYPES.get(data[25], f"colour type {data[25]}")
        raise ValueError(f"{what} is a {bit_depth}-bit PNG ({colour}); ImagesMmap decodes to uint8 and would "
                         f"cut its samples to 8 bits: store the exact "
                         f"uint16 arrays in a RaggedMmap instead")
    if channels is None:
        raise ValueError(f"{what} is a {format_name} image of mode {mode!r} (not 8-bit samples); ImagesMmap decodes "
                         f"to uint8 and would change its values: store it in a RaggedMmap instead")
    if not format_name:
        raise ValueError(f"{what}: Pillow reads it but names no format")
    return str(format_name), (int(height), int(width), channels)


def _encode_pil(image: Any, policy: dict[str, Any], what: str) -> tuple[bytes, int]:
    """A PIL image encoded following ``policy``, and the channels it was given (which the map records: lossless
    WebP has no gray mode and drops an opaque alpha channel, so its pixels are converted back on read)."""
    channels = _channels_of(image)
    if channels is None:
        raise ValueError(f"{what} is a PIL image of mode {image.mode!r} (not 8-bit samples); ImagesMmap stores "
                         f"uint8 images: store it in a RaggedMmap instead")
    if _loads_16_bit_samples(image):
        raise ValueError(f"{what} is a PIL image opened from a 16-bit {image.format} file (Pillow would cut its "
                         f"samples to 8 bits); ImagesMmap decodes to uint8: store the exact uint16 arrays in a "
                         f"RaggedMmap instead")
    # A map written before the format was recorded (``format`` null) keeps its rule: JPEG unless alpha.
    format_name = policy.get("format") or ("JPEG" if channels in (1, 3) else "PNG")
    if format_name == "JPEG" and channels in (2, 4):
        raise ValueError(f"{what} has an alpha channel, which JPEG cannot store: build the map with format='png' "
                         f"or format='webp'")
    target = _MODE_OF_CHANNELS[channels]
    converted = image if image.mode == target else image.convert(target)
    quality = int(policy.get("quality", DEFAULT_QUALITY))
    buffer = io.BytesIO()
    if format_name == "PNG":
        converted.save(buffer, format="PNG")
    elif format_name == "WEBP":
        if _webp_lossless(policy):
            # exact: keep the RGB under fully transparent pixels (libwebp would blank it to compress better)
            converted.save(buffer, format="WEBP", lossless=True, exact=True, quality=quality)
        else:
            converted.save(buffer, format="WEBP", quality=quality)
    else:
        converted.save(buffer, format=format_name, quality=quality)
    return buffer.getvalue(), channels


def _loads_16_bit_samples(image: Any) -> bool:
    """Whether a PIL image not loaded yet reads 16-bit samples from its file (a tile's raw mode such as
    ``"RGB;16B"``: Pillow opens 16-bit RGB and RGBA PNGs as 8-bit modes)."""
    for tile in getattr(image, "tile", None) or ():
        rawmode = tile[3] if len(tile) > 3 else None
        if isinstance(rawmode, tuple) and rawmode:
            rawmode = rawmode[0]
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _webp_lossless(policy: dict[str, Any]) -> bool:
    """Whether the policy asks for WebP's lossless mode (``lossless=True``, or ``quality=100``)."""
    return bool(policy.get("lossless")) or int(policy.get("quality", DEFAULT_QUALITY)) == 100


def _encode_array(array: np.ndarray[Any, Any], policy: dict[str, Any], what: str) -> tuple[bytes, int]:
    if array.dtype != np.uint8:
        raise TypeError(f"{what} is an array of dtype {array.dtype}; ImagesMmap stores uint8 images (scale and cast "
                        f"it yourself, or store it in a RaggedMmap)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise ValueError(f"{what} has shape {array.shape}; an image array is (H, W) or (H, W, C) with C in 1..4")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{what} has shape {array.shape}, an image with no pixels")
    mode = "L" if array.ndim == 2 else _MODE_OF_CHANNELS[array.shape[2]]
    # frombuffer with an explicit mode: Image.fromarray's mode argument is deprecated in recent Pillows.
    image = _pillow().frombuffer(mode, (array.shape[1], array.shape[0]), np.ascontiguousarray(array), "raw", mode,
                                 0, 1)
    return _encode_pil(image, policy, what)


def _is_pil_image(sample: Any) -> bool:
    module = type(sample).__module__
    if not module.startswith("PIL."):
        return False
    return isinstance(sample, _pillow().Image)


def encode_sample(sample: Any, policy: dict[str, Any], what: str) -> tuple[bytes, str, tuple[int, int, int]]:
    """One sample as ``(encoded bytes, Pillow format name, decoded shape)``: files and encoded bytes are kept as
    they are, arrays and PIL images are encoded following ``policy`` (the map's ``encode`` attribute) and keep
    the channels they were given."""
    given_channels: Optional[int] = None
    if isinstance(sample, os.PathLike):
        path = os.fspath(sample)
        what = f"{what} ({path})"
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"{what} cannot be read: {e}") from None
    elif isinstance(sample, (bytes, bytearray, memoryview)):
        data = bytes(sample)
    elif isinstance(sample, np.ndarray) and sample.ndim == 1 and sample.dtype == np.uint8:
        data = sample.tobytes()  # encoded bytes (an image array has two or three dimensions)
    elif isinstance(sample, np.ndarray):
        data, given_channels = _encode_array(sample, policy, what)
    elif isinstance(sample, str):
        raise TypeError(f"{what} is a str; pass pathlib.Path(...) for an image file, or its bytes")
    elif _is_pil_image(sample):
        data, given_channels = _encode_pil(sample, policy, what)
    else:
        raise TypeError(f"{what} is {type(sample).__name__}; an image is encoded bytes, a pathlib.Path, a uint8 "
                        f"array or a PIL image")
    format_name, shape = inspect_image(data, what)
    if given_channels is not None:
        shape = (shape[0], shape[1], given_channels)
    if policy.get("baseline_jpeg") and format_name == "JPEG":
        data = as_baseline_jpeg(data)
    if policy.get("verify"):
        try:
            DEFAULT_DECODER.decode(data, format_name, shape)
        except Exception as e:
            raise ValueError(f"{what} cannot be decoded: {type(e).__name__}: {e}") from None
    return data, format_name, shape


def _jpeglib() -> Any:
    jpeglib = _optional("jpeglib")
    if jpeglib is None:
        raise ImportError("baseline_jpeg=True needs jpeglib: pip install 'mmap_ninja[baseline]'")
    return jpeglib


def as_baseline_jpeg(data: bytes) -> bytes:
    """A progressive JPEG rewritten as a baseline one with the same quantized DCT coefficients, quantization
    tables, sampling and markers (libjpeg's lossless transcoding, as ``jpegtran`` does), so it decodes to the same
    pixels 2-3x faster; any other image, or one whose pixels would change, is returned as it is.

    Progressive JPEGs decode slowly because every scan revisits every block: on the real image set of
    ``get_real_data.sh`` 318 of 2,794 JPEGs are progressive and take 27 % of a full pass. The rewrite (with
    optimized Huffman tables) makes those files about 4 % larger. It is checked: Pillow (and simplejpeg, when
    installed) must decode both versions to equal arrays, or the original is kept."""
    Image = _pillow()
    with Image.open(io.BytesIO(data)) as image:
        progressive = image.info.get("progressive") or image.info.get("progression")
        tables = getattr(image, "quantization", None) or {}
    # Baseline JPEG holds 8-bit quantization tables only; libjpeg would write such a file as extended sequential.
    if not progressive or any(max(table) > 255 for table in tables.values()):
        return data
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mmap_ninja_jpeg_") as tmp:  # jpeglib reads and writes files
        source, target = os.path.join(tmp, "in.jpg"), os.path.join(tmp, "out.jpg")
        with open(source, "wb") as f:
            f.write(data)
        try:
            _jpeglib().read_dct(source).write_dct(target, flags=["+OPTIMIZE_CODING"])
            with open(target, "rb") as f:
                rewritten = f.read()
        except ImportError:
            raise
        except Exception:  # a JPEG that libjpeg cannot transcode is stored as given
            return data
    return rewritten if _decode_equal(data, rewritten) else data


def _decode_equal(a: bytes, b: bytes) -> bool:
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(a)) as first, Image.open(io.BytesIO(b)) as second:
            if not np.array_equal(np.asarray(first), np.asarray(second)):
                return False
        simplejpeg = _simplejpeg()
        return simplejpeg is None or bool(np.array_equal(simplejpeg.decode_jpeg(a), simplejpeg.decode_jpeg(b)))
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------------- view

class ImagesView(OffsetsView):
    """A snapshot of an images map: encoded bytes found through offsets, shapes and format codes per image."""

    def __init__(self, store: Columns):
        super().__init__(store, store.column("data"), store.column("offsets"))
        self.bytes = self.values.data
        shapes = store.column("shapes")
        formats = store.column("formats")
        if len(shapes) != 3 * self.length or len(formats) != self.length:
            raise CorruptMapError(f"{self.path} is corrupt: {self.length} images but {len(shapes)} shape items "
                                  f"(expected {3 * self.length}) and {len(formats)} format codes")
        self.shapes = shapes.reshape(-1, 3)
        self.shape_items = shapes.data
        self.format_codes = formats
        self.format_items = formats.data
        self.format_names = tuple(store.attrs.get("formats", ()))
        # What plain reads (``get``) decode with: a records map opened with ``draft=`` sets its own before the
        # view is published (`ImagesMmap` passes its decoder to every read).
        self.decoder = DEFAULT_DECODER

    def raw(self, position: int) -> memoryview:
        start, stop = self.starts[position], self.stops[position]
        if not 0 <= start <= stop <= self.size:
            raise self.corrupt(position)
        return self.bytes[start:stop]

    def format_name(self, position: int) -> str:
        code = self.format_items[position]
        if code >= len(self.format_names):
            raise CorruptMapError(f"{self.path / 'formats.bin'} is corrupt: image {position} has format code "
                                  f"{code}, but the header names {len(self.format_names)} formats")
        return str(self.format_names[code])

    def shape(self, position: int, channels: Optional[int] = None) -> tuple[int, int, int]:
        items, k = self.shape_items, 3 * position
        return items[k], items[k + 1], channels or items[k + 2]

    def shapes_at(self, positions: np.ndarray[Any, Any], channels: Optional[int] = None) -> np.ndarray[Any, Any]:
        shapes: np.ndarray[Any, Any] = self.shapes[positions]  # a copy (fancy indexing)
        if channels is not None:
            shapes[:, 2] = channels
        return shapes

    def checked_shapes(self, positions: np.ndarray[Any, Any], channels: Optional[int] = None) -> np.ndarray[Any, Any]:
        """`shapes_at`, each checked against the height and width its image's encoded header gives (and its
        channels against 1 to 4), so that a damaged ``shapes.bin`` never sizes a batch: a `CorruptMapError`
        naming the image instead. Costs a header parse per image (a few bytes for PNG and JPEG)."""
        shapes = self.shapes_at(positions)
        sound = self._sound_png_rows(positions, shapes)
        for k in np.flatnonzero(~sound).tolist():  # what the vectorized PNG check did not settle, one by one
            position = int(positions[k])
            height, width, recorded = shapes[k].tolist()
            declared = _encoded_size(self.raw(position), self.format_name(position))
            if declared is None:
                raise CorruptMapError(
                    f"image {position} of {self.path} cannot be decoded: its bytes have no "
                    f"{self.format_name(position)} header ({bytes(self.raw(position)[:8])!r}); the map may be "
                    f"damaged (mmap-ninja verify --deep says where)")
            if not 1 <= recorded <= 4 or (height, width) != declared:
                said = f"declares {declared[0]}x{declared[1]}"
                raise CorruptMapError(
                    f"{self.path / 'shapes.bin'} is corrupt: image {position} is recorded as {height}x{width} with "
                    f"{recorded} channels, but its encoded header {said}")
        if channels is not None:
            shapes[:, 2] = channels
        return shapes

    def _sound_png_rows(self, positions: np.ndarray[Any, Any], shapes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Which rows of ``positions`` are PNGs whose header (signature, IHDR) declares exactly the recorded
        height and width, with 1 to 4 recorded channels: the check of `checked_shapes`, for all PNGs at once."""
        sound = np.zeros(len(positions), dtype=bool)
        if "PNG" not in self.format_names or not len(positions):
            return sound
        starts, stops = self.offsets[positions], self.offsets[positions + 1]
        rows = np.flatnonzero((self.format_codes[positions] == self.format_names.index("PNG")) & (starts >= 0)
                              & (stops <= self.size) & (stops - starts >= _PNG_HEAD))
        if not len(rows):
            return sound
        heads = self.values[starts[rows, None] + np.arange(_PNG_HEAD)]
        sizes = heads[:, 16:24].astype(np.int64).reshape(-1, 2, 4) @ np.array([1 << 24, 1 << 16, 1 << 8, 1])
        recorded = shapes[rows]
        sound[rows] = ((heads[:, :16] == _PNG_LEADER).all(axis=1) & (sizes[:, 1] == recorded[:, 0])
                       & (sizes[:, 0] == recorded[:, 1]) & (recorded[:, 2] >= 1) & (recorded[:, 2] <= 4))
        return sound

    def decoded_shapes(self, positions: np.ndarray[Any, Any], decoder: Decoder) -> np.ndarray[Any, Any]:
        """The shapes ``decoder`` decodes the images at ``positions`` to (their channels, JPEGs' draft size)."""
        shapes = self.checked_shapes(positions, decoder.channels)  # never from a damaged shapes.bin
        if decoder.draft is not None and "JPEG" in self.format_names:
            jpegs = self.format_codes[positions] == self.format_names.index("JPEG")
            shapes[jpegs, :2] = drafted_sizes(shapes[jpegs, :2], decoder.draft)
        return shapes

    def decode(self, position: int, decoder: Decoder, out: Optional[np.ndarray[Any, Any]] = None
               ) -> np.ndarray[Any, Any]:
        raw = self.raw(position)
        format_name = self.format_name(position)
        height, width, channels = self.shape(position, decoder.channels)
        if decoder.draft is not None:
            height, width = decoder.decoded_size(format_name, height, width)
        try:
            return decoder.decode(raw, format_name, (height, width, channels), out)
        except CorruptMapError:
            raise
        except ValueError as e:  # damaged bytes (or a shape that does not match them): the map is damaged
            raise CorruptMapError(f"image {position} of {self.path} cannot be decoded: {e}") from None

    def get(self, position: int) -> np.ndarray[Any, Any]:
        return self.decode(position, self.decoder)

    def get_many(self, positions: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
        decoder = self.decoder
        return [self.decode(p, decoder) for p in positions.tolist()]


# ---------------------------------------------------------------------------------------------------- layout

def _encode_policy(format: Optional[str] = None, quality: int = DEFAULT_QUALITY, verify: bool = False,
                   baseline_jpeg: bool = False, lossless: bool = False) -> dict[str, Any]:
    """A new map's rule for encoding arrays and PIL images, with its format recorded (PNG unless asked)."""
    if format is not None:
        if not isinstance(format, str) or format.lower() not in _ENCODE_FORMATS:
            raise ValueError(f"format must be None (PNG, lossless), 'png', 'jpeg' (lossy) or 'webp' (lossy, or "
                             f"lossless with lossless=True or quality=100), got {format!r}")
        format = _ENCODE_FORMATS[format.lower()]
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")
    for name, flag in (("verify", verify), ("baseline_jpeg", baseline_jpeg), ("lossless", lossless)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if lossless and format == "JPEG":
        raise ValueError("format='jpeg' is lossy: lossless=True needs format='png' (the default) or 'webp'")
    if baseline_jpeg:
        _jpeglib()  # missing: refused before anything is written
    policy: dict[str, Any] = {"format": format or "PNG", "quality": int(quality), "verify": verify,
                              "baseline_jpeg": baseline_jpeg}
    if format == "WEBP":
        policy["lossless"] = lossless or quality == 100
    return policy


class ImagesLayout(Layout):
    """``images``: encoded images back to back, with their decoded shapes and formats."""

    kind: ClassVar[str] = "images"
    columns: ClassVar[dict[str, str]] = {"data": "|u1", "offsets": "<i8", "shapes": "<i8", "formats": "|u1"}
    initial: ClassVar[dict[str, list[int]]] = {"offsets": [0]}
    # Which formats a map's images are in, and how its writer encodes arrays, are facts of that map: images of
    # any formats, written by any writer, share one schema.
    derived_attrs: ClassVar[frozenset[str]] = frozenset({"formats", "encode"})

    def attrs(self, format: Optional[str] = None, quality: int = DEFAULT_QUALITY,  # type: ignore[override]
              verify: bool = False, baseline_jpeg: bool = False, lossless: bool = False) -> dict[str, Any]:
        """``format``/``quality``/``lossless``: how arrays and PIL images are encoded (files and bytes are stored
        as given): PNG (lossless) by default, JPEG (lossy) or WebP (lossy; lossless with ``lossless=True`` or
        ``quality=100``) when asked; ``verify``: decode every image once when it is written, to refuse damaged
        data (not only headers); ``baseline_jpeg``: store progressive JPEGs as baseline ones, losslessly (see
        `as_baseline_jpeg`)."""
        return {"formats": [], "encode": _encode_policy(format, quality, verify, baseline_jpeg, lossless)}

    def view(self, columns: Columns) -> ImagesView:
        return ImagesView(columns)

    def check_columns(self, columns: Mapping[str, np.ndarray[Any, Any]], attrs: dict[str, Any],
                      prefix: str = "") -> list[str]:
        return image_column_problems(columns, attrs, prefix)

    def batch(self, samples: Any, lengths: dict[str, int], attrs: dict[str, Any]) -> list[Any]:
        if isinstance(samples, (str, bytes, bytearray, memoryview, os.PathLike)) or _is_pil_image(samples) or (
                isinstance(samples, np.ndarray) and samples.ndim < 4 and samples.dtype != object):
            raise TypeError(f"extend() takes a sequence of images, got one {type(samples).__name__}; to add one "
                            f"image use append()")
        return list(samples)

    def encode(self, batch: list[Any], lengths: dict[str, int], attrs: dict[str, Any],
               dictionary: bytes = b"") -> Encoded:
        policy = attrs.get("encode") or {}
        first = self.count(lengths, attrs)
        names = list(attrs.get("formats", []))
        pieces: list[bytes] = []
        shapes: list[tuple[int, int, int]] = []
        codes = np.empty(len(batch), dtype=np.uint8)
        for k, sample in enumerate(batch):
            data, format_name, shape = encode_sample(sample, policy, f"item {first + k}")
            if format_name not in names:
                if len(names) == _MAX_FORMATS:
                    raise ValueError(f"item {first + k} is a {format_name} image; a map holds at most "
                                     f"{_MAX_FORMATS} formats")
                names.append(format_name)
            codes[k] = names.index(format_name)
            pieces.append(data)
            shapes.append(shape)
        sizes = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        columns = {
            "data": pieces,
            "offsets": np.cumsum(sizes) + lengths["data"],
            "shapes": np.array(shapes, dtype=np.int64).reshape(-1),
            "formats": codes,
        }
        new_attrs = None if names == attrs.get("formats") else {**attrs, "formats": names}
        return Encoded(columns, new_attrs)

    def encode_set(self, view: View, attrs: dict[str, Any], position: int, value: Any) -> tuple[str, int, Any]:
        assert isinstance(view, ImagesView)
        data, format_name, shape = encode_sample(value, attrs.get("encode") or {},
                                                 f"the new value of item {position}")
        start, stop = view.starts[position], view.stops[position]
        old_format, old_shape = view.format_name(position), view.shape(position)
        if len(data) != stop - start or format_name != old_format or shape != old_shape:
            raise ValueError(f"item {position} is a {old_format} image of {stop - start} bytes decoding to "
                             f"{old_shape}; the new value is a {format_name} image of {len(data)} bytes decoding to "
                             f"{shape}. In-place assignment needs the same format, shape and encoded size (images "
                             f"are stored back to back); build a new map to replace images")
        return "data", start, data


# ---------------------------------------------------------------------------------------------------- the map

class ImagesMmap(MapBase):
    """A list of images on disk in their encoded form; ``m[i]`` decodes image ``i`` into a new ``(H, W, C)``
    uint8 array (C is always there: 1 for gray images, 2 for gray + alpha, 3 RGB, 4 RGBA).

    Build with `from_files` (each file's bytes copied unchanged) or `from_generator` (encoded bytes, paths,
    uint8 arrays or PIL images); open with ``ImagesMmap(path)`` (see `MapBase` for modes, locking and building).
    Reading options, kept when the map is pickled (e.g. into DataLoader workers):

    - ``channels``: None keeps each image's own channels (a palette image gives RGB, or RGBA if it has
      transparency; a CMYK JPEG gives RGB); 1, 3 or 4 converts every image to gray, RGB or RGBA.
    - ``fast``: simplejpeg's fast DCT and upsampling (about 20 % faster JPEG decoding, slightly different pixels).
    - ``decoder``: ``"simplejpeg"`` or ``"pillow"`` for JPEGs; None uses simplejpeg when installed.
    - ``draft``: ``(height, width)`` decodes each JPEG at the smallest DCT scale (1/2, 1/4 or 1/8) whose output is
      still at least that size (never smaller, and not resized: a 500 x 701 JPEG with ``draft=(224, 224)`` reads
      as 250 x 351; one smaller than twice the size reads whole), several times faster for large pictures;
      other formats decode fully. ``shape(i)`` keeps giving the stored size. None (the default) decodes fully.

    EXIF orientation is not applied (as in Pillow and torchvision by default). An animated image decodes to its
    first frame (``raw(i)`` keeps every frame). ``raw(i)`` gives the encoded bytes, e.g. for a GPU decoder.

    Example:

        >>> import numpy as np
        >>> from mmap_ninja import ImagesMmap
        >>> pictures = ImagesMmap.from_generator("pictures", [np.zeros((32, 48, 3), np.uint8)], batch_size=1,
        ...                                  overwrite=True)
        >>> pictures[0].shape, pictures.raw(0)[:4].tobytes()
        ((32, 48, 3), b'\\x89PNG')
    """

    layout = ImagesLayout()
    default_batch_size = DEFAULT_BATCH_SIZE
    _decoder: Decoder = DEFAULT_DECODER

    def __init__(self, out_dir: PathLike, wrapper_fn: Optional[Callable[[Any], Any]] = None, mode: str = "r+", *,
                 copy_before_wrapper_fn: bool = True, lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT,
                 durable: bool = False, allow_unfinished: bool = False, channels: Optional[int] = None,
                 fast: bool = False, decoder: Optional[str] = None, verify_reads: bool = False,
                 draft: Optional[tuple[int, int]] = None):
        self._decoder = Decoder(channels, fast, decoder, draft)  # checked before the map is opened
        super().__init__(out_dir, wrapper_fn, mode, copy_before_wrapper_fn=copy_before_wrapper_fn,
                         lock_timeout=lock_timeout, durable=durable, allow_unfinished=allow_unfinished,
                         verify_reads=verify_reads)

    def _new_view(self, columns: Any) -> Any:
        view = super()._new_view(columns)
        view.decoder = self._decoder  # what the view's own reads decode with (a sharded map reads through them)
        return view

    def _use_decoder(self, decoder: Decoder) -> None:
        """Read with ``decoder`` from now on (a handle built or attached before its options were known)."""
        self._decoder = decoder
        self._rebuild()

    # -------------------------------------------------------------- reading

    @overload
    def __getitem__(self, index: SampleIndex) -> npt.NDArray[np.uint8]: ...
    @overload
    def __getitem__(self, index: SampleIndices) -> list[npt.NDArray[np.uint8]]: ...
    def __getitem__(self, index: Any) -> Any:
        """``m[i]`` decodes image ``i``; a slice, a sequence of ints or a boolean mask gives a list of images."""
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("a map cannot be indexed by a boolean scalar; use a boolean mask of the map's length")
        try:
            operator.index(index)
        except TypeError:
            return self.__getitems__(index)
        view = self._view
        image = view.decode(resolve_index(index, view.length), self._decoder)
        return image if self.wrapper_fn is None else self.wrapper_fn(image)

    def __getitems__(self, indices: Any) -> list[Any]:
        """The images at ``indices`` as a list of arrays (``wrapper_fn`` applied): PyTorch's batched fetch."""
        view = self._view
        decoder = self._decoder
        images = [view.decode(p, decoder) for p in resolve_positions(indices, view.length).tolist()]
        return images if self.wrapper_fn is None else [self.wrapper_fn(image) for image in images]

    def __iter__(self) -> Iterator[npt.NDArray[np.uint8]]:
        """Every image in order, decoded, from the snapshot the iteration started with."""
        view = self._view
        decoder, wrapper_fn = self._decoder, self.wrapper_fn
        for position in range(view.length):
            image = view.decode(position, decoder)
            yield image if wrapper_fn is None else wrapper_fn(image)

    def raw(self, index: int) -> memoryview:
        """The encoded bytes of image ``index`` as a read-only memoryview into the map (no copy)."""
        view = self._view
        return view.raw(resolve_index(index, view.length))  # type: ignore[no-any-return]

    def shape(self, index: int) -> tuple[int, int, int]:
        """The ``(H, W, C)`` shape ``m[index]`` has, read from the index without decoding (the stored size: with
        ``draft``, a JPEG reads smaller, see `decoded_shapes`)."""
        view = self._view
        return view.shape(resolve_index(index, view.length), self._decoder.channels)  # type: ignore[no-any-return]

    def shapes(self, indices: Any = slice(None)) -> np.ndarray[Any, Any]:
        """The shapes of the images at ``indices`` (default: all) as a new ``(k, 3)`` int64 array, no decoding."""
        view = self._view
        return view.shapes_at(resolve_positions(indices, view.length),  # type: ignore[no-any-return]
                              self._decoder.channels)

    def decoded_shapes(self, indices: Any = slice(None)) -> np.ndarray[Any, Any]:
        """The shapes reads of the images at ``indices`` (default: all) return with this handle's options, as a
        new ``(k, 3)`` int64 array, no decoding: `shapes` with ``draft``'s reduced JPEG sizes (the same without
        ``draft``)."""
        view = self._view
        return view.decoded_shapes(resolve_positions(indices, view.length),  # type: ignore[no-any-return]
                                   self._decoder)

    def format(self, index: int) -> str:
        """The Pillow format name of image ``index`` (``"JPEG"``, ``"PNG"``, ``"WEBP"``, ...)."""
        view = self._view
        return view.format_name(resolve_index(index, view.length))  # type: ignore[no-any-return]

    @property
    def formats(self) -> list[str]:
        """The formats the map's images are in (Pillow's names), in the order they first appeared."""
        return list(self._view.format_names)

    @property
    def decoders(self) -> dict[str, str]:
        """Which library decodes each format the map holds, e.g. ``{"JPEG": "simplejpeg", "PNG": "Pillow"}``
        (a JPEG simplejpeg refuses, such as a CMYK one, is handed to Pillow)."""
        return {name: self._decoder.name_for(name) for name in self._view.format_names}

    @property
    def decoder(self) -> Decoder:
        """The decoder this handle uses (its ``channels``, ``fast`` and ``decoder`` options)."""
        return self._decoder

    def get_batch(self, indices: Any, *, threads: Optional[int] = None, out: Optional[np.ndarray[Any, Any]] = None,
                  pad_value: Any = None, draft: Any = None) -> Any:
        """Decode the images at ``indices`` (ints, a slice or a boolean mask) into one new uint8 array.

        With ``pad_value=None`` the images must share one shape (a ValueError names two that differ) and the
        result has shape ``(k, H, W, C)``. With a ``pad_value`` the result is ``(padded, shapes)``: ``padded``
        has every dimension of the largest image in the batch, filled with ``pad_value`` past each image, and
        ``shapes`` is the ``(k, 3)`` shapes. ``out=`` is decoded into instead of a new array (uint8,
        C-contiguous, writable, of the result's shape; when padding, H, W and C may be larger). ``threads`` > 1
        decodes on that many threads. ``wrapper_fn`` is not applied. ``draft`` (see the class) overrides the
        handle's for this call (``False``: full decoding); the shapes are then the decoded ones, and padding pads
        to the largest of them.
        """
        decoder = self._decoder if draft is None else self._decoder.with_draft(draft)
        return decode_batch(self._view, resolve_positions(indices, self._view.length), decoder,
                            pad_value=pad_value, out=out, threads=threads,
                            hint=", or open the map with channels= to give them the same channels")

    def __reduce__(self) -> tuple[Any, ...]:
        reopen, (cls, path, options) = super().__reduce__()
        decoder = self._decoder
        options = {**options, "channels": decoder.channels, "fast": decoder.fast, "decoder": decoder.requested,
                   "draft": decoder.draft}
        return reopen, (cls, path, options)

    # -------------------------------------------------------------- building

    @classmethod
    def from_files(cls, out_dir: PathLike, paths: Iterable[PathLike], batch_size: int = DEFAULT_BATCH_SIZE,
                   verbose: bool = False, *, overwrite: bool = False, durable: bool = False,
                   metadata: Optional[dict[str, Any]] = None, mode: str = "r+",
                   wrapper_fn: Optional[Callable[[Any], Any]] = None,
                   lock_timeout: Optional[float] = DEFAULT_LOCK_TIMEOUT, commit: Optional[str] = None,
                   **options: Any) -> ImagesMmap:
        """Build a map from image files, copying each file's bytes unchanged (no re-encoding), in order.

        Each file's header is read to record its format and decoded shape; a file that is not an image Pillow
        can read (or holds 16-bit or float samples) stops the build with an error naming it, and nothing of it
        is written. ``verify=True`` also decodes every image once. ``baseline_jpeg=True`` stores progressive
        JPEGs as baseline ones with the same coefficients, so the same pixels decode 2-3x faster (lossless,
        checked per image; about 4 % more bytes for those files; needs ``mmap_ninja[baseline]``, and the
        bytes ``raw(i)`` gives are then the rewritten file). Other options as `from_generator`
        (``overwrite``, ``durable``, ``metadata``, ``mode``, ``wrapper_fn``, ``lock_timeout``, ``commit``).
        Returns the map open.
        """
        batch_size = check_batch_size(batch_size)
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError(f"from_files() takes an iterable of paths, not a single path ({paths!r}); "
                            f"pass [path] for one file")
        cls._check_options({k: v for k, v in options.items() if k not in _READ_OPTIONS}, "from_files")
        if commit is not None:
            options["commit"] = commit
        return cls.from_generator(out_dir, (_as_path(p) for p in paths), batch_size, verbose, overwrite=overwrite,
                                  durable=durable, metadata=metadata, mode=mode, wrapper_fn=wrapper_fn,
                                  lock_timeout=lock_timeout, **options)

    @classmethod
    def from_generator(cls, out_dir: PathLike, sample_generator: Iterable[Any],
                       batch_size: Optional[int] = None, verbose: bool = False, **options: Any) -> ImagesMmap:
        """Build a map from any iterable of images, committing every ``batch_size`` of them; returns it open.

        An image is its encoded bytes (``bytes``, ``bytearray``, ``memoryview`` or a 1-D uint8 array: stored as
        given), a ``pathlib.Path`` (the file's bytes, stored as given), a uint8 array of shape ``(H, W)`` or
        ``(H, W, C)`` with C in 1..4, or a PIL image. Arrays and PIL images are encoded losslessly as PNG (as
        Hugging Face's ``Image()`` does), whatever format a PIL image was read from; lossy only when asked:
        ``format="jpeg"`` at ``quality`` (default 95; no alpha), ``format="webp"`` (lossy at ``quality``, or
        lossless, keeping the RGB under transparent pixels, with ``lossless=True`` or ``quality=100``). They read
        back in the channels given (a 2-D array as ``(H, W, 1)``). 16-bit PNGs (any mode) are refused, naming
        the file: store exact uint16 arrays in a `RaggedMmap`. ``verify=True`` decodes every image once while
        writing; ``baseline_jpeg=True`` rewrites progressive JPEGs losslessly as baseline ones (see `from_files`). These
        options are kept by the map for later ``extend`` and ``append`` calls. The reading options ``channels``,
        ``fast``, ``decoder`` and ``draft`` (see the class) apply to the returned handle. See
        `MapBase.from_generator` for the rest (unfinished builds, ``overwrite``, ``metadata``, ...).
        """
        decoder = Decoder(options.pop("channels", None), options.pop("fast", False), options.pop("decoder", None),
                          options.pop("draft", None))
        built = super().from_generator(out_dir, sample_generator, batch_size, verbose, **options)
        built._use_decoder(decoder)
        return built


def _as_path(path: Any) -> Any:
    if isinstance(path, (str, os.PathLike)):
        from pathlib import Path

        return Path(path)
    raise TypeError(f"from_files() takes paths (str or os.PathLike), got {type(path).__name__}")


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` decoding threads, kept for the process (starting threads on every batch costs more
    than decoding a small image)."""
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mmap_ninja-decode")
        return pool


def _forget_pools() -> None:
    """In a forked child the parent's threads do not exist: start new pools on demand."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def decode_batch(view: ImagesView, positions: np.ndarray[Any, Any], decoder: Decoder, *, pad_value: Any = None,
                 out: Optional[np.ndarray[Any, Any]] = None, threads: Optional[int] = None, hint: str = "") -> Any:
    """The images at ``positions`` decoded into one uint8 array, or ``(padded, shapes)`` with a ``pad_value``, as
    `ImagesMmap.get_batch` describes (records' images fields decode their batches here too)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None or a positive integer, got {threads!r}")
    shapes = view.decoded_shapes(positions, decoder)  # checked: never sized from a damaged shapes.bin
    count = len(positions)
    empty = (0, 0, decoder.channels or 0)
    if pad_value is None:
        if count and (shapes != shapes[0]).any():
            j = int(np.flatnonzero((shapes != shapes[0]).any(axis=1))[0])
            raise ValueError(f"images {positions[0]} and {positions[j]} have different shapes "
                             f"({tuple(shapes[0].tolist())} and {tuple(shapes[j].tolist())}); pass pad_value= to "
                             f"pad them{hint}")
        shape = tuple(shapes[0].tolist()) if count else empty
        batch = np.empty((count, *shape), np.uint8) if out is None else check_out(out, (count, *shape), _UINT8)

        def fill(k: int) -> None:
            view.decode(int(positions[k]), decoder, batch[k])
    else:
        largest = tuple(shapes.max(axis=0).tolist()) if count else empty
        if out is None:
            batch = np.empty((count, *largest), np.uint8)
        else:
            batch = check_out(out, (count, *largest), _UINT8, at_least=True)
        batch[...] = pad_scalar(pad_value, _UINT8)

        def fill(k: int) -> None:
            height, width, channels = shapes[k].tolist()
            batch[k, :height, :width, :channels] = view.decode(int(positions[k]), decoder)
    _run(fill, count, threads)
    return batch if pad_value is None else (batch, shapes)


def _run(task: Callable[[int], None], count: int, threads: Optional[int]) -> None:
    """``task(0)``, ..., ``task(count - 1)``, on ``threads`` threads when more than one is asked for: each thread
    takes one contiguous share of the range (one hand-off per thread, not one per image); the decoders release
    the GIL while they decode."""
    if threads is None or threads == 1 or count < 2:
        for k in range(count):
            task(k)
        return
    workers = min(threads, count)
    bounds = [count * w // workers for w in range(workers + 1)]

    def share(w: int) -> None:
        for k in range(bounds[w], bounds[w + 1]):
            task(k)

    pool = _pool(workers)
    futures = [pool.submit(share, w) for w in range(1, workers)]
    share(0)  # the calling thread decodes a share too
    for future in futures:
        future.result()  # re-raises the first failure


class ImagesField(FieldKind):
    """Encoded images as a field of a records map: stored as given or encoded once, decoded on read (with the
    handle's decoder and ``draft``), padded in batches when `RecordsMmap.get_batch` gets ``pad_value``."""

    name = "images"
    holds_images = True
    records_feature = RECORDS_FEATURE
    default_quality = DEFAULT_QUALITY

    @property
    def map_class(self) -> type[ImagesMmap]:
        return ImagesMmap

    def check(self, field: Field) -> None:
        if field.codec is not None:
            raise TypeError("an images field keeps the images' own encoding and takes no codec")
        super().check(field)
        if field.encoding:
            format_name, quality, lossless = field.encoding
            self.layout.attrs(format=format_name, quality=quality, lossless=lossless)  # checks them

    def layout_attrs(self, field: Field) -> dict[str, Any]:
        format_name, quality, lossless = field.encoding or (None, DEFAULT_QUALITY, False)
        return self.layout.attrs(baseline_jpeg=field.baseline_jpeg, format=format_name, quality=quality,
                                 lossless=lossless)

    def from_attrs(self, attrs: dict[str, Any]) -> Field:
        encode = attrs.get("encode") or {}
        return Field.images(bool(encode.get("baseline_jpeg", False)),
                            None if encode.get("format") in (None, "PNG") else encode["format"],
                            int(encode.get("quality", DEFAULT_QUALITY)),
                            bool(encode.get("lossless", False)) and encode.get("quality") != 100)

    def describe(self, field: Field) -> str:
        return "an image (encoded bytes, a pathlib.Path, a uint8 array or a PIL image)"

    def check_values(self, name: str, field: Field, values: Any, first: int) -> Any:
        for k, value in enumerate(values):
            if value is None or isinstance(value, (str, Mapping)):
                raise TypeError(f"row {first + k}, field {name!r}: expected {field.describe()}, got "
                                f"{type(value).__name__}")
        return values

    def pads(self) -> bool:
        return True

    def read_batch(self, view: View, positions: np.ndarray[Any, Any], pad_value: Any, decoder: Any) -> Any:
        assert isinstance(view, ImagesView)
        return decode_batch(view, positions, decoder, pad_value=pad_value)

    def to_arrow(self, container: Any, field: Field) -> Any:
        import pyarrow as pa  # the encoded images as large_binary over the mapped data and offsets (no copy)

        view = container._view
        offsets = view.offsets
        if len(offsets) and (offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] > view.size):
            raise view.corrupt("(to_arrow)")
        return pa.Array.from_buffers(pa.large_binary(), view.length,
                                     [None, pa.py_buffer(offsets), pa.py_buffer(view.values)])


register_feature(RECORDS_FEATURE)
register_field_kind(ImagesField())
