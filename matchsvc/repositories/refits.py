"""The refit queue: users whose released model is behind their ratings, shared by every process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from matchsvc.db.models import RefitJob
from matchsvc.db.statements import Statement

__all__ = ["ClaimedRefit", "claim", "complete", "enqueue", "pending"]


@dataclass(frozen=True)
class ClaimedRefit:
    user_id: uuid.UUID
    generation: int


_ENQUEUE = Statement(
    """
    INSERT INTO refit_jobs (user_id, generation) VALUES (:user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET generation = refit_jobs.generation + 1, claimed_until = NULL
    """
)


def enqueue(session: Session, *, user_id: uuid.UUID) -> None:
    """Ask for a refit; asking again while one runs makes the running one leave the job queued."""
    _ENQUEUE.execute(session, {"user_id": user_id})


def claim(session: Session, *, lease_seconds: float) -> ClaimedRefit | None:
    """The oldest unclaimed (or lease-expired) job, claimed for ``lease_seconds``; skips rows others lock."""
    free = (
        select(RefitJob.user_id)
        .where((RefitJob.claimed_until.is_(None)) | (RefitJob.claimed_until < func.now()))
        .order_by(RefitJob.requested_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(RefitJob)
        .where(RefitJob.user_id == free)
        .values(claimed_until=func.now() + text(":lease * interval '1 second'").bindparams(lease=lease_seconds))
        .returning(RefitJob.user_id, RefitJob.generation)
    )
    row = session.execute(statement).first()
    return None if row is None else ClaimedRefit(user_id=row.user_id, generation=int(row.generation))


def complete(session: Session, *, job: ClaimedRefit) -> bool:
    """Remove the job unless it was asked for again meanwhile (then it stays, unclaimed)."""
    statement = delete(RefitJob).where(RefitJob.user_id == job.user_id, RefitJob.generation == job.generation)
    return session.execute(statement).rowcount == 1


def pending(session: Session) -> int:
    """Jobs queued or running."""
    return int(session.scalar(select(func.count()).select_from(RefitJob)) or 0)
