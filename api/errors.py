"""Every error leaves the API as RFC 9457 ``application/problem+json``; domain errors map here, once."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas.problem import PROBLEM_MEDIA_TYPE
from matchsvc.db.session import DATABASE_ERRORS, error_name, is_database_unavailable
from matchsvc.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    MatchsvcError,
    NotFound,
    PermissionDenied,
    TooManyAttempts,
)

__all__ = ["database_unavailable_response", "install_error_handlers", "problem_response"]

log = structlog.get_logger(__name__)

_STATUS_BY_ERROR: dict[type[MatchsvcError], int] = {
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    AuthenticationFailed: 401,
    PermissionDenied: 403,
    TooManyAttempts: 429,
}
_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
#: The service reconnects within a second of the database coming back (``pool_pre_ping``).
DATABASE_RETRY_AFTER_SECONDS = 1


def problem_response(
    status: int,
    *,
    detail: str | None = None,
    code: str | None = None,
    title: str | None = None,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:matchsvc:problem:{code}" if code else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _clean_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Location and message per field; the offending input is not echoed (it may be a password)."""
    return [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", "")), "type": error.get("type")}
        for error in exc.errors()
    ]


def database_unavailable_response(request: Request | None) -> JSONResponse:
    """The one 503 a request gets while PostgreSQL is down or stalled (D29), from a route or a middleware."""
    return problem_response(
        503,
        detail="The database is unavailable; retry shortly (a request with an Idempotency-Key is safe to repeat)",
        code="database-unavailable",
        title="Database unavailable",
        request=request,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MatchsvcError)
    async def domain_error(request: Request, exc: MatchsvcError) -> JSONResponse:
        status = next((s for cls, s in _STATUS_BY_ERROR.items() if isinstance(exc, cls)), 400)
        headers = _BEARER_CHALLENGE if status == 401 else None
        if isinstance(exc, TooManyAttempts):
            headers = {"Retry-After": str(exc.retry_after)}
        return problem_response(
            status, detail=exc.detail, code=exc.code, title=exc.title, request=request, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(
            422,
            detail="The request did not pass validation",
            code="validation-failed",
            title="Validation failed",
            request=request,
            errors=_clean_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code, detail=str(exc.detail), request=request, headers=getattr(exc, "headers", None)
        )

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        """503 when the database is down, unreachable or stalled (D29); any other database error is a bug.

        Handled here, below Starlette's catch-all: a response from the catch-all (500) makes the server
        close the connection, and a mobile client could not tell whether its POST was processed.
        """
        if not is_database_unavailable(exc):
            raise exc  # to the catch-all: logged with its traceback, 500
        log.warning("database_unavailable", path=request.url.path, error=error_name(exc))
        return database_unavailable_response(request)

    for error_type in DATABASE_ERRORS:
        app.add_exception_handler(error_type, database_error)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(500, detail="An unexpected error occurred", request=request)
