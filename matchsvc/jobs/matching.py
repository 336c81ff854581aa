"""The matching job: decrypt in memory, score every eligible pair both ways, store reciprocal top-k.

Stages: load every user's sealed appearance, filters and model and open them with their data keys;
build the arrays ``engine.scoring.reciprocal_topk`` takes (gender x coarse age bucket as the 64-bit
group masks; blocks, passes and matches as exclusions); score; then drop, per seeker, candidates
whose exact age is outside either side's range or whom the seeker already decided on; store the
first ``k`` by rank. Scores never leave this function's memory. With the Ray backend the same
stages run inside Ray tasks, each on its own users (``matchsvc.jobs.ray_backend``, D36).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from engine.partitioned import pair_scores, partitioned_topk, plan_partitions
from engine.scoring import pairs_skipped, reciprocal_topk
from matchsvc.db.models import MatchRun
from matchsvc.jobs.match_inputs import OVERSAMPLE, MatchInputs, collect_inputs, rank
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import match_runs as runs_repo
from matchsvc.repositories import matching as matching_repo

__all__ = ["MatchRunReport", "run_matching"]

#: How long a request transaction may run: a change whose marker (its transaction's start) is up to
#: this much older than the last run's snapshot may not have been visible to it, so it counts again.
CHANGE_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class MatchRunReport:
    users: int
    matchable: int
    skipped_no_appearance: int
    skipped_no_profile: int
    skipped_few_ratings: int
    pairs_scored: int
    #: Share of ordered user pairs never scored because their partitions cannot meet (issue 15).
    pairs_skipped_fraction: float
    seconds: float
    pairs_per_second: float
    backend: str
    mode: str
    #: Users whose stored list this run rewrote.
    refreshed: int
    #: Stage times: read and decrypt the snapshot, score and rank, write lists and the run record
    #: (Ray: summed over its tasks, so they can exceed ``seconds``).
    read_seconds: float
    score_seconds: float
    write_seconds: float

    def summary(self) -> str:
        return (
            f"matched {self.matchable}/{self.users} users ({self.skipped_no_appearance} without appearance, "
            f"{self.skipped_no_profile} without profile, {self.skipped_few_ratings} with too few ratings); "
            f"{self.pairs_scored} pairs in {self.seconds:.2f}s = {self.pairs_per_second:,.0f} pairs/s "
            f"({self.pairs_skipped_fraction:.1%} of pairs skipped); {self.mode} run, "
            f"{self.refreshed} lists refreshed [{self.backend}]"
        )


def _full_due(previous: list[MatchRun], full_every: int) -> bool:
    """Full when asked every run, on the first run, or when none of the last ``full_every - 1`` was full."""
    return full_every <= 1 or not previous or all(run.mode != "full" for run in previous[: full_every - 1])


def _merged_lists(
    inputs: MatchInputs, indices: np.ndarray, focus: np.ndarray, stored: dict[uuid.UUID, list[uuid.UUID]]
) -> Iterator[tuple[int, list[int]]]:
    """For everyone outside ``focus``: their stored list plus the changed users the focused scoring
    found for them, re-ranked by current score. Only users whose list meets a changed user appear."""
    n = len(inputs.user_ids)
    changed = np.zeros(n, dtype=bool)
    changed[focus] = True
    position = {user_id: i for i, user_id in enumerate(inputs.user_ids)}
    excluded = set(zip(inputs.exclude[0].tolist(), inputs.exclude[1].tolist()))
    excluded |= {(j, i) for i, j in excluded}
    found = (indices >= 0) & changed[np.maximum(indices, 0)]
    for v in range(n):
        if changed[v]:
            continue
        old = [position[c] for c in stored.get(inputs.user_ids[v], []) if c in position]
        if not found[v].any() and not changed[old].any():
            continue
        pool = np.array(
            sorted({*old, *indices[v][found[v]].tolist()} - {j for j in old if (v, j) in excluded}), dtype=np.int64
        )
        if not pool.size:
            yield v, []
            continue
        scores = pair_scores(inputs.pref, inputs.bias, inputs.looks, np.full(len(pool), v), pool)
        yield v, pool[np.lexsort((pool, -scores))].tolist()


def run_matching(
    sessions: sessionmaker[Session],
    *,
    keys: KeyRingStore,
    k: int = 20,
    min_ratings: int = 10,
    backend: Literal["local", "ray"] = "local",
    device: str | None = None,
    progress: bool = False,
    skip_partitions: bool = False,
    full_every: int = 1,
    change_margin: timedelta = CHANGE_MARGIN,
    **backend_options: Any,
) -> MatchRunReport:
    """Recompute candidate lists and record the run; returns the summary the CLI prints.

    ``backend="ray"`` runs the job on Ray, where each task reads and decrypts its own users
    (``matchsvc.jobs.ray_backend``; options ``partitions`` and ``address``); its runs are full.
    A full local run scores with ``engine.scoring.reciprocal_topk`` (the C kernel on the CPU;
    gender x age bucket as group masks), as each Ray task does on its users; the kernel orders
    users by group and skips block pairs that cannot meet (decision D38), which the report counts.
    ``skip_partitions=True`` instead scores only pairs of partitions whose filters can accept each
    other both ways (``engine.partitioned``: torch tiles, slower per pair than the kernel by more
    than the pairs it skips, decision D37). Incremental runs always use the partitioned tiles, which
    can limit the work to the changed users' tiles.

    With ``full_every = N > 1`` only every Nth run recomputes everyone; the runs between are
    incremental (decision D27): users changed since the last run (new, appearance, filters, model,
    blocks, likes, passes, matches) get exactly the lists a full run would give them, and enter
    the lists of others, which are re-ranked from their stored candidates plus the changed users.
    """
    if backend == "ray":
        return _run_on_ray(sessions, k=k, min_ratings=min_ratings, device=device, **backend_options)
    started = time.perf_counter()
    with sessions() as session:
        snapshot_at = runs_repo.database_now(session)
        previous = runs_repo.recent_runs(session, limit=max(1, full_every - 1))
        incremental = not _full_due(previous, full_every)
        changed = runs_repo.changed_since(session, previous[0].started_at, margin=change_margin) if incremental else set()
        inputs = collect_inputs(session, keys=keys, min_ratings=min_ratings, progress=progress)
        stored = matching_repo.stored_lists(session, inputs.user_ids) if incremental else {}
    read_done = time.perf_counter()
    n = len(inputs.user_ids)
    ranked: dict[uuid.UUID, list[uuid.UUID]] = {}
    pairs, skipped = n * (n - 1), 0.0
    if n >= 2:
        width = min(n - 1, OVERSAMPLE * k)
        arrays = (inputs.pref, inputs.bias, inputs.looks)
        masks = {"group": inputs.group, "seeks": inputs.seeks, "exclude": inputs.exclude}
        if skip_partitions or incremental:
            plan = plan_partitions(inputs.group, inputs.seeks)
            focus = np.array([i for i, user_id in enumerate(inputs.user_ids) if user_id in changed], dtype=np.int64)
            _, indices, pairs = partitioned_topk(*arrays, width, **masks, plan=plan, rows=focus if incremental else None)
            skipped = 1.0 - pairs / (n * (n - 1))
            if incremental:
                ranked = rank(inputs, ((i, indices[i]) for i in focus), k)
                ranked.update(rank(inputs, _merged_lists(inputs, indices, focus, stored), k))
            else:
                ranked = rank(inputs, enumerate(indices), k)
        else:
            _, indices = reciprocal_topk(*arrays, width, **masks, device=device)
            skipped = pairs_skipped(inputs.group, inputs.seeks, device=device)
            pairs = round(n * (n - 1) * (1.0 - skipped))
            ranked = rank(inputs, enumerate(np.asarray(indices)), k)
    score_done = time.perf_counter()
    with sessions() as session:
        matching_repo.replace_candidates(session, ranked)
        runs_repo.record_run(
            session,
            started_at=snapshot_at,
            mode="incremental" if incremental else "full",
            users=n,
            refreshed=len(ranked),
            pairs_scored=pairs,
            pairs_skipped_fraction=skipped,
        )
        session.commit()
    finished = time.perf_counter()
    seconds = finished - started
    return MatchRunReport(
        users=n + inputs.skipped_no_appearance + inputs.skipped_no_profile + inputs.skipped_few_ratings,
        matchable=n,
        skipped_no_appearance=inputs.skipped_no_appearance,
        skipped_no_profile=inputs.skipped_no_profile,
        skipped_few_ratings=inputs.skipped_few_ratings,
        pairs_scored=pairs,
        pairs_skipped_fraction=skipped,
        seconds=seconds,
        pairs_per_second=pairs / seconds if seconds > 0 else 0.0,
        backend=backend,
        mode="incremental" if incremental else "full",
        refreshed=len(ranked),
        read_seconds=read_done - started,
        score_seconds=score_done - read_done,
        write_seconds=finished - score_done,
    )


def _run_on_ray(
    sessions: sessionmaker[Session], *, k: int, min_ratings: int, device: str | None, **options: Any
) -> MatchRunReport:
    """A full run on Ray; the driver holds ids and counts only (decision D36)."""
    from matchsvc.jobs.ray_backend import run_on_ray

    started = time.perf_counter()
    run = run_on_ray(sessions, k=k, width=OVERSAMPLE * k, min_ratings=min_ratings, device=device, **options)
    n = run.matchable
    with sessions() as session:
        runs_repo.record_run(
            session,
            started_at=run.snapshot_at,
            mode="full",
            users=n,
            refreshed=run.refreshed,
            pairs_scored=run.pairs_scored,
            pairs_skipped_fraction=run.pairs_skipped_fraction,
        )
        session.commit()
    seconds = time.perf_counter() - started
    return MatchRunReport(
        users=n + sum(run.skipped),
        matchable=n,
        skipped_no_appearance=run.skipped[0],
        skipped_no_profile=run.skipped[1],
        skipped_few_ratings=run.skipped[2],
        pairs_scored=run.pairs_scored,
        pairs_skipped_fraction=run.pairs_skipped_fraction,
        seconds=seconds,
        pairs_per_second=run.pairs_scored / seconds if seconds > 0 else 0.0,
        backend="ray",
        mode="full",
        refreshed=run.refreshed,
        read_seconds=run.read_seconds,
        score_seconds=run.score_seconds,
        write_seconds=run.write_seconds,
    )
