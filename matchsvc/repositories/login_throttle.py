"""Failed-login counters per attempted username (keyed by an HMAC, see the model)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import LoginThrottle

__all__ = ["clear", "lock", "prune", "record_failure"]


def lock(session: Session, account_key: bytes, *, now: datetime) -> LoginThrottle:
    """The username's row (created with no failures if new), locked until the transaction ends,
    so concurrent guesses at one account are counted one after another."""
    session.execute(
        insert(LoginThrottle)
        .values(account_key=account_key, failures=0, last_attempt=now, blocked_until=None)
        .on_conflict_do_nothing()
    )
    query = select(LoginThrottle).where(LoginThrottle.account_key == account_key).with_for_update()
    row = session.scalars(query.execution_options(populate_existing=True)).one()
    return row


def record_failure(
    session: Session, account_key: bytes, *, failures: int, now: datetime, blocked_until: datetime | None
) -> None:
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.account_key == account_key)
        .values(failures=failures, last_attempt=now, blocked_until=blocked_until)
    )


def clear(session: Session, account_key: bytes) -> None:
    session.execute(delete(LoginThrottle).where(LoginThrottle.account_key == account_key))


def prune(session: Session, *, before: datetime) -> None:
    """Forget usernames last tried before ``before`` that are no longer blocked."""
    session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.last_attempt < before,
            LoginThrottle.blocked_until.is_(None) | (LoginThrottle.blocked_until < before),
        )
    )
