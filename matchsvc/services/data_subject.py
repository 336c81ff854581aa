"""Data-subject rights: export everything held about a user, erase it, and prove the erasure.

Both walk the schema rather than a hand-kept list: every table with a foreign key to ``users.id``
is visited, so a table added later is erased without touching this module. Export follows the
ownership rule of docs/privacy.md: each such table declares in :data:`OWNERSHIP` which columns name
the row's owner(s); a subject gets the rows they own and nothing of rows others own that merely
name them. A table (or users column) without a declared rule, or a sealed (``*_ct``) column
nobody taught export to open, makes the export fail loudly instead of leaking or leaving data out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import Column, Table, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from matchsvc.db.audit_models import AuditEntry
from matchsvc.db.base import Base
from matchsvc.db.models import Face, User
from matchsvc.errors import NotFound, PermissionDenied
from matchsvc.keys import KeyRingStore, UserCipher
from matchsvc.services import audit
from matchsvc.services.keys import retire_old_keks, rotate_keys, user_cipher
from matchsvc.services.sealed import export_state, open_choice, open_filters, open_label, open_latent

__all__ = [
    "DeletionCheck",
    "EXPORT_FORMAT",
    "OWNERSHIP",
    "Ownership",
    "delete_user",
    "deletion_proof",
    "export_user",
    "owned_references",
    "user_references",
]

EXPORT_FORMAT = "matchsvc-export/2"

log = structlog.get_logger(__name__)

#: Columns never exported: credentials and key material (the export is decrypted already).
_WITHHELD = {("users", "password_hash"), ("user_keys", "wrapped_key")}


def _refused(
    session: Session, action: audit.AuditAction, *, user_id: uuid.UUID, actor: User | None, pseudonym_key: bytes
) -> bool:
    """Audit and refuse an attempt on a missing user (returns True) or on any staff account (raises).

    Staff accounts, the caller's own included, are exported and deleted from the command line,
    never over the API: an auditor must not be able to erase themselves (or their audit trail's
    actor) with a request.
    """
    user = session.get(User, user_id)
    if user is not None and set(user.scopes) <= {"user"}:
        return False
    audit.record(
        session,
        action=action,
        actor=actor,
        subject_user_id=user_id,
        details={"refused": "not found" if user is None else "staff account"},
        pseudonym_key=pseudonym_key,
    )
    session.commit()
    if user is None:
        return True
    raise PermissionDenied("staff accounts are exported and deleted from the command line")


#: How to open each sealed column, given the owner's cipher and the raw row.
SEALED: dict[tuple[str, str], Callable[[UserCipher, dict[str, Any]], Any]] = {
    ("ratings", "label_ct"): lambda c, r: {
        "recorded_like": open_label(c, face_id=r["face_id"], blob=r["label_ct"]),
        "privatised": r["label_epsilon"] is not None,
    },
    ("preference_states", "state_ct"): lambda c, r: export_state(c, r["state_ct"]),
    ("appearances", "latent_ct"): lambda c, r: open_latent(c, r["latent_ct"]).tolist(),
    ("profiles", "filters_ct"): lambda c, r: {
        "gender": (f := open_filters(c, r["filters_ct"])).gender.value,
        "seeks": sorted(g.value for g in f.seeks),
        "age_min": f.age_min,
        "age_max": f.age_max,
    },
    ("decisions", "choice_ct"): lambda c, r: open_choice(c, target_id=r["target_id"], blob=r["choice_ct"]).decode(),
}


@dataclass(frozen=True)
class Ownership:
    """Whose data a row is. ``owners``: the users columns naming its owner (two for a jointly owned
    row); ``mentions``: users columns naming someone the row is *about* but who does not own it.

    A mentioned user is shown nothing of the row in their export: no API response shows a user
    another person's candidate entry, decision or block about them.
    """

    owners: tuple[str, ...]
    mentions: tuple[str, ...] = ()


#: The ownership rule of every table with a foreign key to ``users.id`` (docs/privacy.md).
OWNERSHIP: dict[str, Ownership] = {
    "face_impressions": Ownership(owners=("user_id",)),
    "user_keys": Ownership(owners=("user_id",)),
    "ratings": Ownership(owners=("user_id",)),
    "preference_states": Ownership(owners=("user_id",)),
    "privacy_ledger": Ownership(owners=("user_id",)),
    "privacy_scope_totals": Ownership(owners=("user_id",)),
    "privacy_user_totals": Ownership(owners=("user_id",)),
    "refit_jobs": Ownership(owners=("user_id",)),
    "idempotency_keys": Ownership(owners=("user_id",)),
    "appearances": Ownership(owners=("user_id",)),
    "profiles": Ownership(owners=("user_id",)),
    "user_sessions": Ownership(owners=("user_id",)),
    # The owner's list; the candidate does not learn they are on it, nor at which rank.
    "candidates": Ownership(owners=("user_id",), mentions=("candidate_id",)),
    # The decider's like or pass; its mere existence would tell the target they were passed on.
    "decisions": Ownership(owners=("user_id",), mentions=("target_id",)),
    # The blocker's; the blocked user is never told who blocked them.
    "blocks": Ownership(owners=("blocker_id",), mentions=("blocked_id",)),
    # Both people see the whole match (id, each other, time) in GET /v1/matches.
    "matches": Ownership(owners=("user_low", "user_high")),
}


def owned_references() -> Iterator[tuple[Table, Column]]:
    """Every (table, owner column) to export from, after checking every users column has a rule.

    Raises
    ------
    RuntimeError
        A table has a foreign key to ``users.id`` that :data:`OWNERSHIP` does not declare.
    """
    declared: dict[str, set[str]] = {}
    for table, column in user_references():
        declared.setdefault(table.name, set()).add(column.name)
    for name, columns in declared.items():
        rule = OWNERSHIP.get(name)
        if rule is None or columns != {*rule.owners, *rule.mentions}:
            raise RuntimeError(
                f"export has no ownership rule for users columns {sorted(columns)} of table {name}: "
                "declare whose data its rows are in matchsvc.services.data_subject.OWNERSHIP"
            )
    for table in Base.metadata.sorted_tables:
        if table.name in declared:
            for owner in OWNERSHIP[table.name].owners:
                yield table, table.c[owner]


def user_references() -> Iterator[tuple[Table, Column]]:
    """Every (table, column) holding a foreign key to ``users.id``, from the live metadata."""
    users_id = User.__table__.c.id
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if any(fk.column is users_id for fk in column.foreign_keys):
                yield table, column


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return value


def _export_row(table: Table, row: dict[str, Any], *, cipher: UserCipher) -> dict[str, Any]:
    """One row the subject owns, sealed columns opened with the subject's cipher."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if (table.name, name) in _WITHHELD:
            continue
        if name.endswith("_ct"):
            if (table.name, name) not in SEALED:
                raise RuntimeError(f"export does not know how to open sealed column {table.name}.{name}")
            out[name.removesuffix("_ct")] = SEALED[(table.name, name)](cipher, row)
            continue
        out[name] = _plain(value)
    return out


def export_user(
    session: Session, *, user_id: uuid.UUID, keys: KeyRingStore, actor: User, pseudonym_key: bytes
) -> dict[str, Any]:
    """Everything ``user_id`` owns, decrypted, as one JSON-able bundle; the export is audited.

    Rows other people own that merely name the subject (their candidate lists, decisions, blocks)
    are theirs and are left out, for the user and for an auditor alike (docs/privacy.md).

    Raises
    ------
    NotFound
        No such user (the attempt is still audited).
    PermissionDenied
        An auditor asked for a staff account: those are managed from the command line.
    """
    references = list(owned_references())  # before anything else: an undeclared table fails loudly
    if _refused(session, audit.AuditAction.export, user_id=user_id, actor=actor, pseudonym_key=pseudonym_key):
        raise NotFound(f"user {user_id} not found")
    cipher = user_cipher(session, keys=keys, user_id=user_id)
    tables: dict[str, list[dict[str, Any]]] = {
        "users": [_export_row(User.__table__, _row(session, User.__table__, User.__table__.c.id, user_id)[0],
                              cipher=cipher)]
    }
    for table, column in references:
        for row in _row(session, table, column, user_id):
            exported = _export_row(table, row, cipher=cipher)
            tables.setdefault(table.name, []).append({"referenced_by": column.name, **exported})
    rated = [uuid.UUID(r["face_id"]) for r in tables.get("ratings", [])]
    faces = session.execute(select(Face.id, Face.latent).where(Face.id.in_(rated))).all() if rated else []
    subject = audit.pseudonym(user_id, key=pseudonym_key)
    entries = session.scalars(select(AuditEntry).where(AuditEntry.subject == subject).order_by(AuditEntry.id)).all()
    bundle = {
        "format": EXPORT_FORMAT,
        "generated_at": datetime.now(UTC).isoformat(),
        "user_id": str(user_id),
        "tables": tables,
        "rated_faces": {str(face_id): latent for face_id, latent in faces},
        "audit_entries": [
            {c.name: _plain(getattr(e, c.name)) for c in AuditEntry.__table__.columns} for e in entries
        ],
    }
    audit.record(
        session,
        action=audit.AuditAction.export,
        actor=actor,
        subject_user_id=user_id,
        details={"rows": sum(len(rows) for rows in tables.values())},
        pseudonym_key=pseudonym_key,
    )
    session.commit()
    return bundle


def _row(session: Session, table: Table, column: Column, user_id: uuid.UUID) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in session.execute(select(table).where(column == user_id))]


@dataclass(frozen=True)
class DeletionReceipt:
    deleted: bool
    rows_deleted: int
    kek_version: int | None


def delete_user(
    sessions: sessionmaker[Session],
    *,
    user_id: uuid.UUID,
    keys: KeyRingStore,
    actor: User | None,
    pseudonym_key: bytes,
) -> DeletionReceipt:
    """Erase the user: data key first (crypto-shredding), then every row that references them.

    One transaction, so a crash midway leaves everything in place and a retry starts over; a
    retry after success finds nothing and reports ``deleted=False``. Afterwards the key ring is
    rotated and every older KEK destroyed, so a backup taken before the deletion can no longer
    unwrap this user's data key (restore other users' keys from the live ``user_keys`` table).
    """
    with sessions() as session:
        if _refused(session, audit.AuditAction.deletion, user_id=user_id, actor=actor, pseudonym_key=pseudonym_key):
            return DeletionReceipt(deleted=False, rows_deleted=0, kek_version=None)
        removed = 0
        # The key goes first: if anything below fails, the transaction keeps it; if it commits,
        # every ciphertext of this user is unreadable even where a row were somehow left behind.
        for table, column in sorted(user_references(), key=lambda tc: tc[0].name != "user_keys"):
            removed += session.execute(delete(table).where(column == user_id)).rowcount
        removed += session.execute(delete(User).where(User.id == user_id)).rowcount
        audit.record(
            session,
            action=audit.AuditAction.deletion,
            actor=actor,
            subject_user_id=user_id,
            details={"rows_deleted": removed},
            pseudonym_key=pseudonym_key,
        )
        session.commit()
    if not keys.rotatable:
        log.warning("backups_not_shredded", reason="key ring from the environment cannot be rotated in place")
        return DeletionReceipt(deleted=True, rows_deleted=removed, kek_version=None)
    report = rotate_keys(sessions, keys=keys)
    retire_old_keks(sessions, keys=keys)
    return DeletionReceipt(deleted=True, rows_deleted=removed, kek_version=report.kek_version)


@dataclass(frozen=True)
class DeletionCheck:
    user_id: uuid.UUID
    clean: bool
    references: dict[str, int]


def deletion_proof(session: Session, *, user_id: uuid.UUID) -> DeletionCheck:
    """Count rows referencing the user in every table that can (found by walking the schema)."""
    counts = {"users.id": int(session.scalar(select(func.count()).where(User.id == user_id)) or 0)}
    for table, column in user_references():
        query = select(func.count()).select_from(table).where(column == user_id)
        counts[f"{table.name}.{column.name}"] = int(session.scalar(query) or 0)
    return DeletionCheck(user_id=user_id, clean=not any(counts.values()), references=counts)
