"""GET /v1/audit/privacy-budget: the population model's releases and composed budget, for auditors only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.population import DEFAULT_SAMPLE_RATE
from matchsvc.runtime import Runtime
from matchsvc.security import Scope
from matchsvc.services.population import PopulationPolicy, fit_release
from privacy.mechanisms import ADD_REMOVE_USER
from tests.support.accounts import auth_headers
from tests.support.scenario import rate_faces, staff_headers

ROUTE = "/v1/audit/privacy-budget"


def _population(client: TestClient, headers: dict[str, str]) -> dict:
    response = client.get(ROUTE, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["population_model"]


def test_only_auditors_see_the_population_ledger(client: TestClient, db: Runtime) -> None:
    assert client.get(ROUTE).status_code == 401
    assert client.get(ROUTE, headers=auth_headers(client)).status_code == 403
    assert client.get(ROUTE, headers=staff_headers(client, db, Scope.admin)).status_code == 403
    assert _population(client, staff_headers(client, db, Scope.auditor)) == {
        "neighbouring": ADD_REMOVE_USER,
        "epsilon_per_release": db.settings.population_epsilon,
        "epsilon_cap": db.settings.population_epsilon_cap,
        "epsilon_spent": 0.0,
        "delta": db.settings.population_delta,
        "releases": [],
    }


@pytest.mark.slow
def test_the_report_lists_every_release_and_their_composed_epsilon(client: TestClient, db: Runtime) -> None:
    for _ in range(3):
        rate_faces(client, auth_headers(client), n=10)
    policy = dataclasses.replace(PopulationPolicy.from_settings(db.settings), min_users=3, steps=10)
    reports = []
    for seed, epsilon in enumerate([1.0, 0.5]):
        with db.sessions() as session:
            release_policy = dataclasses.replace(policy, epsilon=epsilon)
            reports.append(fit_release(session, keys=db.keys, policy=release_policy, rng=np.random.default_rng(seed)))

    ledger = _population(client, staff_headers(client, db, Scope.auditor))
    assert ledger["epsilon_spent"] == pytest.approx(reports[-1].composed_epsilon)
    assert ledger["epsilon_cap"] == policy.epsilon_cap and ledger["delta"] == policy.ledger_delta
    releases = ledger["releases"]
    assert [(r["version"], r["epsilon"], r["delta"], r["n_users"]) for r in releases] == [
        (1, 1.0, policy.delta, 3),
        (2, 0.5, policy.delta, 3),
    ]
    assert all(r["steps"] == 10 and r["sample_rate"] == DEFAULT_SAMPLE_RATE for r in releases)
    assert releases[0]["noise_multiplier"] < releases[1]["noise_multiplier"]  # a smaller epsilon needs more noise
    assert releases[0]["created_at"] < releases[1]["created_at"] and releases[0]["mechanism"] == "dpsgd"
