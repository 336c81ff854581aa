"""Access tokens: what a remembered verification (D40) still checks on every use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from matchsvc import security
from matchsvc.security import InvalidToken, create_access_token, decode_access_token

SECRET = "s" * 64


def _token(minutes: int = 15) -> str:
    token, _ = create_access_token(
        user_id=uuid.uuid4(), session_id=uuid.uuid4(), scopes=frozenset({"user"}), secret=SECRET, minutes=minutes
    )
    return token


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token()
    claims = decode_access_token(token, secret=SECRET, max_minutes=15)
    assert decode_access_token(token, secret=SECRET, max_minutes=15) is claims  # remembered

    class Later(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return claims.expires_at + timedelta(seconds=1)

    monkeypatch.setattr(security, "datetime", Later)
    with pytest.raises(InvalidToken):
        decode_access_token(token, secret=SECRET, max_minutes=15)


def test_a_remembered_token_is_checked_again_under_another_key_or_lifetime() -> None:
    token = _token(minutes=15)
    decode_access_token(token, secret=SECRET, max_minutes=15)
    with pytest.raises(InvalidToken):
        decode_access_token(token, secret="t" * 64, max_minutes=15)  # a rotated signing key
    with pytest.raises(InvalidToken):
        decode_access_token(token, secret=SECRET, max_minutes=5)  # a shorter lifetime configured


def test_a_refused_token_is_not_remembered() -> None:
    token = _token()
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            decode_access_token(tampered, secret=SECRET, max_minutes=15)
    assert decode_access_token(token, secret=SECRET, max_minutes=15).expires_at > datetime.now(UTC)
