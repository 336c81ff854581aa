"""Recording ratings. This is the write path every privacy mechanism sits on.

A rating request is idempotent twice over: per ``Idempotency-Key`` (a retried request replays the
first response and stores nothing new) and per (user, face) (rating a face again replaces the
previous rating rather than adding a second one).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import LatentSpace
from matchsvc.errors import Conflict, NotFound
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import faces as faces_repo
from matchsvc.repositories import idempotency as idempotency_repo
from matchsvc.repositories import ratings as ratings_repo
from matchsvc.services.keys import user_cipher
from matchsvc.services.preferences import absorb_rating, open_label, privatise, seal_label
from matchsvc.services.privacy import PrivacyPolicy, charge, rating_scope

__all__ = ["RatingPage", "RatingReceipt", "StoredRating", "list_ratings", "submit_rating"]


@dataclass(frozen=True)
class RatingReceipt:
    """What a client gets back for a rating: deliberately without the label."""

    face_id: uuid.UUID
    created: bool
    recorded_at: datetime
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"face_id": str(self.face_id), "created": self.created, "recorded_at": self.recorded_at.isoformat()}

    @classmethod
    def from_json(cls, body: dict[str, Any], *, replayed: bool) -> RatingReceipt:
        return cls(
            face_id=uuid.UUID(body["face_id"]),
            created=bool(body["created"]),
            recorded_at=datetime.fromisoformat(body["recorded_at"]),
            replayed=replayed,
        )


def _request_mac(key: bytes, *, face_id: uuid.UUID, liked: bool, dwell_ms: int | None) -> bytes:
    canonical = json.dumps({"face_id": str(face_id), "liked": liked, "dwell_ms": dwell_ms}, sort_keys=True)
    return hmac.new(key, canonical.encode(), hashlib.sha256).digest()


def submit_rating(
    session: Session,
    *,
    user_id: uuid.UUID,
    face_id: uuid.UUID,
    liked: bool,
    dwell_ms: int | None,
    idempotency_key: str,
    mac_key: bytes,
    keys: KeyRingStore,
    policy: PrivacyPolicy,
    space: LatentSpace,
) -> RatingReceipt:
    """Privatise, store, update the model and remember the response, in one transaction.

    The true answer exists only in this function's memory: under randomized response the stored
    bit is already private (the spend is charged to this face), otherwise it is sealed for a
    release-time mechanism. ``dwell_ms`` is accepted for client compatibility and dropped (see
    docs/privacy.md). The rating is written before the idempotency record and rolled back if the
    key turns out to be used: a retry costs one wasted statement, a first attempt no extra round trip.

    Raises
    ------
    NotFound
        The face does not exist or was never served to this user (indistinguishable on purpose).
    Conflict
        The idempotency key was already used for a different request body.
    PrivacyBudgetExhausted
        Rating this face again would pass the lifetime privacy cap.
    """
    mac = _request_mac(mac_key, face_id=face_id, liked=liked, dwell_ms=dwell_ms)
    try:
        cipher = user_cipher(session, keys=keys, user_id=user_id, for_update=True)
        receipt = None
        face = faces_repo.served_face(session, user_id=user_id, face_id=face_id)
        if policy.privatises_labels and face is not None:
            charge(session, user_id=user_id, guarantee=policy.guarantee, scope=rating_scope(face_id), cap=policy.cap)
        stored_label = privatise(liked, epsilon=policy.epsilon) if policy.privatises_labels else liked
        stored = ratings_repo.upsert_served_rating(
            session,
            user_id=user_id,
            face_id=face_id,
            label_ct=seal_label(cipher, face_id=face_id, label=stored_label),
            label_epsilon=policy.epsilon if policy.privatises_labels else None,
        )
        if stored is not None:
            receipt = RatingReceipt(face_id=face_id, created=stored[1], recorded_at=stored[0])
        if receipt is not None and idempotency_repo.record_response(
            session,
            user_id=user_id,
            key=idempotency_key,
            request_mac=mac,
            status_code=201 if receipt.created else 200,
            body=receipt.to_json(),
        ):
            assert face is not None  # the upsert just proved it was served
            absorb_rating(
                session,
                cipher=cipher,
                policy=policy,
                space=space,
                latent=np.asarray(face.latent),
                stored_label=stored_label,
                label_epsilon=policy.epsilon if policy.privatises_labels else None,
                created=receipt.created,
            )
            session.commit()
            return receipt
        # Either the face was not served, or the key was used before: undo, then explain or replay.
        session.rollback()
        record = idempotency_repo.get_record(session, user_id=user_id, key=idempotency_key)
        if record is None:
            raise NotFound(f"face {face_id} not found")
        if not hmac.compare_digest(record.request_mac, mac):
            raise Conflict("Idempotency-Key was already used with a different request body")
        return RatingReceipt.from_json(record.response_body, replayed=True)
    finally:
        session.rollback()  # no-op after commit; releases the connection on errors


@dataclass(frozen=True)
class StoredRating:
    """A rating as stored: the label is the one the privacy mechanism released."""

    face_id: uuid.UUID
    recorded_like: bool
    privatised: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RatingPage:
    items: list[StoredRating]
    next_after_id: int | None


def list_ratings(
    session: Session, *, user_id: uuid.UUID, keys: KeyRingStore, after_id: int | None, limit: int
) -> RatingPage:
    """One page of the caller's ratings, oldest first; ``next_after_id`` is None on the last page."""
    rows = list(ratings_repo.list_ratings(session, user_id=user_id, after_id=after_id, limit=limit + 1))
    has_more = len(rows) > limit
    rows = rows[:limit]
    cipher = user_cipher(session, keys=keys, user_id=user_id) if rows else None
    items = [
        StoredRating(
            face_id=row.face_id,
            recorded_like=open_label(cipher, face_id=row.face_id, blob=row.label_ct),
            privatised=row.label_epsilon is not None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
        if cipher is not None
    ]
    return RatingPage(items=items, next_after_id=rows[-1].id if has_more else None)
