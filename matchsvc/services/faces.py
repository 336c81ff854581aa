"""Serving generated faces: the feed, rendered PNGs (cached), and a user's ideal faces."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import LatentSpace, encode_png
from engine.latent.base import sample_outside_safety
from engine.reverse import ideal_latents
from engine.preference import rr_flip_probability
from engine.sampling import FeedConfig, next_batch
from matchsvc.db.models import Face
from matchsvc.errors import Conflict, NotFound
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import faces as faces_repo
from matchsvc.repositories import ratings as ratings_repo
from matchsvc.services.keys import user_cipher
from matchsvc.services.preferences import current_belief, load_model
from matchsvc.services.privacy import PrivacyPolicy

__all__ = ["RenderedFace", "ensure_shared_pool", "face_image", "ideal_faces", "next_faces"]


def ensure_shared_pool(session: Session, *, space: LatentSpace, size: int, rng: np.random.Generator) -> int:
    """Top the shared (cached) face pool up to ``size`` prior faces outside the safety region."""
    missing = size - faces_repo.count_shared(session)
    if missing > 0:
        latents = sample_outside_safety(space, size=missing, need=missing, rng=rng)[:missing]
        faces_repo.add_faces(session, backend=space.name, latents=latents, shared=True)
        session.commit()
    return max(missing, 0)


def next_faces(
    session: Session,
    *,
    user_id: uuid.UUID,
    keys: KeyRingStore,
    policy: PrivacyPolicy,
    space: LatentSpace,
    n: int,
    rng: np.random.Generator,
    cached_candidates: int = 512,
) -> list[Face]:
    """The next batch for ``user_id`` from the active-learning feed; remembered as served.

    Under randomized response the feed gets the user's posterior (the prior belief for a user
    with no ratings, so the first ``FeedConfig.coldstart_ratings`` faces are the most informative
    ones), their persona mix when a population release exists, and the deployment's flip rate
    for its information criterion. Under a release-time mechanism it gets the released model
    only. Either way it sees no label, only shared cached faces and public randomness.
    Safety-region latents are filtered by the feed and again here, so no code path can serve one.
    """
    current = current_belief(session, keys=keys, user_id=user_id, space=space) if policy.privatises_labels else None
    if current is not None:
        belief = current.belief
        model, posterior, personas = None, belief.posterior, belief.personas
        config = FeedConfig(flip_probability=rr_flip_probability(policy.epsilon))
    else:
        stored = load_model(session, cipher=user_cipher(session, keys=keys, user_id=user_id))
        model, posterior, personas, config = (stored.model if stored else None), None, None, FeedConfig()
    cached = faces_repo.unseen_shared_faces(session, user_id=user_id, limit=cached_candidates)
    batch = next_batch(
        space,
        n=n,
        model=model,
        n_rated=ratings_repo.count_ratings(session, user_id=user_id),
        cached=np.array([face.latent for face in cached]) if cached else None,
        rng=rng,
        config=config,
        posterior=posterior,
        personas=personas,
    )
    if space.in_safety_region(batch.latents).any():
        raise RuntimeError("the feed returned a safety-region latent")  # a bug, never a request error
    fresh = iter(
        faces_repo.add_faces(session, backend=space.name, latents=batch.latents[batch.cached_index < 0])
    )
    faces = [cached[index] if index >= 0 else next(fresh) for index in batch.cached_index]
    faces_repo.record_impressions(session, user_id=user_id, face_ids=[face.id for face in faces])
    session.commit()
    return faces


def ideal_faces(
    session: Session,
    *,
    user_id: uuid.UUID,
    keys: KeyRingStore,
    space: LatentSpace,
    n: int,
    score: float | None,
    rng: np.random.Generator,
) -> list[tuple[bytes, float]]:
    """Rendered faces the user's model scores at ``score`` (default: its top), with their probabilities.

    Nothing is stored: these latents are a function of the user's model, so they never become
    (plaintext) face rows.
    """
    stored = load_model(session, cipher=user_cipher(session, keys=keys, user_id=user_id))
    if stored is None:
        raise Conflict("no preference model yet: rate some faces first")
    result = ideal_latents(space, stored.model, n=n, score=score, rng=rng)
    return [
        (encode_png(space.render(latent)), float(probability))
        for latent, probability in zip(result.latents, result.probabilities, strict=True)
    ]


@dataclass(frozen=True)
class RenderedFace:
    png: bytes
    etag: str


def face_image(session: Session, *, user_id: uuid.UUID, face_id: uuid.UUID, space: LatentSpace) -> RenderedFace:
    """The PNG of a face served to this user, rendered once and cached in the database.

    Faces never served to the caller are "not found": whether a face exists is nobody else's business.
    """
    face = faces_repo.served_face(session, user_id=user_id, face_id=face_id)
    if face is None:
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
