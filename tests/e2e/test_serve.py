"""The README's promise, end to end: ``matchsvc serve`` on a fresh data directory, used over HTTP only,
keeps everything across a restart."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import PASSWORD
from tests.support.serve import free_port, serving


@pytest.mark.slow
def test_http_only_client_survives_a_restart() -> None:
    data_dir = Path("/tmp") / f"matchsvc-e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {"MATCHSVC_DATA_DIR": str(data_dir)}
    try:
        with serving(env, port) as base, httpx.Client(base_url=base, timeout=30) as http:
            assert http.post(
                "/v1/auth/register", json={"username": "e2e_user", "password": PASSWORD, "birth_year": 1991}
            ).status_code == 201
            token = http.post("/v1/auth/token", data={"username": "e2e_user", "password": PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            faces = http.get("/v1/faces/next", params={"n": 10}, headers=headers).json()["faces"]
            assert len(faces) == 10
            for index, face in enumerate(faces):
                image = http.get(face["image_url"], headers=headers)
                assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
                rated = http.post(
                    "/v1/ratings",
                    json={"face_id": face["id"], "liked": index % 3 == 0, "dwell_ms": 900 + index},
                    headers={**headers, "Idempotency-Key": f"e2e-{index}"},
                )
                assert rated.status_code == 201
        with serving(env, port) as base, httpx.Client(base_url=base, timeout=30) as http:
            token = http.post("/v1/auth/token", data={"username": "e2e_user", "password": PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            items = http.get("/v1/me/ratings", params={"limit": 100}, headers=headers).json()["items"]
            assert [item["face_id"] for item in items] == [face["id"] for face in faces]
            assert all(item["privatised"] for item in items)
            budget = http.get("/v1/me/privacy", headers=headers).json()
            assert budget["spends"] == 10 and budget["epsilon_spent"] > 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
