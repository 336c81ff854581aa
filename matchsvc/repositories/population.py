"""Population model releases, and the one read of every user's ratings that fitting them needs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from matchsvc.db.models import PopulationRelease, Rating
from matchsvc.db.statements import Statement
from matchsvc.repositories.ratings import TrainingRow, training_query

__all__ = [
    "add_release",
    "count_raters",
    "get_release",
    "latest_version",
    "list_releases",
    "rating_rows",
    "try_lock_fits",
]

#: Transaction-level advisory lock key that lets one population fit run at a time (derived from a
#: name, like the audit log's, so it cannot collide with another subsystem's key).
FIT_LOCK_KEY = int.from_bytes(hashlib.sha256(b"matchsvc/population/fit").digest()[:8], "big", signed=True)


def try_lock_fits(session: Session) -> bool:
    """Take the fit lock for this transaction; False (without waiting) when another fit holds it."""
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(FIT_LOCK_KEY))))


def list_releases(session: Session) -> Sequence[PopulationRelease]:
    """Every release, oldest first, without the (larger) model state."""
    query = select(PopulationRelease).options(defer(PopulationRelease.state)).order_by(PopulationRelease.version)
    return session.scalars(query).all()


# Prebuilt: read by every feed page and every refit (docs/decisions.md D39).
_LATEST_VERSION = Statement("SELECT version, created_at FROM population_releases ORDER BY version DESC LIMIT 1")


def latest_version(session: Session) -> tuple[int, datetime] | None:
    """``(version, created_at)`` of the newest release; None before the first."""
    row = _LATEST_VERSION.execute(session, {}).fetchone()
    return None if row is None else (int(row.version), row.created_at)


def get_release(session: Session, version: int) -> PopulationRelease | None:
    return session.scalar(select(PopulationRelease).where(PopulationRelease.version == version))


def add_release(
    session: Session,
    *,
    version: int,
    mechanism: str,
    neighbouring: str,
    epsilon: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    max_grad_norm: float,
    n_users: int,
    n_personas: int,
    rank: int,
    state: dict[str, Any],
) -> PopulationRelease:
    release = PopulationRelease(
        version=version,
        mechanism=mechanism,
        neighbouring=neighbouring,
        epsilon=epsilon,
        delta=delta,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        steps=steps,
        max_grad_norm=max_grad_norm,
        n_users=n_users,
        n_personas=n_personas,
        rank=rank,
        state=state,
    )
    session.add(release)
    session.flush()
    return release


def count_raters(session: Session) -> int:
    """Users with at least one rating."""
    return int(session.scalar(select(func.count(func.distinct(Rating.user_id)))) or 0)


def rating_rows(session: Session, *, batch_size: int = 5000) -> Iterator[TrainingRow]:
    """Every rating, grouped by user.

    Streamed from one statement (a server-side cursor) in user order, then rating order, so the
    caller can open one user's labels at a time instead of holding everyone's in memory.
    """
    query = training_query().order_by(Rating.user_id, Rating.id)
    for row in session.execute(query.execution_options(yield_per=batch_size)):
        yield TrainingRow(*row)
