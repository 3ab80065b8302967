"""Per-sample codecs: each sample's bytes are compressed on their own, so a random read decompresses one sample.

A codec is chosen when a map is created (``codec="zstd"``, ``codec=Zstd(level=9, dictionary_size=0)``,
``codec="lz4"``) and kept by every later write. The map's header records it in the kind's attributes and lists
its feature name (``codec.zstd``) in ``requires``, so a reader that does not know it refuses the map instead of
returning compressed bytes. The compression libraries are optional extras (``mmap_ninja[zstd]``,
``mmap_ninja[lz4]``), imported only when a codec is used.

Decompressor objects are not shared between threads: every thread gets its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Callable, ClassVar, Optional

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.storage.format import register_feature

__all__ = [
    "CODECS", "Codec", "Lz4", "Zstd", "codec_from_option", "codec_from_spec", "compressor_for", "register_codec",
]

CODECS: dict[str, type[Codec]] = {}
"""Every codec by name."""

Decompress = Callable[[Any], bytes]


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Make a codec known by its ``name`` (and its feature name known to header readers)."""
    CODECS[cls.name] = cls
    register_feature(cls.feature())
    return cls


class Codec:
    """How the bytes of one sample are compressed. Subclasses set `name` and implement the methods."""

    name: ClassVar[str]
    spec_defaults: ClassVar[dict[str, Any]] = {}
    """What a parameter missing from a header's spec means (maps written before the parameter existed)."""
    train_samples: int = 0  # how many samples a dictionary is trained on
    train_window: int = 0  # how many samples of the first batches a builder gathers to draw them from
    train_window_bytes: int = 64 << 20  # ... or fewer, if they hold more bytes than this

    def trains(self) -> bool:
        """Whether `train` makes a dictionary from sample bytes (then a builder gathers samples for it)."""
        return False

    @classmethod
    def feature(cls) -> str:
        return f"codec.{cls.name}"

    def spec(self) -> dict[str, Any]:
        """The JSON the header keeps (``name`` plus the parameters)."""
        return {"name": self.name}

    def train(self, samples: Sequence[bytes]) -> Optional[bytes]:
        """A dictionary trained on ``samples``, or None (no dictionary, or too little data to train on)."""
        return None

    def compressor(self, dictionary: Optional[bytes]) -> Callable[[Any], bytes]:
        raise NotImplementedError

    def decompressor(self, dictionary: Optional[bytes]) -> Decompress:
        """A function that decompresses one sample; safe to call from any thread."""
        raise NotImplementedError


def _need(module: str, extra: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ImportError(f"this map is compressed with {extra}, which needs the {module!r} package: "
                          f"pip install 'mmap_ninja[{extra}]'") from None


def _per_thread(make: Callable[[], Any], method: str) -> Decompress:
    """A function calling ``make()``'s ``method`` with an object made once per thread."""
    local = threading.local()

    def call(data: Any) -> bytes:
        try:
            obj = local.obj
        except AttributeError:
            obj = local.obj = make()
        result: bytes = getattr(obj, method)(data)
        return result

    return call


@register_codec
class Zstd(Codec):
    """Zstandard at ``level`` (1-22; 3 is zstd's default). With ``dictionary_size`` > 0 (bytes; default 112,640 as
    zstd's own default), a dictionary is trained on up to ``train_samples`` samples gathered from the first
    batches before any compressed data is written: it lifts the ratio of small samples such as documents (measured
    on our text corpus: 2.59 without, 3.14 with). A builder gathers up to ``train_window`` samples (at most 64 MiB)
    from its first batches and trains on ``train_samples`` of them drawn at random, so a dictionary of a sorted
    dataset does not learn its first category only. Training needs enough data; when it fails the map is
    compressed without a dictionary."""

    name: ClassVar[str] = "zstd"
    spec_defaults: ClassVar[dict[str, Any]] = {"checksum": False}  # maps written before frames had checksums

    def __init__(self, level: int = 3, dictionary_size: int = 112_640, train_samples: int = 2_000,
                 train_window: int = 20_000, checksum: bool = True):
        if not isinstance(level, int) or not -131072 <= level <= 22:
            raise ValueError(f"zstd level must be an integer up to 22, got {level!r}")
        if not isinstance(dictionary_size, int) or dictionary_size < 0:
            raise ValueError(f"dictionary_size must be a non-negative number of bytes, got {dictionary_size!r}")
        if not isinstance(checksum, bool):
            raise ValueError(f"checksum must be True or False, got {checksum!r}")
        self.level = level
        self.checksum = checksum
        self.dictionary_size = dictionary_size
        self.train_samples = train_samples
        self.train_window = train_window

    def trains(self) -> bool:
        return self.dictionary_size > 0

    def spec(self) -> dict[str, Any]:
        spec = {"name": self.name, "level": self.level, "dictionary_size": self.dictionary_size,
                "train_samples": self.train_samples, "train_window": self.train_window}
        if self.checksum:
            spec["checksum"] = True  # each frame ends with zstd's content checksum (any zstd decoder checks it)
        return spec

    def train(self, samples: Sequence[bytes]) -> Optional[bytes]:
        zstd = _need("zstandard", "zstd")
        usable = [s for s in samples if s]
        if not self.dictionary_size or len(usable) < 8:
            return None
        try:
            trained = zstd.train_dictionary(self.dictionary_size, usable, level=self.level)
        except zstd.ZstdError:  # too few or too uniform samples: compress without a dictionary
            return None
        data: bytes = trained.as_bytes()
        return data

    def compressor(self, dictionary: Optional[bytes]) -> Callable[[Any], bytes]:
        zstd = _need("zstandard", "zstd")
        dict_data = zstd.ZstdCompressionDict(dictionary) if dictionary else None
        compressor = zstd.ZstdCompressor(level=self.level, dict_data=dict_data, write_content_size=True,
                                         write_checksum=self.checksum)
        result: Callable[[Any], bytes] = compressor.compress
        return result

    def decompressor(self, dictionary: Optional[bytes]) -> Decompress:
        zstd = _need("zstandard", "zstd")
        dict_data = zstd.ZstdCompressionDict(dictionary) if dictionary else None
        decompress = _per_thread(lambda: zstd.ZstdDecompressor(dict_data=dict_data), "decompress")
        content_size, error = zstd.frame_content_size, zstd.ZstdError

        def checked(data: Any) -> bytes:
            try:
                size = content_size(data)
            except error as e:
                raise CorruptMapError(f"its zstd frame header is damaged ({e})") from None
            if size < 0 or size > max_output(len(data), _ZSTD_MAX_RATIO):
                raise CorruptMapError(f"its zstd frame declares {size if size >= 0 else 'no'} content size, more than "
                                      f"{len(data)} compressed bytes can hold (the frame is damaged)")
            try:
                return decompress(data)
            except error as e:
                raise CorruptMapError(f"its zstd frame does not decompress ({e})") from None

        return checked


_ZSTD_MAX_RATIO = 1 << 15  # an RLE block: 4 bytes (3 of header) give at most 128 KiB
_LZ4_MAX_RATIO = 255  # LZ4's format: a match copies at most 255 bytes per byte of its length


def max_output(compressed: int, ratio: int) -> int:
    """The most bytes ``compressed`` bytes of a frame can decompress to under a codec's format (``ratio``): a
    frame whose header declares more is damaged, and is refused before anything is allocated for it."""
    return compressed * ratio + 64


@register_codec
class Lz4(Codec):
    """LZ4 block compression: a lower ratio than zstd (1.8 on our text corpus) but reads about 2x faster."""

    name: ClassVar[str] = "lz4"

    def compressor(self, dictionary: Optional[bytes]) -> Callable[[Any], bytes]:
        block = _need("lz4.block", "lz4")

        def compress(data: Any) -> bytes:
            result: bytes = block.compress(data, store_size=True)
            return result

        return compress

    def decompressor(self, dictionary: Optional[bytes]) -> Decompress:
        block = _need("lz4.block", "lz4")

        def decompress(data: Any) -> bytes:
            view = memoryview(data)
            size = int.from_bytes(view[:4], "little", signed=True) if len(view) >= 4 else -1
            if size < 0 or size > max_output(len(view), _LZ4_MAX_RATIO):
                raise CorruptMapError(f"its LZ4 block declares {size} bytes, more than {len(view)} compressed bytes "
                                      f"can hold (the block is damaged)")
            try:
                result: bytes = block.decompress(data)
            except block.LZ4BlockError as e:
                raise CorruptMapError(f"its LZ4 block does not decompress ({e})") from None
            return result

        return decompress


def codec_from_option(option: str | Codec | None) -> Optional[Codec]:
    """The codec a user asked for: None, a codec name, or a `Codec` instance."""
    if option is None or isinstance(option, Codec):
        return option
    if isinstance(option, str) and option in CODECS:
        return CODECS[option]()
    raise ValueError(f"unknown codec {option!r}; known codecs: {', '.join(sorted(CODECS))}")


def codec_from_spec(spec: dict[str, Any]) -> Codec:
    """The codec a header's attributes describe."""
    params = dict(spec)
    cls = CODECS[params.pop("name")]
    return cls(**{**cls.spec_defaults, **params})


@lru_cache(maxsize=16)
def _cached_compressor(codec_json: str, dictionary: bytes) -> Callable[[Any], bytes]:
    return codec_from_spec(json.loads(codec_json)).compressor(dictionary or None)


def compressor_for(spec: dict[str, Any], dictionary: bytes) -> Callable[[Any], bytes]:
    """A compressor for the codec ``spec`` with ``dictionary`` (made once and reused: zstd prepares its
    dictionary for every compressor)."""
    return _cached_compressor(json.dumps(spec, sort_keys=True), dictionary)
