"""The population model: fit a user-level DP release from every user's private labels, keep its ledger.

A fit opens each user's stored labels in memory (they are sealed per user), turns them into that
user's likelihood over ``theta = [w, b]`` (:func:`engine.preference.gaussian_likelihood`, with
each label's randomized-response flip rate), and trains the persona mixture on those with
user-level DP-SGD (:func:`engine.population.fit_population`). Only the release is stored, in
``population_releases``, in plaintext by design (decision D14): it is the one thing that crosses
users, and it is ``(epsilon, delta)``-DP under adding or removing one user's whole history.

The table is also the population ledger. Releases compose in Renyi DP
(:func:`engine.population.population_epsilon`) from the sampled-Gaussian steps each row records,
and the composed epsilon is always read at one delta, the deployment's
``MATCHSVC_POPULATION_DELTA`` (``ledger_delta``), never at a sum of the releases' deltas: RDP
composes the releases' Renyi curves, which do not depend on a delta, and converts the total to
``(epsilon, delta)`` once. A release fitted with another per-release delta (``--delta``) therefore
still composes exactly; its own delta only sets its noise. A fit whose release would take the
composed epsilon past ``MATCHSVC_POPULATION_EPSILON_CAP`` is refused before any label is opened:
the noise multiplier is fixed by the per-release target and the public schedule, not by the data.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from engine.population import (
    ACCOUNTING_KEYS,
    DEFAULT_MAX_GRAD_NORM,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_STEPS,
    PopulationModel,
    fit_population,
    population_epsilon,
)
from engine.preference import gaussian_likelihood
from matchsvc.db.models import PopulationRelease
from matchsvc.errors import Conflict, PrivacyBudgetExhausted
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import population as population_repo
from matchsvc.services import audit
from matchsvc.services.keys import user_cipher
from matchsvc.services.training import open_training_set
from matchsvc.settings import Settings
from privacy.accounting import calibrate_noise_multiplier
from privacy.mechanisms import ADD_REMOVE_USER

__all__ = [
    "CurrentRelease",
    "FitReport",
    "PopulationLedger",
    "PopulationPolicy",
    "ReleaseRecord",
    "current_release",
    "fit_release",
    "population_ledger",
]

#: The DP-SGD schedule: public (with ``PopulationPolicy.steps``), so a release's noise multiplier,
#: and with it the composed budget, is known before training.
SAMPLE_RATE = DEFAULT_SAMPLE_RATE
MAX_GRAD_NORM = DEFAULT_MAX_GRAD_NORM
#: Slack on the cap comparison: RDP conversion is a float computation, not a proof to the last ulp.
_CAP_SLACK = 1e-9


@dataclass(frozen=True)
class PopulationPolicy:
    """What one population fit may spend, from the deployment's settings (the CLI may override some).

    Attributes
    ----------
    epsilon, delta : float
        The release's target guarantee under adding or removing one user.
    epsilon_cap : float
        No release may take the composed epsilon of all releases past this.
    ledger_delta : float
        The delta at which the composed epsilon is read (the deployment's, whatever ``delta`` is).
    n_personas, rank : int
        Shape of the mixture.
    min_users : int
        Users with ratings below which a fit is refused (see ``Settings.population_min_users``).
    steps : int
        DP-SGD steps; fewer cost less time and need less noise for the same epsilon, but learn less.
    """

    epsilon: float
    delta: float
    epsilon_cap: float
    ledger_delta: float
    n_personas: int
    rank: int
    min_users: int
    steps: int = DEFAULT_STEPS

    def __post_init__(self) -> None:
        if not 0 < self.epsilon <= self.epsilon_cap:
            raise ValueError(f"epsilon must be in (0, epsilon_cap={self.epsilon_cap:g}], got {self.epsilon!r}")
        for name in ("delta", "ledger_delta"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        for name in ("n_personas", "rank", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.min_users < 2:
            raise ValueError(f"min_users must be at least 2, got {self.min_users!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> PopulationPolicy:
        return cls(
            epsilon=settings.population_epsilon,
            delta=settings.population_delta,
            epsilon_cap=settings.population_epsilon_cap,
            ledger_delta=settings.population_delta,
            n_personas=settings.population_personas,
            rank=settings.population_rank,
            min_users=settings.population_min_users,
        )


@dataclass(frozen=True)
class FitReport:
    """One fit's outcome, for the CLI's summary line. Counts only: nothing about any one user."""

    version: int
    n_users: int
    epsilon: float
    delta: float
    composed_epsilon: float
    ledger_delta: float
    epsilon_cap: float
    seconds: float

    def summary(self) -> str:
        return (
            f"population release v{self.version} from {self.n_users} users at epsilon={self.epsilon:g}, "
            f"delta={self.delta:g}; all releases composed: epsilon={self.composed_epsilon:.3g} of the cap "
            f"{self.epsilon_cap:g} (at delta={self.ledger_delta:g}); {self.seconds:.2f}s"
        )


def _accounting(release: PopulationRelease) -> dict[str, Any]:
    """A stored release's accounting record; the columns carry the record's names."""
    return {key: getattr(release, key) for key in ACCOUNTING_KEYS}


def _planned_accounting(policy: PopulationPolicy, *, n_users: int) -> dict[str, Any]:
    """The accounting the next release will have: its noise multiplier follows from the target alone."""
    sigma = calibrate_noise_multiplier(
        target_epsilon=policy.epsilon, target_delta=policy.delta, sample_rate=SAMPLE_RATE, steps=policy.steps
    )
    return {
        "noise_multiplier": sigma,
        "sample_rate": SAMPLE_RATE,
        "steps": policy.steps,
        "max_grad_norm": MAX_GRAD_NORM,
        "n_users": n_users,
    }


def _likelihoods(session: Session, *, keys: KeyRingStore) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every user with ratings as ``(h, H)``; labels are opened one user at a time and dropped after.

    A user deleted while the ratings stream (their data key is gone) is skipped: their labels
    can no longer be opened, and a deleted user's data must not enter a release anyway.
    """
    users = []
    for user_id, rows in itertools.groupby(population_repo.rating_rows(session), key=lambda row: row.user_id):
        ratings = list(rows)
        try:
            cipher = user_cipher(session, keys=keys, user_id=user_id)
        except LookupError:
            continue
        data = open_training_set(cipher, ratings, dim=len(ratings[0].latent))
        users.append(gaussian_likelihood(data.Z, data.y, flip_probability=data.flip))
    return users


def fit_release(
    session: Session, *, keys: KeyRingStore, policy: PopulationPolicy, rng: np.random.Generator
) -> FitReport:
    """Fit, store and audit the next population release; commits.

    One fit runs at a time (a transaction-level advisory lock). The checks come first, in this
    order, so a refused fit opens no label and trains nothing: too few users with ratings, then
    the composed budget with this release included.

    Parameters
    ----------
    keys : KeyRingStore
        Opens each user's sealed labels, in memory only.
    policy : PopulationPolicy
    rng : numpy.random.Generator
        The mechanism's randomness (Poisson sampling and noise); fresh OS entropy in production.

    Raises
    ------
    Conflict
        If another fit is running, or fewer than ``policy.min_users`` users have ratings.
    PrivacyBudgetExhausted
        If this release would take the composed epsilon past ``policy.epsilon_cap``.
    """
    started = time.perf_counter()
    if not population_repo.try_lock_fits(session):
        raise Conflict("another population fit is running; try again once it has finished")
    history = population_repo.list_releases(session)
    version = history[-1].version + 1 if history else 1
    counted = population_repo.count_raters(session)
    if counted < policy.min_users:
        raise Conflict(
            f"a population fit needs ratings from at least {policy.min_users} users, found {counted}: "
            "with fewer, the DP noise would drown what they have in common (MATCHSVC_POPULATION_MIN_USERS)"
        )
    planned = _planned_accounting(policy, n_users=counted)
    spent = population_epsilon([_accounting(r) for r in history], delta=policy.ledger_delta)
    composed = population_epsilon([*(_accounting(r) for r in history), planned], delta=policy.ledger_delta)
    if composed > policy.epsilon_cap + _CAP_SLACK:
        raise PrivacyBudgetExhausted(
            f"population release v{version} at epsilon={policy.epsilon:g} would raise the composed epsilon of all "
            f"releases from {spent:.3g} to {composed:.3g} (at delta={policy.ledger_delta:g}), above the cap of "
            f"{policy.epsilon_cap:g} (MATCHSVC_POPULATION_EPSILON_CAP)"
        )
    model = fit_population(
        _likelihoods(session, keys=keys),
        epsilon=policy.epsilon,
        delta=policy.delta,
        rng=rng,
        n_personas=policy.n_personas,
        rank=policy.rank,
        steps=policy.steps,
        sample_rate=SAMPLE_RATE,
        max_grad_norm=MAX_GRAD_NORM,
    )
    if any(model.accounting[key] != planned[key] for key in ("noise_multiplier", "sample_rate", "steps")):
        raise RuntimeError(f"the release's accounting {model.accounting} is not the one checked against the cap")
    n_users = int(model.accounting["n_users"])
    population_repo.add_release(
        session,
        version=version,
        mechanism=model.guarantee.mechanism,
        neighbouring=model.guarantee.neighbouring,
        epsilon=model.guarantee.epsilon,
        delta=model.guarantee.delta,
        noise_multiplier=float(model.accounting["noise_multiplier"]),
        sample_rate=float(model.accounting["sample_rate"]),
        steps=int(model.accounting["steps"]),
        max_grad_norm=float(model.accounting["max_grad_norm"]),
        n_users=n_users,
        n_personas=model.n_personas,
        rank=int(model.factor.shape[1]),
        state=model.to_state(),
    )
    audit.record(
        session,
        action=audit.AuditAction.population_release,
        actor=None,
        subject_user_id=None,
        details={
            "version": version,
            "mechanism": model.guarantee.mechanism,
            "epsilon": model.guarantee.epsilon,
            "delta": model.guarantee.delta,
            "n_users": n_users,
            "composed_epsilon": composed,
            "ledger_delta": policy.ledger_delta,
        },
    )
    session.commit()
    return FitReport(
        version=version,
        n_users=n_users,
        epsilon=model.guarantee.epsilon,
        delta=model.guarantee.delta,
        composed_epsilon=composed,
        ledger_delta=policy.ledger_delta,
        epsilon_cap=policy.epsilon_cap,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class CurrentRelease:
    version: int
    created_at: datetime
    model: PopulationModel


class _LatestRelease:
    """The last release read, kept per process: a release never changes, so its version and
    creation time identify it (the time too, because an emptied table starts again at version 1)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._release: CurrentRelease | None = None

    def get(self, session: Session) -> CurrentRelease | None:
        head = population_repo.latest_version(session)
        if head is None:
            return None
        with self._lock:
            cached = self._release
        if cached is not None and (cached.version, cached.created_at) == head:
            return cached
        row = population_repo.get_release(session, head[0])
        assert row is not None  # releases are never deleted
        model = PopulationModel.from_state(row.state)
        release = CurrentRelease(version=row.version, created_at=row.created_at, model=model)
        with self._lock:
            self._release = release
        return release


_LATEST = _LatestRelease()


def current_release(session: Session) -> CurrentRelease | None:
    """The newest population release, or None before the first; parsed once per process and version."""
    return _LATEST.get(session)


@dataclass(frozen=True)
class ReleaseRecord:
    version: int
    created_at: datetime
    mechanism: str
    epsilon: float
    delta: float
    n_users: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float


@dataclass(frozen=True)
class PopulationLedger:
    """The population model's side of the auditor's budget report."""

    neighbouring: str
    epsilon_per_release: float
    epsilon_cap: float
    epsilon_spent: float
    delta: float
    releases: list[ReleaseRecord]


def population_ledger(session: Session, *, policy: PopulationPolicy) -> PopulationLedger:
    """Every release and their composed epsilon at the deployment's delta."""
    rows: Sequence[PopulationRelease] = population_repo.list_releases(session)
    return PopulationLedger(
        neighbouring=ADD_REMOVE_USER,
        epsilon_per_release=policy.epsilon,
        epsilon_cap=policy.epsilon_cap,
        epsilon_spent=population_epsilon([_accounting(r) for r in rows], delta=policy.ledger_delta),
        delta=policy.ledger_delta,
        releases=[
            ReleaseRecord(
                version=r.version,
                created_at=r.created_at,
                mechanism=r.mechanism,
                epsilon=r.epsilon,
                delta=r.delta,
                n_users=r.n_users,
                noise_multiplier=r.noise_multiplier,
                sample_rate=r.sample_rate,
                steps=r.steps,
                max_grad_norm=r.max_grad_norm,
            )
            for r in rows
        ],
    )
