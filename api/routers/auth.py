"""Registration and OAuth2 password-flow tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import RuntimeDep, SessionDep
from api.schemas.problem import problem_responses
from api.schemas.users import Token, UserCreate, UserPublic
from matchsvc.services import auth as auth_service

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


@router.post(
    "/token",
    response_model=Token,
    responses=problem_responses(401, 403),
    summary="Exchange username and password for a short-lived bearer token",
)
def token(form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep, runtime: RuntimeDep) -> Token:
    issued = auth_service.login(
        session,
        username=form.username,
        password=form.password,
        requested=frozenset(form.scopes),
        secret=runtime.secrets.token_key,
        minutes=runtime.settings.access_token_minutes,
        pseudonym_key=runtime.secrets.audit_pseudonym_key,
    )
    return Token(
        access_token=issued.access_token,
        expires_in=runtime.settings.access_token_minutes * 60,
        scope=" ".join(sorted(issued.scopes)),
    )
