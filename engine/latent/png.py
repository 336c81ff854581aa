"""Deterministic PNG encoding of rendered faces, for caches and ETags."""

from __future__ import annotations

import io

from PIL import Image

from engine._validation import InvalidInputError

__all__ = ["encode_png"]

#: zlib level 6, the PNG default: smaller cached files for about twice level 1's time, where
#: level 9 costs several times more again (docs/benchmarks.md, "Engine tuning").
_COMPRESS_LEVEL = 6


def encode_png(image: Image.Image) -> bytes:
    """Encode the pixels of ``image`` as PNG bytes that depend on nothing else.

    Metadata carried in ``image.info`` (text, ICC profile, transparency key, EXIF) is not written,
    so equal pixels in the same mode give equal bytes for a given Pillow/zlib build: a content hash
    of the result is a valid cache key and ETag.

    Raises
    ------
    InvalidInputError
        If ``image`` is not a ``PIL.Image.Image``.
    """
    if not isinstance(image, Image.Image):
        raise InvalidInputError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    pixels = image.copy()
    pixels.info = {}
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", compress_level=_COMPRESS_LEVEL, optimize=False)
    return buffer.getvalue()
