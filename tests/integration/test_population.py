"""The population model's service side against a real PostgreSQL: releases, their ledger, the cap, audit, CLI."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from engine.population import DEFAULT_MAX_GRAD_NORM, DEFAULT_SAMPLE_RATE, PopulationModel, population_epsilon
from matchsvc.cli import app as cli_app
from matchsvc.errors import Conflict, PrivacyBudgetExhausted
from matchsvc.repositories import population as population_repo
from matchsvc.runtime import Runtime
from matchsvc.services import audit
from matchsvc.services.data_subject import delete_user, deletion_proof
from matchsvc.services.population import FitReport, PopulationPolicy, current_release, fit_release
from privacy.accounting import calibrate_noise_multiplier
from privacy.crypto import DecryptionError
from privacy.mechanisms import ADD_REMOVE_USER
from tests.support.accounts import auth_headers, register
from tests.support.scenario import rate_faces, user_id

RATERS = 6
#: A short DP-SGD schedule keeps a fit to seconds; the accounting and storage are the same code.
STEPS = 20


def _raters(client: TestClient, count: int = RATERS, *, ratings: int = 12) -> list[uuid.UUID]:
    """``count`` users who each rated ``ratings`` faces through the API (labels privatised and sealed)."""
    ids = []
    for _ in range(count):
        headers = auth_headers(client)
        rate_faces(client, headers, n=ratings)
        ids.append(user_id(client, headers))
    return ids


def _policy(db: Runtime, **changes: object) -> PopulationPolicy:
    base = PopulationPolicy.from_settings(db.settings)
    return dataclasses.replace(base, **{"min_users": RATERS, "steps": STEPS, **changes})


def _fit(db: Runtime, policy: PopulationPolicy, seed: int) -> FitReport:
    with db.sessions() as session:
        return fit_release(session, keys=db.keys, policy=policy, rng=np.random.default_rng(seed))


def _accounting(epsilon: float, delta: float) -> dict[str, float | int]:
    sigma = calibrate_noise_multiplier(
        target_epsilon=epsilon, target_delta=delta, sample_rate=DEFAULT_SAMPLE_RATE, steps=STEPS
    )
    return {
        "noise_multiplier": sigma,
        "sample_rate": DEFAULT_SAMPLE_RATE,
        "steps": STEPS,
        "max_grad_norm": DEFAULT_MAX_GRAD_NORM,
        "n_users": RATERS,
    }


def _releases(db: Runtime) -> list[dict]:
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM population_releases ORDER BY version")).mappings().all()
    return [dict(row) for row in rows]


def _audited(db: Runtime) -> list[dict]:
    with db.engine.connect() as connection:
        query = text("SELECT details FROM audit_log WHERE action = 'population_release' ORDER BY id")
        return list(connection.execute(query).scalars())


@pytest.mark.slow
def test_releases_compose_in_the_ledger_and_the_cap_refuses_before_any_label_is_opened(
    client: TestClient, db: Runtime
) -> None:
    _raters(client)
    auth_headers(client)  # a user without ratings is not part of the population
    policy = _policy(db)
    first = _fit(db, policy, seed=1)
    # A second release with its own, smaller delta: it composes at the deployment's delta all the same.
    second = _fit(db, dataclasses.replace(policy, epsilon=0.5, delta=1e-7), seed=2)

    expected = [_accounting(1.0, 1e-6), _accounting(0.5, 1e-7)]
    assert (first.version, first.n_users, second.version, second.n_users) == (1, RATERS, 2, RATERS)
    assert first.composed_epsilon == pytest.approx(population_epsilon(expected[:1], delta=1e-6))
    assert second.composed_epsilon == pytest.approx(population_epsilon(expected, delta=1e-6))
    # The budget grows with each release, by less than adding epsilons would (RDP composition).
    assert first.composed_epsilon <= 1.0 < second.composed_epsilon < first.composed_epsilon + 0.5
    assert second.ledger_delta == 1e-6 and "v2 from 6 users" in second.summary()

    rows = _releases(db)
    for row, accounting, (epsilon, delta) in zip(rows, expected, [(1.0, 1e-6), (0.5, 1e-7)], strict=True):
        guarantee = (row["mechanism"], row["neighbouring"], row["epsilon"], row["delta"])
        assert guarantee == ("dpsgd", ADD_REMOVE_USER, epsilon, delta)
        assert {key: row[key] for key in accounting} == pytest.approx(accounting)
        assert (row["n_personas"], row["rank"]) == (policy.n_personas, policy.rank)
        model = PopulationModel.from_state(row["state"])
        assert model.dim == db.latent_space.dim and model.n_personas == policy.n_personas
        assert model.accounting == pytest.approx(accounting)
    with db.sessions() as session:
        latest = current_release(session)
        assert latest is not None and latest.version == 2
        assert np.array_equal(latest.model.means, PopulationModel.from_state(rows[1]["state"]).means)
        assert current_release(session) is latest  # parsed once per version

    assert _audited(db) == [
        {
            "version": version,
            "mechanism": "dpsgd",
            "epsilon": epsilon,
            "delta": delta,
            "n_users": RATERS,
            "composed_epsilon": pytest.approx(report.composed_epsilon),
            "ledger_delta": 1e-6,
        }
        for version, epsilon, delta, report in [(1, 1.0, 1e-6, first), (2, 0.5, 1e-7, second)]
    ]
    with db.sessions() as session:
        assert audit.verify(session).ok

    # One stored label made unreadable: a fit that opened labels would fail on it.
    with db.engine.begin() as connection:
        oldest = "(SELECT min(id) FROM ratings)"
        connection.execute(text(f"UPDATE ratings SET label_ct = '\\x00'::bytea WHERE id = {oldest}"))
    tight = dataclasses.replace(policy, epsilon_cap=second.composed_epsilon + 0.01)
    with pytest.raises(PrivacyBudgetExhausted, match=r"v3 at epsilon=1 would raise .* above the cap"):
        _fit(db, tight, seed=3)
    with pytest.raises(DecryptionError):  # within the cap the fit goes on to open the labels
        _fit(db, policy, seed=3)
    assert len(_releases(db)) == 2 and len(_audited(db)) == 2


def test_too_few_users_or_a_running_fit_are_refused(client: TestClient, db: Runtime) -> None:
    _raters(client, 2, ratings=3)
    with pytest.raises(Conflict, match="at least 3 users, found 2"):
        _fit(db, _policy(db, min_users=3), seed=0)
    with db.sessions() as holder:
        assert population_repo.try_lock_fits(holder)
        with pytest.raises(Conflict, match="another population fit is running"):
            _fit(db, _policy(db, min_users=2), seed=0)
    assert _releases(db) == [] and _audited(db) == []
    with db.sessions() as session:
        assert current_release(session) is None


@pytest.mark.slow
def test_a_release_names_no_user_and_outlives_a_deleted_one(client: TestClient, db: Runtime) -> None:
    names = [register(client) for _ in range(RATERS)]
    for name in names:
        rate_faces(client, auth_headers(client, name), n=12)
    ids = [user_id(client, auth_headers(client, name)) for name in names]
    _fit(db, _policy(db), seed=4)

    with db.engine.connect() as connection:
        dump = connection.execute(text("SELECT release::text FROM population_releases AS release")).scalar_one()
    for needle in [*names, *(str(i) for i in ids), *(i.hex for i in ids)]:
        assert needle not in dump, needle

    delete_user(db.sessions, user_id=ids[0], keys=db.keys, actor=None, pseudonym_key=db.secrets.audit_pseudonym_key)
    with db.sessions() as session:
        assert deletion_proof(session, user_id=ids[0]).clean
        latest = current_release(session)
        assert latest is not None and latest.version == 1
    assert len(_releases(db)) == 1  # a DP release is not personal data of anyone in it (docs/privacy.md)


@pytest.fixture
def cli_env(cli_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The shared CLI environment, with a population small enough for these raters."""
    cli_env.setenv("MATCHSVC_POPULATION_MIN_USERS", str(RATERS))
    return cli_env


@pytest.mark.slow
def test_cli_fits_a_release_and_exits_1_past_the_cap(
    client: TestClient, db: Runtime, cli_env: pytest.MonkeyPatch
) -> None:
    _raters(client)
    runner = CliRunner()
    fitted = runner.invoke(cli_app, ["population", "fit", "--epsilon", "0.5", "--steps", str(STEPS)])
    assert fitted.exit_code == 0, fitted.output
    assert fitted.stdout.startswith("population release v1 from 6 users at epsilon=0.5, delta=1e-06;")
    assert "of the cap 4 (at delta=1e-06)" in fitted.stdout

    cli_env.setenv("MATCHSVC_POPULATION_EPSILON", "0.5")
    cli_env.setenv("MATCHSVC_POPULATION_EPSILON_CAP", "0.6")
    refused = runner.invoke(cli_app, ["population", "fit", "--steps", str(STEPS)])
    assert refused.exit_code == 1
    assert "population fit refused: population release v2 at epsilon=0.5" in refused.stderr
    assert "above the cap of 0.6" in refused.stderr
    assert runner.invoke(cli_app, ["population", "fit", "--epsilon", "0"]).exit_code == 2
    assert [row["version"] for row in _releases(db)] == [1]


def test_a_user_whose_key_vanished_mid_fit_is_left_out(client: TestClient, db: Runtime) -> None:
    """Deletion racing a fit: the ratings were streamed, then the data key was destroyed."""
    from matchsvc.services.population import _likelihoods

    ids = _raters(client, 3, ratings=6)
    with db.sessions() as session:
        session.execute(text("DELETE FROM user_keys WHERE user_id = :id"), {"id": ids[0]})
        assert len(_likelihoods(session, keys=db.keys)) == 2
        session.rollback()
