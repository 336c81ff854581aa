"""The tamper-evident audit log: append, verify, and read (decision D7 in docs/decisions.md).

Chain format (stable: an external verifier needs nothing but this docstring and the rows)::

    entry_hash = SHA-256(prev_hash || canonical)
    prev_hash  = entry_hash of the entry with the next-lower id; 32 zero bytes for the first entry
    canonical  = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                            allow_nan=False).encode("ascii")
    body       = {"id": int, "created_at": ISO 8601 in UTC with microseconds ("...+00:00"),
                  "actor_id": str UUID | null, "actor_scope": str, "action": str,
                  "subject": 64 hex | null, "details": the stored jsonb object}

The hash covers the id, so moving an entry's content to another id breaks the chain just like
editing it. Ids may have gaps (an append that rolled back still consumed its id); gaps are not
tampering, a removed entry shows up because its successor's ``prev_hash`` no longer matches.
Cutting entries off the *end* leaves a valid shorter chain: to catch that, keep the ``head_hash``
of a verification somewhere else and pass it as ``anchor`` to a later one.

Appends are serialised by a transaction-level advisory lock and ``UNIQUE (prev_hash)`` makes a
fork impossible even for a writer that bypasses the lock. Callers must run at READ COMMITTED (the
default): the head is read after the lock is granted, which only then sees the last commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy.orm import Session

from matchsvc.db.audit_models import HASH_BYTES, AuditEntry
from matchsvc.db.models import User
from matchsvc.errors import InvalidInput
from matchsvc.repositories import audit as audit_repo
from matchsvc.security import Scope

__all__ = [
    "FORBIDDEN_DETAIL_KEYS",
    "GENESIS_HASH",
    "MAX_DETAILS_BYTES",
    "MAX_PAGE_SIZE",
    "STAFF_SCOPES",
    "AuditAction",
    "AuditFilter",
    "AuditSlice",
    "VerificationResult",
    "chain_hash",
    "list_entries",
    "pseudonym",
    "read_log",
    "record",
    "verify",
    "verify_log",
]

GENESIS_HASH = bytes(HASH_BYTES)
MAX_PAGE_SIZE = 1000
#: Actors named in ``actor_id``: staff are accountable by name, users appear only as a pseudonym.
STAFF_SCOPES = frozenset({Scope.auditor.value, Scope.admin.value})
#: Keys that would put a secret or an identity into an entry that can never be erased.
FORBIDDEN_DETAIL_KEYS = frozenset({"password", "token", "access_token", "secret", "username", "user_id", "email"})
MAX_DETAILS_BYTES = 4096
_PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")


class AuditAction(str, Enum):
    """What an entry records. A closed set, so a typo fails at the call site instead of in a report."""

    login = "login"
    login_failed = "login_failed"
    login_throttled = "login_throttled"
    export = "export"
    deletion = "deletion"
    key_rotation = "key_rotation"
    privacy_cap_change = "privacy_cap_change"
    auditor_read = "auditor_read"
    population_release = "population_release"
    refresh_token_reuse = "refresh_token_reuse"
    password_change = "password_change"


def pseudonym(user_id: uuid.UUID, *, key: bytes) -> str:
    """``HMAC-SHA256(key, user_id.bytes)`` in hex: stable per user, meaningless without the key and the id."""
    return hmac.new(key, user_id.bytes, hashlib.sha256).hexdigest()


def chain_hash(
    *,
    prev_hash: bytes,
    entry_id: int,
    created_at: datetime,
    actor_id: uuid.UUID | None,
    actor_scope: str,
    action: str,
    subject: str | None,
    details: Mapping[str, Any],
) -> bytes:
    """The ``entry_hash`` of an entry with these fields (format in the module docstring)."""
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    body = {
        "id": entry_id,
        "created_at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": None if actor_id is None else str(actor_id),
        "actor_scope": actor_scope,
        "action": action,
        "subject": subject,
        "details": details,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(prev_hash + canonical.encode("ascii")).digest()


def _details_json(details: Mapping[str, Any], *, raw_ids: list[uuid.UUID]) -> str:
    """Serialise and check ``details``. Values are never echoed: a mistake might have put a secret there."""
    if not isinstance(details, Mapping):
        raise ValueError(f"details must be a mapping, got {type(details).__name__}")

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"details key at {path or 'top level'} must be a string")
                if key.lower() in FORBIDDEN_DETAIL_KEYS:
                    raise ValueError(f"details must not carry {key!r} (secrets and identities never enter the log)")
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(details, "")
    try:
        encoded = json.dumps(details, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("details must be JSON: strings, finite numbers, booleans, null, lists and objects") from None
    if len(encoded.encode()) > MAX_DETAILS_BYTES:
        raise ValueError(f"details must serialise to at most {MAX_DETAILS_BYTES} bytes")
    for raw in raw_ids:
        if str(raw) in encoded or raw.hex in encoded:
            raise ValueError("details must not contain a raw user id; the subject pseudonym identifies the user")
    return encoded


def _actor_fields(actor: User | None, *, actor_scope: str | None) -> tuple[uuid.UUID | None, str]:
    """``(actor_id, actor_scope)``: the id only for staff, the scope from the account unless given."""
    held = sorted(actor.scopes) if actor is not None else []
    scope = actor_scope if actor_scope is not None else (" ".join(held) or "system")
    if not 1 <= len(scope) <= 64:
        raise ValueError(f"actor_scope must be 1-64 characters, got {len(scope)}")
    return (actor.id if actor is not None and STAFF_SCOPES & set(held) else None), scope


def _append(
    session: Session,
    *,
    action: AuditAction,
    actor_id: uuid.UUID | None,
    actor_scope: str,
    subject: str | None,
    details_json: str,
) -> AuditEntry:
    audit_repo.lock_chain(session)
    head, entry_id, created_at, details = audit_repo.allocate_entry(session, details_json=details_json)
    prev_hash = head or GENESIS_HASH
    digest = chain_hash(
        prev_hash=prev_hash,
        entry_id=entry_id,
        created_at=created_at,
        actor_id=actor_id,
        actor_scope=actor_scope,
        action=action.value,
        subject=subject,
        details=details,
    )
    return audit_repo.add_entry(
        session,
        entry_id=entry_id,
        created_at=created_at,
        actor_id=actor_id,
        actor_scope=actor_scope,
        action=action.value,
        subject=subject,
        details=details,
        prev_hash=prev_hash,
        entry_hash=digest,
    )


def record(
    session: Session,
    *,
    action: AuditAction | str,
    actor: User | None,
    subject_user_id: uuid.UUID | None,
    details: Mapping[str, Any],
    pseudonym_key: bytes | None = None,
    actor_scope: str | None = None,
) -> AuditEntry:
    """Append an entry in the caller's transaction (never commits: the entry stands or falls with it).

    Holds the log's append lock until the caller's transaction ends, so make it the last statement
    before the commit. The actor's id is stored only for staff (``auditor``/``admin`` scope); a user
    is identified solely by the ``subject`` pseudonym, so nothing in the log names them once deleted.

    Parameters
    ----------
    action : AuditAction or str
        One of :class:`AuditAction`.
    actor : User or None
        Who did it; None for the system itself (CLI jobs) or an anonymous caller.
    subject_user_id : uuid.UUID or None
        The user the entry is about, stored only as :func:`pseudonym` (needs ``pseudonym_key``).
    details : mapping
        Small JSON object (at most 4 KiB) with no personal data and no secrets.
    pseudonym_key : bytes, optional
        ``runtime.secrets.audit_pseudonym_key``; required when ``subject_user_id`` is given.
    actor_scope : str, optional
        Overrides the recorded scope: defaults to the actor's scopes (space-separated), else ``system``.
    """
    try:
        action = AuditAction(action)
    except ValueError:
        raise ValueError(f"action must be one of {[a.value for a in AuditAction]}, got {action!r}") from None
    subject = None
    if subject_user_id is not None:
        if not pseudonym_key:
            raise ValueError("pseudonym_key is required when subject_user_id is given")
        subject = pseudonym(subject_user_id, key=pseudonym_key)
    actor_id, scope = _actor_fields(actor, actor_scope=actor_scope)
    raw_ids = [i for i in (subject_user_id, actor.id if actor is not None else None) if i is not None]
    return _append(
        session,
        action=action,
        actor_id=actor_id,
        actor_scope=scope,
        subject=subject,
        details_json=_details_json(details, raw_ids=raw_ids),
    )


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of walking the chain. ``first_bad_id`` is the first entry at which it breaks.

    ``head_hash`` (hex) is the newest entry's hash when the chain is intact: store it elsewhere and
    pass it back as ``anchor`` later to detect entries cut off the end.
    """

    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str | None
    head_hash: str | None


def verify(session: Session, *, anchor: bytes | None = None) -> VerificationResult:
    """Recompute the chain in id order from one snapshot; stop at the first broken link.

    Parameters
    ----------
    anchor : bytes, optional
        A ``head_hash`` from an earlier verification: the chain must still contain that entry.
    """
    if anchor is not None and len(anchor) != HASH_BYTES:
        raise InvalidInput(f"anchor must be a {HASH_BYTES}-byte hash, got {len(anchor)} bytes")
    expected = GENESIS_HASH
    entries = 0
    anchored = anchor is None
    for row in audit_repo.iter_chain(session):
        entries += 1
        if row.prev_hash != expected:
            reason = "prev_hash does not match the preceding entry: an entry before it was removed, reordered or rewritten"
            return VerificationResult(ok=False, entries=entries, first_bad_id=row.id, reason=reason, head_hash=None)
        recomputed = chain_hash(
            prev_hash=row.prev_hash,
            entry_id=row.id,
            created_at=row.created_at,
            actor_id=row.actor_id,
            actor_scope=row.actor_scope,
            action=row.action,
            subject=row.subject,
            details=row.details,
        )
        if not hmac.compare_digest(recomputed, row.entry_hash):
            reason = "entry_hash does not match the entry's content: the entry was edited or moved"
            return VerificationResult(ok=False, entries=entries, first_bad_id=row.id, reason=reason, head_hash=None)
        anchored = anchored or row.entry_hash == anchor
        expected = row.entry_hash
    if not anchored:
        reason = "anchor not found: entries were cut off the end of the log, or the log was rebuilt"
        return VerificationResult(ok=False, entries=entries, first_bad_id=None, reason=reason, head_hash=None)
    head = None if entries == 0 else expected.hex()
    return VerificationResult(ok=True, entries=entries, first_bad_id=None, reason=None, head_hash=head)


@dataclass(frozen=True)
class AuditFilter:
    """Which entries to list. ``since`` is inclusive and ``until`` exclusive; both timezone-aware."""

    action: AuditAction | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.subject is not None and not _PSEUDONYM.fullmatch(self.subject):
            raise InvalidInput("subject must be a pseudonym: 64 lower-case hex characters")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidInput(f"{name} must include a timezone (e.g. 2026-01-01T00:00:00Z), got {value.isoformat()}")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInput(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")

    def describe(self) -> dict[str, str]:
        """The filter as JSON-able details for the ``auditor_read`` entry."""
        values = {
            "action": self.action.value if self.action is not None else None,
            "subject": self.subject,
            "since": self.since.astimezone(UTC).isoformat() if self.since is not None else None,
            "until": self.until.astimezone(UTC).isoformat() if self.until is not None else None,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class AuditSlice:
    items: list[AuditEntry]
    next_after_id: int | None


def list_entries(session: Session, *, where: AuditFilter, after_id: int | None, limit: int) -> AuditSlice:
    """One page of entries, oldest first, without recording the read (for services that do that)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    rows = list(
        audit_repo.list_entries(
            session,
            action=where.action.value if where.action is not None else None,
            subject=where.subject,
            since=where.since,
            until=where.until,
            after_id=after_id,
            limit=limit + 1,
        )
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    return AuditSlice(items=rows, next_after_id=rows[-1].id if has_more else None)


def read_log(session: Session, *, auditor: User, where: AuditFilter, after_id: int | None, limit: int) -> AuditSlice:
    """An auditor's page of the log; the read itself is logged (``auditor_read``) and committed."""
    page = list_entries(session, where=where, after_id=after_id, limit=limit)
    details: dict[str, Any] = {"resource": "log", "filters": where.describe(), "returned": len(page.items)}
    actor_id, scope = _actor_fields(auditor, actor_scope=None)
    # The subject filter is already a pseudonym: the read is recorded as being about that user.
    _append(
        session,
        action=AuditAction.auditor_read,
        actor_id=actor_id,
        actor_scope=scope,
        subject=where.subject,
        details_json=_details_json(details, raw_ids=[auditor.id]),
    )
    session.commit()
    return page


def verify_log(session: Session, *, auditor: User, anchor: bytes | None = None) -> VerificationResult:
    """:func:`verify` on an auditor's behalf; the check is logged (``auditor_read``) after it ran."""
    result = verify(session, anchor=anchor)
    details = {"resource": "verify", "ok": result.ok, "entries": result.entries}
    record(session, action=AuditAction.auditor_read, actor=auditor, subject_user_id=None, details=details)
    session.commit()
    return result
