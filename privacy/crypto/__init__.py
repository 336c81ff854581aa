"""Encryption at rest: per-user data keys (DEKs) wrapped by a versioned key ring of KEKs.

Every user's rows are sealed under that user's own 32-byte DEK, so destroying the one wrapped
DEK crypto-shreds the user. The DEK is stored only wrapped by a key-encryption key (KEK) from a
:class:`KeyRing`, so KEK rotation re-wraps 69-byte blobs and never re-encrypts data. There are no
knobs: AES-256-GCM with a fresh random 96-bit nonce per message, and every failure to decrypt or
unwrap a bytes blob raises a bare :class:`DecryptionError` (no message, no chained cause), so
nothing tells an attacker *why* a blob was rejected. Passing something that is not bytes at all is
a programming error and raises ``TypeError``; bad configuration (key ring JSON, key sizes,
versions) raises ``ValueError`` with a message that never quotes key material.

Key separation: the DEK is never used directly. ``HKDF-SHA256(ikm=DEK, salt=None, info)`` gives
the AES key (``info = b"matchsvc/crypto/v1/aead"``) and one PRF key per purpose
(``info = b"matchsvc/crypto/v1/prf" || LP(purpose)``). ``LP(s) = u32be(len(utf8(s))) || utf8(s)``
makes tuple encodings injective: ``("ab", "c")`` and ``("a", "bc")`` encode differently. KEKs are
used directly, for wrapping only. In a format byte the high nibble names the blob kind and the
low nibble its format version, so a future format gets a new byte and old blobs stay readable.

Data ciphertext, format byte ``0x11``, ``33 + len(plaintext)`` bytes::

    offset  size   field
    0       1      format byte 0x11
    1       4      DEK version, u32 big-endian, >= 1
    5       12     nonce, random
    17      n + 16 AES-256-GCM(AES key derived from the DEK, plaintext (n)), then the 16-byte tag
    AAD = blob[0:5] || LP(table) || LP(column) || LP(user_id) || LP(row)

Wrapped DEK, format byte ``0x21``, exactly 69 bytes::

    offset  size   field
    0       1      format byte 0x21
    1       4      KEK version, u32 big-endian, >= 1 (readable without the key)
    5       12     nonce, random
    17      52     AES-256-GCM(KEK, DEK (32) || DEK version u32 big-endian (4)), then the tag
    AAD = blob[0:5] || LP(user_id)

The DEK version travels inside the sealed plaintext, which GCM authenticates exactly as it does
AAD. Random 96-bit nonces are safe up to 2**32 messages per key (NIST SP 800-38D); a DEK seals one
user's rows and a KEK one wrap per user per rotation, far below that bound.
"""

from privacy.crypto._common import DecryptionError
from privacy.crypto._data import Aad, DataKey
from privacy.crypto._envelope import (
    rewrap_data_key,
    unwrap_data_key,
    wrap_data_key,
    wrapped_key_version,
)
from privacy.crypto._keyring import KeyRing

__all__ = [
    "Aad",
    "DataKey",
    "DecryptionError",
    "KeyRing",
    "rewrap_data_key",
    "unwrap_data_key",
    "wrap_data_key",
    "wrapped_key_version",
]
