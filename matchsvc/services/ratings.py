"""Recording ratings. This is the write path every privacy mechanism sits on.

A rating request is idempotent twice over: per ``Idempotency-Key`` (a retried request replays the
first response and stores nothing new) and per (user, face) (rating a face again replaces the
previous rating rather than adding a second one). A batch is one request: one key, one stored
response, and each of its items recorded exactly as a single rating would be.

Its cost does not depend on the user's history: under the user's writer lock it checks the key,
the face, the running privacy totals, stores the sealed label and takes one online step of the
preference posterior (:func:`matchsvc.services.preferences.absorb_rating`); exact refits run in
the refit workers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import LatentSpace
from matchsvc.db.statements import Write, execute_writes
from matchsvc.errors import Conflict, InvalidInput, NotFound, PrivacyBudgetExhausted
from matchsvc.keys import KeyRingStore, UserCipher
from matchsvc.repositories import idempotency as idempotency_repo
from matchsvc.repositories import ratings as ratings_repo
from matchsvc.services.keys import open_cipher, user_cipher
from matchsvc.services.preferences import absorb_rating
from matchsvc.services.privacy import PrivacyPolicy, checked_spend, rating_scope
from matchsvc.services.sealed import open_label, seal_label
from privacy.mechanisms import Guarantee, RandomizedResponse, os_uniform

__all__ = [
    "BatchReceipt",
    "ItemOutcome",
    "RatingInput",
    "Requester",
    "RatingSlice",
    "SubmittedRating",
    "StoredRating",
    "list_ratings",
    "submit_batch",
    "submit_rating",
]

#: The most ratings one batch may carry.
MAX_BATCH = 100

ItemStatus = Literal["created", "replaced", "not_found", "budget_exhausted"]


@dataclass(frozen=True)
class RatingInput:
    """One rating as the client sent it.

    ``on_device_epsilon`` None: ``liked`` is the true answer and the server randomizes it.
    Otherwise ``liked`` is the answer the client already randomized with that epsilon; the
    server stores it as sent.
    """

    face_id: uuid.UUID
    liked: bool
    on_device_epsilon: float | None = None
    dwell_ms: int | None = None

    def canonical(self) -> dict[str, Any]:
        """The fields the idempotency MAC covers (the server-randomized form as it always was)."""
        if self.on_device_epsilon is None:
            return {"face_id": str(self.face_id), "liked": self.liked, "dwell_ms": self.dwell_ms}
        return {
            "face_id": str(self.face_id),
            "randomized_like": self.liked,
            "epsilon": self.on_device_epsilon,
            "dwell_ms": self.dwell_ms,
        }


@dataclass(frozen=True)
class Requester:
    """Who sends a rating request: the access token's user and session, and the API's decision.

    The session is checked in the statement that takes the user's writer lock (D44), and
    ``authorize`` decides from what it read: the account's scopes, or None when the session is not
    an active one of the user's. It raises to refuse (the API's authentication errors), before
    anything else is read or written.
    """

    user_id: uuid.UUID
    session_id: uuid.UUID
    authorize: Callable[[frozenset[str] | None], None]


@dataclass(frozen=True)
class SubmittedRating:
    """What a client gets back for a rating: deliberately without the label."""

    face_id: uuid.UUID
    created: bool
    recorded_at: datetime
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"face_id": str(self.face_id), "created": self.created, "recorded_at": self.recorded_at.isoformat()}

    @classmethod
    def from_json(cls, body: dict[str, Any], *, replayed: bool) -> SubmittedRating:
        return cls(
            face_id=uuid.UUID(body["face_id"]),
            created=bool(body["created"]),
            recorded_at=datetime.fromisoformat(body["recorded_at"]),
            replayed=replayed,
        )


@dataclass(frozen=True)
class ItemOutcome:
    face_id: uuid.UUID
    status: ItemStatus
    recorded_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        at = None if self.recorded_at is None else self.recorded_at.isoformat()
        return {"face_id": str(self.face_id), "status": self.status, "recorded_at": at}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ItemOutcome:
        at = body["recorded_at"]
        return cls(uuid.UUID(body["face_id"]), body["status"], None if at is None else datetime.fromisoformat(at))


@dataclass(frozen=True)
class BatchReceipt:
    items: list[ItemOutcome]
    replayed: bool = False


def _request_mac(key: bytes, canonical: Any) -> bytes:
    return hmac.new(key, json.dumps(canonical, sort_keys=True).encode(), hashlib.sha256).digest()


def _guarantee(policy: PrivacyPolicy, rating: RatingInput) -> Guarantee | None:
    """What storing ``rating`` spends (None: nothing per rating); checks an on-device epsilon."""
    if rating.on_device_epsilon is not None:
        return policy.on_device_guarantee(rating.on_device_epsilon)
    return policy.guarantee if policy.privatises_labels else None


def _record(
    session: Session,
    *,
    cipher: UserCipher,
    rating: RatingInput,
    guarantee: Guarantee | None,
    policy: PrivacyPolicy,
    space: LatentSpace,
) -> tuple[ItemOutcome, list[Write]]:
    """Charge, privatise, store and absorb one rating: the outcome, and the writes that do it.

    The caller holds the writer lock, sends the writes (:func:`execute_writes`, with its own if it
    has any) before it reads again, and commits. The true answer exists only in this function's
    memory: the stored bit is already private (randomized here, or on the device). ``dwell_ms`` is
    dropped (see docs/privacy.md). Nothing is written for a face not served to the user, nor when
    the cap refuses the spend (:class:`PrivacyBudgetExhausted` is raised before any write).
    """
    user_id, face_id = cipher.user_id, rating.face_id
    scope = rating_scope(face_id)
    context = ratings_repo.rating_context(session, user_id=user_id, face_id=face_id, scope=scope)
    if context.latent is None:
        return ItemOutcome(face_id, "not_found", None), []
    writes: list[Write] = []
    if guarantee is not None:  # raises PrivacyBudgetExhausted before anything is written
        writes = checked_spend(
            session, user_id=user_id, guarantee=guarantee, scope=scope, cap=policy.cap,
            randomized_on_device=rating.on_device_epsilon is not None, totals=context.totals,
        )
    if rating.on_device_epsilon is not None:
        stored_label, label_epsilon = rating.liked, rating.on_device_epsilon
    elif guarantee is not None:
        stored_label = RandomizedResponse(epsilon=policy.epsilon).privatise_one(rating.liked, os_uniform())
        label_epsilon = policy.epsilon
    else:
        stored_label, label_epsilon = rating.liked, None
    label_ct = seal_label(cipher, face_id=face_id, label=stored_label)
    writes.append(
        ratings_repo.served_rating_write(user_id=user_id, face_id=face_id, label_ct=label_ct, label_epsilon=label_epsilon)
    )
    writes = absorb_rating(
        session, cipher=cipher, policy=policy, space=space, latent=np.asarray(context.latent),
        stored_label=stored_label, label_epsilon=label_epsilon, created=not context.rated,
        stored=context.state, release_version=context.release_version, refit_queued=context.refit_queued,
        writes=writes,
    )
    return ItemOutcome(face_id, "replaced" if context.rated else "created", context.now), writes


def _lock(
    session: Session, *, keys: KeyRingStore, requester: Requester, key: str, mac: bytes
) -> tuple[UserCipher, dict[str, Any] | None]:
    """Take the user's writer lock once the requester is let in; their cipher and the response
    stored under ``key`` (None: a new key).

    Raises Conflict when ``key`` was used for another body.
    """
    user_id = requester.user_id
    locked = idempotency_repo.lock_user_with_record(session, user_id=user_id, key=key, session_id=requester.session_id)
    requester.authorize(locked.session_scopes)
    cipher = open_cipher(keys=keys, user_id=user_id, wrapped=locked.wrapped_key)
    record = locked.record
    if record is None:
        return cipher, None
    if not hmac.compare_digest(record.request_mac, mac):
        raise Conflict("Idempotency-Key was already used with a different request body")
    return cipher, record.response_body


def _recorded(session: Session, writes: list[Write]) -> bool:
    """Send a request's last writes, the response record last, and commit; False (rolled back) when
    the key's record was already there.

    Another request with the same key (a client's retry) committed while this one's lock waited
    for it: the lock statement read the records as they were when it began (PostgreSQL's READ
    COMMITTED), so it missed that one. Nothing of this attempt is kept; the caller takes the lock
    again, and this time reads the record and replays it.
    """
    if execute_writes(session, writes)[-1] == 0:
        session.rollback()
        return False
    session.commit()
    return True


def submit_rating(
    session: Session,
    *,
    requester: Requester,
    rating: RatingInput,
    idempotency_key: str,
    mac_key: bytes,
    keys: KeyRingStore,
    policy: PrivacyPolicy,
    space: LatentSpace,
) -> SubmittedRating:
    """Privatise, store, update the model and remember the response, in one transaction.

    Raises
    ------
    NotFound
        The face does not exist or was never served to this user (indistinguishable on purpose).
    Conflict
        The idempotency key was already used for a different request body.
    PrivacyBudgetExhausted
        Rating this face again would pass the lifetime privacy cap.
    InvalidInput
        An on-device epsilon outside the deployment's range.
    """
    user_id = requester.user_id
    mac = _request_mac(mac_key, rating.canonical())
    try:
        while True:  # at most twice: see _recorded
            cipher, replayed = _lock(session, keys=keys, requester=requester, key=idempotency_key, mac=mac)
            if replayed is not None:
                return SubmittedRating.from_json(replayed, replayed=True)
            guarantee = _guarantee(policy, rating)
            outcome, writes = _record(
                session, cipher=cipher, rating=rating, guarantee=guarantee, policy=policy, space=space
            )
            if outcome.status == "not_found":
                raise NotFound(f"face {rating.face_id} not found")
            assert outcome.recorded_at is not None
            receipt = SubmittedRating(
                face_id=rating.face_id, created=outcome.status == "created", recorded_at=outcome.recorded_at
            )
            record = idempotency_repo.record_write(
                user_id=user_id, key=idempotency_key, request_mac=mac,
                status_code=201 if receipt.created else 200, body=receipt.to_json(),
            )
            if _recorded(session, [*writes, record]):
                return receipt
    finally:
        session.rollback()  # no-op after commit; releases the connection on errors


def submit_batch(
    session: Session,
    *,
    requester: Requester,
    ratings: Sequence[RatingInput],
    idempotency_key: str,
    mac_key: bytes,
    keys: KeyRingStore,
    policy: PrivacyPolicy,
    space: LatentSpace,
) -> BatchReceipt:
    """Record up to :data:`MAX_BATCH` ratings in one transaction, each exactly as :func:`submit_rating` would.

    Outcomes are per item (docs/api.md): a face not served or a spend the cap refuses is reported
    for that item and the others are stored. The whole response is stored under the key.

    Raises
    ------
    InvalidInput
        No items, more than :data:`MAX_BATCH`, a face twice, or an on-device epsilon out of range.
    Conflict
        The idempotency key was already used for a different request body.
    """
    if not 1 <= len(ratings) <= MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} ratings, got {len(ratings)}")
    if len({rating.face_id for rating in ratings}) != len(ratings):
        raise InvalidInput("a batch may rate each face once")
    user_id = requester.user_id
    mac = _request_mac(mac_key, {"items": [rating.canonical() for rating in ratings]})
    try:
        while True:  # at most twice: see _recorded
            cipher, replayed = _lock(session, keys=keys, requester=requester, key=idempotency_key, mac=mac)
            if replayed is not None:
                return BatchReceipt([ItemOutcome.from_json(item) for item in replayed["items"]], replayed=True)
            guarantees = [_guarantee(policy, rating) for rating in ratings]
            outcomes, writes = [], []
            for rating, guarantee in zip(ratings, guarantees, strict=True):
                execute_writes(session, writes)  # the last item's: this one reads what it wrote
                try:
                    outcome, writes = _record(
                        session, cipher=cipher, rating=rating, guarantee=guarantee, policy=policy, space=space
                    )
                except PrivacyBudgetExhausted:
                    outcome, writes = ItemOutcome(rating.face_id, "budget_exhausted", None), []
                outcomes.append(outcome)
            record = idempotency_repo.record_write(
                user_id=user_id, key=idempotency_key, request_mac=mac, status_code=200,
                body={"items": [outcome.to_json() for outcome in outcomes]},
            )
            if _recorded(session, [*writes, record]):
                return BatchReceipt(outcomes)
    finally:
        session.rollback()


@dataclass(frozen=True)
class StoredRating:
    """A rating as stored: the label is the one the privacy mechanism released."""

    face_id: uuid.UUID
    recorded_like: bool
    privatised: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RatingSlice:
    items: list[StoredRating]
    next_after_id: int | None


def list_ratings(
    session: Session, *, user_id: uuid.UUID, keys: KeyRingStore, after_id: int | None, limit: int
) -> RatingSlice:
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
    return RatingSlice(items=items, next_after_id=rows[-1].id if has_more else None)
