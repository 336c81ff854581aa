"""One validation vocabulary in engine (engine/_validation.py): one error type for bad input.

A bad ``rng`` used to raise ValueError from ``next_batch`` and TypeError from ``fit_private``;
every engine entry point now raises :class:`InvalidInputError`, which is both.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine._validation import InvalidInputError, check_int, check_real, check_rng
from engine.latent import create_latent_space
from engine.population import fit_population
from engine.preference import fit_private
from engine.reverse import ideal_latents
from engine.sampling import next_batch
from engine.scoring import reciprocal_topk
from tests.support.latent import Linear

ENGINE = Path(__file__).resolve().parents[3] / "engine"
SPACE = create_latent_space("procedural")
Z = np.random.default_rng(0).uniform(-1, 1, (20, SPACE.dim))
Y = np.arange(20) % 2 == 0

BAD_RNG: dict[str, Callable[[object], object]] = {
    "next_batch": lambda rng: next_batch(SPACE, n=4, model=None, n_rated=0, cached=None, rng=rng),
    "fit_private": lambda rng: fit_private(Z, Y, epsilon=1.0, rng=rng),
    "fit_population": lambda rng: fit_population([(np.ones(3), np.eye(3))], epsilon=1.0, delta=1e-5, rng=rng),
    "ideal_latents": lambda rng: ideal_latents(SPACE, Linear(np.ones(SPACE.dim), 0.0), rng=rng),
    "LatentSpace.sample": lambda rng: SPACE.sample(3, rng),
}


@pytest.mark.parametrize("entry", sorted(BAD_RNG))
@pytest.mark.parametrize("rng", [0, "seed", np.random.RandomState(0)])
def test_a_bad_rng_raises_the_one_error_type_everywhere(entry: str, rng: object) -> None:
    with pytest.raises(InvalidInputError, match="rng must be a numpy.random.Generator"):
        BAD_RNG[entry](rng)


def test_bad_values_and_bad_types_raise_the_same_type() -> None:
    with pytest.raises(InvalidInputError, match="k must be"):
        reciprocal_topk(np.zeros((3, 2)), np.zeros(3), np.zeros((3, 2)), 0)
    with pytest.raises(InvalidInputError, match="k must be"):
        reciprocal_topk(np.zeros((3, 2)), np.zeros(3), np.zeros((3, 2)), 2.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="n must be"):
        next_batch(SPACE, n=0, model=None, n_rated=0, cached=None, rng=np.random.default_rng(0))


def test_the_error_is_a_value_error_and_a_type_error() -> None:
    """Callers written against either builtin keep catching it (as scikit-learn's InvalidParameterError)."""
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, TypeError)


def test_shared_checks() -> None:
    assert check_int("n", np.int64(3), low=1, high=3) == 3
    assert check_real("p", 0.25, low=0.0, high=0.5, high_open=True) == 0.25
    generator = np.random.default_rng(1)
    assert check_rng(generator) is generator
    for call in (
        lambda: check_int("n", True, low=0),
        lambda: check_int("n", 4, low=1, high=3),
        lambda: check_real("p", 0.5, low=0.0, high=0.5, high_open=True),
        lambda: check_real("p", float("nan"), low=0.0, high=1.0),
    ):
        with pytest.raises(InvalidInputError):
            call()


def test_no_engine_module_raises_a_bare_value_or_type_error() -> None:
    """Argument errors go through the one type; a bare ValueError/TypeError would split the vocabulary."""
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                func = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(func, ast.Name) and func.id in {"ValueError", "TypeError"}:
                    offenders.append(f"{path.relative_to(ENGINE.parent)}:{node.lineno}")
    assert not offenders, offenders
