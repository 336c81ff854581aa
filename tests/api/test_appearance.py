"""Building an appearance on the device: the space a look is drawn from, and previews that store nothing."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from PIL import Image

from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers


def _count(runtime: Runtime, table: str) -> int:
    with runtime.engine.connect() as connection:
        return int(connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_space_gives_a_box_whose_every_corner_is_a_valid_adult_look(client: TestClient) -> None:
    headers = auth_headers(client)
    space = client.get("/v1/me/appearance/space", headers=headers).json()
    assert space["dim"] == len(space["lower"]) == len(space["upper"])
    assert all(low < high for low, high in zip(space["lower"], space["upper"], strict=True))
    # The youngest look the box allows is still accepted, as a preview and as the stored appearance.
    for corner in (space["lower"], space["upper"]):
        assert client.post("/v1/me/appearance/preview", json={"latent": corner}, headers=headers).status_code == 200
        assert client.put("/v1/me/appearance", json={"latent": corner}, headers=headers).status_code == 204


def test_preview_renders_a_png_and_stores_nothing(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    dim = client.get("/v1/me/appearance/space", headers=headers).json()["dim"]
    before = _count(db, "appearances")
    response = client.post("/v1/me/appearance/preview", json={"latent": [0.5] * dim}, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, no-store"
    assert Image.open(io.BytesIO(response.content)).size == (256, 256)
    assert _count(db, "appearances") == before
    assert client.get("/v1/me/avatar", headers=headers).status_code == 404


def test_preview_is_the_avatar_the_same_look_would_get(client: TestClient) -> None:
    headers = auth_headers(client)
    dim = client.get("/v1/me/appearance/space", headers=headers).json()["dim"]
    look = [0.3 * ((-1) ** k) for k in range(dim)]
    preview = client.post("/v1/me/appearance/preview", json={"latent": look}, headers=headers).content
    client.put("/v1/me/appearance", json={"latent": look}, headers=headers)
    assert client.get("/v1/me/avatar", headers=headers).content == preview


def test_preview_refuses_what_storing_refuses(client: TestClient) -> None:
    headers = auth_headers(client)
    space = client.get("/v1/me/appearance/space", headers=headers).json()
    below_adult = [low - 0.5 if low > -3 else 0.0 for low in space["lower"]]
    for latent in ([0.0] * (space["dim"] + 1), [9.0] * space["dim"], below_adult):
        response = client.post("/v1/me/appearance/preview", json={"latent": latent}, headers=headers)
        assert response.status_code == 422, latent
        assert response.headers["content-type"] == "application/problem+json"
