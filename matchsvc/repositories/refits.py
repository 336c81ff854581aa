"""The refit queue: users whose released model is behind their ratings, shared by every process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from matchsvc.db.statements import Statement, Write

__all__ = ["ClaimedRefit", "claim", "complete", "enqueue_write", "pending"]


@dataclass(frozen=True)
class ClaimedRefit:
    user_id: uuid.UUID
    generation: int


_ENQUEUE = Statement(
    """
    INSERT INTO refit_jobs (user_id, generation) VALUES (:user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET
        generation = refit_jobs.generation + 1,
        claimed_until = NULL,
        requested_at = CASE WHEN refit_jobs.claimed_until IS NULL THEN refit_jobs.requested_at ELSE now() END
    RETURNING user_id
    """
)


def enqueue_write(*, user_id: uuid.UUID) -> Write:
    """Ask for a refit; asking again while one runs makes the running one leave the job queued, as
    asked for now (its settling time, :func:`claim`, starts again)."""
    return Write(_ENQUEUE, {"user_id": user_id})


# Prebuilt: every serving process's worker claims (and, idle, counts) several times a second,
# and building and compiling the ORM statements cost more than running them (docs/benchmarks.md).
_CLAIM = Statement(
    """
    UPDATE refit_jobs SET claimed_until = now() + :lease * interval '1 second'
    WHERE user_id = (
        SELECT user_id FROM refit_jobs
        WHERE (claimed_until IS NULL OR claimed_until < now())
          AND requested_at <= now() - :settle * interval '1 second'
        ORDER BY requested_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING user_id, generation
    """
)
_COMPLETE = Statement("DELETE FROM refit_jobs WHERE user_id = :user_id AND generation = :generation")
_PENDING = Statement("SELECT count(*) AS jobs FROM refit_jobs")


def claim(session: Session, *, lease_seconds: float, settle_seconds: float = 0.0) -> ClaimedRefit | None:
    """The oldest unclaimed (or lease-expired) job asked for at least ``settle_seconds`` ago, claimed
    for ``lease_seconds``; skips rows others lock."""
    row = _CLAIM.execute(session, {"lease": float(lease_seconds), "settle": float(settle_seconds)}).fetchone()
    return None if row is None else ClaimedRefit(user_id=row.user_id, generation=int(row.generation))


def complete(session: Session, *, job: ClaimedRefit) -> bool:
    """Remove the job unless it was asked for again meanwhile (then it stays, unclaimed)."""
    return _COMPLETE.execute(session, {"user_id": job.user_id, "generation": job.generation}).rowcount == 1


def pending(session: Session) -> int:
    """Jobs queued or running."""
    return int(_PENDING.execute(session, {}).fetchone().jobs)
