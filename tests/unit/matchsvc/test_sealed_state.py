"""The preference state's encoding (D39): orjson writes the same JSON, and states written before still open;
the rating path's online step on a state (D40) writes what the full decode and encode would."""

from __future__ import annotations

import dataclasses
import json
import uuid

import numpy as np
import pytest

from engine.preference import OnlinePreference, Posterior, drift_test
from matchsvc.keys import UserCipher
from matchsvc.services.sealed import (
    Belief,
    PersonaMean,
    PersonaMix,
    SteppableState,
    decode_state,
    open_state,
    seal_state,
)
from privacy.crypto import DataKey


def _belief(dim: int = 24) -> Belief:
    rng = np.random.default_rng(7)
    a = rng.normal(size=(dim + 1, dim + 1))
    posterior = Posterior(mean=rng.normal(size=dim + 1), covariance=a @ a.T + np.eye(dim + 1), log_evidence=-3.25)
    return Belief(posterior, None, None, False)


def test_a_state_round_trips_bit_for_bit() -> None:
    cipher = UserCipher(DataKey.generate(), uuid.uuid4())
    belief = _belief()
    _, opened = decode_state(open_state(cipher, seal_state(cipher, belief.to_state())))
    assert opened is not None
    assert np.array_equal(opened.posterior.mean, belief.posterior.mean)
    assert np.array_equal(opened.posterior.covariance, belief.posterior.covariance)
    assert opened.posterior.log_evidence == belief.posterior.log_evidence


def test_a_state_sealed_with_the_standard_library_opens_unchanged() -> None:
    """States stored before D39 were ``json.dumps`` text; they read to the same values."""
    cipher = UserCipher(DataKey.generate(), uuid.uuid4())
    state = _belief().to_state()
    old = cipher.seal(json.dumps(state).encode(), table="preference_states", column="state", row="current")
    assert open_state(cipher, old) == state
    assert json.loads(cipher.open(seal_state(cipher, state), table="preference_states", column="state", row="current")) == state


def _posterior(rng: np.random.Generator, dim: int) -> Posterior:
    a = rng.normal(size=(dim + 1, dim + 1))
    return Posterior(mean=rng.normal(size=dim + 1), covariance=a @ a.T + np.eye(dim + 1), log_evidence=-1.5)


def _full_belief(dim: int = 6) -> Belief:
    """A belief with every part a stored state can hold: persona mix, release, drift checkpoint."""
    rng = np.random.default_rng(11)
    Z, y = rng.normal(size=(80, dim)), rng.random(80) < 0.4
    checkpoint = drift_test(Z, y, flip_probability=0.1).checkpoint
    personas = PersonaMix(np.array([0.7, 0.3]), tuple(PersonaMean(rng.normal(size=dim + 1)) for _ in range(2)))
    return Belief(_posterior(rng, dim), personas, 4, True, checkpoint)


@pytest.mark.parametrize("population_version", [None, 4])
def test_a_step_on_an_opened_state_writes_what_the_full_decode_and_encode_would(population_version: int | None) -> None:
    belief = dataclasses.replace(_full_belief(), population_version=population_version)
    assert belief.drift_checkpoint is not None
    state = json.loads(json.dumps(belief.to_state()))  # as stored
    opened = SteppableState.of(state)
    assert opened is not None and not opened.upgraded
    assert opened.is_current(population_version) and not opened.is_current(5)
    stepped = _posterior(np.random.default_rng(12), 6)
    expected = dataclasses.replace(Belief.from_state(state), posterior=stepped).to_state()
    assert opened.stepped(stepped) == json.loads(json.dumps(expected))
    assert np.array_equal(opened.posterior.covariance, belief.posterior.covariance)


def test_a_version_1_state_is_stepped_as_the_version_2_state_it_reads_as_and_is_never_current() -> None:
    posterior = _posterior(np.random.default_rng(13), 5)
    state = {"version": 1, "kind": "online", "online": OnlinePreference(posterior).to_state()}
    opened = SteppableState.of(state)
    assert opened is not None and opened.upgraded
    assert not opened.is_current(None) and not opened.is_current(1)
    assert opened.stepped(posterior) == Belief.from_state(state).to_state()


def test_a_released_state_has_nothing_to_step() -> None:
    assert SteppableState.of({"version": 2, "kind": "released", "model": [0.5, -1.0, 0.25]}) is None
