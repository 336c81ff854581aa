"""The preference state's encoding (D39): orjson writes the same JSON, and states written before still open."""

from __future__ import annotations

import json
import uuid

import numpy as np

from engine.preference import Posterior
from matchsvc.keys import UserCipher
from matchsvc.services.sealed import Belief, decode_state, open_state, seal_state
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
