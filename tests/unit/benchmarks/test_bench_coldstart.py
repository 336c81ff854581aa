"""The cold-start benchmark (``matchsvc bench coldstart``): one --quick run through the CLI, its JSON and plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import expit
from typer.testing import CliRunner

from benchmarks.coldstart import (
    METHODS,
    QUESTIONS,
    QUICK,
    TASTE_SHARES,
    TASTE_VARIANCE,
    SyntheticPopulation,
    run_coldstart_benchmark,
)
from matchsvc.cli import app


pytestmark = pytest.mark.slow  # the module's --quick run takes 10-20 s


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("coldstart")
    run = CliRunner().invoke(app, ["bench", "coldstart", "--quick", "--json", "--out", str(out)])
    assert run.exit_code == 0, run.output
    return json.loads(run.stdout), out


def _accuracy(result: dict[str, Any], method: str, epsilon: float | str, n: int, questions: str) -> float:
    key = (method, epsilon, n, questions)
    (cell,) = [c for c in result["cells"] if (c["method"], c["epsilon"], c["n_ratings"], c["questions"]) == key]
    return cell["accuracy"]


def test_quick_run_writes_strict_json_with_every_cell_and_a_png(quick: tuple[dict[str, Any], Path]) -> None:
    result, out = quick
    assert json.loads((out / "coldstart_benchmark.json").read_text()) == result
    assert (out / "coldstart_benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = result["config"]
    assert (config["ratings"], config["epsilons"]) == ([0, 5, 10, 20], [1.0, "inf"])
    assert config["test_users"] == QUICK["test_users"]
    expected = {(m, e, 0, "none") for m in METHODS for e in (1.0, "inf")}
    expected |= {(m, e, n, q) for m in METHODS for e in (1.0, "inf") for n in (5, 10, 20) for q in QUESTIONS}
    cells = result["cells"]
    assert len(cells) == len(expected)
    assert {(c["method"], c["epsilon"], c["n_ratings"], c["questions"]) for c in cells} == expected
    for cell in cells:
        assert 0.0 <= cell["ci_low"] <= cell["accuracy"] <= cell["ci_high"] <= 1.0
        assert 0.0 <= cell["label_ci_low"] <= cell["label_accuracy"] <= cell["label_ci_high"] <= 1.0
    for key in ("1.0", "inf"):  # one release per per-rating epsilon, each at user-level (1, 1e-6)
        release = result["releases"][key]
        assert (release["epsilon"], release["delta"], release["neighbouring"]) == (1.0, 1e-6, "add-remove-user")
        assert release["accounting"]["n_users"] == QUICK["training_users"]


def test_methods_behave_as_defined(quick: tuple[dict[str, Any], Path]) -> None:
    result, _ = quick
    for epsilon in (1.0, "inf"):
        # A brand-new user: per-user only is a coin flip, the posterior is the prior.
        assert _accuracy(result, "per_user", epsilon, 0, "none") == 0.5
        prior = _accuracy(result, "prior", epsilon, 0, "none")
        assert _accuracy(result, "posterior", epsilon, 0, "none") == prior
        # The prior ignores the answers: the same at every n and for either question order.
        assert {c["accuracy"] for c in result["cells"] if (c["method"], c["epsilon"]) == ("prior", epsilon)} == {prior}
    for questions in QUESTIONS:
        # Twenty clean answers teach a user's own model a lot (about 0.7), twenty at epsilon 1 much less.
        clean = _accuracy(result, "per_user", "inf", 20, questions)
        assert clean > 0.64
        assert clean > _accuracy(result, "per_user", 1.0, 20, questions) + 0.05


def test_checks_follow_their_stated_rules(quick: tuple[dict[str, Any], Path]) -> None:
    result, _ = quick
    check = result["checks"]["posterior_vs_baselines"]
    assert len(check["cells"]) == 2 * 7  # per epsilon: n = 0 once, n = 5, 10, 20 for both question orders
    for entry in check["cells"]:
        accuracy = {m: _accuracy(result, m, entry["epsilon"], entry["n_ratings"], entry["questions"]) for m in METHODS}
        assert entry["posterior"] == accuracy["posterior"]
        assert entry["baseline"] == max(accuracy["prior"], accuracy["per_user"]) == accuracy[entry["better_baseline"]]
        assert entry["diff_ci_low"] <= entry["diff_ci_high"]
        assert entry["pass"] == (entry["diff_ci_high"] >= 0.0)
        if entry["n_ratings"] == 0:  # the posterior is the prior: a difference of exactly 0
            assert (entry["difference"], entry["diff_ci_low"], entry["diff_ci_high"]) == (0.0, 0.0, 0.0)
    assert check["pass"] == all(entry["pass"] for entry in check["cells"])
    assert check["failures"] == [entry for entry in check["cells"] if not entry["pass"]]
    target = result["checks"]["target"]
    assert target["accuracy"] == _accuracy(result, "posterior", 1.0, 10, "adaptive")
    assert target["pass"] == (target["accuracy"] >= 0.75)


def test_references_match_the_documented_population(quick: tuple[dict[str, Any], Path]) -> None:
    reference = quick[0]["reference"]
    assert reference["true_model"]["accuracy"]["mean"] == 1.0
    assert 0.8 < reference["true_model"]["label_accuracy"]["mean"] < 0.9
    # The population mean alone agrees with about 75 % of a user's preferred answers, the persona mean
    # with about 83 % (module docstring).
    assert 0.70 < reference["population_mean_oracle"]["accuracy"]["mean"] < 0.80
    assert 0.78 < reference["persona_oracle"]["accuracy"]["mean"] < 0.88
    assert reference["population_mean_oracle"]["accuracy"]["mean"] < reference["persona_oracle"]["accuracy"]["mean"]


def test_population_splits_taste_into_shared_persona_and_own_as_documented() -> None:
    rng = np.random.default_rng(0)
    population = SyntheticPopulation.draw(24, rng)
    thetas, personas = population.users(20_000, rng)
    assert np.allclose(np.bincount(personas) / personas.size, [0.4, 0.3, 0.2, 0.1], atol=0.015)
    shared_w = population.mean()[:-1]
    offsets = population.means[personas, :-1] - shared_w
    own = thetas[:, :-1] - population.means[personas, :-1]
    parts = [float(shared_w @ shared_w), float(np.mean(np.sum(offsets**2, axis=1))), float(np.mean(np.sum(own**2, axis=1)))]
    assert np.allclose(np.array(parts) / TASTE_VARIANCE, TASTE_SHARES, atol=0.02)
    assert 0.2 < float(np.mean(expit(thetas[:, -1]))) < 0.8


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"test_users": 1}, "test_users"),
        ({"ratings": ()}, "ratings"),
        ({"ratings": (5, 5)}, "ratings"),
        ({"ratings": (600,)}, "ratings"),
        ({"epsilons": (0.0,)}, "epsilons"),
        ({"bootstrap": 10}, "bootstrap"),
    ],
)
def test_invalid_options_name_the_parameter(options: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        run_coldstart_benchmark(**options)
