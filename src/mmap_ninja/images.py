"""``mmap_ninja.images``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.images`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.errors import CorruptMapError
from mmap_ninja.kinds.images import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_QUALITY,
    RECORDS_FEATURE,
    Decoder,
    ImagesField,
    ImagesLayout,
    ImagesMmap,
    ImagesView,
    as_baseline_jpeg,
    decode_batch,
    encode_sample,
    inspect_image,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_QUALITY",
    "RECORDS_FEATURE",
    "CorruptMapError",
    "Decoder",
    "ImagesField",
    "ImagesLayout",
    "ImagesMmap",
    "ImagesView",
    "as_baseline_jpeg",
    "decode_batch",
    "encode_sample",
    "inspect_image",
]
