"""Keys at rest: the key ring (KEKs) and each user's data key (DEK), and sealing values with them.

* The key ring comes from ``MATCHSVC_KEYRING`` (JSON), ``MATCHSVC_KEYRING_FILE``, or in development a
  file generated under the data directory (with a warning).
* Every user gets a random data key at registration, stored only wrapped by the current KEK
  (``user_keys``). Deleting that row makes every ciphertext of the user unreadable, backups included.
* Rotation (``matchsvc keys rotate``) adds a KEK version to the ring file and re-wraps data keys;
  data ciphertexts are untouched. A running service that meets a key wrapped under a version it has
  not loaded yet re-reads the ring file, so rotation needs no restart.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from matchsvc.secret_files import create_once, write_private
from privacy.crypto import Aad, DataKey, DecryptionError, KeyRing, unwrap_data_key, wrapped_key_version

__all__ = ["KeyRingStore", "UserCipher"]

log = structlog.get_logger(__name__)


class KeyRingStore:
    """The process's view of the key ring, reloadable from its file."""

    def __init__(self, *, path: Path | None = None, json_text: str | None = None) -> None:
        if (path is None) == (json_text is None):
            raise ValueError("exactly one of path and json_text is required")
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._ring = KeyRing.from_json(json_text) if json_text is not None else self._read()

    @classmethod
    def open_or_create(cls, path: Path) -> KeyRingStore:
        """Development default: generate a ring file on first start (one ring even if processes race)."""
        _, created = create_once(path, lambda: KeyRing.generate().to_json().encode())
        if created:
            log.warning("generated_development_keyring", path=str(path), hint="set MATCHSVC_KEYRING_FILE in production")
        return cls(path=path)

    @classmethod
    def create(cls, path: Path) -> KeyRingStore:
        """Production provisioning (``matchsvc keys init``): a new ring file, never over an existing one.

        Overwriting a ring would make every stored data key undecryptable, so an existing file is an error.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        _, created = create_once(path, lambda: KeyRing.generate().to_json().encode())
        if not created:
            raise FileExistsError(f"a key ring already exists at {path}")
        return cls(path=path)

    def _read(self) -> KeyRing:
        """The ring in the file now; remembers which file that was (every write replaces it)."""
        assert self._path is not None
        with self._path.open("rb") as handle:
            status = os.fstat(handle.fileno())
            ring = KeyRing.from_json(handle.read().decode())
        self._stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        return ring

    @property
    def ring(self) -> KeyRing:
        return self._ring

    @property
    def rotatable(self) -> bool:
        """True for a file-backed ring (rotation and retirement can be persisted)."""
        return self._path is not None

    def reload(self) -> None:
        """Pick up versions added by a rotation in another process (no-op without a file)."""
        if self._path is not None:
            with self._lock:
                self._ring = self._read()

    def refresh(self) -> KeyRing:
        """The current ring, re-read only when another process replaced the file since we read it.

        Callers that wrap data keys hold the key ring's shared database lock
        (:func:`matchsvc.repositories.keys.lock_key_ring`) first, so no rotation or retirement
        can slip in between this read and their commit.
        """
        if self._path is not None:
            status = self._path.stat()
            if (status.st_ino, status.st_mtime_ns, status.st_size) != self._stamp:
                self.reload()
        return self._ring

    def rotate(self) -> int:
        """Add a KEK version, make it current and persist it atomically; returns the new version."""
        if self._path is None:
            raise RuntimeError("key rotation needs MATCHSVC_KEYRING_FILE: an environment key ring cannot be updated")
        with self._lock:
            ring = self._read()
            version = ring.rotate()
            write_private(self._path, ring.to_json().encode())
            self._ring = ring
        return version

    def retire_all_but_current(self) -> tuple[int, ...]:
        """Destroy every non-current KEK (persisted); returns the retired versions.

        Only safe once every live data key is wrapped under the current version, with the key ring
        locked against wrapping: call :func:`matchsvc.services.keys.retire_old_keks`. Afterwards
        any copy of an older wrapped key (a backup) can never be unwrapped again.
        """
        if self._path is None:
            raise RuntimeError("retiring keys needs MATCHSVC_KEYRING_FILE: an environment key ring cannot be updated")
        with self._lock:
            ring = self._read()
            old = tuple(v for v in ring.versions if v != ring.current)
            for version in old:
                ring.retire(version)
            write_private(self._path, ring.to_json().encode())
            self._ring = ring
        return old

    def unwrap(self, blob: bytes, *, user_id: uuid.UUID) -> DataKey:
        """Unwrap a user's data key, re-reading the ring once if it names a version we lack."""
        try:
            return unwrap_data_key(self._ring, blob, user_id=str(user_id))
        except DecryptionError:
            if wrapped_key_version(blob) in self._ring.versions:
                raise
        self.reload()
        return unwrap_data_key(self._ring, blob, user_id=str(user_id))


@dataclass(frozen=True)
class UserCipher:
    """Seals and opens one user's values; the AAD names where the value lives."""

    key: DataKey
    user_id: uuid.UUID

    def _aad(self, table: str, column: str, row: str) -> Aad:
        return Aad(table=table, column=column, user_id=str(self.user_id), row=row)

    def seal(self, plaintext: bytes, *, table: str, column: str, row: str) -> bytes:
        return self.key.encrypt(plaintext, aad=self._aad(table, column, row))

    def open(self, blob: bytes, *, table: str, column: str, row: str) -> bytes:
        return self.key.decrypt(blob, aad=self._aad(table, column, row))

    def open_column(self, blobs: Sequence[bytes], *, table: str, column: str, rows: Sequence[str]) -> list[bytes]:
        """:meth:`open` of each ``blobs[i]`` at row ``rows[i]`` of one column, in one call (much cheaper per value)."""
        return self.key.decrypt_column(blobs, table=table, column=column, user_id=str(self.user_id), rows=rows)
