"""Stored ratings: one row per (user, face)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from matchsvc.db.models import Face, Rating
from matchsvc.db.statements import Statement, Write
from matchsvc.repositories.ledger import TOTALS_COLUMNS, TOTALS_JOINS, ScopeTotals
from matchsvc.repositories.preferences import StateRow

__all__ = [
    "RatingContext",
    "TrainingRow",
    "count_ratings",
    "list_ratings",
    "rating_context",
    "training_query",
    "training_rows",
    "served_rating_write",
]


class TrainingRow(NamedTuple):
    """One stored rating as the learners read it: the face's latent and the sealed, already private label."""

    rating_id: int
    user_id: uuid.UUID
    face_id: uuid.UUID
    latent: list[float]
    label_ct: bytes
    label_epsilon: float | None


def training_query() -> Select[tuple[int, uuid.UUID, uuid.UUID, list[float], bytes, float | None]]:
    """The columns of :class:`TrainingRow`, every user's ratings; callers add the filter and order."""
    return select(
        Rating.id, Rating.user_id, Rating.face_id, Face.latent, Rating.label_ct, Rating.label_epsilon
    ).join(Face, Face.id == Rating.face_id)


# Prebuilt (rating path). A new row's ``created_at`` and ``updated_at`` are both the transaction's
# ``now()``, which :data:`_CONTEXT` reads; a replaced one keeps its older ``created_at``.
_UPSERT_SERVED = Statement(
    """
    INSERT INTO ratings (user_id, face_id, label_ct, label_epsilon)
    SELECT :user_id, :face_id, :label_ct, CAST(:label_epsilon AS double precision)
    WHERE EXISTS (SELECT 1 FROM face_impressions WHERE user_id = :user_id AND face_id = :face_id)
    ON CONFLICT (user_id, face_id) DO UPDATE SET
        label_ct = EXCLUDED.label_ct, label_epsilon = EXCLUDED.label_epsilon, updated_at = now()
    RETURNING id
    """
)


@dataclass(frozen=True)
class RatingContext:
    """Everything recording one rating reads, under the user's writer lock."""

    latent: list[float] | None  # None: the face was never served to the user (or does not exist)
    totals: ScopeTotals  # the running privacy totals, and those of the rating's scope
    state: StateRow | None  # the stored preference state (None: no rating absorbed yet)
    release_version: int | None  # the newest population release
    refit_queued: bool  # a refit of the user is queued or running
    rated: bool  # the user has rated the face before: a new rating replaces that one
    now: datetime  # the transaction's time: what a rating written in it records


_CONTEXT = Statement(
    f"""
    SELECT f.latent, p.state_ct, p.n_ratings, p.pending_updates,
           (SELECT max(version) FROM population_releases) AS release_version,
           EXISTS (SELECT 1 FROM refit_jobs WHERE user_id = :user_id) AS refit_queued,
           EXISTS (SELECT 1 FROM ratings WHERE user_id = :user_id AND face_id = :face_id) AS rated,
           now() AS now, {TOTALS_COLUMNS}
    FROM (SELECT 1) AS one
    LEFT JOIN (faces AS f JOIN face_impressions AS i ON i.face_id = f.id AND i.user_id = :user_id)
        ON f.id = :face_id
    LEFT JOIN preference_states AS p ON p.user_id = :user_id
    {TOTALS_JOINS}
    """
)


def rating_context(session: Session, *, user_id: uuid.UUID, face_id: uuid.UUID, scope: str) -> RatingContext:
    """The served face's latent, the privacy totals (of ``scope`` too), the preference state, whether
    a refit is queued and whether the face was rated before, in one statement."""
    row = _CONTEXT.execute(session, {"user_id": user_id, "face_id": face_id, "scope": scope}).fetchone()
    state = None if row.state_ct is None else StateRow(row.state_ct, row.n_ratings, row.pending_updates)
    return RatingContext(
        row.latent, ScopeTotals.from_row(row), state, row.release_version, bool(row.refit_queued), bool(row.rated),
        row.now,
    )


def served_rating_write(
    *, user_id: uuid.UUID, face_id: uuid.UUID, label_ct: bytes, label_epsilon: float | None
) -> Write:
    """Insert or replace the user's rating of a face; nothing (no row returned) for a face never
    served to them. What it records is what :func:`rating_context` said: ``now`` and ``rated``."""
    return Write(
        _UPSERT_SERVED, {"user_id": user_id, "face_id": face_id, "label_ct": label_ct, "label_epsilon": label_epsilon}
    )


def list_ratings(session: Session, *, user_id: uuid.UUID, after_id: int | None, limit: int) -> Sequence[Rating]:
    """Keyset pagination by id, oldest first: stable under concurrent inserts."""
    query = select(Rating).where(Rating.user_id == user_id)
    if after_id is not None:
        query = query.where(Rating.id > after_id)
    return session.scalars(query.order_by(Rating.id).limit(limit)).all()


# Prebuilt (refits read the user's whole history): binary rows, since parsing the latents' text
# was most of the read (docs/benchmarks.md); the same columns and order as :func:`training_query`.
_TRAINING_SQL = """
    SELECT r.id, r.user_id, r.face_id, f.latent, r.label_ct, r.label_epsilon
    FROM ratings AS r JOIN faces AS f ON f.id = r.face_id
    WHERE r.user_id = :user_id {after}
    ORDER BY r.id
"""
_TRAINING_ROWS = Statement(_TRAINING_SQL.format(after=""), binary=True)
_TRAINING_ROWS_AFTER = Statement(_TRAINING_SQL.format(after="AND r.id > :after_id"), binary=True)


def training_rows(session: Session, *, user_id: uuid.UUID, after_id: int | None = None) -> list[TrainingRow]:
    """Every rating of the user (after rating ``after_id`` only, when given), oldest first."""
    if after_id is None:
        cursor = _TRAINING_ROWS.execute(session, {"user_id": user_id})
    else:
        cursor = _TRAINING_ROWS_AFTER.execute(session, {"user_id": user_id, "after_id": after_id})
    return [TrainingRow(*row) for row in cursor.fetchall()]


def count_ratings(session: Session, *, user_id: uuid.UUID) -> int:
    return int(session.scalar(select(func.count()).select_from(Rating).where(Rating.user_id == user_id)) or 0)
