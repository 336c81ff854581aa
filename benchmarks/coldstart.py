"""Cold start: how well a new user's model predicts their taste after 0 to 50 private ratings.

One module of about 750 lines on purpose: a single experiment (world, simulation, statistics,
plot) read top to bottom; it is research code outside the service (docs/decisions.md D33).

Population. A synthetic population in the procedural latent space (d = 24) whose true
preferences ``theta = [w, b]`` come from ``K = 4`` personas plus an individual deviation
(:class:`SyntheticPopulation`). A user's ``w`` is the sum of three parts: a taste shared by
everyone (one random direction), their persona's offset from it (uniformly random directions,
centred on their weighted mean) and their own deviation ``N(0, sd^2)`` on every coordinate. The
faces' prior is isotropic, so the squared norm of each part is its share of the variance of the
user's logit across faces; the shares ``TASTE_SHARES`` are half shared, a quarter persona, a
quarter own, of ``TASTE_VARIANCE`` (13.5: shared taste of norm 2.6, persona offsets of RMS norm
1.8, sd 0.375). Half shared is what was measured for facial attractiveness (Hönekopp 2006;
Germine et al. 2015: shared and private taste contribute about equally), and it is what makes
"predict what most people like" the strong baseline it is on real ratings (the issue's own
observation). How the private half splits between personas and individuals has no published
figure; an even split gives personas that a few answers can tell apart (neighbouring offsets
about 7 deviation sds apart) and leaves a quarter that only the user's own ratings can learn.
Persona intercepts are ``N(0, PERSONA_INTERCEPT_SD^2)`` and the weights ``PERSONA_WEIGHTS`` (0.4,
0.3, 0.2, 0.1). On fresh prior faces the population mean alone agrees with a user's preferred
answer on about 75 % of faces and the persona mean on about 83 % (``reference`` in the result).
A face's answer is ``Bernoulli(sigmoid(theta . [z, 1]))``; rated and evaluated faces are drawn
from the latent space's own prior (rated ones outside the safety region, as the feed shows them).
docs/decisions.md D15 records why this population replaced the earlier one (personas in random
directions, no shared taste), on which even the true population model scores 0.717 at the target.

Training and release. ``training_users`` users (10 000 by default: a release is made from the
whole user base, and a user-level DP release's noise shrinks relative to its signal as the base
grows; D15 has the figures at 2000) rate ``training_ratings`` random faces each,
stored through randomized response at the per-rating epsilon of the cell (the whole service runs
at one epsilon, so its population learns from labels as noisy as the new user's). Each user's
stored labels become one Gaussian likelihood (:func:`engine.preference.gaussian_likelihood`) and
:func:`engine.population.fit_population` releases the population model at user level
``(RELEASE_EPSILON, RELEASE_DELTA) = (1, 1e-6)``: one release per per-rating epsilon.

Test users and methods. ``test_users`` fresh users from the same population. Each has a pool of
``pool_size`` faces with a fixed true answer and a fixed randomized-response uniform per face, so
every method and question order sees the same answers (paired comparisons), and epsilon only
changes which stored labels are flipped. Methods (``METHODS``):

``prior``      the population model without the user's ratings (its posterior at n = 0);
``per_user``   :func:`engine.preference.fit_posterior` with the isotropic default prior (at
               n = 0 its mean is 0: a coin flip);
``posterior``  :meth:`engine.population.PopulationModel.posterior`, the persona-mixture
               posterior the service releases.

Questions (``QUESTIONS``): ``random`` asks the pool in a random order; ``adaptive`` asks in
batches of ``BATCH_SIZE`` (5, a feed batch) chosen by
:func:`engine.sampling.informative_indices` over the pool's unasked faces under the method's
current posterior, refit after every batch, as the service's feed does for a new user's first
``FeedConfig.coldstart_ratings`` (10) ratings; beyond 10 the feed mixes in 70 % exploit faces,
while here every question stays adaptive, so cells with n > 10 measure the design, not the
feed's exact mix. Each method drives its own adaptive sequence (``per_user`` from its isotropic posterior,
``posterior`` from the population posterior); ``prior`` ignores the answers, so its accuracy does
not depend on n or on the questions. The counts ``n`` are nested prefixes of one sequence.

Metrics, per user on ``test_faces`` fresh prior faces, as the mean over test users with a 95 %
percentile-bootstrap interval over users: ``accuracy`` is the agreement of the predicted like
(``p > 0.5``; since the probit factor is positive, the sign of the posterior-mean logit) with the
user's preferred answer ``theta . [z, 1] > 0`` (the true model scores 1); ``label_accuracy`` the
expected agreement with a fresh Bernoulli answer (the true model's is the Bayes ceiling in
``reference``). A prediction of exactly ``p = 0.5`` is a coin flip and scores 1/2.

Checks (the issue's "done when"), computed explicitly:

``posterior_vs_baselines``  per cell (n, epsilon, questions): the 95 % bootstrap interval of
    ``mean(posterior) - max(mean(prior), mean(per_user))``, recomputed in every resample of the
    same users, must reach 0 (``diff_ci_high >= 0``).
``target``  at epsilon 1 with 10 adaptive ratings, the posterior's mean accuracy is at least 0.75.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from tqdm import tqdm

from engine.latent import ProceduralFaceSpace
from engine.latent.base import sample_outside_safety
from engine.population import PopulationModel, fit_population
from engine.preference import Posterior, PreferencePrior, fit_posterior, gaussian_likelihood
from engine.sampling import informative_indices
from benchmarks._report import finish_panels, write_report
from privacy.mechanisms import RandomizedResponse

__all__ = [
    "BATCH_SIZE",
    "METHODS",
    "PERSONA_INTERCEPT_SD",
    "PERSONA_WEIGHTS",
    "QUESTIONS",
    "QUICK",
    "RELEASE_DELTA",
    "RELEASE_EPSILON",
    "SyntheticPopulation",
    "TASTE_SHARES",
    "TASTE_VARIANCE",
    "run_coldstart_benchmark",
]

#: Methods in the order of the result and the plot (module docstring).
METHODS: tuple[str, ...] = ("prior", "per_user", "posterior")
#: How the first questions are picked (module docstring); n = 0 cells have questions ``"none"``.
QUESTIONS: tuple[str, ...] = ("random", "adaptive")
#: Faces per adaptive batch: a feed batch, with a refit after each.
BATCH_SIZE: int = 5
#: Persona mixture weights of the synthetic population.
PERSONA_WEIGHTS: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
#: Expected squared norm of a user's ``w``: the variance of their preference logit across prior faces.
TASTE_VARIANCE: float = 13.5
#: Shares of :data:`TASTE_VARIANCE` held by everyone's shared taste, by the persona's offset from it,
#: and by the user's own deviation (module docstring).
TASTE_SHARES: tuple[float, float, float] = (0.5, 0.25, 0.25)
#: Standard deviation of each persona's mean intercept.
PERSONA_INTERCEPT_SD: float = 0.5
#: User-level guarantee of every population release.
RELEASE_EPSILON: float = 1.0
RELEASE_DELTA: float = 1e-6
#: The ``--quick`` configuration: a smoke run in well under a minute (too few users for its
#: numbers to say much).
QUICK: dict[str, Any] = {
    "test_users": 20,
    "training_users": 200,
    "ratings": (0, 5, 10, 20),
    "epsilons": (1.0, math.inf),
    "pool_size": 128,
    "test_faces": 500,
    "bootstrap": 200,
}

_CONFIDENCE = 0.95
#: The "done when" target: accuracy at (epsilon, n, questions) of the posterior.
_TARGET = {"epsilon": 1.0, "n_ratings": 10, "questions": "adaptive", "accuracy": 0.75}
_LABELS = {"prior": "prior only (population)", "per_user": "per-user only", "posterior": "posterior (population prior)"}
_COLOURS = {"prior": "0.45", "per_user": "tab:orange", "posterior": "tab:blue"}


@dataclass(frozen=True)
class SyntheticPopulation:
    """True preferences of a synthetic population: a persona mixture plus individual deviation.

    Attributes
    ----------
    means : numpy.ndarray, shape (K, d + 1)
        Persona means of ``theta = [w, b]``.
    weights : numpy.ndarray, shape (K,)
        Persona shares, summing to 1.
    deviation_sd : float
        Standard deviation of a user's deviation from their persona mean, per coordinate.
    """

    means: np.ndarray
    weights: np.ndarray
    deviation_sd: float

    @classmethod
    def draw(cls, dim: int, rng: np.random.Generator) -> SyntheticPopulation:
        """Shared taste, persona offsets and individual deviation in the shares :data:`TASTE_SHARES` (module docstring).

        The persona offsets start in uniformly random directions and are centred on their weighted
        mean, so the population mean of ``w`` is exactly the shared taste.
        """
        shared, persona, own = (share * TASTE_VARIANCE for share in TASTE_SHARES)
        weights = np.array(PERSONA_WEIGHTS)
        common = rng.standard_normal(dim)
        common *= math.sqrt(shared) / np.linalg.norm(common)
        directions = rng.standard_normal((weights.size, dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        offsets = directions - weights @ directions
        offsets *= math.sqrt(persona / float(weights @ np.sum(offsets**2, axis=1)))
        intercepts = PERSONA_INTERCEPT_SD * rng.standard_normal((weights.size, 1))
        return cls(means=np.hstack([common + offsets, intercepts]), weights=weights, deviation_sd=math.sqrt(own / dim))

    def users(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` users: their true ``theta``, shape (n, d + 1), and persona index, shape (n,)."""
        personas = rng.choice(self.weights.size, size=n, p=self.weights)
        thetas = self.means[personas] + self.deviation_sd * rng.standard_normal((n, self.means.shape[1]))
        return thetas, personas

    def mean(self) -> np.ndarray:
        """The population's mean ``theta``, shape (d + 1,)."""
        return self.weights @ self.means


def _features(Z: np.ndarray) -> np.ndarray:
    return np.hstack([Z, np.ones((Z.shape[0], 1))])


def _epsilon_key(epsilon: float) -> float | str:
    """JSON form of an epsilon: the number, or ``"inf"`` for no privacy."""
    return "inf" if math.isinf(epsilon) else float(epsilon)


def _code(epsilon: float) -> int:
    """An integer naming an epsilon in seeds (0 for infinity)."""
    return 0 if math.isinf(epsilon) else 1 + round(epsilon * 1e6)


def _scores(decision: np.ndarray, true_logit: np.ndarray) -> tuple[float, float]:
    """Accuracy against the preferred answer and against a fresh Bernoulli answer (module docstring).

    ``decision`` is any logit with the prediction's sign (0 is a coin flip); both arrays have shape (m,).
    """
    like = np.where(decision > 0, 1.0, np.where(decision < 0, 0.0, 0.5))  # probability of predicting "like"
    preferred = (true_logit > 0).astype(np.float64)
    answer = expit(true_logit)
    agree = like * preferred + (1.0 - like) * (1.0 - preferred)
    return float(agree.mean()), float(np.mean(like * answer + (1.0 - like) * (1.0 - answer)))


@dataclass(frozen=True)
class _Release:
    """One population release and how it was made."""

    model: PopulationModel
    likelihood_s: float
    fit_s: float


def _train_population(
    population: SyntheticPopulation,
    *,
    epsilons: tuple[float, ...],
    users: int,
    ratings: int,
    seed: int,
    progress: bool,
) -> dict[float, _Release]:
    """One population release per per-rating epsilon, from the same users, faces and true answers.

    Only the randomized response differs between epsilons: a label is flipped where its fixed
    uniform falls below the flip rate, so a lower epsilon flips a superset of the labels.
    """
    space = ProceduralFaceSpace()
    rng = np.random.default_rng([seed, 1])
    thetas, _ = population.users(users, rng)
    faces = [sample_outside_safety(space, size=2 * ratings, need=ratings, rng=rng)[:ratings] for _ in range(users)]
    answers = [rng.random(ratings) < expit(_features(Z) @ theta) for Z, theta in zip(faces, thetas, strict=True)]
    uniforms = rng.random((users, ratings))
    releases = {}
    for epsilon in tqdm(epsilons, desc="bench coldstart: population", unit="release", file=sys.stderr, disable=not progress):
        mechanism = RandomizedResponse(epsilon=epsilon)
        started = time.perf_counter()
        likelihoods = [
            gaussian_likelihood(Z, mechanism.privatise(y, u), flip_probability=mechanism.flip_probability)
            for Z, y, u in zip(faces, answers, uniforms, strict=True)
        ]
        likelihood_s = time.perf_counter() - started
        started = time.perf_counter()
        model = fit_population(
            likelihoods,
            epsilon=RELEASE_EPSILON,
            delta=RELEASE_DELTA,
            rng=np.random.default_rng([seed, 2, _code(epsilon)]),
        )
        releases[epsilon] = _Release(model=model, likelihood_s=likelihood_s, fit_s=time.perf_counter() - started)
    return releases


@dataclass(frozen=True)
class _TestUser:
    """A test user's truth and the faces they may be asked and are evaluated on."""

    theta: np.ndarray
    persona: int
    pool: np.ndarray
    answers: np.ndarray
    uniforms: np.ndarray
    order: np.ndarray
    test: np.ndarray


def _test_user(population: SyntheticPopulation, *, user: int, pool_size: int, test_faces: int, seed: int) -> _TestUser:
    space = ProceduralFaceSpace()
    rng = np.random.default_rng([seed, 3, user])
    thetas, personas = population.users(1, rng)
    pool = sample_outside_safety(space, size=2 * pool_size, need=pool_size, rng=rng)[:pool_size]
    return _TestUser(
        theta=thetas[0],
        persona=int(personas[0]),
        pool=pool,
        answers=rng.random(pool_size) < expit(_features(pool) @ thetas[0]),
        uniforms=rng.random(pool_size),
        order=rng.permutation(pool_size),
        test=space.sample(test_faces, rng),
    )


#: ``(asked pool indices) -> posterior`` for one method, user and epsilon.
Fit = Callable[[np.ndarray], Posterior]


def _per_user_fit(user: _TestUser, stored: np.ndarray, flip: float) -> Fit:
    """The user's own posterior under the isotropic default prior."""
    return lambda asked: fit_posterior(user.pool[asked], stored[asked], flip_probability=flip)


def _mixture_fit(user: _TestUser, stored: np.ndarray, flip: float, model: PopulationModel) -> Fit:
    """The persona-mixture posterior the service releases (its moment-matched Gaussian)."""
    return lambda asked: model.posterior(user.pool[asked], stored[asked], flip_probability=flip).posterior


def _adaptive(
    user: _TestUser, fit: Fit, start: Posterior, *, flip: float, n_values: tuple[int, ...]
) -> dict[int, Posterior]:
    """Ask in batches of :data:`BATCH_SIZE` chosen by expected information, refitting after each.

    A batch is cut short where the next count in ``n_values`` falls inside it, so each count is a
    prefix of one sequence. Returns the posterior after each count in ``n_values`` (``> 0``).
    """
    asked = np.zeros(0, dtype=np.int64)
    available = np.ones(user.pool.shape[0], dtype=bool)
    posterior = start
    out = {}
    for target in n_values:
        while asked.size < target:
            candidates = np.flatnonzero(available)
            size = min(BATCH_SIZE, target - asked.size)
            picks = informative_indices(
                user.pool[candidates], mean=posterior.mean, covariance=posterior.covariance, flip_probability=flip, n=size
            )
            chosen = candidates[picks]
            available[chosen] = False
            asked = np.concatenate([asked, chosen])
            posterior = fit(asked)
        out[target] = posterior
    return out


def _simulate_user(
    user: _TestUser, releases: dict[float, _Release], *, n_values: tuple[int, ...], eps_values: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and label accuracy, each of shape (epsilons, methods, questions, ratings).

    At n = 0 both question orders hold the same value (nothing has been asked).
    """
    shape = (len(eps_values), len(METHODS), len(QUESTIONS), len(n_values))
    accuracy, label_accuracy = np.zeros(shape), np.zeros(shape)
    test = _features(user.test)
    true_logit = test @ user.theta
    isotropic = Posterior.from_prior(PreferencePrior.isotropic(user.pool.shape[1]))
    asked_counts = tuple(n for n in n_values if n > 0)
    for e, epsilon in enumerate(eps_values):
        population = releases[epsilon].model
        mechanism = RandomizedResponse(epsilon=epsilon)
        flip = mechanism.flip_probability
        stored = mechanism.privatise(user.answers, user.uniforms)
        empty = population.posterior(user.pool[:0], stored[:0], flip_probability=flip).posterior

        posteriors: dict[tuple[str, str], dict[int, Posterior]] = {}
        learners = (
            ("per_user", _per_user_fit(user, stored, flip), isotropic),
            ("posterior", _mixture_fit(user, stored, flip, population), empty),
        )
        for method, fit, start in learners:
            posteriors[(method, "random")] = {n: fit(user.order[:n]) for n in asked_counts}
            posteriors[(method, "adaptive")] = _adaptive(user, fit, start, flip=flip, n_values=asked_counts)
            for question in QUESTIONS:
                posteriors[(method, question)][0] = start
        for question in QUESTIONS:
            posteriors[("prior", question)] = {n: empty for n in n_values}
        for m, method in enumerate(METHODS):
            for q, question in enumerate(QUESTIONS):
                for j, n in enumerate(n_values):
                    scores = _scores(test @ posteriors[(method, question)][n].mean, true_logit)
                    accuracy[e, m, q, j], label_accuracy[e, m, q, j] = scores
    return accuracy, label_accuracy


#: Reference predictors (``reference`` in the result): what each would score with oracle knowledge.
_REFERENCES: tuple[str, ...] = ("true_model", "persona_oracle", "population_mean_oracle")


def _reference_scores(user: _TestUser, population: SyntheticPopulation) -> np.ndarray:
    """Scores of the oracles, shape (references, 2): accuracy and label accuracy.

    ``true_model`` knows the user's theta (its label accuracy is the Bayes ceiling),
    ``persona_oracle`` the true mean of the user's persona (the best a prior can do once the persona
    is known), ``population_mean_oracle`` the true population mean (what a single Gaussian
    matched to the true population predicts before any rating).
    """
    test = _features(user.test)
    true_logit = test @ user.theta
    decisions = (true_logit, test @ population.means[user.persona], test @ population.mean())
    return np.array([_scores(decision, true_logit) for decision in decisions])


def _bootstrap_counts(users: int, resamples: int, seed: int) -> np.ndarray:
    """How often each user is drawn in each resample, shape (resamples, users)."""
    draws = np.random.default_rng([seed, 4]).integers(0, users, size=(resamples, users))
    counts = np.zeros((resamples, users))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    return counts


def _interval(resampled: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - _CONFIDENCE) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return float(low), float(high)


def _summary(values: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """Mean of per-user ``values`` (shape (users,)) and its percentile-bootstrap interval."""
    low, high = _interval(counts @ values / values.size)
    return {"mean": float(values.mean()), "ci_low": low, "ci_high": high}


def _cells(
    accuracy: np.ndarray,
    label_accuracy: np.ndarray,
    counts: np.ndarray,
    *,
    n_values: tuple[int, ...],
    eps_values: tuple[float, ...],
) -> list[dict[str, Any]]:
    """One entry per (epsilon, n, questions, method); the arrays have shape (eps, methods, questions, n, users)."""
    cells = []
    for e, epsilon in enumerate(eps_values):
        for j, n in enumerate(n_values):
            for q, question in enumerate(QUESTIONS if n > 0 else ("none",)):
                for m, method in enumerate(METHODS):
                    primary = _summary(accuracy[e, m, q, j], counts)
                    label = _summary(label_accuracy[e, m, q, j], counts)
                    cells.append(
                        {
                            "method": method,
                            "n_ratings": n,
                            "epsilon": _epsilon_key(epsilon),
                            "questions": question,
                            "accuracy": primary["mean"],
                            "ci_low": primary["ci_low"],
                            "ci_high": primary["ci_high"],
                            "label_accuracy": label["mean"],
                            "label_ci_low": label["ci_low"],
                            "label_ci_high": label["ci_high"],
                        }
                    )
    return cells


def _checks(
    accuracy: np.ndarray, counts: np.ndarray, *, n_values: tuple[int, ...], eps_values: tuple[float, ...]
) -> dict[str, Any]:
    """The issue's two "done when" checks (module docstring), per cell and overall."""
    prior, per_user, posterior = (METHODS.index(m) for m in ("prior", "per_user", "posterior"))
    users = accuracy.shape[-1]
    entries = []
    for e, epsilon in enumerate(eps_values):
        for j, n in enumerate(n_values):
            for q, question in enumerate(QUESTIONS if n > 0 else ("none",)):
                cell = accuracy[e, :, q, j]
                means = cell.mean(axis=1)
                resampled = counts @ cell.T / users  # (resamples, methods)
                better = prior if means[prior] >= means[per_user] else per_user
                low, high = _interval(resampled[:, posterior] - resampled[:, [prior, per_user]].max(axis=1))
                entries.append(
                    {
                        "n_ratings": n,
                        "epsilon": _epsilon_key(epsilon),
                        "questions": question,
                        "posterior": float(means[posterior]),
                        "better_baseline": METHODS[better],
                        "baseline": float(means[better]),
                        "difference": float(means[posterior] - means[better]),
                        "diff_ci_low": low,
                        "diff_ci_high": high,
                        "pass": high >= 0.0,
                    }
                )
    checks: dict[str, Any] = {
        "posterior_vs_baselines": {
            "rule": (
                "per cell: the 95% bootstrap interval (over users, paired) of mean(posterior) - "
                "max(mean(prior), mean(per_user)) reaches 0, i.e. diff_ci_high >= 0"
            ),
            "pass": all(entry["pass"] for entry in entries),
            "failures": [entry for entry in entries if not entry["pass"]],
            "cells": entries,
        }
    }
    if _TARGET["epsilon"] in eps_values and _TARGET["n_ratings"] in n_values:
        e, j = eps_values.index(_TARGET["epsilon"]), n_values.index(_TARGET["n_ratings"])
        summary = _summary(accuracy[e, posterior, QUESTIONS.index(_TARGET["questions"]), j], counts)
        checks["target"] = {
            "rule": "posterior accuracy >= 0.75 at epsilon 1 with 10 adaptive ratings (mean over test users)",
            **{key: value for key, value in _TARGET.items() if key != "accuracy"},
            "threshold": _TARGET["accuracy"],
            "accuracy": summary["mean"],
            "ci_low": summary["ci_low"],
            "ci_high": summary["ci_high"],
            "pass": summary["mean"] >= _TARGET["accuracy"],
        }
    return checks


def _plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy against n, one panel per epsilon; adaptive solid, random dashed, prior-only dotted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    config = result["config"]
    epsilons, n_values = config["epsilons"], config["ratings"]
    columns = min(2, len(epsilons))
    rows = math.ceil(len(epsilons) / columns)
    figure = Figure(figsize=(6.0 * columns, 4.4 * rows + 0.9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    persona = result["reference"]["persona_oracle"]["accuracy"]["mean"]
    population_mean = result["reference"]["population_mean_oracle"]["accuracy"]["mean"]

    def line(method: str, epsilon: float | str, question: str) -> list[dict[str, Any]]:
        return [
            c
            for c in result["cells"]
            if c["method"] == method and c["epsilon"] == epsilon and c["questions"] in (question, "none")
        ]

    for ax, epsilon in zip(axes, epsilons, strict=False):
        prior = line("prior", epsilon, "random")
        n = [c["n_ratings"] for c in prior]
        prior_style = {"color": _COLOURS["prior"], "linestyle": ":", "marker": "."}
        ax.plot(n, [c["accuracy"] for c in prior], label=_LABELS["prior"], **prior_style)
        for method in ("per_user", "posterior"):
            for question, style, marker in (("adaptive", "-", "o"), ("random", "--", "s")):
                own = line(method, epsilon, question)
                ax.plot(
                    n,
                    [c["accuracy"] for c in own],
                    color=_COLOURS[method],
                    linestyle=style,
                    marker=marker,
                    markersize=4,
                    label=f"{_LABELS[method]}, {question} questions",
                )
                if question == "adaptive":
                    low, high = [c["ci_low"] for c in own], [c["ci_high"] for c in own]
                    ax.fill_between(n, low, high, color=_COLOURS[method], alpha=0.15, linewidth=0)
        ax.axhline(persona, color="k", linewidth=0.8, linestyle=":", label="persona mean known (oracle)")
        ax.axhline(population_mean, color="tab:purple", linewidth=0.8, linestyle=":", label="population mean (oracle)")
        ax.axhline(0.5, color="k", linewidth=0.8, linestyle="-.", label="chance")
        if epsilon == _TARGET["epsilon"] and _TARGET["n_ratings"] in n_values:
            target = "target: 0.75 at eps 1, 10 adaptive ratings"
            star = {"marker": "*", "markersize": 12, "color": "tab:red", "linestyle": "none"}
            ax.plot(_TARGET["n_ratings"], _TARGET["accuracy"], label=target, **star)
        ax.set_xscale("symlog", linthresh=BATCH_SIZE)
        ax.set_xticks(n_values, [str(n) for n in n_values])
        ax.minorticks_off()
        ax.set_title("no privacy (epsilon = inf)" if epsilon == "inf" else f"per-rating epsilon = {epsilon:g}")
        ax.set_xlabel("ratings of the new user (n)")
        ax.grid(alpha=0.3)
    finish_panels(figure, axes, used=len(epsilons), columns=columns, ylabel="agreement with preferred answer", legend_columns=3)
    figure.suptitle(
        f"Cold start: {config['test_users']} new users, d = {config['dim']}, population model from "
        f"{config['training_users']} users at user-level eps {RELEASE_EPSILON:g}; "
        f"mean and {int(_CONFIDENCE * 100)}% bootstrap interval (adaptive)"
    )
    figure.savefig(path, dpi=100)


def _positive_int(name: str, value: object, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_grid(
    ratings: Sequence[int], epsilons: Sequence[float], pool_size: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    n_values = tuple(ratings)
    if not n_values or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in n_values):
        raise ValueError(f"ratings must be a non-empty sequence of integers >= 0, got {ratings!r}")
    if len(set(n_values)) != len(n_values) or max(n_values) > pool_size:
        raise ValueError(f"ratings must be distinct and at most pool_size ({pool_size}), got {ratings!r}")
    try:
        eps_values = tuple(float(e) for e in epsilons)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"epsilons must be a sequence of numbers, got {epsilons!r}") from exc
    if not eps_values or any(math.isnan(e) or e <= 0 for e in eps_values) or len(set(eps_values)) != len(eps_values):
        raise ValueError(f"epsilons must be distinct numbers > 0 (inf allowed), got {epsilons!r}")
    return tuple(sorted(n_values)), tuple(sorted(eps_values))


def _release_summary(release: _Release, population: SyntheticPopulation) -> dict[str, Any]:
    """What was released and how close its personas are to the true ones."""
    model = release.model
    d = population.means.shape[1] - 1
    true_w = population.means[:, :d] / np.linalg.norm(population.means[:, :d], axis=1, keepdims=True)
    fitted_w = model.means[:, :d]
    norms = np.linalg.norm(fitted_w, axis=1)
    cosines = true_w @ fitted_w.T / np.where(norms > 0, norms, 1.0)
    spread = np.sqrt(np.linalg.eigvalsh(model.covariance()[:d, :d]))
    return {
        "epsilon": model.guarantee.epsilon,
        "delta": model.guarantee.delta,
        "neighbouring": model.guarantee.neighbouring,
        "n_personas": model.n_personas,
        "weights": [float(w) for w in model.weights],
        "accounting": dict(model.accounting),
        "persona_cosine": [float(c) for c in cosines.max(axis=1)],
        "persona_cosine_note": "per true persona: the best cosine between its mean w and a released persona mean w",
        "within_persona_sd": [float(spread.min()), float(np.median(spread)), float(spread.max())],
        "within_persona_sd_note": (
            f"min, median and max standard deviation of w within a released persona (over its covariance's "
            f"eigenvalues); the true population's is {population.deviation_sd:g} in every direction"
        ),
        "likelihoods_s": release.likelihood_s,
        "fit_s": release.fit_s,
    }


def run_coldstart_benchmark(
    *,
    test_users: int = 200,
    training_users: int = 10_000,
    training_ratings: int = 40,
    ratings: Sequence[int] = (0, 5, 10, 20, 50),
    epsilons: Sequence[float] = (0.5, 1.0, 2.0, math.inf),
    pool_size: int = 512,
    test_faces: int = 2000,
    bootstrap: int = 2000,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the cold-start grid ``ratings x epsilons x questions x methods`` (module docstring).

    Parameters
    ----------
    test_users : int
        New users evaluated, ``>= 2``; the same users in every cell.
    training_users, training_ratings : int
        The population the model is released from: users, and random faces each rated.
    ratings, epsilons : sequence
        Grid values; ratings ``>= 0`` (0: a brand-new user); ``math.inf`` means no privacy.
    pool_size : int
        Faces each test user may be asked (random order or adaptive choice), ``>= max(ratings)``.
    test_faces : int
        Fresh prior faces per test user for the accuracy.
    bootstrap : int
        Bootstrap resamples over test users for the 95% intervals, ``>= 100``.
    seed : int
        Everything (population, users, faces, answers, randomized response, releases) follows from it.
    out_dir : pathlib.Path, optional
        When given, ``coldstart_benchmark.png`` and ``coldstart_benchmark.json`` are written there.
    progress : bool
        Progress bars on stderr (stdout stays free for the JSON).

    Returns
    -------
    dict
        JSON-able, with finite numbers only (epsilon infinity is ``"inf"``): ``config``,
        ``population`` (the synthetic truth), ``releases`` (one per epsilon), ``reference``
        (oracle accuracies), ``cells``, ``checks``, ``timing`` and, with ``out_dir``, ``files``.

    Raises
    ------
    ValueError
        For an invalid grid or count.
    """
    started = time.perf_counter()
    for name, value, low in (
        ("test_users", test_users, 2),
        ("training_users", training_users, 2),
        ("training_ratings", training_ratings, 1),
        ("pool_size", pool_size, BATCH_SIZE),
        ("test_faces", test_faces, 1),
        ("bootstrap", bootstrap, 100),
    ):
        _positive_int(name, value, low=low)
    n_values, eps_values = _check_grid(ratings, epsilons, pool_size)
    dim = ProceduralFaceSpace.dim
    population = SyntheticPopulation.draw(dim, np.random.default_rng([seed, 0]))

    releases = _train_population(
        population,
        epsilons=eps_values,
        users=training_users,
        ratings=training_ratings,
        seed=seed,
        progress=progress,
    )
    training_s = time.perf_counter() - started

    grid_started = time.perf_counter()
    shape = (len(eps_values), len(METHODS), len(QUESTIONS), len(n_values), test_users)
    accuracy, label_accuracy = np.zeros(shape), np.zeros(shape)
    references = np.zeros((len(_REFERENCES), 2, test_users))
    for u in tqdm(range(test_users), desc="bench coldstart: new users", unit="user", file=sys.stderr, disable=not progress):
        user = _test_user(population, user=u, pool_size=pool_size, test_faces=test_faces, seed=seed)
        accuracy[..., u], label_accuracy[..., u] = _simulate_user(user, releases, n_values=n_values, eps_values=eps_values)
        references[..., u] = _reference_scores(user, population)
    grid_s = time.perf_counter() - grid_started

    counts = _bootstrap_counts(test_users, bootstrap, seed)
    result: dict[str, Any] = {
        "config": {
            "dim": dim,
            "test_users": test_users,
            "training_users": training_users,
            "training_ratings": training_ratings,
            "ratings": list(n_values),
            "epsilons": [_epsilon_key(e) for e in eps_values],
            "epsilon_note": (
                "per-rating epsilon of randomized response, for the new user and for the training population alike; "
                "'inf' means clean labels"
            ),
            "methods": list(METHODS),
            "questions": list(QUESTIONS),
            "questions_note": (
                f"adaptive: batches of {BATCH_SIZE} by engine.sampling.informative_indices over the pool's unasked faces "
                "under the method's own posterior, refit after each batch; random: the pool in a random order; "
                "n = 0 cells have questions 'none'"
            ),
            "batch_size": BATCH_SIZE,
            "pool_size": pool_size,
            "test_faces": test_faces,
            "seed": seed,
            "release": {
                "epsilon": RELEASE_EPSILON,
                "delta": RELEASE_DELTA,
                "note": (
                    "one population release per per-rating epsilon, each (1, 1e-6)-DP at user level, by "
                    "engine.population.fit_population with its default schedule (the service's)"
                ),
            },
            "interval": f"{int(_CONFIDENCE * 100)}% percentile bootstrap over test users, {bootstrap} resamples",
        },
        "population": {
            "personas": len(PERSONA_WEIGHTS),
            "weights": list(PERSONA_WEIGHTS),
            "taste_variance": TASTE_VARIANCE,
            "taste_shares": dict(zip(("shared", "persona", "own"), TASTE_SHARES, strict=True)),
            "persona_intercept_sd": PERSONA_INTERCEPT_SD,
            "deviation_sd": population.deviation_sd,
        },
        "releases": {str(_epsilon_key(e)): _release_summary(releases[e], population) for e in eps_values},
        "reference": {
            name: {"accuracy": _summary(references[r, 0], counts), "label_accuracy": _summary(references[r, 1], counts)}
            for r, name in enumerate(_REFERENCES)
        },
        "cells": _cells(accuracy, label_accuracy, counts, n_values=n_values, eps_values=eps_values),
        "checks": _checks(accuracy, counts, n_values=n_values, eps_values=eps_values),
        "timing": {"training_s": training_s, "grid_s": grid_s},
    }
    return write_report(result, out_dir=out_dir, name="coldstart_benchmark", plot=_plot, started=started)
