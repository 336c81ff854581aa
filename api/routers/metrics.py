"""Prometheus metrics, for operators only (scope ``admin``; docs/decisions.md D16).

Per-route counts of logins, 401s and deletions tell an outsider what the service is being used
for and whether an attack works, so the endpoint sits behind the ``admin`` scope on the main app
and under the same rate limit as every other route, rather than on a second port per worker.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import AdminUser
from api.schemas.problem import problem_responses

__all__ = ["router"]

router = APIRouter(tags=["operations"], responses=problem_responses(401, 403))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics (admin)",
)
def metrics(request: Request, admin: AdminUser) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
