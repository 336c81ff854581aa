"""Prebuilt statements sent through psycopg (matchsvc.db.statements, D39): same transaction, same pool rules."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest
from sqlalchemy import text

from matchsvc.db.statements import Statement, Write, execute_writes
from matchsvc.runtime import Runtime


def test_parameters_are_named_and_casts_are_left_alone() -> None:
    statement = Statement("SELECT :a::int + CAST(:b AS int), x::text FROM t WHERE y = :a")
    assert statement.sql == "SELECT %(a)s::int + CAST(%(b)s AS int), x::text FROM t WHERE y = %(a)s"


def test_a_percent_sign_is_refused() -> None:
    with pytest.raises(ValueError, match="%"):
        Statement("SELECT 'a' LIKE 'a%'")


def test_it_runs_in_the_sessions_transaction_and_rows_are_named(db: Runtime) -> None:
    insert = Statement("INSERT INTO scratch_statements (value) VALUES (:value) RETURNING value, value * 2 AS doubled")
    with db.sessions() as session:
        session.execute(text("CREATE TEMP TABLE scratch_statements (value int)"))
        row = insert.execute(session, {"value": 21}).fetchone()
        assert (row.value, row.doubled) == (21, 42)
        assert session.execute(text("SELECT count(*) FROM scratch_statements")).scalar() == 1  # same transaction
        session.rollback()
        # The temporary table was created in the rolled-back transaction: the insert went with it.
        assert session.execute(text("SELECT to_regclass('pg_temp.scratch_statements')")).scalar() is None


def test_a_broken_connection_leaves_the_pool(db: Runtime) -> None:
    """As SQLAlchemy does for its own statements: the next checkout gets a working connection."""
    with db.sessions() as session:
        driver = session.connection().connection.driver_connection
        with socket.socket(fileno=os.dup(driver.pgconn.socket)) as sock:  # as the deadline watchdog does
            sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(psycopg.OperationalError):
            Statement("SELECT 1 AS one").execute(session, {})
        assert session.connection().invalidated
        session.rollback()
    with db.sessions() as session:
        assert Statement("SELECT 1 AS one").execute(session, {}).fetchone().one == 1


def test_a_binary_statement_reads_the_same_values_as_text(db: Runtime) -> None:
    """Binary rows (the refit's latents) are the values text rows give, bit for bit."""
    sql = (
        "SELECT CAST(:latent AS float8[]) AS latent, CAST(:epsilon AS float8) AS epsilon, CAST(:id AS uuid) AS id,"
        " CAST(:blob AS bytea) AS blob, CAST(NULL AS float8) AS missing, CAST(9007199254740993 AS bigint) AS big"
    )
    params = {
        "latent": [0.1, -1e-300, 2.0 / 3.0, 1.7976931348623157e308, 5e-324],
        "epsilon": 1.37,
        "id": "6f1c1bde-13a4-4b8e-9d35-0e3c3a1f7a21",
        "blob": b"\x00\x11sealed",
    }
    with db.sessions() as session:
        text_row = Statement(sql).execute(session, params).fetchone()
        binary_row = Statement(sql, binary=True).execute(session, params).fetchone()
        session.rollback()
    assert binary_row == text_row
    assert [x.hex() for x in binary_row.latent] == [float(x).hex() for x in params["latent"]]
    assert type(binary_row.blob) is bytes and binary_row.missing is None and binary_row.big == 9007199254740993


def test_writes_sent_together_run_once_each_and_say_how_many_rows_they_returned(db: Runtime) -> None:
    """One statement (D42): each write's parameters are its own though the names repeat, and a
    write that returned nothing (here: a conflict) says so."""
    insert = Statement("INSERT INTO scratch_writes (value) VALUES (:value) ON CONFLICT DO NOTHING RETURNING value")
    with db.sessions() as session:
        session.execute(text("CREATE TEMP TABLE scratch_writes (value int PRIMARY KEY)"))
        sent = execute_writes(session, [Write(insert, {"value": 1}), Write(insert, {"value": 2})])
        assert sent == [1, 1]
        assert execute_writes(session, [Write(insert, {"value": 2}), Write(insert, {"value": 3})]) == [0, 1]
        assert session.execute(text("SELECT array_agg(value ORDER BY value) FROM scratch_writes")).scalar() == [1, 2, 3]
        assert execute_writes(session, []) == []
        session.rollback()


def test_a_write_that_returns_nothing_cannot_be_counted_and_is_refused() -> None:
    with pytest.raises(ValueError, match="RETURNING"):
        execute_writes(None, [Write(Statement("INSERT INTO t (value) VALUES (:value)"), {"value": 1})])  # type: ignore[arg-type]
