"""The caller's sign-in sessions (one per device) and password change."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from api.deps import AnyCaller, AnyUser, RuntimeDep, SessionDep
from api.schemas.problem import problem_responses
from api.schemas.sessions import PasswordChange, SessionList, SessionPublic
from matchsvc.services import auth as auth_service
from matchsvc.services import sessions as sessions_service

router = APIRouter(prefix="/v1/me", tags=["sessions"], responses=problem_responses(401))


@router.get("/sessions", response_model=SessionList, summary="Your active sessions, most recently used first")
def my_sessions(caller: AnyCaller, session: SessionDep) -> SessionList:
    return SessionList(
        items=[
            SessionPublic(
                id=row.id,
                device_name=row.device_name,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                expires_at=row.expires_at,
                current=row.id == caller.session_id,
            )
            for row in sessions_service.list_sessions(session, user_id=caller.user.id)
        ]
    )


@router.delete(
    "/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(404),
    summary="Sign a device out: its access and refresh tokens stop working at once",
)
def revoke_my_session(session_id: uuid.UUID, caller: AnyCaller, session: SessionDep) -> Response:
    sessions_service.revoke_session(session, user_id=caller.user.id, session_id=session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(403, 429),
    summary="Change your password; every session ends, this one included (log in again)",
)
def change_password(body: PasswordChange, user: AnyUser, session: SessionDep, runtime: RuntimeDep) -> Response:
    """403 (not 401) for a wrong ``current_password``: the access token is fine, so a client must
    not treat it as an expired token. Failed checks back off like failed logins (429)."""
    auth_service.change_password(
        session,
        user=user,
        current_password=body.current_password,
        new_password=body.new_password,
        pseudonym_key=runtime.secrets.audit_pseudonym_key,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
