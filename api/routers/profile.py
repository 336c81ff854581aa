"""The caller's appearance (a latent, never a photo), avatar, and matching filters."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CurrentUser, RuntimeDep, SessionDep
from api.schemas.matching import AppearanceSpace, AppearanceUpdate, ProfilePublic, ProfileUpdate
from api.schemas.problem import problem_responses
from matchsvc.services import profiles as profiles_service
from matchsvc.services.filters import Filters

router = APIRouter(prefix="/v1/me", tags=["profile"], responses=problem_responses(401, 403))

_PNG = {200: {"content": {"image/png": {}}, "description": "The rendered avatar"}}
#: Avatars change when the appearance does and are personal: never cached by shared caches.
AVATAR_HEADERS = {"Cache-Control": "private, no-store"}


@router.put("/appearance", status_code=204, summary="Set your appearance latent (validated, stored encrypted)")
def put_appearance(body: AppearanceUpdate, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> Response:
    profiles_service.set_appearance(
        session, user_id=user.id, keys=runtime.keys, space=runtime.latent_space, latent=body.latent
    )
    return Response(status_code=204)


@router.get(
    "/appearance/space",
    response_model=AppearanceSpace,
    summary="The latent space an appearance lives in, so a device can draw candidate looks",
)
def appearance_space(user: CurrentUser, runtime: RuntimeDep) -> AppearanceSpace:
    lower, upper = profiles_service.appearance_box(runtime.latent_space)
    return AppearanceSpace(dim=runtime.latent_space.dim, lower=lower, upper=upper)


@router.post(
    "/appearance/preview",
    response_class=Response,
    responses={**_PNG, **problem_responses(422)},
    summary="Render a candidate appearance without storing it (422 in the safety region)",
)
def preview_appearance(body: AppearanceUpdate, user: CurrentUser, runtime: RuntimeDep) -> Response:
    png = profiles_service.preview_appearance(space=runtime.latent_space, latent=body.latent)
    return Response(png, media_type="image/png", headers=AVATAR_HEADERS)


@router.get(
    "/avatar", response_class=Response, responses={**_PNG, **problem_responses(404)}, summary="Your generated avatar"
)
def my_avatar(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> Response:
    png = profiles_service.render_avatar(session, user_id=user.id, keys=runtime.keys, space=runtime.latent_space)
    return Response(png, media_type="image/png", headers=AVATAR_HEADERS)


@router.put("/profile", response_model=ProfilePublic, summary="Set who you are and whom you seek")
def put_profile(body: ProfileUpdate, user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> ProfilePublic:
    filters = Filters(
        gender=body.gender, seeks=frozenset(body.seeks), age_min=body.age_min, age_max=body.age_max
    )
    profiles_service.set_filters(session, user_id=user.id, keys=runtime.keys, filters=filters)
    return _public(filters)


@router.get("/profile", response_model=ProfilePublic, responses=problem_responses(404), summary="Your filters")
def get_profile(user: CurrentUser, session: SessionDep, runtime: RuntimeDep) -> ProfilePublic:
    return _public(profiles_service.get_filters(session, user_id=user.id, keys=runtime.keys))


def _public(filters: Filters) -> ProfilePublic:
    return ProfilePublic(
        gender=filters.gender, seeks=sorted(filters.seeks), age_min=filters.age_min, age_max=filters.age_max
    )
