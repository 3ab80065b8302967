"""Decoding an images map's encoded bytes (`Decoder`): simplejpeg for JPEGs, pyspng for the PNGs it decodes exactly
as Pillow does, Pillow for the rest, each imported at first use; and reading JPEGs at a reduced size in the DCT
domain (``draft``), for `ImagesMmap`'s read option and for crop decoding."""

from __future__ import annotations

import functools
import importlib
import io
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

__all__ = ["DEFAULT_DECODER", "Decoder", "check_draft", "decode_resized_crop", "draft_scale", "drafted_size",
           "drafted_sizes", "gray_like_pillow"]

# The Pillow mode an image is converted to for each number of channels.
_MODE_OF_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_SIMPLEJPEG_COLORSPACE = {1: "GRAY", 3: "RGB", 4: "RGBA"}
_CMYK_COLORSPACES = ("CMYK", "YCCK")


@functools.cache
def _optional(name: str) -> Any:
    """The module ``name``, or None when it is not installed (looked up once, at first use)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _simplejpeg() -> Any:
    return _optional("simplejpeg")


def _pyspng() -> Any:
    return _optional("pyspng")


_PNG_NATURAL_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> channels (3, palette, is left to Pillow)


def _spng_decodes(raw: Any, channels: int) -> bool:
    """Whether pyspng gives Pillow's exact pixels for this PNG read with ``channels``: 8 bits or less per sample,
    and either RGB out or the image's own channels (not a palette image's, whose transparency Pillow resolves
    its own way). Reads two bytes of the IHDR chunk."""
    if len(raw) < 26:
        return False
    bit_depth, colour_type = raw[24], raw[25]
    if bit_depth > 8:
        return False
    return channels == 3 or _PNG_NATURAL_CHANNELS.get(colour_type) == channels


def _pillow() -> Any:
    Image = _optional("PIL.Image")
    if Image is None:
        raise ImportError("ImagesMmap needs Pillow: pip install 'mmap_ninja[images]' (or pillow)")
    return Image


class Decoder:
    """Turns an image's encoded bytes into an ``(H, W, C)`` uint8 array. It holds only settings, so one decoder
    is safe to use from any number of threads (simplejpeg and Pillow both release the GIL while decoding).

    ``channels``: None keeps each image's own channels (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; palette images
    become RGB, or RGBA when they have transparency; CMYK becomes RGB); 1, 3 or 4 converts every image to gray,
    RGB or RGBA (alpha dropped or set to 255). ``fast``: simplejpeg's ``fastdct`` and ``fastupsample`` (faster,
    slightly different pixels; Pillow has no such flags). ``decoder``: ``"pillow"`` decodes everything with
    Pillow; ``"simplejpeg"`` requires simplejpeg for JPEGs; None takes simplejpeg for JPEGs and pyspng for the
    PNGs it decodes exactly as Pillow does, when they are installed. ``draft``: None decodes every pixel;
    ``(height, width)`` decodes each JPEG at the smallest DCT scale (1/2, 1/4 or 1/8, the scales libjpeg-turbo
    through simplejpeg and Pillow's ``draft`` both offer, so the shape does not depend on the library) whose output
    is still at least that size (see `drafted_size`); other formats decode fully.
    """

    def __init__(self, channels: Optional[int] = None, fast: bool = False, decoder: Optional[str] = None,
                 draft: Any = None):
        if channels is not None and (isinstance(channels, bool) or channels not in (1, 3, 4)):
            raise ValueError(f"channels must be None (each image's own), 1, 3 or 4, got {channels!r}")
        if not isinstance(fast, bool):
            raise TypeError(f"fast must be True or False, got {fast!r}")
        if decoder not in (None, "simplejpeg", "pillow"):
            raise ValueError(f"decoder must be None (the fastest installed), 'simplejpeg' or 'pillow', got {decoder!r}")
        if decoder == "simplejpeg" and _simplejpeg() is None:
            raise ImportError("decoder='simplejpeg' needs simplejpeg: pip install simplejpeg")
        self.channels = channels
        self.fast = fast
        self.requested = decoder
        self.draft = check_draft(draft)

    def with_draft(self, draft: Any) -> Decoder:
        """This decoder with another ``draft`` (None or False: full decoding)."""
        return Decoder(self.channels, self.fast, self.requested, None if draft is False else draft)

    def decoded_size(self, format_name: str, height: int, width: int) -> tuple[int, int]:
        """The ``(height, width)`` an image of this format and stored size decodes to with this decoder."""
        if self.draft is None or format_name != "JPEG":
            return height, width
        return drafted_size(height, width, self.draft)

    @property
    def _jpeg(self) -> Any:
        """simplejpeg when it decodes this decoder's JPEGs (imported at the first decode, not with the module)."""
        return None if self.requested == "pillow" else _simplejpeg()

    def __repr__(self) -> str:
        return (f"Decoder(channels={self.channels!r}, fast={self.fast!r}, decoder={self.requested!r}, "
                f"draft={self.draft!r})")

    @property
    def _png(self) -> Any:
        """pyspng when it decodes this decoder's PNGs."""
        return None if self.requested == "pillow" else _pyspng()

    def name_for(self, format_name: str) -> str:
        """Which library decodes images of this Pillow format name (``"JPEG"``, ``"PNG"``, ...); for PNG,
        ``"pyspng"`` means pyspng where it gives Pillow's exact pixels and Pillow for the rest."""
        if format_name == "JPEG" and self._jpeg is not None:
            return "simplejpeg"
        if format_name == "PNG" and self._png is not None:
            return "pyspng"
        return "Pillow"

    def decode(self, raw: Any, format_name: str, shape: tuple[int, int, int],
               out: Optional[np.ndarray[Any, Any]] = None) -> np.ndarray[Any, Any]:
        """Decode ``raw`` (bytes-like) into a new array of ``shape`` (the decoded shape the map recorded, with
        this decoder's channels and, for a JPEG, its draft size), or into ``out`` (a writable C-contiguous uint8
        array of that shape). A ValueError if the bytes cannot be decoded or decode to another shape."""
        channels = shape[2]
        # simplejpeg picks the smallest scale whose output is at least this: the draft size, reached at 1/s
        smallest = (shape[0], shape[1]) if self.draft is not None else (0, 0)
        jpeg = self._jpeg if format_name == "JPEG" else None
        if jpeg is not None and channels != 2:
            decoded: Optional[np.ndarray[Any, Any]] = None
            try:
                # CMYK JPEGs go to Pillow, whose conversion to RGB (with Adobe's inverted CMYK) is the reference.
                colorspace = jpeg.decode_jpeg_header(raw)[2]  # ~1 µs
                if colorspace in _CMYK_COLORSPACES:
                    pass
                elif channels == 1 and colorspace != "Gray":
                    # libjpeg's gray output is the luma plane; Pillow converts the RGB pixels (the reference)
                    decoded = gray_like_pillow(jpeg.decode_jpeg(raw, "RGB", fastdct=self.fast,
                                                                fastupsample=self.fast, min_height=smallest[0],
                                                                min_width=smallest[1]), out)
                else:
                    decoded = jpeg.decode_jpeg(raw, _SIMPLEJPEG_COLORSPACE[channels], fastdct=self.fast,
                                               fastupsample=self.fast, buffer=out, min_height=smallest[0],
                                               min_width=smallest[1])
            except ValueError:
                pass  # a JPEG simplejpeg calls damaged (it is strict): Pillow decodes it or says what is wrong
            if decoded is not None:
                if decoded.shape != shape:
                    raise ValueError(f"the image decodes to shape {decoded.shape}, expected {shape}")
                return decoded
        png = self._png if format_name == "PNG" else None
        if png is not None and _spng_decodes(raw, channels):
            try:
                pixels = png.load(bytes(raw), _MODE_OF_CHANNELS[channels])
            except RuntimeError:
                pixels = None  # libspng is strict (a bad CRC, ...): Pillow decodes it or says what is wrong
            if pixels is not None:
                pixels = pixels.reshape(shape) if pixels.size == np.prod(shape) else pixels
                if pixels.shape != shape:
                    raise ValueError(f"the image decodes to shape {pixels.shape}, expected {shape}")
                if out is None:
                    return pixels  # type: ignore[no-any-return]
                out[...] = pixels
                return out
        try:
            image = self._pillow_decode(raw, format_name, channels, self.draft)
        except _pillow().UnidentifiedImageError:  # its message names the BytesIO object, at its memory address
            raise ValueError(f"its bytes are of no image format Pillow knows ({bytes(memoryview(raw)[:8])!r}); the "
                             f"map may be damaged (mmap-ninja verify --deep says where)") from None
        except Exception as e:  # Pillow raises OSError, SyntaxError, ... for damaged data
            raise ValueError(f"{type(e).__name__}: {e}") from None
        if image.shape != shape:
            raise ValueError(f"the image decodes to shape {image.shape}, expected {shape}")
        if out is None:
            return image
        out[...] = image
        return out

    @staticmethod
    def _pillow_decode(raw: Any, format_name: str, channels: int, draft: Optional[tuple[int, int]] = None
                       ) -> np.ndarray[Any, Any]:
        Image = _pillow()
        with Image.open(io.BytesIO(raw), formats=(format_name,)) as image:
            if draft is not None and format_name == "JPEG":
                image.draft(None, (draft[1], draft[0]))  # the same scale rule as drafted_size
            target = _MODE_OF_CHANNELS[channels]
            if image.mode != target:
                if image.mode == "P" and "transparency" in image.info and target != "RGBA":
                    with image.convert("RGBA") as rgba:  # what Pillow asks for (it warns on a direct conversion)
                        converted = rgba.convert(target)
                else:
                    converted = image.convert(target)
                try:
                    return _to_array(converted)
                finally:
                    converted.close()
            return _to_array(image)


def gray_like_pillow(rgb: np.ndarray[Any, Any], out: Optional[np.ndarray[Any, Any]] = None
                     ) -> np.ndarray[Any, Any]:
    """An ``(H, W, 3)`` uint8 RGB array as ``(H, W, 1)`` gray, exactly as Pillow's ``convert("L")`` computes it
    (ITU-R 601-2 luma in 16-bit fixed point, rounded)."""
    weighted = rgb[:, :, 0].astype(np.uint32) * 19595
    weighted += rgb[:, :, 1].astype(np.uint32) * 38470
    weighted += rgb[:, :, 2].astype(np.uint32) * 7471
    weighted += 0x8000
    weighted >>= 16
    gray = out if out is not None else np.empty((*rgb.shape[:2], 1), np.uint8)
    gray[:, :, 0] = weighted
    return gray


def _to_array(image: Any) -> np.ndarray[Any, Any]:
    """A loaded PIL image as a new writable ``(H, W, C)`` uint8 array."""
    array = np.array(image)  # a copy: np.asarray would give a read-only array over Pillow's bytes
    return array if array.ndim == 3 else array.reshape(*array.shape, 1)




# ---------------------------------------------------------------------------------------------------- draft

def check_draft(draft: Any) -> Optional[tuple[int, int]]:
    """``draft`` as ``(height, width)`` of ints, or None; a ValueError for anything else."""
    if draft is None:
        return None
    if (not isinstance(draft, (tuple, list)) or len(draft) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in draft)):
        raise ValueError(f"draft must be None (full decoding) or (height, width), two positive integers, got "
                         f"{draft!r}")
    return int(draft[0]), int(draft[1])


def draft_scale(height: int, width: int, draft: tuple[int, int]) -> int:
    """The denominator s (8, 4, 2 or 1) of the smallest DCT scale 1/s at which an image of ``height`` x ``width``
    still covers ``draft``: the largest s with ``s * draft <= size`` on both sides (Pillow's ``draft`` rule)."""
    factor = min(height // draft[0], width // draft[1])
    for scale in (8, 4, 2):
        if factor >= scale:
            return scale
    return 1


def drafted_size(height: int, width: int, draft: tuple[int, int]) -> tuple[int, int]:
    """The ``(height, width)`` a JPEG of that size decodes to with ``draft``: each side divided by
    `draft_scale`, rounded up (libjpeg's rule), so never smaller than ``draft`` unless the image is."""
    scale = draft_scale(height, width, draft)
    return -(-height // scale), -(-width // scale)


def drafted_sizes(sizes: np.ndarray[Any, Any], draft: tuple[int, int]) -> np.ndarray[Any, Any]:
    """`drafted_size` of every row of an ``(n, 2)`` int64 array of ``(height, width)``, as a new array."""
    factor = np.minimum(sizes[:, 0] // draft[0], sizes[:, 1] // draft[1])
    scale = np.where(factor >= 8, 8, np.where(factor >= 4, 4, np.where(factor >= 2, 2, 1)))
    drafted: np.ndarray[Any, Any] = -(-sizes // scale[:, None])
    return drafted



def decode_resized_crop(raw: Any, format_name: str, stored_size: tuple[int, int], box: tuple[int, int, int, int],
                        size: tuple[int, int], decoder: Decoder,
                        out: Optional[np.ndarray[Any, Any]] = None) -> np.ndarray[Any, Any]:
    """The region ``box = (top, left, height, width)`` (in stored pixels) of an image of ``stored_size``, resized
    to ``size = (height, width)`` with Pillow's ``BILINEAR`` filter, as a new ``(*size, C)`` uint8 array (C: the
    decoder's channels, which must be set) or into ``out``.

    A JPEG is decoded at the smallest DCT scale 1/s (s in 1, 2, 4, 8) at which the crop still covers ``size``, and
    the crop's box is scaled with it (fractional edges are kept: Pillow's resize takes a float box), so only the
    pixels the resize needs are computed, at about 1/s² of a full decode's cost; other formats decode fully."""
    channels = decoder.channels
    if channels is None:
        raise ValueError("decode_resized_crop needs a decoder with channels set (1, 3 or 4)")
    height, width = stored_size
    top, left, crop_height, crop_width = box
    scale = 1
    if format_name == "JPEG":
        scale = draft_scale(crop_height, crop_width, size)
    if scale > 1:
        # a draft of (height // s, width // s) makes the image decode at exactly 1/s (see draft_scale)
        decoder = decoder.with_draft((height // scale, width // scale))
    decoded = decoder.decode(raw, format_name, (-(-height // scale), -(-width // scale), channels))
    Image = _pillow()
    mode = _MODE_OF_CHANNELS[channels]
    image = Image.frombuffer(mode, (decoded.shape[1], decoded.shape[0]), decoded, "raw", mode, 0, 1)
    # Cut the whole decoded pixels the crop touches (the filter then stops at the crop's edges, as after
    # torchvision's crop), and resize the crop's exact, possibly fractional, box within them.
    x0, y0 = left // scale, top // scale
    x1, y1 = -(-(left + crop_width) // scale), -(-(top + crop_height) // scale)
    with image.crop((x0, y0, x1, y1)) as cut:
        region = (left / scale - x0, top / scale - y0, (left + crop_width) / scale - x0,
                  (top + crop_height) / scale - y0)
        resized = cut.resize((size[1], size[0]), Image.BILINEAR, box=None if scale == 1 else region)
    pixels = np.asarray(resized).reshape(size[0], size[1], channels)
    if out is None:
        return pixels.copy() if not pixels.flags.writeable else pixels
    out[...] = pixels
    return out


DEFAULT_DECODER = Decoder()


_CHECK_CHUNK = 1 << 18
"""Images whose shapes and format codes `image_column_problems` checks at a time."""


def image_column_problems(columns: Mapping[str, np.ndarray[Any, Any]], attrs: dict[str, Any],
                          prefix: str = "") -> list[str]:
    """What an images map's columns must hold beside sound offsets (`ImagesLayout.check_columns`): 3 shape items
    and one format code per image, each shape a decoded ``(H, W, C)`` with ``H, W >= 1`` and ``C`` in 1..4, each
    format code one the header names. The pixels are encoded: only a decode (or a deep verify) checks those."""
    offsets, shapes, formats = (columns.get(prefix + name) for name in ("offsets", "shapes", "formats"))
    if offsets is None or shapes is None or formats is None:
        return []
    count = len(offsets) - 1
    if len(shapes) != 3 * count or len(formats) != count:
        return [f"{prefix}shapes.bin / {prefix}formats.bin are corrupt: {count} images but {len(shapes)} shape "
                f"items (expected {3 * count}) and {len(formats)} format codes"]
    named = len(attrs.get("formats") or ())
    for start in range(0, count, _CHECK_CHUNK):  # bounded memory whatever the map's length
        chunk = np.asarray(shapes[3 * start:3 * min(start + _CHECK_CHUNK, count)]).reshape(-1, 3)
        bad = np.flatnonzero((chunk[:, :2] < 1).any(axis=1) | (chunk[:, 2] < 1) | (chunk[:, 2] > 4))
        if len(bad):
            j = int(bad[0])
            return [f"{prefix}shapes.bin is corrupt: image {start + j} has the decoded shape "
                    f"{tuple(chunk[j].tolist())}; an image is (H, W, C) with H, W >= 1 and C in 1..4"]
        codes = np.asarray(formats[start:start + _CHECK_CHUNK])
        if len(codes) and int(codes.max()) >= named:
            j = int(np.flatnonzero(codes >= named)[0])
            return [f"{prefix}formats.bin is corrupt: image {start + j} has the format code {int(codes[j])}, but "
                    f"the header names {named} formats"]
    return []
