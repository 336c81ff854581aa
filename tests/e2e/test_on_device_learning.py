"""Issue 17's acceptance: randomizing on the device learns as well as randomizing on the server.

Twelve pairs of simulated people share a hidden preference within each pair. One of each pair
randomizes every answer on its side (randomized response at epsilon 2: the true answer is kept with
probability e^eps / (1 + e^eps)) and sends ``randomized_like`` + ``epsilon``; the other sends the true
answer and the server randomizes it at the same epsilon. Everything goes through REST, and the
learned model and the stored labels are read back through the data-subject export.

Three claims are checked:

- what the service holds for an on-device user is exactly what the client sent (every label, its
  epsilon, and a ledger entry marked as randomized on the device), so the server added no noise;
- the server-side twins' stored labels disagree with their true answers at the flip rate
  ``1 / (1 + e^eps)`` (a two-sided binomial test at level 0.001, over all their labels), so the two
  arms really run the same mechanism;
- the paired difference in accuracy (on-device minus server-side) is within 6 points of zero at
  95 % confidence (TOST: both one-sided 95 % bounds inside +-0.06). A server that learned an
  on-device label as if it were noise-free, or as if it had been flipped twice, shows up here.

Measured once: difference +0.012, standard error 0.012 over the 12 pairs (so a correct service
fails this about once in a thousand runs); server-side flip rate 0.133 against 0.119.
"""

from __future__ import annotations

import dataclasses
import math
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.special import expit
from scipy.stats import binomtest
from sqlalchemy import text

from api.main import create_app
from benchmarks.preference import expected_accuracy, synthetic_user
from matchsvc.runtime import Runtime
from tests.support.accounts import auth_headers
from tests.support.scenario import served_latents, user_id

PAIRS = 12
RATINGS = 50
EPSILON = 2.0
FLIP = 1.0 / (1.0 + math.exp(EPSILON))
MARGIN = 0.06


@dataclasses.dataclass
class _Person:
    """What one simulated client knows: its account, and what it answered and sent, by face id."""

    headers: dict[str, str]
    user: uuid.UUID
    on_device: bool
    true: dict[str, bool] = dataclasses.field(default_factory=dict)
    sent: dict[str, bool] = dataclasses.field(default_factory=dict)


def _rate(client: TestClient, runtime: Runtime, person: _Person, w: np.ndarray, b: float, rng: np.random.Generator) -> None:
    while len(person.true) < RATINGS:
        faces = client.get("/v1/faces/next", params={"n": 10}, headers=person.headers).json()["faces"]
        latents = served_latents(runtime, faces)
        for face in faces[: RATINGS - len(person.true)]:
            liked = bool(rng.random() < expit(latents[face["id"]] @ w + b))
            if person.on_device:
                sent = liked != bool(rng.random() < FLIP)  # the phone's coin, before anything leaves it
                body = {"face_id": face["id"], "randomized_like": sent, "epsilon": EPSILON}
            else:
                sent = liked
                body = {"face_id": face["id"], "liked": liked}
            response = client.post("/v1/ratings", json=body, headers={**person.headers, "Idempotency-Key": uuid.uuid4().hex})
            assert response.status_code == 201, response.text
            person.true[face["id"]] = liked
            person.sent[face["id"]] = sent


def _export(client: TestClient, person: _Person) -> tuple[dict[str, bool], dict]:
    """The stored (randomized) label of each rated face, and the released model, from the export."""
    response = client.get("/v1/me/export", headers=person.headers)
    assert response.status_code == 200, response.text
    tables = response.json()["tables"]
    recorded = {row["face_id"]: row["label"]["recorded_like"] for row in tables["ratings"]}
    (state,) = tables["preference_states"]
    assert state["n_ratings"] == RATINGS
    return recorded, state["state"]


def _stored_on_device(runtime: Runtime, person: _Person) -> tuple[list[float], list[bool]]:
    """Each rating's epsilon and each ledger entry's on-device mark, as the database holds them."""
    user = person.user
    with runtime.engine.connect() as connection:
        epsilons = connection.execute(text("SELECT label_epsilon FROM ratings WHERE user_id = :u"), {"u": user}).scalars().all()
        marks = connection.execute(
            text("SELECT randomized_on_device FROM privacy_ledger WHERE user_id = :u AND scope LIKE 'rating:%'"), {"u": user}
        ).scalars().all()
    return list(epsilons), list(marks)


@pytest.mark.slow
def test_randomizing_on_the_device_learns_as_well_as_on_the_server(db: Runtime) -> None:
    runtime = dataclasses.replace(db, policy=dataclasses.replace(db.policy, epsilon=EPSILON), embedded=None, scratch=None)
    rng = np.random.default_rng(20261207)
    fresh = runtime.latent_space.sample(4000, rng)
    differences, flipped, server_labels = [], 0, 0
    with TestClient(create_app(runtime)) as client:
        for _ in range(PAIRS):
            w, b = synthetic_user(runtime.latent_space.dim, rng)
            truth = fresh @ w + b
            accuracy = {}
            for on_device in (True, False):
                headers = auth_headers(client)
                person = _Person(headers=headers, user=user_id(client, headers), on_device=on_device)
                _rate(client, runtime, person, w, b, rng)
                recorded, model = _export(client, person)
                accuracy[on_device] = expected_accuracy(fresh @ np.array(model["coef"]) + model["intercept"], truth)
                if on_device:
                    assert recorded == person.sent  # exactly what the phone sent, nothing added
                    epsilons, marks = _stored_on_device(runtime, person)
                    assert epsilons == [EPSILON] * RATINGS and marks == [True] * RATINGS
                else:
                    assert recorded.keys() == person.true.keys()
                    flipped += sum(recorded[face] != liked for face, liked in person.true.items())
                    server_labels += RATINGS
            differences.append(accuracy[True] - accuracy[False])
    gaps = np.array(differences)
    mean, standard_error = float(gaps.mean()), float(gaps.std(ddof=1) / np.sqrt(PAIRS))
    server_flip = binomtest(flipped, server_labels, FLIP)
    print(
        f"epsilon={EPSILON}, n={RATINGS}, pairs={PAIRS}: on-device minus server accuracy {mean:+.3f} "
        f"(standard error {standard_error:.3f}); server flip rate {flipped / server_labels:.3f} vs {FLIP:.3f}"
    )
    assert server_flip.pvalue > 1e-3
    assert mean - 1.645 * standard_error > -MARGIN and mean + 1.645 * standard_error < MARGIN
