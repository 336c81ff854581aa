"""Registration, OAuth2 password-flow tokens, refresh with rotation, and logout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import AnyCaller, RuntimeDep, SessionDep
from api.schemas.problem import problem_responses
from api.schemas.users import Token, UserCreate, UserPublic
from matchsvc.runtime import Runtime
from matchsvc.services import auth as auth_service
from matchsvc.services import sessions as sessions_service

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    responses=problem_responses(409),
    summary="Create an account (adults only)",
)
def register(body: UserCreate, session: SessionDep, runtime: RuntimeDep) -> UserPublic:
    user = auth_service.register(
        session, keys=runtime.keys, username=body.username, password=body.password, birth_year=body.birth_year
    )
    return UserPublic.model_validate(user)


def _policy(runtime: Runtime) -> sessions_service.TokenPolicy:
    return sessions_service.TokenPolicy.from_settings(runtime.settings, secret=runtime.secrets.token_key)


#: RFC 6749 section 5.1: responses carrying tokens must not be stored by any cache.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _token(issued: sessions_service.IssuedTokens, response: Response) -> Token:
    response.headers.update(_NO_STORE)
    now = datetime.now(UTC)
    return Token(
        access_token=issued.access_token,
        expires_in=round((issued.expires_at - now).total_seconds()),
        scope=" ".join(sorted(issued.scopes)),
        refresh_token=issued.refresh_token,
        refresh_expires_in=round((issued.refresh_expires_at - now).total_seconds()),
        session_id=issued.session_id,
    )


@router.post(
    "/token",
    response_model=Token,
    responses=problem_responses(401, 403),
    summary="Exchange username and password for an access token, a refresh token and a new session",
)
def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    device_name: Annotated[
        str | None, Form(max_length=64, description="Shown in GET /v1/me/sessions, e.g. 'Pixel 8'")
    ] = None,
) -> Token:
    issued = auth_service.login(
        session,
        username=form.username,
        password=form.password,
        requested=frozenset(form.scopes),
        device_name=device_name,
        policy=_policy(runtime),
        pseudonym_key=runtime.secrets.audit_pseudonym_key,
    )
    return _token(issued, response)


@router.post(
    "/refresh",
    response_model=Token,
    responses=problem_responses(401),
    summary="Spend a refresh token for a new access token and a new refresh token (rotation)",
)
def refresh(
    response: Response,
    session: SessionDep,
    runtime: RuntimeDep,
    refresh_token: Annotated[str, Form(min_length=1, max_length=256)],
    grant_type: Annotated[Literal["refresh_token"] | None, Form()] = None,
) -> Token:
    """Each refresh token works once. Presenting a spent one revokes its whole session (someone
    else holds a copy): the client must then log in with the password again."""
    issued = sessions_service.refresh(
        session,
        refresh_token=refresh_token,
        policy=_policy(runtime),
        pseudonym_key=runtime.secrets.audit_pseudonym_key,
    )
    return _token(issued, response)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401),
    summary="End the session of this access token (its refresh token stops working too)",
)
def logout(caller: AnyCaller, session: SessionDep) -> Response:
    sessions_service.logout(session, user_id=caller.user.id, session_id=caller.session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
