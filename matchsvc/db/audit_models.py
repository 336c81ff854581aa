"""The tamper-evident audit log (ORM model). Apart from :mod:`matchsvc.db.models` because it is not
personal data keyed by a user: rows survive the deletion of everyone they mention.

* ``actor_id`` names staff (auditor/admin) actors only and has no foreign key, so an entry outlives
  its actor's account. A user acting on their own data leaves it NULL (see
  :func:`matchsvc.services.audit.record`).
* ``subject`` is ``HMAC-SHA256(audit pseudonym key, user id)`` in hex, never a raw id or username:
  entries about a user can be found while the user exists, and mean nothing once they are deleted.
* ``entry_hash = SHA-256(prev_hash || canonical JSON of the entry)`` links each row to the one
  before it (the first links to 32 zero bytes); ``UNIQUE (prev_hash)`` makes a fork impossible.
* The migration adds a trigger that refuses UPDATE and DELETE: the table is append-only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Identity, LargeBinary, String
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from matchsvc.db.base import Base, utcnow_column

__all__ = ["AuditEntry", "HASH_BYTES"]

#: SHA-256 digest length; both hash columns hold exactly this many bytes.
HASH_BYTES = 32


class AuditEntry(Base):
    """One append-only, hash-chained audit record."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint(
            f"octet_length(prev_hash) = {HASH_BYTES} AND octet_length(entry_hash) = {HASH_BYTES}",
            name="hash_lengths",
        ),
        CheckConstraint("subject ~ '^[0-9a-f]{64}$'", name="subject_is_pseudonym"),
        CheckConstraint("jsonb_typeof(details) = 'object'", name="details_is_object"),
    )

    #: BY DEFAULT (not ALWAYS): the appender draws the id first, because the id is hashed.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[datetime] = utcnow_column()
    actor_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), nullable=True)
    actor_scope: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, unique=True)
    entry_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
