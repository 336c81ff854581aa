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


def test_a_version_1_state_is_stepped_as_the_state_it_reads_as_and_is_never_current() -> None:
    posterior = _posterior(np.random.default_rng(13), 5)
    state = {"version": 1, "kind": "online", "online": OnlinePreference(posterior).to_state()}
    opened = SteppableState.of(state)
    assert opened is not None and opened.upgraded
    assert not opened.is_current(None) and not opened.is_current(1)
    assert opened.stepped(posterior) == Belief.from_state(state).to_state()


def test_a_released_state_has_nothing_to_step() -> None:
    assert SteppableState.of({"version": 2, "kind": "released", "model": [0.5, -1.0, 0.25]}) is None


def _as_version_2(belief: Belief) -> dict:
    """The state version 2 wrote for ``belief``: every array as a JSON list (as stored)."""
    personas = belief.personas
    checkpoint = belief.drift_checkpoint
    state = {
        "version": 2,
        "kind": "posterior",
        "posterior": belief.posterior.to_state(),
        "personas": None
        if personas is None
        else {"responsibilities": personas.responsibilities.tolist(), "means": [c.mean.tolist() for c in personas.components]},
        "population_version": belief.population_version,
        "drift_detected": belief.drift_detected,
        "drift_checkpoint": None if checkpoint is None else checkpoint.to_state(),
    }
    return json.loads(json.dumps(state))


def _same_belief(a: Belief, b: Belief) -> bool:
    assert a.personas is not None and b.personas is not None
    assert a.drift_checkpoint is not None and b.drift_checkpoint is not None
    return (
        np.array_equal(a.posterior.mean, b.posterior.mean)
        and np.array_equal(a.posterior.covariance, b.posterior.covariance)
        and a.posterior.log_evidence == b.posterior.log_evidence
        and np.array_equal(a.personas.responsibilities, b.personas.responsibilities)
        and all(np.array_equal(x.mean, y.mean) for x, y in zip(a.personas.components, b.personas.components, strict=True))
        and (a.population_version, a.drift_detected) == (b.population_version, b.drift_detected)
        and np.array_equal(a.drift_checkpoint.posterior.covariance, b.drift_checkpoint.posterior.covariance)
        and (a.drift_checkpoint.through, a.drift_checkpoint.digest) == (b.drift_checkpoint.through, b.drift_checkpoint.digest)
    )


def test_a_packed_state_holds_every_part_bit_for_bit_and_a_version_2_state_reads_the_same() -> None:
    """Version 3 packs the arrays (D43); a version 2 state, stored as lists, reads to the same belief."""
    belief = _full_belief()
    cipher = UserCipher(DataKey.generate(), uuid.uuid4())
    assert belief.to_state()["version"] == 3
    assert _same_belief(decode_state(open_state(cipher, seal_state(cipher, belief.to_state())))[1], belief)
    assert _same_belief(decode_state(_as_version_2(belief))[1], belief)


def test_a_version_2_state_is_stepped_as_the_version_3_state_it_reads_as_and_stays_current() -> None:
    belief = _full_belief()
    opened = SteppableState.of(_as_version_2(belief))
    assert opened is not None and not opened.upgraded and opened.is_current(belief.population_version)
    stepped = _posterior(np.random.default_rng(14), 6)
    assert opened.stepped(stepped) == dataclasses.replace(belief, posterior=stepped).to_state()


def test_a_packed_state_is_under_a_third_of_the_lists_at_the_services_dimension() -> None:
    """What a rating rewrites (a 32-dimensional posterior, no checkpoint yet): the point of D43."""
    cipher = UserCipher(DataKey.generate(), uuid.uuid4())
    belief = _belief(dim=32)
    packed, lists = seal_state(cipher, belief.to_state()), seal_state(cipher, _as_version_2(belief))
    assert len(packed) * 3 < len(lists)
