"""The audit log table: the append protocol's statements and the read queries."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, text
from sqlalchemy.orm import Session

from matchsvc.db.audit_models import AuditEntry

__all__ = ["add_entry", "allocate_entry", "iter_chain", "list_entries", "lock_chain"]

#: Transaction-level advisory lock key that serialises appends (any fixed 64-bit value will do; this
#: one is derived from a name so it cannot collide by accident with another subsystem's key).
CHAIN_LOCK_KEY = int.from_bytes(hashlib.sha256(b"matchsvc/audit-log/append").digest()[:8], "big", signed=True)


def lock_chain(session: Session) -> None:
    """Block until no other transaction is appending; held until this transaction ends."""
    session.execute(select(func.pg_advisory_xact_lock(CHAIN_LOCK_KEY)))


def allocate_entry(session: Session, *, details_json: str) -> tuple[bytes | None, int, datetime, dict[str, Any]]:
    """The chain head, the next id, the database clock, and ``details`` exactly as ``jsonb`` returns it.

    One statement, run after :func:`lock_chain`: its snapshot is taken once the lock is granted, so
    it sees the previous holder's entry (at READ COMMITTED), and the id and time are drawn in chain
    order. The head is None for an empty log. ``clock_timestamp()`` (not ``now()``, the
    transaction's start) keeps ``created_at`` in chain order even for a transaction that waited.
    ``details`` goes through ``jsonb`` because ``jsonb`` normalises numbers (``-0.0``, ``1e16``):
    hashing the normalised value is what makes the hash recomputable from the stored row.
    """
    row = session.execute(
        text(
            "SELECT (SELECT entry_hash FROM audit_log ORDER BY id DESC LIMIT 1), "
            "nextval(pg_get_serial_sequence('audit_log', 'id')), clock_timestamp(), CAST(:details AS jsonb)"
        ),
        {"details": details_json},
    ).one()
    return row[0], int(row[1]), row[2], row[3]


def add_entry(
    session: Session,
    *,
    entry_id: int,
    created_at: datetime,
    actor_id: uuid.UUID | None,
    actor_scope: str,
    action: str,
    subject: str | None,
    details: dict[str, Any],
    prev_hash: bytes,
    entry_hash: bytes,
) -> AuditEntry:
    entry = AuditEntry(
        id=entry_id,
        created_at=created_at,
        actor_id=actor_id,
        actor_scope=actor_scope,
        action=action,
        subject=subject,
        details=details,
        prev_hash=prev_hash,
        entry_hash=entry_hash,
    )
    session.add(entry)
    session.flush()
    return entry


def iter_chain(session: Session, *, batch_size: int = 1000) -> Iterator[Row[Any]]:
    """Every entry in id order, streamed from one snapshot (a server-side cursor, one statement)."""
    query = select(
        AuditEntry.id,
        AuditEntry.created_at,
        AuditEntry.actor_id,
        AuditEntry.actor_scope,
        AuditEntry.action,
        AuditEntry.subject,
        AuditEntry.details,
        AuditEntry.prev_hash,
        AuditEntry.entry_hash,
    ).order_by(AuditEntry.id)
    yield from session.execute(query.execution_options(yield_per=batch_size))


def list_entries(
    session: Session,
    *,
    action: str | None,
    subject: str | None,
    since: datetime | None,
    until: datetime | None,
    after_id: int | None,
    limit: int,
) -> Sequence[AuditEntry]:
    """Keyset pagination by id, oldest first; ``since`` is inclusive, ``until`` exclusive."""
    query = select(AuditEntry)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if subject is not None:
        query = query.where(AuditEntry.subject == subject)
    if since is not None:
        query = query.where(AuditEntry.created_at >= since)
    if until is not None:
        query = query.where(AuditEntry.created_at < until)
    if after_id is not None:
        query = query.where(AuditEntry.id > after_id)
    return session.scalars(query.order_by(AuditEntry.id).limit(limit)).all()
