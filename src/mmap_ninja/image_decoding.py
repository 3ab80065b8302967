"""``mmap_ninja.image_decoding``, kept as an import path (earlier releases, the documentation, pickles): it re-exports
`mmap_ninja.kinds.image_decoding`, where the code lives (ARCHITECTURE.md, "Layers as folders")."""

from mmap_ninja.kinds.image_decoding import (
    DEFAULT_DECODER,
    Decoder,
    check_draft,
    decode_resized_crop,
    draft_scale,
    drafted_size,
    drafted_sizes,
    gray_like_pillow,
)

__all__ = [
    "DEFAULT_DECODER",
    "Decoder",
    "check_draft",
    "decode_resized_crop",
    "draft_scale",
    "drafted_size",
    "drafted_sizes",
    "gray_like_pillow",
]
