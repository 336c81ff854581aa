"""The embedded server leaves nothing behind when it is temporary, and keeps everything when it is not."""

from __future__ import annotations

from pathlib import Path

import psycopg

from matchsvc.db.embedded import EmbeddedPostgres


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_a_temporary_server_removes_its_directory_when_stopped() -> None:
    server = EmbeddedPostgres(None)
    with psycopg.connect(_libpq(server.url)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("matchsvc",)
    made = server.pgdata.parent
    assert made.name.startswith("matchsvc-pg-")
    server.stop()
    assert not made.exists()


def test_a_server_in_a_data_directory_keeps_it(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    with psycopg.connect(_libpq(server.url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n int)")
    server.stop()
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    again = EmbeddedPostgres(tmp_path)
    try:
        with psycopg.connect(_libpq(again.url)) as conn:
            assert conn.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)
    finally:
        again.stop()
