"""Sizes, the one error, and the small checks shared by the data, key-ring and envelope layers."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "BODY",
    "HEADER",
    "KEY_SIZE",
    "MAX_VERSION",
    "NONCE_SIZE",
    "TAG_SIZE",
    "U32",
    "DecryptionError",
    "as_bytes",
    "check_key",
    "check_nonce",
    "check_text",
    "check_version",
    "derive",
    "lp",
]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_VERSION = 2**32 - 1
HEADER = struct.Struct(">BI")  # format byte, u32 version
U32 = struct.Struct(">I")
BODY = HEADER.size + NONCE_SIZE  # where the AES-GCM ciphertext starts


class DecryptionError(Exception):
    """A blob failed to decrypt or unwrap; deliberately carries no detail."""


def lp(text: str) -> bytes:
    """Prefix ``text`` with its UTF-8 length (u32 big-endian) so tuples encode injectively."""
    data = text.encode("utf-8")
    return U32.pack(len(data)) + data


def as_bytes(value: object, name: str) -> bytes:
    """Accept any bytes-like ``value`` (drivers may hand back memoryview) as immutable bytes."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def check_text(value: object, name: str) -> str:
    """Require non-empty text that UTF-8 can encode (no lone surrogates)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must be non-empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be encodable as UTF-8, got {value!r}") from None
    return value


def check_version(version: object, name: str) -> int:
    """Require an int (not bool) that fits the u32 version field and is at least 1."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise ValueError(f"{name} must be an integer in [1, {MAX_VERSION}], got {version!r}")
    return version


def check_key(key: object, name: str) -> bytes:
    """Require 32 raw key bytes; the message never echoes the value, which may be key material."""
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"{name} must be exactly {KEY_SIZE} bytes")
    return key


def check_nonce(nonce: bytes) -> bytes:
    """Require a 96-bit nonce (only the known-answer helpers take one from outside)."""
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    return nonce


def derive(ikm: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 with no salt: one independent 32-byte subkey per ``info`` label."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=info).derive(ikm)
