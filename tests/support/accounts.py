"""Create accounts and tokens through the public API, as a client would."""

from __future__ import annotations

import itertools

from fastapi.testclient import TestClient

__all__ = ["PASSWORD", "auth_headers", "register"]

PASSWORD = "correct horse battery staple"
_counter = itertools.count()


def register(client: TestClient, username: str | None = None, *, birth_year: int = 1990) -> str:
    username = username or f"user{next(_counter)}"
    response = client.post(
        "/v1/auth/register", json={"username": username, "password": PASSWORD, "birth_year": birth_year}
    )
    assert response.status_code == 201, response.text
    return username


def auth_headers(client: TestClient, username: str | None = None, *, scope: str | None = None) -> dict[str, str]:
    """Register (when no username is given) and log in; returns the Authorization header."""
    username = username or register(client)
    form = {"username": username, "password": PASSWORD}
    if scope is not None:
        form["scope"] = scope
    response = client.post("/v1/auth/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
