"""Candidates from the matching job, likes and passes, matches, blocks."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from api.deps import CurrentUser, RuntimeDep, SessionDep
from api.pagination import decode_cursor, encode_cursor
from api.routers.profile import AVATAR_HEADERS
from api.schemas.matching import CandidatePage, CandidatePublic, DecisionResult, MatchList, MatchPublic
from api.schemas.problem import problem_responses
from matchsvc.runtime import Runtime
from matchsvc.services import matching as matching_service

router = APIRouter(tags=["matching"], responses=problem_responses(401, 403))

_PNG = {200: {"content": {"image/png": {}}, "description": "The rendered avatar"}, **problem_responses(404)}


@router.get("/v1/candidates", response_model=CandidatePage, summary="Your current candidates, best first")
def candidates(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> CandidatePage:
    page = matching_service.list_candidates(
        session, user_id=user.id, after_rank=decode_cursor(cursor), limit=limit, keys=runtime.keys
    )
    return CandidatePage(
        items=[
            CandidatePublic(
                user_id=other, avatar_url=str(request.url_for("candidate_avatar", candidate_id=other).path)
            )
            for other in page.user_ids
        ],
        next_cursor=encode_cursor(page.next_after_rank) if page.next_after_rank is not None else None,
    )


@router.get(
    "/v1/candidates/{candidate_id}/avatar",
    name="candidate_avatar",
    response_class=Response,
    responses=_PNG,
    summary="A candidate's generated avatar",
)
def candidate_avatar(candidate_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> Response:
    png = matching_service.candidate_avatar(
        session, user_id=user.id, candidate_id=candidate_id, keys=runtime.keys, space=runtime.latent_space
    )
    return Response(png, media_type="image/png", headers=AVATAR_HEADERS)


def _decide(candidate_id: uuid.UUID, user_id: uuid.UUID, like: bool, session: Session, runtime: Runtime) -> DecisionResult:
    result = matching_service.decide(session, user_id=user_id, target_id=candidate_id, like=like, keys=runtime.keys)
    return DecisionResult(matched=result.matched, match_id=result.match_id)


@router.post(
    "/v1/candidates/{candidate_id}/like",
    response_model=DecisionResult,
    responses=problem_responses(404, 422),
    summary="Like a candidate; a mutual like is a match",
)
def like(candidate_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> DecisionResult:
    return _decide(candidate_id, user.id, True, session, runtime)


@router.post(
    "/v1/candidates/{candidate_id}/pass",
    response_model=DecisionResult,
    responses=problem_responses(404, 422),
    summary="Pass on a candidate; neither of you is suggested to the other again",
)
def pass_(candidate_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> DecisionResult:
    return _decide(candidate_id, user.id, False, session, runtime)


@router.get("/v1/matches", response_model=MatchList, summary="Your matches")
def matches(request: Request, user: CurrentUser, session: SessionDep) -> MatchList:
    return MatchList(
        items=[
            MatchPublic(
                id=match.id,
                user_id=match.other_user_id,
                avatar_url=str(request.url_for("match_avatar", match_id=match.id).path),
                created_at=match.created_at,
            )
            for match in matching_service.list_matches(session, user_id=user.id)
        ]
    )


@router.delete("/v1/matches/{match_id}", status_code=204, responses=problem_responses(404), summary="Unmatch")
def unmatch(match_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    matching_service.unmatch(session, user_id=user.id, match_id=match_id)
    return Response(status_code=204)


@router.get(
    "/v1/matches/{match_id}/avatar",
    name="match_avatar",
    response_class=Response,
    responses=_PNG,
    summary="Your match's generated avatar",
)
def match_avatar(match_id: uuid.UUID, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> Response:
    png = matching_service.match_avatar(
        session, user_id=user.id, match_id=match_id, keys=runtime.keys, space=runtime.latent_space
    )
    return Response(png, media_type="image/png", headers=AVATAR_HEADERS)


@router.post(
    "/v1/users/{user_id}/block",
    status_code=204,
    responses=problem_responses(404, 422),
    summary="Block a user: hidden both ways, at once and forever",
)
def block(user_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    matching_service.block(session, user_id=user.id, target_id=user_id)
    return Response(status_code=204)
