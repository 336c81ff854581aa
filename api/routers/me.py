"""The caller's own account and data."""

from __future__ import annotations

import base64
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from api.deps import AnyUser, CurrentUser, RuntimeDep, SessionDep
from api.pagination import decode_cursor, encode_cursor
from api.schemas.faces import IdealFace, IdealFaces
from api.schemas.preferences import Certainty, PersonaShare, PreferenceProfile
from api.schemas.privacy import PrivacyBudget
from api.schemas.problem import problem_responses
from api.schemas.ratings import RatingPage, RatingPublic
from api.schemas.users import UserPublic
from matchsvc.services import faces as faces_service
from matchsvc.services.preference_profile import preference_profile
from matchsvc.services import ratings as ratings_service
from matchsvc.services.privacy import budget_report

router = APIRouter(prefix="/v1/me", tags=["me"], responses=problem_responses(401, 403))


@router.get("", response_model=UserPublic, summary="The authenticated account")
def me(user: AnyUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.get("/ratings", response_model=RatingPage, summary="Your ratings, oldest first")
def my_ratings(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> RatingPage:
    page = ratings_service.list_ratings(
        session, user_id=user.id, keys=runtime.keys, after_id=decode_cursor(cursor), limit=limit
    )
    return RatingPage(
        items=[RatingPublic.model_validate(rating) for rating in page.items],
        next_cursor=encode_cursor(page.next_after_id) if page.next_after_id is not None else None,
    )


@router.get("/privacy", response_model=PrivacyBudget, summary="Your privacy budget: spent, cap, and what it means")
def my_privacy(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> PrivacyBudget:
    return PrivacyBudget.model_validate(budget_report(session, user_id=user.id, policy=runtime.policy))


@router.get(
    "/preference-profile",
    response_model=PreferenceProfile,
    responses=problem_responses(409),
    summary="Your persona mix, how sure your model is, and how many ratings would sharpen it",
)
def my_preference_profile(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> PreferenceProfile:
    """Before any rating the profile is the population prior's (or, without a population model, the
    default prior's). 409 under a release-time privacy mechanism, whose models have no posterior."""
    profile = preference_profile(
        session, keys=runtime.keys, user_id=user.id, policy=runtime.policy, space=runtime.latent_space
    )
    return PreferenceProfile(
        ratings=profile.ratings,
        personas=[PersonaShare(persona=k, share=share) for k, share in profile.personas],
        dominant_persona=profile.dominant_persona,
        certainty=Certainty(logit_sd=profile.logit_sd, score=profile.certainty, level=profile.certainty_level),
        ratings_to_improve=profile.ratings_to_improve,
        population_version=profile.population_version,
        drift_detected=profile.drift_detected,
    )


@router.get(
    "/ideal-faces",
    response_model=IdealFaces,
    responses=problem_responses(409),
    summary="Faces your model scores at a given like-probability (default: its favourites)",
)
def my_ideal_faces(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    n: Annotated[int, Query(ge=1, le=16)] = 8,
    score: Annotated[float | None, Query(gt=0, lt=1, description="Target like-probability; omit for the top")] = None,
) -> IdealFaces:
    rendered = faces_service.ideal_faces(
        session,
        user_id=user.id,
        keys=runtime.keys,
        space=runtime.latent_space,
        n=n,
        score=score,
        rng=np.random.default_rng(),
    )
    return IdealFaces(
        faces=[
            IdealFace(image="data:image/png;base64," + base64.b64encode(png).decode(), like_probability=probability)
            for png, probability in rendered
        ]
    )
