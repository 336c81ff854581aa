"""Accountants: composition rules, pinned RDP numbers, state round trips, the registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from privacy.accounting import (
    ACCOUNTANTS,
    Accountant,
    BasicCompositionAccountant,
    RDPAccountant,
    calibrate_noise_multiplier,
    create_accountant,
)

# Opacus' default RDP orders, written out so the closed-form check below is independent of it.
ORDERS = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=np.float64)


def test_registry_builds_each_accountant_and_rejects_unknown_names() -> None:
    assert ACCOUNTANTS == ("basic", "rdp")
    assert isinstance(create_accountant("basic"), BasicCompositionAccountant)
    assert isinstance(create_accountant("rdp"), RDPAccountant)
    with pytest.raises(ValueError, match="'prv'"):
        create_accountant("prv")


def test_basic_composition_sums_epsilon_and_delta() -> None:
    acct = BasicCompositionAccountant()
    assert (acct.epsilon, acct.delta, len(acct)) == (0.0, 0.0, 0)
    for _ in range(10):
        acct.step(epsilon=0.1, delta=0.0)
    acct.step(epsilon=1.0, delta=1e-6)
    assert acct.epsilon == 2.0  # fsum: exactly 10 * 0.1 + 1, not 1.9999999999999998
    assert acct.delta == 1e-6
    assert len(acct) == 11
    assert acct.get_epsilon(1e-6) == 2.0
    assert acct.get_epsilon(1e-7) == math.inf


def test_basic_composition_records_a_non_private_release_as_infinite() -> None:
    acct = BasicCompositionAccountant()
    acct.step(epsilon=math.inf, delta=0.0)
    assert acct.get_epsilon(0.0) == math.inf


@pytest.mark.parametrize(
    ("epsilon", "delta", "error"),
    [(-1.0, 0.0, ValueError), (math.nan, 0.0, ValueError), (1.0, 1.0, ValueError), ("1", 0.0, TypeError)],
)
def test_basic_composition_rejects_bad_releases(epsilon: object, delta: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        BasicCompositionAccountant().step(epsilon=epsilon, delta=delta)  # type: ignore[arg-type]


def test_basic_state_round_trips_through_json() -> None:
    acct = BasicCompositionAccountant()
    acct.step(epsilon=0.5, delta=0.0)
    acct.step(epsilon=2.0, delta=1e-5)
    restored = BasicCompositionAccountant()
    restored.load_state_dict(json.loads(json.dumps(acct.state_dict())))
    assert restored.state_dict() == acct.state_dict()
    assert (restored.epsilon, restored.delta) == (2.5, 1e-5)


@pytest.mark.parametrize(
    "state",
    [
        {"accountant": "rdp", "history": []},
        {"accountant": "basic"},
        {"accountant": "basic", "history": [[1.0]]},
        {"accountant": "basic", "history": [[-1.0, 0.0]]},
        {"accountant": "basic", "history": [["x", 0.0]]},
        [],
    ],
)
def test_basic_load_rejects_foreign_or_malformed_state(state: object) -> None:
    acct = BasicCompositionAccountant()
    acct.step(epsilon=1.0, delta=0.0)
    with pytest.raises(ValueError):
        acct.load_state_dict(state)  # type: ignore[arg-type]
    assert acct.epsilon == 1.0  # unchanged on failure


def test_rdp_of_full_batch_gaussian_matches_the_closed_form() -> None:
    sigma, steps, delta = 1.0, 10, 1e-5
    acct = RDPAccountant()
    acct.step(noise_multiplier=sigma, sample_rate=1.0, steps=steps)
    rdp = steps * ORDERS / (2 * sigma**2)
    # Balle et al. (2020), Theorem 21: the conversion Opacus uses.
    expected = np.min(rdp - (np.log(delta) + np.log(ORDERS)) / (ORDERS - 1) + np.log((ORDERS - 1) / ORDERS))
    assert acct.get_epsilon(delta) == pytest.approx(expected, rel=1e-12)
    assert acct.get_epsilon(delta) == pytest.approx(19.05359753163139, rel=1e-12)


def test_rdp_of_subsampled_gaussian_is_pinned() -> None:
    acct = RDPAccountant()
    acct.step(noise_multiplier=1.1, sample_rate=0.01, steps=1000)
    assert acct.get_epsilon(1e-5) == pytest.approx(1.7117700912203435, rel=1e-9)


def test_rdp_merges_identical_steps_and_counts_them() -> None:
    acct = RDPAccountant()
    assert acct.get_epsilon(1e-5) == 0.0
    acct.step(noise_multiplier=2.0, sample_rate=1.0)
    acct.step(noise_multiplier=2.0, sample_rate=1.0, steps=4)
    acct.step(noise_multiplier=3.0, sample_rate=1.0)
    assert len(acct) == 6
    assert acct.state_dict() == {"accountant": "rdp", "history": [[2.0, 1.0, 5], [3.0, 1.0, 1]]}
    restored = RDPAccountant()
    restored.load_state_dict(json.loads(json.dumps(acct.state_dict())))
    assert restored.get_epsilon(1e-5) == acct.get_epsilon(1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": 0.0, "sample_rate": 1.0},
        {"noise_multiplier": 1.0, "sample_rate": 0.0},
        {"noise_multiplier": 1.0, "sample_rate": 1.5},
        {"noise_multiplier": 1.0, "sample_rate": 1.0, "steps": 0},
    ],
)
def test_rdp_rejects_bad_steps(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RDPAccountant().step(**kwargs)  # type: ignore[arg-type]


def test_rdp_needs_a_positive_delta() -> None:
    acct = RDPAccountant()
    acct.step(noise_multiplier=1.0, sample_rate=1.0)
    with pytest.raises(ValueError, match="delta"):
        acct.get_epsilon(0.0)


def test_rdp_load_rejects_malformed_state() -> None:
    with pytest.raises(ValueError):
        RDPAccountant().load_state_dict({"accountant": "rdp", "history": [[1.0, 2.0, 1]]})
    with pytest.raises(ValueError):
        RDPAccountant().load_state_dict({"accountant": "basic", "history": []})


def test_noise_multiplier_for_the_dpsgd_schedule_is_pinned() -> None:
    # engine.preference's DP-SGD: full-batch steps (sample rate 1), 3 epochs.
    assert calibrate_noise_multiplier(target_epsilon=1.0, target_delta=1e-5, sample_rate=1.0, steps=3) == 7.03125
    assert calibrate_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=1.0, steps=3) == 3.73046875


def test_calibrated_noise_meets_the_target() -> None:
    sigma = calibrate_noise_multiplier(target_epsilon=1.0, target_delta=1e-5, sample_rate=1.0, steps=3)
    acct = RDPAccountant()
    acct.step(noise_multiplier=sigma, sample_rate=1.0, steps=3)
    assert 0.98 < acct.get_epsilon(1e-5) <= 1.0


def test_calibrate_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="target_epsilon"):
        calibrate_noise_multiplier(target_epsilon=0.0, target_delta=1e-5, sample_rate=1.0, steps=3)
    with pytest.raises(ValueError, match="delta"):
        calibrate_noise_multiplier(target_epsilon=1.0, target_delta=0.0, sample_rate=1.0, steps=3)


def test_accountant_is_abstract() -> None:
    with pytest.raises(TypeError):
        Accountant()  # type: ignore[abstract]
