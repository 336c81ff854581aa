"""Serving faces and their images."""

from __future__ import annotations

import io
import uuid

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers


def test_next_faces_returns_ids_and_image_urls_only(client: TestClient) -> None:
    headers = auth_headers(client)
    response = client.get("/v1/faces/next", params={"n": 10}, headers=headers)
    assert response.status_code == 200
    faces = response.json()["faces"]
    assert len(faces) == 10
    assert len({face["id"] for face in faces}) == 10
    for face in faces:
        assert set(face) == {"id", "image_url"}
        assert face["image_url"] == f"/v1/faces/{face['id']}/image"


def test_image_is_png_with_etag_and_immutable_caching(client: TestClient) -> None:
    headers = auth_headers(client)
    face = client.get("/v1/faces/next", params={"n": 1}, headers=headers).json()["faces"][0]
    first = client.get(face["image_url"], headers=headers)
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png"
    assert "immutable" in first.headers["cache-control"]
    image = Image.open(io.BytesIO(first.content))
    assert image.size == (256, 256)
    again = client.get(face["image_url"], headers=headers)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    not_modified = client.get(face["image_url"], headers={**headers, "If-None-Match": first.headers["etag"]})
    assert not_modified.status_code == 304
    assert not_modified.content == b""


def test_image_is_rendered_once_and_cached_in_the_database(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    face = client.get("/v1/faces/next", params={"n": 1}, headers=headers).json()["faces"][0]
    client.get(face["image_url"], headers=headers)
    with db.engine.connect() as connection:
        count = connection.exec_driver_sql("SELECT count(*) FROM face_images").scalar_one()
    assert count == 1


def test_faces_served_to_someone_else_are_not_found(client: TestClient) -> None:
    alice, bob = auth_headers(client), auth_headers(client)
    face = client.get("/v1/faces/next", params={"n": 1}, headers=alice).json()["faces"][0]
    assert client.get(face["image_url"], headers=bob).status_code == 404
    assert client.get(f"/v1/faces/{uuid.uuid4()}/image", headers=alice).status_code == 404


def test_n_is_validated(client: TestClient) -> None:
    headers = auth_headers(client)
    for bad in (0, 51, -1, "ten"):
        response = client.get("/v1/faces/next", params={"n": bad}, headers=headers)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"


def test_served_faces_are_never_in_the_safety_region(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    for _ in range(5):
        client.get("/v1/faces/next", params={"n": 50}, headers=headers)
    with db.engine.connect() as connection:
        latents = np.array(connection.exec_driver_sql("SELECT latent FROM faces").scalars().all())
    assert latents.shape == (250, db.latent_space.dim)
    assert not db.latent_space.in_safety_region(latents).any()
