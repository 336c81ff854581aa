"""The audit log, for privacy auditors. Every read is itself written to the log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AuditorUser, SessionDep
from api.pagination import decode_cursor, encode_cursor
from api.schemas.audit import HEX_DIGEST_PATTERN, AuditEntryPublic, AuditPage, AuditVerification
from api.schemas.problem import problem_responses
from matchsvc.services import audit as audit_service
from matchsvc.services.audit import AuditAction, AuditFilter

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=problem_responses(401, 403))


@router.get("/log", response_model=AuditPage, summary="Audit entries, oldest first (the read is logged)")
def audit_log(
    auditor: AuditorUser,
    session: SessionDep,
    action: AuditAction | None = None,
    subject: Annotated[str | None, Query(pattern=HEX_DIGEST_PATTERN, description="A user's pseudonym")] = None,
    since: Annotated[datetime | None, Query(description="Inclusive, with a timezone")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, with a timezone")] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> AuditPage:
    page = audit_service.read_log(
        session,
        auditor=auditor,
        where=AuditFilter(action=action, subject=subject, since=since, until=until),
        after_id=decode_cursor(cursor),
        limit=limit,
    )
    return AuditPage(
        items=[AuditEntryPublic.model_validate(entry) for entry in page.items],
        next_cursor=encode_cursor(page.next_after_id) if page.next_after_id is not None else None,
    )


@router.get(
    "/log/verify",
    response_model=AuditVerification,
    summary="Recompute the hash chain and name the first bad entry (the check is logged)",
)
def verify_audit_log(
    auditor: AuditorUser,
    session: SessionDep,
    anchor: Annotated[
        str | None,
        Query(pattern=HEX_DIGEST_PATTERN, description="A head_hash from an earlier check; detects a cut-off tail"),
    ] = None,
) -> AuditVerification:
    result = audit_service.verify_log(
        session, auditor=auditor, anchor=bytes.fromhex(anchor) if anchor is not None else None
    )
    return AuditVerification.model_validate(result)
