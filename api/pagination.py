"""Opaque cursors for keyset pagination. Clients must not parse them; we may change the format."""

from __future__ import annotations

import base64
import binascii

from matchsvc.errors import InvalidInput

__all__ = ["decode_cursor", "encode_cursor"]

_PREFIX = "v1:"


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{after_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_PREFIX):
            raise ValueError(text)
        value = int(text[len(_PREFIX) :])
        if not 0 <= value < 2**63:
            raise ValueError(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("cursor is not valid; use the next_cursor value of a previous page") from None
    return value
