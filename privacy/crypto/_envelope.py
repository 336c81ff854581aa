"""Wrapping data keys under the key ring (format ``0x21``, see :mod:`privacy.crypto`)."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag

from privacy.crypto._common import (
    BODY,
    HEADER,
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    U32,
    DecryptionError,
    as_bytes,
    check_nonce,
    check_text,
    lp,
)
from privacy.crypto._data import DataKey
from privacy.crypto._keyring import KeyRing

__all__ = ["rewrap_data_key", "unwrap_data_key", "wrap_data_key", "wrapped_key_version"]

_FORMAT = 0x21
_SIZE = BODY + KEY_SIZE + U32.size + TAG_SIZE


def _check_ring(ring: object) -> KeyRing:
    if not isinstance(ring, KeyRing):
        raise TypeError(f"ring must be a KeyRing, got {type(ring).__name__}")
    return ring


def wrap_data_key(ring: KeyRing, key: DataKey, *, user_id: str) -> bytes:
    """Wrap ``key`` for ``user_id`` under the ring's current KEK; the result is 69 bytes."""
    return _wrap_with_nonce(ring, key, user_id=user_id, nonce=os.urandom(NONCE_SIZE))


def _wrap_with_nonce(ring: KeyRing, key: DataKey, *, user_id: str, nonce: bytes) -> bytes:
    """Wrap with a caller-chosen nonce; for known-answer tests only, never reuse a nonce."""
    _check_ring(ring)
    if not isinstance(key, DataKey):
        raise TypeError(f"key must be a DataKey, got {type(key).__name__}")
    check_text(user_id, "user_id")
    check_nonce(nonce)
    header = HEADER.pack(_FORMAT, ring.current)
    sealed = key._key + U32.pack(key.version)
    return header + nonce + ring._aead(ring.current).encrypt(nonce, sealed, header + lp(user_id))


def wrapped_key_version(blob: bytes | bytearray | memoryview) -> int:
    """Return the KEK version ``blob`` is wrapped under, without decrypting it.

    A rotation job uses this to find the wrapped keys that still need :func:`rewrap_data_key`.

    Raises
    ------
    DecryptionError
        If ``blob`` is not a well-formed wrapped key.
    """
    data = as_bytes(blob, "blob")
    if len(data) != _SIZE:
        raise DecryptionError
    fmt, version = HEADER.unpack_from(data)
    if fmt != _FORMAT or version < 1:
        raise DecryptionError
    return int(version)


def unwrap_data_key(
    ring: KeyRing, blob: bytes | bytearray | memoryview, *, user_id: str
) -> DataKey:
    """Recover the data key wrapped for ``user_id`` under any active version of ``ring``.

    Raises
    ------
    DecryptionError
        On any failure: another user, a retired or unknown KEK version, tampering, truncation.
    """
    _check_ring(ring)
    check_text(user_id, "user_id")
    aead = ring._aead(wrapped_key_version(blob))
    data = bytes(blob)
    header = data[: HEADER.size]
    try:
        sealed = aead.decrypt(data[HEADER.size : BODY], data[BODY:], header + lp(user_id))
    except InvalidTag:
        raise DecryptionError from None
    (version,) = U32.unpack_from(sealed, KEY_SIZE)
    return DataKey(sealed[:KEY_SIZE], version=version)


def rewrap_data_key(ring: KeyRing, blob: bytes | bytearray | memoryview, *, user_id: str) -> bytes:
    """Unwrap under whatever version ``blob`` has and wrap again under ``ring.current``.

    Rotation only ever rewrites these 69-byte blobs; data ciphertexts stay as they are.
    """
    return wrap_data_key(ring, unwrap_data_key(ring, blob, user_id=user_id), user_id=user_id)
