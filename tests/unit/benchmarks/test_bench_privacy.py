"""The privacy benchmark (``matchsvc bench privacy``) on a small grid: shape, sanity, CLI."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from benchmarks.privacy import METHODS, run_privacy_benchmark
from matchsvc.cli import app

SMALL: dict[str, Any] = {
    "users": 8,
    "ratings": (10, 50),
    "epsilons": (1.0, math.inf),
    "test_faces": 300,
    "bootstrap": 200,
    "timing_repeats": 20,
}


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_privacy_benchmark(**SMALL)


def _cell(result: dict[str, Any], method: str, epsilon: float | str, n: int) -> dict[str, Any]:
    (cell,) = [c for c in result["cells"] if (c["method"], c["epsilon"], c["n_ratings"]) == (method, epsilon, n)]
    return cell


def test_result_is_strict_json_with_the_whole_grid(result: dict[str, Any]) -> None:
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert result["config"]["epsilons"] == [1.0, "inf"]
    assert result["config"]["dim"] == 24
    expected = {(m, "inf", n) for m in ("linear_svc", "none", "randomized_response") for n in (10, 50)}
    expected |= {(m, 1.0, n) for m in ("randomized_response", "objective_perturbation", "dpsgd", "diffprivlib") for n in (10, 50)}
    assert {(c["method"], c["epsilon"], c["n_ratings"]) for c in result["cells"]} == expected
    for cell in result["cells"]:
        for metric in ("accuracy", "cosine"):
            summary = cell[metric]
            assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]
    pairs = {(c["baseline"], c["n_ratings"]) for c in result["comparisons"]}
    assert pairs == {(b, n) for b in ("diffprivlib", "dpsgd") for n in (10, 50)}
    for entry in result["comparisons"]:
        assert entry["rr_beats"] == (entry["rr_accuracy"] > entry["baseline_accuracy"])
        assert entry["rr_beats"] == (entry["difference"]["mean"] > 0)
        if entry["baseline"] == "diffprivlib":  # replace-one covers a changed answer at the same epsilon
            assert entry["baseline_label_change_epsilon"] == 1.0
            assert entry["rr_accuracy_at_label_change_epsilon"] == entry["rr_accuracy"]
        else:  # add/remove-one: a changed answer costs 2 eps = 2, not in this grid
            assert entry["baseline_label_change_epsilon"] == 2.0
            assert entry["rr_accuracy_at_label_change_epsilon"] is None
    assert all(e["above_chance"] and not e["rr_beats"] for e in result["rr_not_beating"])
    assert result["methods"]["diffprivlib"]["neighbouring"] == "replace-one"
    assert result["methods"]["randomized_response"]["neighbouring"] == "label-change"
    assert result["methods"]["dpsgd"]["delta"] == 1e-5
    timing = result["timing"]
    assert timing["online_update"]["dim"] == 32 and timing["fit_private_rr"]["dim"] == 16
    assert set(timing["fit_by_method"]) == set(METHODS)
    assert timing["total_s"] >= timing["grid_s"] > 0


def test_non_private_learners_are_above_chance_at_50_ratings(result: dict[str, Any]) -> None:
    for method in ("linear_svc", "none"):
        assert _cell(result, method, "inf", 50)["accuracy"]["mean"] > 0.55
        assert _cell(result, method, "inf", 50)["cosine"]["mean"] > 0.3


def test_rr_without_noise_equals_the_non_private_learner(result: dict[str, Any]) -> None:
    for n in (10, 50):
        rr, none = _cell(result, "randomized_response", "inf", n), _cell(result, "none", "inf", n)
        assert rr["accuracy"] == none["accuracy"]
        assert rr["cosine"] == none["cosine"]


def test_a_smaller_grid_reproduces_the_shared_cells(result: dict[str, Any]) -> None:
    small = run_privacy_benchmark(**{**SMALL, "ratings": (50,), "epsilons": (1.0,), "methods": ("randomized_response",)})
    assert _cell(small, "randomized_response", 1.0, 50) == _cell(result, "randomized_response", 1.0, 50)


def test_one_class_data_gives_the_diffprivlib_fallback() -> None:
    # One rating is always one class: diffprivlib refuses, the zero model ("pass" everywhere) stands in.
    single = run_privacy_benchmark(
        users=3, ratings=(1,), epsilons=(2.0,), methods=("diffprivlib",), bootstrap=100, timing_repeats=5
    )
    cell = _cell(single, "diffprivlib", 2.0, 1)
    assert cell["fallbacks"] == 3
    assert cell["cosine"]["mean"] == 0.0


@pytest.mark.parametrize(
    ("options", "parameter"),
    [
        ({"users": 1}, "users"),
        ({"ratings": ()}, "ratings"),
        ({"ratings": (10, 10)}, "ratings"),
        ({"epsilons": (0.0,)}, "epsilons"),
        ({"epsilons": (float("nan"),)}, "epsilons"),
        ({"methods": ("randomized_response", "svm")}, "methods"),
        ({"dim": 0}, "dim"),
        ({"bootstrap": 10}, "bootstrap"),
        ({"chance_threshold": 1.5}, "chance_threshold"),
    ],
)
def test_invalid_options_name_the_parameter(options: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ValueError, match=parameter):
        run_privacy_benchmark(**options)


def test_missing_diffprivlib_fails_before_the_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffprivlib.models", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="diffprivlib"):
        run_privacy_benchmark(users=2, ratings=(5,), epsilons=(1.0,), methods=("diffprivlib",))


def test_cli_quick_emits_json_and_writes_the_plot(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    run = CliRunner().invoke(app, ["bench", "privacy", "--quick", "--json", "--users", "3", "--out", str(out)])
    assert run.exit_code == 0, run.output
    emitted = json.loads(run.stdout)
    assert emitted["config"]["users"] == 3
    assert emitted["config"]["ratings"] == [10, 50]
    assert emitted["config"]["epsilons"] == [1.0, "inf"]
    assert json.loads((out / "privacy_benchmark.json").read_text()) == emitted
    assert (out / "privacy_benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
