"""User data keys: created at registration, unwrapped per request, re-wrapped by rotation."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from matchsvc.keys import KeyRingStore, UserCipher
from matchsvc.repositories import keys as keys_repo
from matchsvc.services import audit
from privacy.crypto import DataKey, rewrap_data_key, wrap_data_key

__all__ = ["RotationReport", "create_user_key", "open_cipher", "retire_old_keks", "rotate_keys", "user_cipher"]


def create_user_key(session: Session, *, keys: KeyRingStore, user_id: uuid.UUID) -> None:
    """A fresh random data key for a new user, stored only wrapped (in the caller's transaction).

    Wraps under the ring as the file holds it now, with the ring's shared lock held until the
    caller commits: a rotation or retirement in any process waits for this registration, and a
    registration that starts after one sees the new ring. A key can never land under a retired KEK.
    """
    keys_repo.lock_key_ring(session, exclusive=False)
    ring = keys.refresh()
    wrapped = wrap_data_key(ring, DataKey.generate(), user_id=str(user_id))
    keys_repo.add_user_key(session, user_id=user_id, wrapped_key=wrapped, kek_version=ring.current)


def user_cipher(session: Session, *, keys: KeyRingStore, user_id: uuid.UUID, for_update: bool = False) -> UserCipher:
    """The user's cipher. ``for_update`` locks the key row: one writer per user at a time."""
    return open_cipher(keys=keys, user_id=user_id, wrapped=keys_repo.get_wrapped_key(session, user_id, for_update=for_update))


def open_cipher(*, keys: KeyRingStore, user_id: uuid.UUID, wrapped: bytes | None) -> UserCipher:
    """The cipher of a wrapped data key already read, e.g. by a batch reader fetching keys with
    their rows (``LookupError`` when there is none)."""
    if wrapped is None:
        raise LookupError(f"user {user_id} has no data key")
    return UserCipher(key=keys.unwrap(wrapped, user_id=user_id), user_id=user_id)


@dataclass(frozen=True)
class RotationReport:
    kek_version: int
    rewrapped: int


def rotate_keys(sessions: sessionmaker[Session], *, keys: KeyRingStore, batch_size: int = 500) -> RotationReport:
    """Add a KEK version, then re-wrap every data key under it, in short transactions.

    Safe while the service runs: each batch locks only its own rows (others are skipped and picked
    up by the next batch), and readers unwrap with whichever version a key currently has.
    The completed rotation is written to the audit log (``key_rotation``). The ring file is
    changed under the key ring's exclusive lock, so rotations in two processes cannot overwrite
    each other's new version and no registration wraps under a ring that is being replaced.
    """
    with sessions() as session:
        keys_repo.lock_key_ring(session, exclusive=True)
        version = keys.rotate()
        session.commit()
    rewrapped = 0
    while True:
        with sessions() as session:
            stale = keys_repo.lock_stale_keys(session, current_version=version, limit=batch_size)
            if not stale:
                if keys_repo.count_stale_keys(session, current_version=version) == 0:
                    audit.record(
                        session,
                        action=audit.AuditAction.key_rotation,
                        actor=None,
                        subject_user_id=None,
                        details={"kek_version": version, "rewrapped": rewrapped},
                    )
                    session.commit()
                    return RotationReport(kek_version=version, rewrapped=rewrapped)
                time.sleep(0.05)  # the rest are locked by in-flight requests; they finish in milliseconds
                continue
            for row in stale:
                blob = rewrap_data_key(keys.ring, row.wrapped_key, user_id=str(row.user_id))
                keys_repo.replace_wrapped_key(session, user_id=row.user_id, wrapped_key=blob, kek_version=version)
            session.commit()
            rewrapped += len(stale)


def retire_old_keks(sessions: sessionmaker[Session], *, keys: KeyRingStore) -> tuple[int, ...]:
    """Destroy every KEK version but the current one, never one a live data key is wrapped under.

    Under the key ring's exclusive lock (no process can wrap meanwhile): keys still under an older
    version (a rotation elsewhere not finished yet) are re-wrapped and committed first; then, in
    the transaction that retires, the count of keys under any other version is checked to be zero.
    Returns the retired versions.
    """
    while True:
        with sessions() as session:
            keys_repo.lock_key_ring(session, exclusive=True)
            keys.reload()
            current = keys.ring.current
            if keys_repo.count_keys_not_under(session, version=current) == 0:
                retired = keys.retire_all_but_current()
                session.commit()
                return retired
            for row in keys_repo.lock_keys_not_under(session, version=current):
                blob = rewrap_data_key(keys.ring, row.wrapped_key, user_id=str(row.user_id))
                keys_repo.replace_wrapped_key(session, user_id=row.user_id, wrapped_key=blob, kek_version=current)
            session.commit()
