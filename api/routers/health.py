"""Liveness and readiness (metrics are api/routers/metrics.py, for operators)."""

from __future__ import annotations

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from api.deps import RuntimeDep
from api.errors import problem_response
from api.schemas.problem import problem_responses
from matchsvc.db.session import DATABASE_ERRORS, is_database_unavailable
from matchsvc.runtime import Runtime

router = APIRouter(tags=["health"])
#: Threads for readiness checks only (a few probes may overlap while the database stalls).
_READINESS_LIMITER = anyio.CapacityLimiter(4)


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    """Liveness: answered on the event loop, never by the request thread pool nor the database,
    so a stalled database (every worker thread waiting on it) does not get the process restarted."""
    return {"status": "ok"}


def _ping(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


@router.get("/readyz", summary="The database answers", responses=problem_responses(503))
async def readyz(request: Request, runtime: RuntimeDep) -> Response:
    """Readiness within ``MATCHSVC_READY_TIMEOUT_SECONDS``: 503 when the database does not answer in time.

    The check runs on threads apart from the request pool, so probes never queue behind requests
    stuck on a stalled database; a check given up on still ends within the database deadline.
    """
    ready = False
    with anyio.move_on_after(runtime.settings.ready_timeout_seconds):
        try:
            await anyio.to_thread.run_sync(_ping, runtime, limiter=_READINESS_LIMITER, abandon_on_cancel=True)
            ready = True
        except DATABASE_ERRORS as exc:
            if not is_database_unavailable(exc):
                raise
    if not ready:
        return problem_response(503, detail="database unavailable", request=request)
    return Response(content=b'{"status":"ready"}', media_type="application/json")
