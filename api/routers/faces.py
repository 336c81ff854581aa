"""Generated faces: the next batch to rate, and their images."""

from __future__ import annotations

import uuid
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import CurrentUser, RuntimeDep, SessionDep
from api.schemas.faces import FaceBatch, FacePublic
from api.schemas.problem import problem_responses
from matchsvc.services import faces as faces_service

router = APIRouter(prefix="/v1/faces", tags=["faces"], responses=problem_responses(401, 403))

#: Faces never change, so clients and private caches may keep them for a year.
_IMAGE_CACHE_CONTROL = "private, max-age=31536000, immutable"


@router.get("/next", response_model=FaceBatch, summary="The next faces for you to rate")
def next_faces(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    n: Annotated[int, Query(ge=1, le=50, description="How many faces")] = 10,
) -> FaceBatch:
    faces = faces_service.next_faces(
        session,
        user_id=user.id,
        keys=runtime.keys,
        policy=runtime.policy,
        space=runtime.latent_space,
        n=n,
        rng=np.random.default_rng(),
    )
    return FaceBatch(
        faces=[
            FacePublic(id=face.id, image_url=str(request.url_for("face_image", face_id=face.id).path))
            for face in faces
        ]
    )


@router.get(
    "/{face_id}/image",
    name="face_image",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The rendered face"},
        304: {"description": "Not modified (matching If-None-Match)"},
        **problem_responses(404),
    },
    summary="PNG of a face that was served to you",
)
def face_image(
    face_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    if_none_match: Annotated[str | None, Header(max_length=256)] = None,
) -> Response:
    rendered = faces_service.face_image(session, user_id=user.id, face_id=face_id, space=runtime.latent_space)
    headers = {"ETag": rendered.etag, "Cache-Control": _IMAGE_CACHE_CONTROL}
    if if_none_match is not None and rendered.etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(content=rendered.png, media_type="image/png", headers=headers)
