"""Audit log entries, pages and chain verification."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from matchsvc.services.audit import AuditAction

__all__ = ["AuditEntryPublic", "AuditPage", "AuditVerification", "HEX_DIGEST_PATTERN"]

HEX_DIGEST_PATTERN = r"^[0-9a-f]{64}$"


def _hex(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes | bytearray | memoryview) else value


#: A SHA-256 digest as 64 lower-case hex characters.
HexDigest = Annotated[str, BeforeValidator(_hex), Field(pattern=HEX_DIGEST_PATTERN)]


class AuditEntryPublic(BaseModel):
    """Every hashed field is included, so a client can recompute the chain on its own."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    actor_id: uuid.UUID | None = Field(description="The staff account (auditor or admin) that acted; null otherwise")
    actor_scope: str = Field(description="Scopes of the actor, `anonymous` for a failed login, `system` for jobs")
    action: AuditAction
    subject: str | None = Field(description="Pseudonym of the user concerned (HMAC of their id); never a raw id")
    details: dict[str, Any]
    prev_hash: HexDigest
    entry_hash: HexDigest = Field(description="SHA-256 of prev_hash and the canonical entry")


class AuditPage(BaseModel):
    items: list[AuditEntryPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page")


class AuditVerification(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ok: bool = Field(description="True when every entry links to the one before and matches its hash")
    entries: int = Field(description="Entries examined (up to and including the first bad one)")
    first_bad_id: int | None = Field(description="The first entry at which the chain breaks")
    reason: str | None
    head_hash: HexDigest | None = Field(
        description="Hash of the newest entry when intact: keep it and pass it later as `anchor`"
    )
