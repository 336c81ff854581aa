"""Deterministic PNG encoding of rendered faces, for caches and ETags."""

from __future__ import annotations

import io

from PIL import Image

from engine._validation import InvalidInputError

__all__ = ["encode_png"]

#: zlib level 6 (the PNG default) costs about 3.5 ms for a 256x256 face against 1.6 ms at
#: level 1, for roughly 15 % smaller files in the cache; level 9 is 4x slower again.
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
