"""Population settings and policy: ranges are checked where they enter, the ledger delta is the deployment's."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from matchsvc.services.population import PopulationPolicy
from matchsvc.settings import Settings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"population_epsilon": 5.0, "population_epsilon_cap": 4.0}, "must not exceed MATCHSVC_POPULATION_EPSILON_CAP"),
        ({"population_delta": 0.0}, "greater than 0"),
        ({"population_delta": 0.01}, "less than 0.001"),
        ({"population_personas": 0}, "greater than or equal to 1"),
        ({"population_min_users": 1}, "greater than or equal to 2"),
    ],
)
def test_settings_refuse_out_of_range_population_values(values: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_policy_reads_the_settings_and_keeps_the_deployment_delta_for_the_ledger() -> None:
    policy = PopulationPolicy.from_settings(Settings(population_epsilon=0.5, population_delta=1e-7))
    assert (policy.epsilon, policy.delta, policy.ledger_delta, policy.epsilon_cap) == (0.5, 1e-7, 1e-7, 4.0)
    assert (policy.n_personas, policy.rank, policy.min_users) == (4, 4, 20)
    override = dataclasses.replace(policy, delta=1e-9)
    assert (override.delta, override.ledger_delta) == (1e-9, 1e-7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epsilon": 5.0}, r"epsilon must be in \(0, epsilon_cap=4\]"),
        ({"epsilon": 0.0}, "epsilon must be in"),
        ({"delta": 1.0}, r"delta must be in \(0, 1\)"),
        ({"rank": 0}, "rank must be at least 1"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"min_users": 1}, "min_users must be at least 2"),
    ],
)
def test_policy_overrides_are_checked(change: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PopulationPolicy.from_settings(Settings()), **change)
