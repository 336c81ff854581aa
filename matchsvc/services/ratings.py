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

from sqlalchemy.orm import Session

from matchsvc.db.models import Rating
from matchsvc.errors import Conflict, NotFound
from matchsvc.repositories import idempotency as idempotency_repo
from matchsvc.repositories import ratings as ratings_repo

__all__ = ["RatingPage", "RatingReceipt", "list_ratings", "submit_rating"]


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


@dataclass(frozen=True)
class RatingPage:
    items: list[Rating]
    next_after_id: int | None


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
) -> RatingReceipt:
    """Store the rating and the response under the idempotency key in one transaction.

    The rating is written first and rolled back if the key turns out to be used: a retry costs one
    wasted statement, the first attempt costs no extra round trip.

    Raises
    ------
    NotFound
        The face does not exist or was never served to this user (indistinguishable on purpose).
    Conflict
        The idempotency key was already used for a different request body.
    """
    mac = _request_mac(mac_key, face_id=face_id, liked=liked, dwell_ms=dwell_ms)
    try:
        stored = ratings_repo.upsert_served_rating(
            session, user_id=user_id, face_id=face_id, liked=liked, dwell_ms=dwell_ms
        )
        receipt = None if stored is None else RatingReceipt(face_id=face_id, created=stored[1], recorded_at=stored[0])
        if receipt is not None and idempotency_repo.record_response(
            session,
            user_id=user_id,
            key=idempotency_key,
            request_mac=mac,
            status_code=201 if receipt.created else 200,
            body=receipt.to_json(),
        ):
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


def list_ratings(session: Session, *, user_id: uuid.UUID, after_id: int | None, limit: int) -> RatingPage:
    """One page of the caller's ratings, oldest first; ``next_after_id`` is None on the last page."""
    rows = list(ratings_repo.list_ratings(session, user_id=user_id, after_id=after_id, limit=limit + 1))
    has_more = len(rows) > limit
    items = rows[:limit]
    return RatingPage(items=items, next_after_id=items[-1].id if has_more else None)
