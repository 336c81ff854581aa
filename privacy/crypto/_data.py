"""Per-user data keys and the data ciphertext (format ``0x11``, see :mod:`privacy.crypto`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.crypto._common import (
    BODY,
    HEADER,
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    DecryptionError,
    as_bytes,
    check_key,
    check_nonce,
    check_text,
    check_version,
    derive,
    lp,
)

__all__ = ["Aad", "DataKey"]

_FORMAT = 0x11
_MIN_SIZE = BODY + TAG_SIZE
_AEAD_INFO = b"matchsvc/crypto/v1/aead"
_PRF_INFO = b"matchsvc/crypto/v1/prf"


@dataclass(frozen=True, slots=True)
class Aad:
    """Where a ciphertext belongs; binding it stops a blob being replayed into another cell.

    All four fields must be non-empty text. They are authenticated, not encrypted.
    """

    table: str
    column: str
    user_id: str
    row: str

    def __post_init__(self) -> None:
        check_text(self.table, "table")
        check_text(self.column, "column")
        check_text(self.user_id, "user_id")
        check_text(self.row, "row")

    def _encode(self) -> bytes:
        return _column_prefix(self.table, self.column, self.user_id) + lp(self.row)


def _column_prefix(table: str, column: str, user_id: str) -> bytes:
    """The encoded AAD up to its row: shared by every cell of one user's column."""
    return lp(table) + lp(column) + lp(user_id)


def _check_aad(aad: object) -> Aad:
    if not isinstance(aad, Aad):
        raise TypeError(f"aad must be an Aad, got {type(aad).__name__}")
    return aad


class DataKey:
    """One user's data-encryption key (32 bytes) and its generation ``version`` (>= 1).

    Destroying this key is what erases the user: it seals their rows and seeds their
    deterministic noise (:meth:`prf`), so both become unrecoverable at once.
    """

    __slots__ = ("_aead", "_key", "_version")

    def __init__(self, key: bytes, *, version: int) -> None:
        self._key = check_key(key, "key")
        self._version = check_version(version, "version")
        self._aead = AESGCM(derive(self._key, _AEAD_INFO))

    @classmethod
    def generate(cls, *, version: int = 1) -> DataKey:
        """Return a fresh random key from the OS CSPRNG."""
        return cls(os.urandom(KEY_SIZE), version=version)

    @property
    def version(self) -> int:
        """The DEK generation; it is bound into every ciphertext this key produces."""
        return self._version

    def encrypt(self, plaintext: bytes | bytearray | memoryview, *, aad: Aad) -> bytes:
        """Seal ``plaintext`` for the cell named by ``aad`` under a fresh random nonce."""
        return _encrypt_with_nonce(self, plaintext, aad=aad, nonce=os.urandom(NONCE_SIZE))

    def decrypt(self, blob: bytes | bytearray | memoryview, *, aad: Aad) -> bytes:
        """Open a blob that :meth:`encrypt` sealed under this key, version and ``aad``.

        Raises
        ------
        DecryptionError
            On any failure: wrong key, version or AAD, tampering, truncation, unknown format.
        """
        data = as_bytes(blob, "blob")
        return self._open(data, _check_aad(aad)._encode())

    def decrypt_column(
        self,
        blobs: Sequence[bytes | bytearray | memoryview],
        *,
        table: str,
        column: str,
        user_id: str,
        rows: Sequence[str],
    ) -> list[bytes]:
        """:meth:`decrypt` of each ``blobs[i]`` with ``Aad(table, column, user_id, rows[i])``.

        The same checks and result as one :meth:`decrypt` per blob, with the AAD's shared part
        checked and encoded once: for a one-byte value that was most of the cost (a user's refit
        opens every label they stored).

        Raises
        ------
        DecryptionError
            If any blob fails, as :meth:`decrypt` would.
        """
        if len(blobs) != len(rows):
            raise ValueError(f"got {len(blobs)} blobs for {len(rows)} rows")
        prefix = _column_prefix(
            check_text(table, "table"), check_text(column, "column"), check_text(user_id, "user_id")
        )
        return [
            self._open(as_bytes(blob, "blob"), prefix + lp(check_text(row, "row")))
            for blob, row in zip(blobs, rows, strict=True)
        ]

    def _open(self, data: bytes, aad: bytes) -> bytes:
        """Check the header of ``data`` and open it with the encoded AAD (without the header)."""
        if len(data) < _MIN_SIZE:
            raise DecryptionError
        fmt, version = HEADER.unpack_from(data)
        if fmt != _FORMAT or version != self._version:
            raise DecryptionError
        try:
            return self._aead.decrypt(data[HEADER.size : BODY], data[BODY:], data[: HEADER.size] + aad)
        except InvalidTag:
            raise DecryptionError from None

    def prf(self, purpose: str, message: bytes | bytearray | memoryview) -> bytes:
        """Return 32 pseudorandom bytes: HMAC-SHA256 of ``message`` under a ``purpose`` subkey.

        Deterministic per (key, purpose, message), so per-user noise is re-derived rather than
        stored, and dies with the key. Distinct purposes get independent HKDF subkeys.
        """
        check_text(purpose, "purpose")
        mac = hmac.HMAC(derive(self._key, _PRF_INFO + lp(purpose)), hashes.SHA256())
        mac.update(as_bytes(message, "message"))
        return mac.finalize()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return self._version == other._version and constant_time.bytes_eq(self._key, other._key)

    __hash__ = None  # type: ignore[assignment]  # equal keys must not be usable as dict keys

    def __repr__(self) -> str:
        return f"DataKey(version={self._version})"


def _encrypt_with_nonce(
    key: DataKey, plaintext: bytes | bytearray | memoryview, *, aad: Aad, nonce: bytes
) -> bytes:
    """Encrypt with a caller-chosen nonce; for known-answer tests only, never reuse a nonce."""
    data = as_bytes(plaintext, "plaintext")
    _check_aad(aad)
    check_nonce(nonce)
    header = HEADER.pack(_FORMAT, key.version)
    return header + nonce + key._aead.encrypt(nonce, data, header + aad._encode())
