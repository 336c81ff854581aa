"""Ratings land in PostgreSQL and survive a restart of the whole service over the same data directory."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from matchsvc.runtime import Runtime
from matchsvc.settings import Settings
from tests.support.accounts import auth_headers


def test_restart_keeps_accounts_and_ratings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("MATCHSVC_DATABASE_URL", raising=False)
    data_dir = Path("/tmp") / f"matchsvc-restart-{uuid.uuid4().hex[:8]}"  # short: the socket lives here
    settings = Settings(data_dir=data_dir)

    runtime = Runtime.start(settings)
    try:
        with TestClient(create_app(runtime)) as client:
            headers = auth_headers(client, None)
            me = client.get("/v1/me", headers=headers).json()
            faces = client.get("/v1/faces/next", params={"n": 4}, headers=headers).json()["faces"]
            for index, face in enumerate(faces):
                response = client.post(
                    "/v1/ratings",
                    json={"face_id": face["id"], "liked": index < 2},
                    headers={**headers, "Idempotency-Key": f"k{index}"},
                )
                assert response.status_code == 201
    finally:
        runtime.close()

    runtime = Runtime.start(settings)  # same data dir, same generated secret: old tokens stay valid
    try:
        with TestClient(create_app(runtime)) as client:
            assert client.get("/v1/me", headers=headers).json() == me
            ratings = client.get("/v1/me/ratings", headers=headers).json()["items"]
            assert [r["face_id"] for r in ratings] == [face["id"] for face in faces]
            assert all(r["privatised"] for r in ratings)
            assert client.get("/v1/me/privacy", headers=headers).json()["spends"] == 4
            image = client.get(faces[0]["image_url"], headers=headers)
            assert image.status_code == 200
    finally:
        runtime.close()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
