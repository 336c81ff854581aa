"""Scenario builders for HTTP tests: staff accounts, users who have rated faces and set a profile.

Everything a normal user does goes through the public API, as a client would; only staff accounts
are created through the service, because that is their only path (the ``matchsvc users create``
CLI), never a route.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import text

from matchsvc.db.base import Base
from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from matchsvc.services import auth as auth_service
from tests.support.accounts import PASSWORD, auth_headers

__all__ = [
    "matchable_user",
    "rate_faces",
    "served_latents",
    "set_profile",
    "staff_headers",
    "truncate_all",
    "user_id",
]


def staff_headers(client: TestClient, runtime: Runtime, *scopes: Scope, username: str | None = None) -> dict[str, str]:
    """Create an account holding exactly ``scopes`` and log it in; returns the Authorization header."""
    if not scopes:
        raise ValueError("scopes must name at least one Scope, got none")
    name = username or f"{scopes[0].value}{uuid.uuid4().hex[:8]}"
    with runtime.sessions() as session:
        auth_service.register(
            session, keys=runtime.keys, username=name, password=PASSWORD, birth_year=1975, scopes=frozenset(scopes)
        )
    return auth_headers(client, name)


def user_id(client: TestClient, headers: dict[str, str]) -> uuid.UUID:
    """The id of the account behind ``headers`` (``GET /v1/me`` accepts every scope)."""
    response = client.get("/v1/me", headers=headers)
    assert response.status_code == 200, response.text
    return uuid.UUID(response.json()["id"])


def rate_faces(client: TestClient, headers: dict[str, str], *, n: int, keep: int = 0) -> tuple[list[str], list[str]]:
    """Be served ``n + keep`` faces and rate the first ``n``, liking every other one.

    Returns ``(rated, kept)``: the ids of the rated faces and of the served faces left unrated,
    which a test can rate later (a face must have been served to be rated).
    """
    if n < 0 or keep < 0 or not 1 <= n + keep <= 50:
        raise ValueError(f"n + keep must be between 1 and 50 (one batch) with both >= 0, got n={n}, keep={keep}")
    response = client.get("/v1/faces/next", params={"n": n + keep}, headers=headers)
    assert response.status_code == 200, response.text
    served = [face["id"] for face in response.json()["faces"]]
    assert len(served) == n + keep, served
    for index, face_id in enumerate(served[:n]):
        rated = client.post(
            "/v1/ratings",
            json={"face_id": face_id, "liked": index % 2 == 0},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert rated.status_code == 201, rated.text
    return served[:n], served[n:]


def set_profile(
    client: TestClient,
    headers: dict[str, str],
    *,
    look: Sequence[float],
    gender: str,
    seeks: Sequence[str],
    ages: tuple[int, int] = (18, 99),
) -> dict[str, object]:
    """Set the appearance latent and the matching filters; returns the profile body that was sent."""
    appearance = client.put("/v1/me/appearance", json={"latent": list(look)}, headers=headers)
    assert appearance.status_code == 204, appearance.text
    profile = {"gender": gender, "seeks": list(seeks), "age_min": ages[0], "age_max": ages[1]}
    response = client.put("/v1/me/profile", json=profile, headers=headers)
    assert response.status_code == 200, response.text
    return profile


def matchable_user(
    client: TestClient, runtime: Runtime, *, gender: str, seeks: Sequence[str], ratings: int
) -> tuple[dict[str, str], str]:
    """A new user with ``ratings`` ratings and a profile (a neutral look): what the matching job needs.

    Returns the Authorization header and the account id (as a string, as the API shows ids).
    """
    headers = auth_headers(client)
    rate_faces(client, headers, n=ratings)
    set_profile(client, headers, look=[0.0] * runtime.latent_space.dim, gender=gender, seeks=seeks)
    return headers, str(user_id(client, headers))


def truncate_all(runtime: Runtime) -> None:
    """Empty every table (what the ``db`` fixture does after each test), for module-scoped scenarios."""
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with runtime.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def served_latents(runtime: Runtime, faces: list[dict]) -> dict[str, np.ndarray]:
    """The latents of faces a client was served (what the person in a simulation "sees"), by face id."""
    with runtime.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id::text, latent FROM faces WHERE id::text = ANY(:ids)"),
            {"ids": [face["id"] for face in faces]},
        ).all()
    return {face_id: np.asarray(latent) for face_id, latent in rows}
