"""The caller's own account and data."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AnyUser, CurrentUser, SessionDep
from api.pagination import decode_cursor, encode_cursor
from api.schemas.problem import problem_responses
from api.schemas.ratings import RatingPage, RatingPublic
from api.schemas.users import UserPublic
from matchsvc.services import ratings as ratings_service

router = APIRouter(prefix="/v1/me", tags=["me"], responses=problem_responses(401, 403))


@router.get("", response_model=UserPublic, summary="The authenticated account")
def me(user: AnyUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.get("/ratings", response_model=RatingPage, summary="Your ratings, oldest first")
def my_ratings(
    user: CurrentUser,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> RatingPage:
    page = ratings_service.list_ratings(session, user_id=user.id, after_id=decode_cursor(cursor), limit=limit)
    return RatingPage(
        items=[RatingPublic.model_validate(rating) for rating in page.items],
        next_cursor=encode_cursor(page.next_after_id) if page.next_after_id is not None else None,
    )
