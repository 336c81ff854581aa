"""A user's training set opened in one pass equals the row-by-row reading it replaced (the refit's input)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from matchsvc.keys import UserCipher
from matchsvc.repositories.ratings import TrainingRow
from matchsvc.services.sealed import open_label, seal_label
from matchsvc.services.training import flip_probability, open_training_set
from privacy.crypto import DataKey, DecryptionError

DIM = 6


def _rows(cipher: UserCipher, labels: list[bool], epsilons: list[float | None], rng: np.random.Generator) -> list[TrainingRow]:
    rows = []
    for index, (label, epsilon) in enumerate(zip(labels, epsilons, strict=True)):
        face = uuid.uuid4()
        latent = rng.uniform(-1, 1, DIM).tolist()
        rows.append(TrainingRow(10 + 3 * index, cipher.user_id, face, latent, seal_label(cipher, face_id=face, label=label), epsilon))
    return rows


@pytest.mark.parametrize(
    ("labels", "epsilons"),
    [
        ([], []),
        ([True], [2.0]),
        ([False] * 7, [2.0] * 7),  # all the same label
        ([True] * 5, [None] * 5),  # stored as answered (release-time mechanisms): rate 0
        ([True, False, False, True, True, False], [2.0, 0.5, None, 2.0, 1.37, 0.5]),  # on-device epsilons mixed in
    ],
)
def test_open_training_set_equals_the_row_by_row_reading(labels: list[bool], epsilons: list[float | None]) -> None:
    cipher = UserCipher(DataKey.generate(), uuid.uuid4())
    rows = _rows(cipher, labels, epsilons, np.random.default_rng(len(labels)))
    data = open_training_set(cipher, rows, dim=DIM, after_id=4)
    assert data.Z.shape == (len(rows), DIM) and data.Z.dtype == np.float64
    assert np.array_equal(data.Z, np.array([row.latent for row in rows], dtype=np.float64).reshape(len(rows), DIM))
    assert data.y.dtype == bool
    assert np.array_equal(data.y, np.array([open_label(cipher, face_id=row.face_id, blob=row.label_ct) for row in rows], dtype=bool))
    assert np.array_equal(data.y, np.array(labels, dtype=bool))
    assert data.flip.dtype == np.float64
    assert np.array_equal(data.flip, np.array([flip_probability(row.label_epsilon) for row in rows], dtype=np.float64))
    assert data.last_id == (rows[-1].rating_id if rows else 4)


def test_a_label_moved_to_another_face_does_not_open() -> None:
    cipher = UserCipher(DataKey.generate(), uuid.uuid4())
    rows = _rows(cipher, [True, False], [2.0, 2.0], np.random.default_rng(0))
    swapped = [rows[0]._replace(label_ct=rows[1].label_ct), rows[1]]
    with pytest.raises(DecryptionError):
        open_training_set(cipher, swapped, dim=DIM)
    other_user = UserCipher(cipher.key, uuid.uuid4())
    with pytest.raises(DecryptionError):
        open_training_set(other_user, rows, dim=DIM)
