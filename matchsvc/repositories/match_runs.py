"""The matching job's run records and the change markers incremental runs read."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, select, union
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import Appearance, Block, Decision, Match, MatchRun, PreferenceState, Profile, User

__all__ = ["changed_since", "database_now", "record_run", "recent_runs"]


def database_now(session: Session) -> datetime:
    """The database clock (every change marker is written with it)."""
    return session.scalar(select(func.clock_timestamp()))


def recent_runs(session: Session, *, limit: int) -> list[MatchRun]:
    return list(session.scalars(select(MatchRun).order_by(MatchRun.started_at.desc()).limit(limit)))


def record_run(session: Session, **values: object) -> None:
    session.execute(insert(MatchRun).values(**values))


def changed_since(session: Session, since: datetime, *, margin: timedelta) -> set[uuid.UUID]:
    """Users new or changed after ``since - margin``: appearance, filters, model, blocks, decisions, matches.

    The markers are ``now()`` of the writing transaction, i.e. its start; ``margin`` covers a
    transaction that began before the last run read but committed after it.
    """
    after = since - margin
    query = union(
        select(User.id).where(User.created_at > after),
        select(Appearance.user_id).where(Appearance.updated_at > after),
        select(Profile.user_id).where(Profile.updated_at > after),
        select(PreferenceState.user_id).where(PreferenceState.updated_at > after),
        select(Block.blocker_id).where(Block.created_at > after),
        select(Block.blocked_id).where(Block.created_at > after),
        select(Decision.user_id).where(Decision.created_at > after),
        select(Decision.target_id).where(Decision.created_at > after),
        select(Match.user_low).where(Match.created_at > after),
        select(Match.user_high).where(Match.created_at > after),
    )
    return set(session.scalars(query))
