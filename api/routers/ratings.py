"""Rating a face (idempotent).

The hot path: each endpoint does its session check and all its database work in one worker
thread (``in_session``, ``UserToken``), not one thread per dependency (D40), and the session
check is part of the statement that takes the user's writer lock (D44).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Response

from api.deps import RuntimeDep, TokenCaller, UserToken, in_session
from api.schemas.problem import problem_responses
from api.schemas.ratings import BatchItemResult, BatchResult, RatingBatch, RatingCreate, RatingReceipt
from matchsvc.runtime import Runtime
from matchsvc.services import ratings as ratings_service
from matchsvc.services.ratings import Requester

T = TypeVar("T")

router = APIRouter(prefix="/v1/ratings", tags=["ratings"], responses=problem_responses(401, 403))

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Unique per logical request; a retry with the same key replays the first response",
    ),
]


async def _submit(runtime: Runtime, caller: TokenCaller, submit: Callable[..., T], **request: Any) -> T:
    """``submit(session, ...)`` (a rating service) in one worker thread, the caller's session checked
    by its lock, with what the rating services take from the runtime."""
    return await in_session(
        runtime,
        lambda session: submit(
            session,
            requester=Requester(caller.claims.user_id, caller.claims.session_id, caller.authorize),
            mac_key=runtime.secrets.idempotency_key,
            keys=runtime.keys,
            policy=runtime.policy,
            space=runtime.latent_space,
            **request,
        ),
    )


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
async def rate(
    body: RatingCreate,
    response: Response,
    caller: UserToken,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey,
) -> RatingReceipt:
    receipt = await _submit(
        runtime, caller, ratings_service.submit_rating, rating=body.to_input(), idempotency_key=idempotency_key
    )
    response.status_code = 201 if receipt.created else 200
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return RatingReceipt(face_id=receipt.face_id, created=receipt.created, recorded_at=receipt.recorded_at)


@router.post(
    "/batch",
    response_model=BatchResult,
    responses={
        200: {"description": "One result per item, in request order (also for a replayed retry)"},
        **problem_responses(409),  # 409: key reused with another body
    },
    summary="Rate up to 100 faces at once (offline swipes), one outcome per item",
)
async def rate_batch(
    body: RatingBatch,
    response: Response,
    caller: UserToken,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey,
) -> BatchResult:
    ratings = [item.to_input() for item in body.items]
    receipt = await _submit(runtime, caller, ratings_service.submit_batch, ratings=ratings, idempotency_key=idempotency_key)
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return BatchResult(
        items=[BatchItemResult(face_id=o.face_id, status=o.status, recorded_at=o.recorded_at) for o in receipt.items]
    )
