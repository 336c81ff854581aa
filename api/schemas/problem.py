"""RFC 9457 problem details."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["PROBLEM_MEDIA_TYPE", "Problem", "problem_responses"]

PROBLEM_MEDIA_TYPE = "application/problem+json"

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, expired or invalid credentials",
    403: "Authenticated but not allowed",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Request failed validation",
    429: "Rate limit exceeded (see Retry-After)",
    503: "Service not ready",
}


class Problem(BaseModel):
    type: str = Field(description="URI identifying the problem type", examples=["urn:matchsvc:problem:not-found"])
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = Field(default=None, description="Per-field validation errors")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses, all problem+json."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
