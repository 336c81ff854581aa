"""The matching job: decrypt in memory, score every eligible pair both ways, store reciprocal top-k.

Stages: load every user's sealed appearance, filters and model and open them with their data keys;
build the arrays ``engine.scoring.reciprocal_topk`` takes (gender x coarse age bucket as the 64-bit
group masks; blocks, passes and matches as exclusions); score; then drop, per seeker, candidates
whose exact age is outside either side's range or whom the seeker already decided on; store the
first ``k`` by rank. Scores never leave this function's memory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from engine.scoring import reciprocal_topk
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import matching as matching_repo
from matchsvc.repositories import profiles as profiles_repo
from matchsvc.services.keys import user_cipher
from matchsvc.services.matching import LIKE, PASS, open_choice
from matchsvc.services.preferences import model_from_sealed_state
from matchsvc.services.profiles import Filters, age_of, group_code, open_appearance, open_filters, seeks_mask

__all__ = ["MatchInputs", "MatchRunReport", "collect_inputs", "run_matching"]

#: Scored per seeker before exact filtering, as a multiple of k (the kernel's groups are coarse).
OVERSAMPLE = 3


@dataclass(frozen=True)
class MatchInputs:
    user_ids: list[uuid.UUID]
    pref: np.ndarray  # (n, d)
    bias: np.ndarray  # (n,)
    looks: np.ndarray  # (n, d)
    group: np.ndarray  # (n,) int64
    seeks: np.ndarray  # (n,) int64
    ages: np.ndarray  # (n,) int64
    filters: list[Filters]
    exclude: np.ndarray  # (2, m) int64
    decided: dict[int, set[int]]  # seeker index -> indices already liked (passes are in exclude)
    skipped_no_appearance: int
    skipped_no_profile: int
    skipped_few_ratings: int


@dataclass(frozen=True)
class MatchRunReport:
    users: int
    matchable: int
    skipped_no_appearance: int
    skipped_no_profile: int
    skipped_few_ratings: int
    pairs_scored: int
    seconds: float
    pairs_per_second: float
    backend: str

    def summary(self) -> str:
        return (
            f"matched {self.matchable}/{self.users} users ({self.skipped_no_appearance} without appearance, "
            f"{self.skipped_no_profile} without profile, {self.skipped_few_ratings} with too few ratings); "
            f"{self.pairs_scored} pairs in {self.seconds:.2f}s = {self.pairs_per_second:,.0f} pairs/s [{self.backend}]"
        )


def collect_inputs(session: Session, *, keys: KeyRingStore, min_ratings: int, progress: bool = False) -> MatchInputs:
    """Open every matchable user's sealed data in memory and build the scoring arrays."""
    ids: list[uuid.UUID] = []
    prefs, biases, looks, groups, seeks, ages, filters = [], [], [], [], [], [], []
    no_look = no_profile = few = 0
    ciphers = {}
    rows = profiles_repo.matchable_rows(session)
    for user_id, birth_year, latent_ct, filters_ct, state_ct, n_ratings in tqdm(
        rows, desc="decrypting users", disable=not progress, unit="user"
    ):
        if latent_ct is None:
            no_look += 1
            continue
        if filters_ct is None:
            no_profile += 1
            continue
        if state_ct is None or n_ratings < min_ratings:
            few += 1
            continue
        cipher = user_cipher(session, keys=keys, user_id=user_id)
        ciphers[user_id] = cipher
        model = model_from_sealed_state(cipher, state_ct)
        user_filters = open_filters(cipher, filters_ct)
        age = age_of(birth_year)
        ids.append(user_id)
        prefs.append(model.coef)
        biases.append(model.intercept)
        looks.append(open_appearance(cipher, latent_ct))
        groups.append(group_code(user_filters.gender, age))
        seeks.append(seeks_mask(user_filters))
        ages.append(age)
        filters.append(user_filters)
    index = {user_id: i for i, user_id in enumerate(ids)}
    pairs = [(index[a], index[b]) for a, b in matching_repo.blocked_or_matched_pairs(session) if a in index and b in index]
    decided: dict[int, set[int]] = {}
    for decider, target, blob in matching_repo.all_decisions(session):
        if decider in index and target in index:
            choice = open_choice(ciphers[decider], target_id=target, blob=blob)
            if choice == PASS:
                pairs.append((index[decider], index[target]))
            elif choice == LIKE:
                decided.setdefault(index[decider], set()).add(index[target])
    d = len(prefs[0]) if prefs else 0
    return MatchInputs(
        user_ids=ids,
        pref=np.array(prefs, dtype=np.float64).reshape(len(ids), d),
        bias=np.array(biases, dtype=np.float64),
        looks=np.array(looks, dtype=np.float64).reshape(len(ids), d),
        group=np.array(groups, dtype=np.int64),
        seeks=np.array(seeks, dtype=np.int64),
        ages=np.array(ages, dtype=np.int64),
        filters=filters,
        exclude=np.array(pairs, dtype=np.int64).reshape(-1, 2).T.copy(),
        decided=decided,
        skipped_no_appearance=no_look,
        skipped_no_profile=no_profile,
        skipped_few_ratings=few,
    )


Scorer = Callable[..., tuple[np.ndarray, np.ndarray]]


def _rank(inputs: MatchInputs, indices: np.ndarray, k: int) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Per seeker: drop exact-age mismatches and own likes, keep the first k, in score order."""
    ranked: dict[uuid.UUID, list[uuid.UUID]] = {}
    for i, row in enumerate(indices):
        mine, decided = inputs.filters[i], inputs.decided.get(i, set())
        kept = [
            inputs.user_ids[j]
            for j in row
            if j >= 0
            and j not in decided
            and mine.accepts_age(int(inputs.ages[j]))
            and inputs.filters[j].accepts_age(int(inputs.ages[i]))
        ]
        ranked[inputs.user_ids[i]] = kept[:k]
    return ranked


def run_matching(
    sessions: sessionmaker[Session],
    *,
    keys: KeyRingStore,
    k: int = 20,
    min_ratings: int = 10,
    backend: Literal["local", "ray"] = "local",
    device: str | None = None,
    progress: bool = False,
    **backend_options: Any,
) -> MatchRunReport:
    """Recompute every matchable user's candidates; returns the summary the CLI prints."""
    started = time.perf_counter()
    with sessions() as session:
        inputs = collect_inputs(session, keys=keys, min_ratings=min_ratings, progress=progress)
    n = len(inputs.user_ids)
    ranked: dict[uuid.UUID, list[uuid.UUID]] = {}
    if n >= 2:
        scorer: Scorer = reciprocal_topk
        if backend == "ray":
            from matchsvc.jobs.ray_backend import ray_reciprocal_topk

            scorer = ray_reciprocal_topk
        _, indices = scorer(
            inputs.pref,
            inputs.bias,
            inputs.looks,
            min(n - 1, OVERSAMPLE * k),
            group=inputs.group,
            seeks=inputs.seeks,
            exclude=inputs.exclude,
            device=device,
            **backend_options,
        )
        ranked = _rank(inputs, indices, k)
    with sessions() as session:
        matching_repo.replace_candidates(session, ranked)
        session.commit()
    seconds = time.perf_counter() - started
    pairs = n * (n - 1)
    return MatchRunReport(
        users=n + inputs.skipped_no_appearance + inputs.skipped_no_profile + inputs.skipped_few_ratings,
        matchable=n,
        skipped_no_appearance=inputs.skipped_no_appearance,
        skipped_no_profile=inputs.skipped_no_profile,
        skipped_few_ratings=inputs.skipped_few_ratings,
        pairs_scored=pairs,
        seconds=seconds,
        pairs_per_second=pairs / seconds if seconds > 0 else 0.0,
        backend=backend,
    )
