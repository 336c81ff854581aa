"""The service's error hierarchy. The API maps each class to one HTTP status in one place.

Messages are written for the client: they name the parameter and the problem, never a secret,
another user's data, or an internal detail.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "Conflict",
    "InvalidInput",
    "MatchsvcError",
    "NotFound",
    "PermissionDenied",
    "PrivacyBudgetExhausted",
    "TooManyAttempts",
]


class MatchsvcError(Exception):
    """Base class. ``code`` is a stable slug used as the problem ``type``."""

    code = "error"
    title = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(MatchsvcError):
    """Well-formed request whose content is not acceptable (e.g. under-18 birth year)."""

    code = "invalid-input"
    title = "Invalid input"


class NotFound(MatchsvcError):
    code = "not-found"
    title = "Not found"


class Conflict(MatchsvcError):
    code = "conflict"
    title = "Conflict"


class AuthenticationFailed(MatchsvcError):
    code = "authentication-failed"
    title = "Authentication failed"


class PermissionDenied(MatchsvcError):
    code = "permission-denied"
    title = "Permission denied"


class PrivacyBudgetExhausted(Conflict):
    """A spend would take a rating's lifetime privacy loss past the configured cap."""

    code = "privacy-budget-exhausted"
    title = "Privacy budget exhausted"


class TooManyAttempts(MatchsvcError):
    """Refused for now (e.g. a username backing off after failed logins); retry after ``retry_after`` s."""

    code = "too-many-attempts"
    title = "Too many attempts"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
