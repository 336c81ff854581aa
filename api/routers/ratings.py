"""Rating a face (idempotent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from api.deps import CurrentUser, RuntimeDep, SessionDep
from api.schemas.problem import problem_responses
from api.schemas.ratings import RatingCreate, RatingReceipt
from matchsvc.services import ratings as ratings_service

router = APIRouter(prefix="/v1/ratings", tags=["ratings"], responses=problem_responses(401, 403))


@router.post(
    "",
    response_model=RatingReceipt,
    status_code=201,
    responses={
        200: {"model": RatingReceipt, "description": "Replaced an earlier rating, or replayed a retried request"},
        **problem_responses(404, 409),  # 409: key reused with another body, or privacy budget exhausted
    },
    summary="Like or pass on a face you were served",
)
def rate(
    body: RatingCreate,
    response: Response,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency_key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Unique per logical request; a retry with the same key replays the first response",
        ),
    ],
) -> RatingReceipt:
    receipt = ratings_service.submit_rating(
        session,
        user_id=user.id,
        face_id=body.face_id,
        liked=body.liked,
        dwell_ms=body.dwell_ms,
        idempotency_key=idempotency_key,
        mac_key=runtime.secrets.idempotency_key,
        keys=runtime.keys,
        policy=runtime.policy,
        space=runtime.latent_space,
    )
    response.status_code = 201 if receipt.created else 200
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return RatingReceipt(face_id=receipt.face_id, created=receipt.created, recorded_at=receipt.recorded_at)
