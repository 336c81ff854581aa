"""The embedded server leaves nothing behind when it is temporary, and keeps everything when it is not."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from matchsvc.db.embedded import EmbeddedPostgres
from matchsvc.db.session import create_db_engine


def _run(url: str, sql: str) -> object:
    """``sql`` in a transaction of its own through the service's engine; its one value, if it returns rows."""
    engine = create_db_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def test_a_temporary_server_removes_its_directory_when_stopped() -> None:
    server = EmbeddedPostgres(None)
    assert _run(server.url, "SELECT current_database()") == "matchsvc"
    made = server.pgdata.parent
    assert made.name.startswith("matchsvc-pg-")
    server.stop()
    assert not made.exists()


def test_a_server_in_a_data_directory_keeps_it(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    _run(server.url, "CREATE TABLE kept (n int)")
    server.stop()
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    again = EmbeddedPostgres(tmp_path)
    try:
        assert _run(again.url, "SELECT to_regclass('kept') IS NOT NULL") is True
    finally:
        again.stop()
