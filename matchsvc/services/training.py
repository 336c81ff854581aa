"""The one reader of a user's training data, shared by the user's refit and the population fit.

Each stored label is opened in memory with its owner's key, and its label epsilon becomes the
randomized-response flip rate the learners need (0 for a label stored as answered, under a
release-time mechanism). Nothing here is written back or logged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from engine.preference import rr_flip_probability
from matchsvc.keys import UserCipher
from matchsvc.repositories import ratings as ratings_repo
from matchsvc.repositories.ratings import TrainingRow
from matchsvc.services.sealed import open_labels

__all__ = ["TrainingSet", "flip_probability", "open_training_set", "read_training_set"]


def flip_probability(label_epsilon: float | None) -> float:
    """The flip rate of a label stored with ``label_epsilon`` (None: stored as answered, rate 0)."""
    return rr_flip_probability(math.inf if label_epsilon is None else label_epsilon)


@dataclass(frozen=True)
class TrainingSet:
    """One user's ratings, oldest first.

    Attributes
    ----------
    Z : numpy.ndarray, shape (n, d)
        The rated faces' latents.
    y : numpy.ndarray of bool, shape (n,)
        The stored (already private) labels.
    flip : numpy.ndarray, shape (n,)
        Each label's flip probability.
    last_id : int or None
        The newest rating's id (the ``after_id`` asked for when there is none).
    """

    Z: np.ndarray
    y: np.ndarray
    flip: np.ndarray
    last_id: int | None


def open_training_set(
    cipher: UserCipher, rows: Sequence[TrainingRow], *, dim: int, after_id: int | None = None
) -> TrainingSet:
    """Open the labels of ``rows`` (all the cipher's user's) and map their flip rates.

    The labels are opened in one call and each distinct epsilon is mapped once: a refit reads the
    user's whole history, and per-row work was most of its cost (docs/benchmarks.md).
    """
    rates = {epsilon: flip_probability(epsilon) for epsilon in {row.label_epsilon for row in rows}}
    return TrainingSet(
        Z=np.array([row.latent for row in rows], dtype=np.float64).reshape(len(rows), dim),
        y=open_labels(cipher, face_ids=[row.face_id for row in rows], blobs=[row.label_ct for row in rows]),
        flip=np.array([rates[row.label_epsilon] for row in rows], dtype=np.float64),
        last_id=rows[-1].rating_id if rows else after_id,
    )


def read_training_set(session: Session, cipher: UserCipher, *, dim: int, after_id: int | None = None) -> TrainingSet:
    """The user's ratings (those after rating ``after_id`` only, when given), opened in memory."""
    rows = ratings_repo.training_rows(session, user_id=cipher.user_id, after_id=after_id)
    return open_training_set(cipher, rows, dim=dim, after_id=after_id)
