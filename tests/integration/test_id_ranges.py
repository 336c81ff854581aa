"""Ranges of user ids and shared snapshots: how Ray tasks agree on who the users are."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from benchmarks.matching import load_synthetic_users
from matchsvc.db.models import User
from matchsvc.repositories.id_ranges import export_snapshot, split_users, use_snapshot, within
from matchsvc.runtime import Runtime


@pytest.mark.parametrize("users,parts", [(30, 1), (30, 4), (3, 5)])
def test_ranges_cover_every_user_once_in_even_shares(db: Runtime, users: int, parts: int) -> None:
    load_synthetic_users(db, n=users, seed=users + parts)
    with db.sessions() as session:
        ranges = split_users(session, parts=parts)
        counts = [session.scalar(select(func.count()).select_from(User).where(within(User.id, [r]))) for r in ranges]
    assert sum(counts) == users
    assert len(ranges) == min(parts, users) and max(counts) - min(counts) <= 1
    assert ranges[0].low is None and ranges[-1].high is None
    assert all(a.high == b.low for a, b in zip(ranges, ranges[1:]))


def test_a_reader_of_an_exported_snapshot_misses_later_users(db: Runtime) -> None:
    load_synthetic_users(db, n=5, seed=1)
    with db.sessions() as exporter:
        snapshot = export_snapshot(exporter)
        load_synthetic_users(db, n=3, seed=2)
        with db.sessions() as reader:
            use_snapshot(reader, snapshot)
            assert reader.scalar(select(func.count()).select_from(User)) == 5
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM users")).scalar_one() == 8


def test_a_snapshot_id_is_never_inlined_unchecked(db: Runtime) -> None:
    with db.sessions() as session, pytest.raises(ValueError):
        use_snapshot(session, "1'; DROP TABLE users; --")
