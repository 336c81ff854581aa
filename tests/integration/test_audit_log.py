"""The audit log against a real PostgreSQL: chain, append-only trigger, tampering, concurrency, CLI."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Row, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from matchsvc.cli import app as cli_app
from matchsvc.runtime import Runtime
from matchsvc.services import audit
from matchsvc.services.keys import rotate_keys
from tests.support.accounts import PASSWORD, auth_headers

_COLUMNS = "created_at, actor_id, actor_scope, action, subject, details, prev_hash, entry_hash"


def _append(db: Runtime, count: int, **details: Any) -> list[int]:
    """``count`` entries, each committed on its own as the services do; returns their ids."""
    ids = []
    for index in range(count):
        with db.sessions() as session:
            entry = audit.record(
                session,
                action=audit.AuditAction.privacy_cap_change,
                actor=None,
                subject_user_id=uuid.uuid4(),
                details={"index": index, **details},
                pseudonym_key=db.secrets.audit_pseudonym_key,
            )
            session.commit()
            ids.append(entry.id)
    return ids


def _verify(db: Runtime, anchor: bytes | None = None) -> audit.VerificationResult:
    with db.sessions() as session:
        return audit.verify(session, anchor=anchor)


def test_chain_verifies_after_logins_failures_and_a_rotation(client: TestClient, db: Runtime) -> None:
    for _ in range(3):
        auth_headers(client)
    assert client.post("/v1/auth/token", data={"username": "nobody", "password": PASSWORD}).status_code == 401
    rotate_keys(db.sessions, keys=db.keys, batch_size=2)
    result = _verify(db)
    assert result.ok and result.first_bad_id is None and result.reason is None
    assert result.entries == 5 and result.head_hash is not None and len(result.head_hash) == 64
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT action, details FROM audit_log ORDER BY id")).all()
    assert [action for action, _ in rows] == ["login"] * 3 + ["login_failed", "key_rotation"]
    assert rows[3][1] == {"reason": "bad-credentials"}
    assert rows[4][1] == {"kek_version": db.keys.ring.current, "rewrapped": 3}


def test_an_empty_log_verifies(db: Runtime) -> None:
    assert _verify(db) == audit.VerificationResult(ok=True, entries=0, first_bad_id=None, reason=None, head_hash=None)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'export'",
        "UPDATE audit_log SET details = '{}'::jsonb WHERE id = -1",  # statement-level: refused even for no rows
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)",
    ],
)
def test_the_database_refuses_updates_and_deletes(db: Runtime, statement: str) -> None:
    _append(db, 2)
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as connection:
        connection.execute(text(statement))
    assert _verify(db).entries == 2


def test_a_fork_is_impossible_even_bypassing_the_lock(db: Runtime) -> None:
    _append(db, 2)
    with pytest.raises(IntegrityError, match="uq_audit_log_prev_hash"), db.engine.begin() as connection:
        connection.execute(
            text(
                f"INSERT INTO audit_log (id, {_COLUMNS}) SELECT id + 100, {_COLUMNS} FROM audit_log "
                "ORDER BY id DESC LIMIT 1"
            )
        )


@contextmanager
def _superuser(db: Runtime) -> Iterator[Connection]:
    """What the owner or a superuser could do: switch the trigger off and edit. Rolled back after."""
    with db.engine.connect() as connection:
        transaction = connection.begin()
        try:
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield connection
        finally:
            transaction.rollback()


def _row(connection: Connection, entry_id: int) -> Row[Any]:
    return connection.execute(text("SELECT * FROM audit_log WHERE id = :id"), {"id": entry_id}).one()


def _edit_details(connection: Connection, ids: list[int]) -> int:
    connection.execute(text("UPDATE audit_log SET details = '{\"index\": 99}'::jsonb WHERE id = :id"), {"id": ids[2]})
    return ids[2]


def _edit_time(connection: Connection, ids: list[int]) -> int:
    connection.execute(
        text("UPDATE audit_log SET created_at = created_at - interval '1 microsecond' WHERE id = :id"), {"id": ids[3]}
    )
    return ids[3]


def _edit_and_rehash(connection: Connection, ids: list[int]) -> int:
    """A careful forger recomputes the edited entry's own hash: the next entry no longer links to it."""
    row = _row(connection, ids[2])
    forged = audit.chain_hash(
        prev_hash=row.prev_hash,
        entry_id=row.id,
        created_at=row.created_at,
        actor_id=row.actor_id,
        actor_scope="auditor",
        action=row.action,
        subject=row.subject,
        details=row.details,
    )
    connection.execute(
        text("UPDATE audit_log SET actor_scope = 'auditor', entry_hash = :forged WHERE id = :id"),
        {"forged": forged, "id": ids[2]},
    )
    return ids[3]


def _delete_middle(connection: Connection, ids: list[int]) -> int:
    connection.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[2]})
    return ids[3]


def _delete_first(connection: Connection, ids: list[int]) -> int:
    connection.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[0]})
    return ids[1]


def _swap(connection: Connection, ids: list[int]) -> int:
    """Reorder: the second and fourth entries trade places (every column but the id)."""
    params = {"a": ids[1], "b": ids[3]}
    connection.execute(
        text(f"CREATE TEMP TABLE swapped ON COMMIT DROP AS SELECT id, {_COLUMNS} FROM audit_log WHERE id IN (:a, :b)"),
        params,
    )
    connection.execute(text("DELETE FROM audit_log WHERE id IN (:a, :b)"), params)
    connection.execute(
        text(
            f"INSERT INTO audit_log (id, {_COLUMNS}) "
            f"SELECT CASE WHEN id = :a THEN :b ELSE :a END, {_COLUMNS} FROM swapped"
        ),
        params,
    )
    return ids[1]


def _renumber(connection: Connection, ids: list[int]) -> int:
    """Same order, same links, but the third entry now claims the unused id before it."""
    connection.execute(text("UPDATE audit_log SET id = :new WHERE id = :id"), {"new": ids[1] + 1, "id": ids[2]})
    return ids[1] + 1


def _insert_in_gap(connection: Connection, ids: list[int]) -> int:
    """An entry slipped into the id gap after the second one, itself correctly hashed."""
    before = _row(connection, ids[1])
    gap_id = ids[1] + 1
    forged = audit.chain_hash(
        prev_hash=before.entry_hash,
        entry_id=gap_id,
        created_at=before.created_at,
        actor_id=None,
        actor_scope="system",
        action="export",
        subject=None,
        details={},
    )
    connection.execute(text("ALTER TABLE audit_log DROP CONSTRAINT uq_audit_log_prev_hash"))
    connection.execute(
        text(
            "INSERT INTO audit_log (id, created_at, actor_scope, action, details, prev_hash, entry_hash) "
            "VALUES (:id, :created, 'system', 'export', '{}'::jsonb, :prev, :forged)"
        ),
        {"id": gap_id, "created": before.created_at, "prev": before.entry_hash, "forged": forged},
    )
    return ids[2]


def _log_with_a_gap(db: Runtime) -> list[int]:
    """Six entries; an append that rolled back between the second and third left an id unused."""
    ids = _append(db, 2)
    with db.sessions() as session:
        audit.record(session, action="export", actor=None, subject_user_id=None, details={})
        session.rollback()
    ids += _append(db, 4)
    assert ids[2] == ids[1] + 2
    return ids


def test_id_gaps_from_rolled_back_appends_are_not_tampering(db: Runtime) -> None:
    _log_with_a_gap(db)
    result = _verify(db)
    assert result.ok and result.entries == 6


@pytest.mark.parametrize(
    "tamper",
    [_edit_details, _edit_time, _edit_and_rehash, _delete_middle, _delete_first, _swap, _renumber, _insert_in_gap],
)
def test_tampering_is_detected_at_the_first_bad_entry(db: Runtime, tamper: Any) -> None:
    ids = _log_with_a_gap(db)
    with _superuser(db) as connection:
        first_bad = tamper(connection, ids)
        with Session(bind=connection) as session:
            result = audit.verify(session)
    assert not result.ok and result.head_hash is None and result.reason
    assert result.first_bad_id == first_bad, result
    assert _verify(db).ok  # the tampering was rolled back


def test_cutting_off_the_end_is_caught_with_an_anchor(db: Runtime) -> None:
    ids = _append(db, 4)
    head = bytes.fromhex(_verify(db).head_hash or "")
    with _superuser(db) as connection:
        connection.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[-1]})
        with Session(bind=connection) as session:
            unanchored = audit.verify(session)
            anchored = audit.verify(session, anchor=head)
    assert unanchored.ok and unanchored.entries == 3  # a shorter chain is still a valid chain
    assert not anchored.ok and anchored.first_bad_id is None and "anchor" in (anchored.reason or "")
    assert _verify(db, anchor=head).ok


def test_concurrent_appends_form_one_linear_chain(db: Runtime) -> None:
    threads, per_thread = 8, 10
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker() -> None:
        try:
            start.wait()
            _append(db, per_thread)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert not errors
    result = _verify(db)
    assert result.ok and result.entries == threads * per_thread
    with db.engine.connect() as connection:
        times = connection.execute(text("SELECT created_at FROM audit_log ORDER BY id")).scalars().all()
    assert times == sorted(times)  # the database clock is read under the append lock


@pytest.mark.parametrize(
    "details",
    [
        {"neg_zero": -0.0, "big": 1e16, "tiny": 1e-7, "tenth": 0.1, "huge_int": 2**62, "small": 5e-324},
        {"text": "ünïcødé \u2028 \"quoted\" \\", "nested": {"b": [1, 2.5, None, True], "a": {}}},
    ],
)
def test_details_hash_as_stored(db: Runtime, details: dict[str, Any]) -> None:
    """jsonb normalises numbers; the hash is taken over the normalised value, so it verifies."""
    with db.sessions() as session:
        audit.record(session, action="export", actor=None, subject_user_id=None, details=details)
        session.commit()
    assert _verify(db).ok


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "coffee_break"}, "action must be one of"),
        ({"details": {"password": "x"}}, "must not carry 'password'"),
        ({"details": {"meta": [{"Token": "x"}]}}, "must not carry 'Token'"),
        ({"details": {"ratio": float("nan")}}, "details must be JSON"),
        ({"details": {"blob": "x" * 5000}}, "at most 4096 bytes"),
        ({"details": {"about": "SUBJECT"}}, "raw user id"),
        ({"subject_user_id": uuid.uuid4(), "pseudonym_key": None}, "pseudonym_key is required"),
    ],
)
def test_record_refuses_bad_input(db: Runtime, kwargs: dict[str, Any], message: str) -> None:
    subject = uuid.uuid4()
    arguments: dict[str, Any] = {
        "action": "export",
        "actor": None,
        "subject_user_id": subject,
        "details": {},
        "pseudonym_key": db.secrets.audit_pseudonym_key,
        **kwargs,
    }
    if arguments["details"] == {"about": "SUBJECT"}:
        arguments["details"] = {"about": subject.hex}
    with db.sessions() as session, pytest.raises(ValueError, match=message):
        audit.record(session, **arguments)


def test_subjects_are_keyed_pseudonyms(db: Runtime) -> None:
    user_id = uuid.uuid4()
    key = db.secrets.audit_pseudonym_key
    with db.sessions() as session:
        entry = audit.record(
            session, action="export", actor=None, subject_user_id=user_id, details={}, pseudonym_key=key
        )
        session.commit()
    assert entry.subject == audit.pseudonym(user_id, key=key)
    assert entry.subject != audit.pseudonym(user_id, key=b"another key") and user_id.hex not in entry.subject


@pytest.fixture
def cli_env(db: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI against the test database; its logging setup is undone afterwards."""
    monkeypatch.setenv("DATABASE_URL", db.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("MATCHSVC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MATCHSVC_LOG_LEVEL", "ERROR")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_verify_exits_1_and_names_the_first_bad_entry(db: Runtime, cli_env: None) -> None:
    ids = _append(db, 3)
    runner = CliRunner()
    good = runner.invoke(cli_app, ["audit", "verify", "--json"])
    assert good.exit_code == 0, good.output
    assert json.loads(good.stdout)["ok"] is True
    head = json.loads(good.stdout)["head_hash"]
    assert runner.invoke(cli_app, ["audit", "verify", "--anchor", head]).exit_code == 0
    assert runner.invoke(cli_app, ["audit", "verify", "--anchor", "nothex"]).exit_code == 2
    with db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        connection.execute(text("UPDATE audit_log SET action = 'deletion' WHERE id = :id"), {"id": ids[1]})
        connection.exec_driver_sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    bad = runner.invoke(cli_app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert f"first_bad_id = {ids[1]}" in bad.stdout
    assert f"audit chain broken at entry {ids[1]}" in bad.stderr
