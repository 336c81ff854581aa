"""Ranges of user ids: how a distributed job names its share of the users without listing them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, or_, select, text, true
from sqlalchemy.orm import Session

from matchsvc.db.models import User

__all__ = ["IdRange", "export_snapshot", "split_users", "use_snapshot", "within"]

#: What ``pg_export_snapshot()`` returns (e.g. ``00000003-0000001B-1``); checked before it is inlined.
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


@dataclass(frozen=True)
class IdRange:
    """Users with ``low <= id < high``; ``None`` leaves that side open."""

    low: uuid.UUID | None
    high: uuid.UUID | None


def within(column: ColumnElement[uuid.UUID], ranges: Sequence[IdRange] | None) -> ColumnElement[bool]:
    """SQL: ``column`` lies in one of ``ranges`` (``None``: no restriction)."""
    if ranges is None:
        return true()
    return or_(
        *(
            and_(
                true() if r.low is None else column >= r.low,
                true() if r.high is None else column < r.high,
            )
            for r in ranges
        )
    )


def split_users(session: Session, *, parts: int) -> list[IdRange]:
    """``parts`` consecutive ranges holding about as many users each (only ``parts - 1`` ids are read)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    count = session.scalar(select(func.count()).select_from(User)) or 0
    ranked = select(User.id, func.row_number().over(order_by=User.id).label("rank")).subquery()
    # A range starts at each cut's user; the first user never starts one (its range would be empty).
    cuts = sorted({count * part // parts + 1 for part in range(1, parts)} - {1})
    bounds = list(session.scalars(select(ranked.c.id).where(ranked.c.rank.in_(cuts)).order_by(ranked.c.id))) if cuts else []
    edges: list[uuid.UUID | None] = [None, *bounds, None]
    return [IdRange(low=edges[i], high=edges[i + 1]) for i in range(len(edges) - 1)]


def export_snapshot(session: Session) -> str:
    """Start a repeatable-read transaction and export its snapshot for other connections to share.

    The snapshot stays importable while this session's transaction is open, so the caller keeps it
    open until every reader has started.
    """
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return str(session.execute(text("SELECT pg_export_snapshot()")).scalar_one())


def use_snapshot(session: Session, snapshot: str) -> None:
    """Make this session's (new) transaction see exactly what ``snapshot``'s exporter sees."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError("not a PostgreSQL snapshot id")
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    session.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
