"""Data-subject rights: export and erasure, by the user or by an auditor (always audited)."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from api.deps import AuditorUser, CurrentUser, RuntimeDep, SessionDep
from api.schemas.problem import problem_responses
from api.schemas.subjects import DeletionProof, ExportBundle, PopulationBudget
from matchsvc.db.models import User
from matchsvc.runtime import Runtime
from matchsvc.services import audit
from matchsvc.services import data_subject as subject_service
from matchsvc.services.privacy import population_budget
from matchsvc.services.population import PopulationPolicy, population_ledger

router = APIRouter(tags=["data rights"], responses=problem_responses(401, 403))


def _export(session: Session, runtime: Runtime, *, user_id: uuid.UUID, actor: User) -> ExportBundle:
    bundle = subject_service.export_user(
        session, user_id=user_id, keys=runtime.keys, actor=actor, pseudonym_key=runtime.secrets.audit_pseudonym_key
    )
    return ExportBundle.model_validate(bundle)


def _delete(runtime: Runtime, *, user_id: uuid.UUID, actor: User | None) -> Response:
    subject_service.delete_user(
        runtime.sessions,
        user_id=user_id,
        keys=runtime.keys,
        actor=actor,
        pseudonym_key=runtime.secrets.audit_pseudonym_key,
    )
    return Response(status_code=204)


@router.get("/v1/me/export", response_model=ExportBundle, summary="Everything we hold about you, decrypted")
def export_me(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> ExportBundle:
    return _export(session, runtime, user_id=user.id, actor=user)


@router.delete("/v1/me", status_code=204, summary="Delete your account and all your data (crypto-shredded)")
def delete_me(user: CurrentUser, runtime: RuntimeDep) -> Response:
    return _delete(runtime, user_id=user.id, actor=None)  # a user erasing themselves leaves no actor id


@router.get(
    "/v1/audit/users/{user_id}/export",
    response_model=ExportBundle,
    responses=problem_responses(404),
    summary="Export a user's data (auditor; logged)",
)
def export_user(user_id: uuid.UUID, auditor: AuditorUser, session: SessionDep, runtime: RuntimeDep) -> ExportBundle:
    return _export(session, runtime, user_id=user_id, actor=auditor)


@router.delete("/v1/audit/users/{user_id}", status_code=204, summary="Delete a user (auditor; idempotent; logged)")
def delete_user(user_id: uuid.UUID, auditor: AuditorUser, runtime: RuntimeDep) -> Response:
    return _delete(runtime, user_id=user_id, actor=auditor)


@router.get(
    "/v1/audit/users/{user_id}/deletion-proof",
    response_model=DeletionProof,
    summary="Rows referencing a user in every table, found by walking the schema",
)
def deletion_proof(user_id: uuid.UUID, auditor: AuditorUser, session: SessionDep, runtime: RuntimeDep) -> DeletionProof:
    proof = subject_service.deletion_proof(session, user_id=user_id)
    audit.record(
        session,
        action=audit.AuditAction.auditor_read,
        actor=auditor,
        subject_user_id=user_id,
        details={"resource": "deletion-proof", "clean": proof.clean},
        pseudonym_key=runtime.secrets.audit_pseudonym_key,
    )
    session.commit()
    return DeletionProof(user_id=proof.user_id, clean=proof.clean, references=proof.references)


@router.get(
    "/v1/audit/privacy-budget",
    response_model=PopulationBudget,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or per-user CSV with format=csv"}},
    summary="Privacy spend across users: per mechanism, distribution, users at the cap, population model releases",
)
def privacy_budget(
    auditor: AuditorUser,
    session: SessionDep,
    runtime: RuntimeDep,
    output: Annotated[
        Literal["json", "csv"], Query(alias="format", description="json summary or per-user csv")
    ] = "json",
) -> PopulationBudget | Response:
    report = population_budget(session, policy=runtime.policy)
    audit.record(
        session, action=audit.AuditAction.auditor_read, actor=auditor, subject_user_id=None,
        details={"resource": "privacy-budget", "format": output},
    )
    session.commit()
    if output == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["user_pseudonym", "epsilon_spent", "delta_spent", "epsilon_cap"])
        for user_id, eps, delta in report.per_user:
            writer.writerow([audit.pseudonym(user_id, key=runtime.secrets.audit_pseudonym_key), eps, delta, report.epsilon_cap])
        return Response(out.getvalue(), media_type="text/csv")
    ledger = population_ledger(session, policy=PopulationPolicy.from_settings(runtime.settings))
    return PopulationBudget.model_validate({**vars(report), "population_model": ledger}, from_attributes=True)
