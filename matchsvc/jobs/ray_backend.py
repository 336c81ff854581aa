"""The matching job on Ray, decrypting where it scores (decision D36).

The driver splits the users into ``P`` consecutive ranges of ids (it reads ``P - 1`` ids) and
exports a database snapshot; it never reads a sealed row, a key or a score. One *score task* per
pair of ranges (``P (P - 1) / 2`` of them; one task when ``P = 1``) reads its two ranges' sealed
rows and wrapped data keys from that snapshot, unwraps and decrypts them in its own process, scores
their union with ``engine.scoring.reciprocal_topk`` (gender x age bucket as group masks) and keeps,
per user, the top ``width`` candidates as ids, scores and an "acceptable" bit (exact ages, own
likes). One *write task* per range receives from Ray what the score tasks found for its users (the
driver only passes references), merges it and stores the lists with COPY.

Why pairs of ranges: every pair of users lies in some task's union, so the union of a user's
per-task top ``width`` holds their global top ``width``. The merge orders by (score desc, candidate
id asc), which is the kernel's tie rule because users are ordered by id everywhere, takes the first
``width``, then the first ``k`` acceptable ones: exactly what the local job stores. A pair inside
one range is scored by every task holding that range; its highest score is kept (float32 products
may differ in the last bit between block shapes).

Nodes take the database and the key ring from their own environment (``DATABASE_URL`` and
``MATCHSVC_KEYRING`` or ``MATCHSVC_KEYRING_FILE``), as docker-compose's Ray services set them.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from engine.scoring import pairs_skipped, reciprocal_topk
from matchsvc.jobs.match_inputs import acceptable, collect_inputs
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import match_runs as runs_repo
from matchsvc.repositories import matching as matching_repo
from matchsvc.repositories.id_ranges import IdRange, export_snapshot, split_users, use_snapshot

__all__ = ["Found", "RayRun", "merge_found", "run_on_ray", "score_ranges"]

_PAD = np.iinfo(np.uint64).max


def _words(ids: Sequence[uuid.UUID]) -> np.ndarray:
    """Ids as (m, 2) uint64 (big-endian halves), whose lexicographic order is the ids' order."""
    raw = b"".join(user_id.bytes for user_id in ids)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(ids), 2)


def _ids(words: np.ndarray) -> list[uuid.UUID]:
    return [uuid.UUID(int=(int(high) << 64) | int(low)) for high, low in words]


@dataclass(frozen=True)
class Found:
    """One range's matchable users (ascending ids) and what one score task found for them."""

    users: np.ndarray  # (m, 2) uint64 ids
    scores: np.ndarray  # (m, w) float32, descending, -inf pads
    candidates: np.ndarray  # (m, w, 2) uint64 ids, _PAD pads
    acceptable: np.ndarray  # (m, w) bool


@dataclass(frozen=True)
class TaskStats:
    """A score task's counts (over the union of its ranges) and stage times."""

    matchable: int
    skipped: tuple[int, int, int]  # without appearance, without profile, too few ratings
    pairs_considered: int  # ordered pairs of the union, n (n - 1)
    pairs_scored: int  # of those, in block pairs the kernel did not skip
    read_seconds: float
    score_seconds: float


def score_ranges(
    sessions: sessionmaker[Session],
    *,
    keys: KeyRingStore,
    ranges: Sequence[IdRange],
    snapshot: str | None,
    min_ratings: int,
    width: int,
    device: str | None = None,
) -> tuple[list[Found], TaskStats]:
    """Open the users of ``ranges`` (at ``snapshot``), score them among themselves; one ``Found`` per range."""
    started = time.perf_counter()
    with sessions() as session:
        if snapshot is not None:
            use_snapshot(session, snapshot)
        inputs = collect_inputs(session, keys=keys, min_ratings=min_ratings, ranges=ranges)
    read_done = time.perf_counter()
    n = len(inputs.user_ids)
    scores, indices = np.full((0, width), -np.inf, dtype=np.float32), np.full((0, width), -1, dtype=np.int64)
    skipped_share = 0.0
    if n:
        skipped_share = pairs_skipped(inputs.group, inputs.seeks, device=device)
        scores, indices = reciprocal_topk(
            inputs.pref, inputs.bias, inputs.looks, width,
            group=inputs.group, seeks=inputs.seeks, exclude=inputs.exclude, device=device,
        )
    ok = np.array([acceptable(inputs, i, row) for i, row in enumerate(indices.tolist())], dtype=bool).reshape(n, width)
    users = _words(inputs.user_ids)
    candidates = np.full((n, width, 2), _PAD, dtype=np.uint64)
    real = indices >= 0
    candidates[real] = users[indices[real]]
    found = []
    for r in ranges:
        rows = [
            i for i, user_id in enumerate(inputs.user_ids)
            if (r.low is None or user_id >= r.low) and (r.high is None or user_id < r.high)
        ]
        found.append(Found(users=users[rows], scores=scores[rows], candidates=candidates[rows], acceptable=ok[rows]))
    stats = TaskStats(
        matchable=n,
        skipped=(inputs.skipped_no_appearance, inputs.skipped_no_profile, inputs.skipped_few_ratings),
        pairs_considered=n * (n - 1),
        pairs_scored=round(n * (n - 1) * (1.0 - skipped_share)),
        read_seconds=read_done - started,
        score_seconds=time.perf_counter() - read_done,
    )
    return found, stats


def _take(order: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.take_along_axis(a, order, axis=1) for a in arrays)


def merge_found(found: Sequence[Found], *, k: int, width: int) -> dict[uuid.UUID, list[uuid.UUID]]:
    """One range's lists from every score task that holds it: the local job's ranking (module doc)."""
    users = found[0].users
    if any(not np.array_equal(part.users, users) for part in found):
        raise RuntimeError("score tasks saw different users in one range: they did not share the snapshot")
    scores = np.concatenate([part.scores for part in found], axis=1)
    high = np.concatenate([part.candidates[..., 0] for part in found], axis=1)
    low = np.concatenate([part.candidates[..., 1] for part in found], axis=1)
    ok = np.concatenate([part.acceptable for part in found], axis=1)
    # Per candidate, the best score first; then later copies of the candidate are dropped.
    scores, high, low, ok = _take(np.lexsort((-scores, low, high), axis=1), scores, high, low, ok)
    repeat = np.zeros_like(ok)
    repeat[:, 1:] = (high[:, 1:] == high[:, :-1]) & (low[:, 1:] == low[:, :-1])
    scores = np.where(repeat, -np.inf, scores)
    scores, high, low, ok = _take(np.lexsort((low, high, -scores), axis=1), scores, high, low, ok)
    keep = np.isfinite(scores[:, :width]) & ok[:, :width]
    ranked: dict[uuid.UUID, list[uuid.UUID]] = {}
    for row, user_id in enumerate(_ids(users)):
        chosen = np.flatnonzero(keep[row])[:k]
        ranked[user_id] = _ids(np.stack([high[row, chosen], low[row, chosen]], axis=1))
    return ranked


def _write_range(sessions: sessionmaker[Session], found: Sequence[Found], k: int, width: int) -> tuple[int, float]:
    """Merge and store one range's lists in one transaction; (lists written, seconds)."""
    started = time.perf_counter()
    ranked = merge_found(found, k=k, width=width)
    with sessions() as session:
        matching_repo.replace_candidates(session, ranked)
        session.commit()
    return len(ranked), time.perf_counter() - started


@functools.cache
def _node() -> tuple[sessionmaker[Session], KeyRingStore]:
    """This Ray worker's database sessions and key ring, from its own environment (once per process)."""
    from matchsvc.db.session import DatabaseLimits, create_db_engine, create_session_factory
    from matchsvc.runtime import configured_keyring
    from matchsvc.settings import Settings

    settings = Settings()
    keys = configured_keyring(settings)
    if settings.database_url is None or keys is None:
        raise RuntimeError(
            "a Ray node of the matching job needs DATABASE_URL and MATCHSVC_KEYRING or MATCHSVC_KEYRING_FILE"
        )
    engine = create_db_engine(settings.database_url, limits=DatabaseLimits.from_settings(settings))
    return create_session_factory(engine), keys


def _score_task(
    ranges: Sequence[IdRange], snapshot: str, min_ratings: int, width: int, device: str | None
) -> tuple[Any, ...]:
    sessions, keys = _node()
    found, stats = score_ranges(
        sessions, keys=keys, ranges=ranges, snapshot=snapshot, min_ratings=min_ratings, width=width, device=device
    )
    return (stats, *found)


def _write_task(k: int, width: int, *found: Found) -> tuple[int, float]:
    sessions, _ = _node()
    return _write_range(sessions, found, k, width)


@dataclass(frozen=True)
class RayRun:
    """What the driver learns: counts and times, never a user's data."""

    snapshot_at: datetime
    matchable: int
    skipped: tuple[int, int, int]
    pairs_scored: int
    #: Of the ordered pairs the tasks considered, the share in block pairs that can never match.
    pairs_skipped_fraction: float
    refreshed: int
    #: Summed over tasks (seconds spent across workers, not wall time).
    read_seconds: float
    score_seconds: float
    write_seconds: float


def run_on_ray(
    sessions: sessionmaker[Session],
    *,
    k: int,
    width: int,
    min_ratings: int,
    device: str | None = None,
    partitions: int | None = None,
    address: str | None = None,
) -> RayRun:
    """Split the users, export a snapshot, run the score and write tasks and wait for them.

    ``partitions`` (ranges ``P``) defaults to the cluster's CPUs + 1, so that the ``P (P - 1) / 2``
    score tasks keep every CPU busy; each task holds ``2 / P`` of the users.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    p = partitions or int(ray.cluster_resources().get("CPU", 1)) + 1
    score = ray.remote(_score_task)
    write = ray.remote(_write_task)
    with sessions() as session:
        # The exporting transaction stays open until every task is done: they all read this snapshot.
        snapshot = export_snapshot(session)
        snapshot_at = runs_repo.database_now(session)
        ranges = split_users(session, parts=p)
        pairs = [(a, b) for a in range(len(ranges)) for b in range(a + 1, len(ranges))] or [(0,)]
        stats, found_in = [], [[] for _ in ranges]
        for pair in pairs:
            refs = score.options(num_returns=1 + len(pair)).remote(
                [ranges[r] for r in pair], snapshot, min_ratings, width, device
            )
            stats.append(refs[0])
            for r, ref in zip(pair, refs[1:]):
                found_in[r].append(ref)
        written = ray.get([write.remote(k, width, *refs) for refs in found_in])
        task_stats: list[TaskStats] = ray.get(stats)
    # Each range lies in max(1, P - 1) tasks, so the unions' counts add up to that many times the total.
    copies = max(1, len(ranges) - 1)
    scored = sum(s.pairs_scored for s in task_stats)
    considered = sum(s.pairs_considered for s in task_stats)
    return RayRun(
        snapshot_at=snapshot_at,
        matchable=sum(s.matchable for s in task_stats) // copies,
        skipped=(
            sum(s.skipped[0] for s in task_stats) // copies,
            sum(s.skipped[1] for s in task_stats) // copies,
            sum(s.skipped[2] for s in task_stats) // copies,
        ),
        pairs_scored=scored,
        pairs_skipped_fraction=1.0 - scored / considered if considered else 0.0,
        refreshed=sum(count for count, _ in written),
        read_seconds=sum(s.read_seconds for s in task_stats),
        score_seconds=sum(s.score_seconds for s in task_stats),
        write_seconds=sum(seconds for _, seconds in written),
    )
