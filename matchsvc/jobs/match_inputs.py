"""The matching job's inputs: users' sealed rows opened in memory, and the exact filter after scoring.

Shared by the local job (everyone in one process) and the Ray tasks (each one its ranges of users).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session
from tqdm import tqdm

from matchsvc.keys import KeyRingStore
from matchsvc.repositories import matching as matching_repo
from matchsvc.repositories import profiles as profiles_repo
from matchsvc.repositories.id_ranges import IdRange
from matchsvc.services.filters import Filters, mutually_accept
from matchsvc.services.keys import open_cipher
from matchsvc.services.profiles import age_of, group_code, seeks_mask
from matchsvc.services.sealed import LIKE, PASS, open_choice, open_filters, open_latent, open_model

__all__ = ["OVERSAMPLE", "MatchInputs", "acceptable", "collect_inputs", "rank"]

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



def collect_inputs(
    session: Session,
    *,
    keys: KeyRingStore,
    min_ratings: int,
    progress: bool = False,
    ranges: Sequence[IdRange] | None = None,
) -> MatchInputs:
    """Open every matchable user's sealed data in memory and build the scoring arrays.

    With ``ranges``, only the users in them, and only blocks, matches and decisions among them.
    """
    ids: list[uuid.UUID] = []
    prefs, biases, looks, groups, seeks, ages, filters = [], [], [], [], [], [], []
    no_look = no_profile = few = 0
    decisions = matching_repo.all_decisions(session, ranges=ranges)
    deciders = {decision.decider_id for decision in decisions}
    ciphers = {}  # kept only for users whose decisions must be opened
    rows = profiles_repo.matchable_rows(session, ranges=ranges)
    for row in tqdm(rows, desc="decrypting users", disable=not progress, unit="user"):
        if row.latent_ct is None:
            no_look += 1
            continue
        if row.filters_ct is None:
            no_profile += 1
            continue
        if row.state_ct is None or row.n_ratings < min_ratings:
            few += 1
            continue
        cipher = open_cipher(keys=keys, user_id=row.user_id, wrapped=row.wrapped_key)
        if row.user_id in deciders:
            ciphers[row.user_id] = cipher
        model = open_model(cipher, row.state_ct)
        user_filters = open_filters(cipher, row.filters_ct)
        age = age_of(row.birth_year)
        ids.append(row.user_id)
        prefs.append(model.coef)
        biases.append(model.intercept)
        looks.append(open_latent(cipher, row.latent_ct))
        groups.append(group_code(user_filters.gender, age))
        seeks.append(seeks_mask(user_filters))
        ages.append(age)
        filters.append(user_filters)
    index = {user_id: i for i, user_id in enumerate(ids)}
    pairs = [
        (index[a], index[b])
        for a, b in matching_repo.blocked_or_matched_pairs(session, ranges=ranges)
        if a in index and b in index
    ]
    decided: dict[int, set[int]] = {}
    for decision in decisions:
        decider, target = decision.decider_id, decision.target_id
        if decider in index and target in index:
            choice = open_choice(ciphers[decider], target_id=target, blob=decision.choice_ct)
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


def acceptable(inputs: MatchInputs, i: int, row: Iterable[int]) -> list[bool]:
    """Per candidate ``j`` of seeker ``i`` (``-1``: padding): a real candidate whose exact ages both
    sides accept and whom ``i`` has not liked already."""
    mine, my_age, decided = inputs.filters[i], int(inputs.ages[i]), inputs.decided.get(i, set())
    return [
        j >= 0 and j not in decided and mutually_accept(mine, my_age, inputs.filters[j], int(inputs.ages[j]))
        for j in row
    ]


def rank(inputs: MatchInputs, rows: Iterable[tuple[int, Iterable[int]]], k: int) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Per seeker ``i`` and its candidates in score order: keep the first k acceptable ones."""
    ranked: dict[uuid.UUID, list[uuid.UUID]] = {}
    for i, row in rows:
        row = list(row)
        kept = [inputs.user_ids[j] for j, ok in zip(row, acceptable(inputs, i, row)) if ok]
        ranked[inputs.user_ids[i]] = kept[:k]
    return ranked
