"""Serving generated faces: choosing a batch for a user and rendering PNGs (cached)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import LatentSpace, encode_png
from matchsvc.db.models import Face
from matchsvc.errors import NotFound
from matchsvc.repositories import faces as faces_repo

__all__ = ["RenderedFace", "choose_latents", "face_image", "next_faces"]


def choose_latents(space: LatentSpace, *, n: int, rng: np.random.Generator) -> np.ndarray:
    """The feed: which latents to show next, shape ``(n, dim)``. Never returns a safety-region latent.

    Draws from the latent prior; oversamples so that filtering the safety region still fills the batch.
    """
    chosen = np.empty((0, space.dim))
    while len(chosen) < n:
        draw = space.sample(2 * n, rng)
        chosen = np.concatenate([chosen, draw[~space.in_safety_region(draw)]])
    return chosen[:n]


def next_faces(
    session: Session, *, user_id: uuid.UUID, space: LatentSpace, n: int, rng: np.random.Generator
) -> list[Face]:
    """Create the next batch for ``user_id`` and remember that it was served (ratings require it)."""
    latents = choose_latents(space, n=n, rng=rng)
    faces = faces_repo.add_faces(session, backend=space.name, latents=latents)
    faces_repo.record_impressions(session, user_id=user_id, face_ids=[face.id for face in faces])
    session.commit()
    return faces


@dataclass(frozen=True)
class RenderedFace:
    png: bytes
    etag: str


def face_image(session: Session, *, user_id: uuid.UUID, face_id: uuid.UUID, space: LatentSpace) -> RenderedFace:
    """The PNG of a face served to this user, rendered once and cached in the database.

    Faces never served to the caller are "not found": whether a face exists is nobody else's business.
    """
    face = faces_repo.get_face(session, face_id)
    if face is None or not faces_repo.was_served(session, user_id=user_id, face_id=face_id):
        raise NotFound(f"face {face_id} not found")
    cached = faces_repo.get_image(session, face_id)
    if cached is not None:
        return RenderedFace(png=cached.png, etag=cached.etag)
    if face.backend != space.name:
        raise NotFound(f"face {face_id} belongs to the {face.backend!r} generator, which is not loaded")
    png = encode_png(space.render(np.asarray(face.latent, dtype=np.float64)))
    etag = '"' + hashlib.sha256(png).hexdigest()[:32] + '"'
    faces_repo.add_image(session, face_id=face_id, png=png, etag=etag)
    session.commit()
    return RenderedFace(png=png, etag=etag)
