"""``mmap_ninja.codecs``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.codecs`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.kinds.codecs import (
    CODECS,
    Codec,
    Decompress,
    Lz4,
    Zstd,
    codec_from_option,
    codec_from_spec,
    compressor_for,
    max_output,
    register_codec,
)

__all__ = [
    "CODECS",
    "Codec",
    "CorruptMapError",
    "Decompress",
    "Lz4",
    "Zstd",
    "codec_from_option",
    "codec_from_spec",
    "compressor_for",
    "max_output",
    "register_codec",
]
