"""Scale-out of ``reciprocal_topk`` over Ray: seekers are partitioned into groups, and each Ray task
scores the users of two groups against each other.

Why pairs of groups: a user's top-k runs over every other user, so a task that owned only its
seekers would need everyone anyway. Splitting users into ``P`` groups and solving the
``P (P - 1) / 2`` sub-problems "group a with group b" covers every pair of users; a user's global
top-k is the merge of their top-k lists from the ``P - 1`` tasks that contain their group (every
candidate lies in one of them). The arrays go into the object
store once and tasks read them zero-copy; each task holds only its two groups' blocks. Work is
about ``2 (P - 1) / P`` times the single-process run, spread over as many cores or nodes as Ray offers.

The merge keeps the kernel's contract: scores descending, exact ties to the lower index,
``-inf``/``-1`` padding. A pair scored in several tasks keeps its highest score (the kernel's
float32 products can differ in the last bit between block shapes; see ``engine.scoring``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.scoring import reciprocal_topk

__all__ = ["ray_reciprocal_topk"]


def _subproblem(
    arrays: dict[str, np.ndarray | None],
    members: np.ndarray,
    k: int,
    options: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k of ``members`` among themselves, in global indices: (members, scores, indices)."""
    local = np.full(len(arrays["pref"]), -1, dtype=np.int64)
    local[members] = np.arange(len(members))
    exclude = arrays["exclude"]
    sub_exclude = None
    if exclude is not None and exclude.size:
        a, b = local[exclude[0]], local[exclude[1]]
        keep = (a >= 0) & (b >= 0)
        sub_exclude = np.stack([a[keep], b[keep]])
    group, seeks = arrays["group"], arrays["seeks"]
    scores, indices = reciprocal_topk(
        arrays["pref"][members],
        arrays["bias"][members],
        arrays["looks"][members],
        k,
        group=None if group is None else group[members],
        seeks=None if seeks is None else seeks[members],
        exclude=sub_exclude,
        **options,
    )
    return members, scores, np.where(indices >= 0, members[np.maximum(indices, 0)], -1)


def _stable_by(key: torch.Tensor, *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Reorder ``columns`` row-wise by ascending ``key``, keeping the current order among ties."""
    order = torch.sort(key, dim=1, stable=True).indices
    return tuple(torch.gather(column, 1, order) for column in columns)


def _merge(n: int, k: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-task top-k lists into each user's global top-k: score desc, index asc, no duplicates."""
    rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
    for members, scores, indices in parts:
        for row, user in enumerate(members):
            rows[user].append((scores[row], indices[row]))
    width = max(len(lists) for lists in rows) * k
    scores = torch.full((n, width), -torch.inf)
    indices = torch.full((n, width), -1, dtype=torch.int64)
    for user, lists in enumerate(rows):
        s = np.concatenate([entry[0] for entry in lists]).astype(np.float32)
        i = np.concatenate([entry[1] for entry in lists])
        scores[user, : s.size] = torch.from_numpy(s)
        indices[user, : i.size] = torch.from_numpy(i)
    # Best score first within each index, then drop repeats of an index (a pair scored by several tasks).
    scores, indices = _stable_by(-scores, scores, indices)
    scores, indices = _stable_by(indices, scores, indices)
    repeat = torch.zeros_like(indices, dtype=torch.bool)
    repeat[:, 1:] = indices[:, 1:] == indices[:, :-1]
    scores = torch.where(repeat | (indices < 0), -torch.inf, scores)
    # Now order by index, then stably by score: exact ties keep the lower index first.
    scores, indices = _stable_by(indices, scores, indices)
    scores, indices = _stable_by(-scores, scores, indices)
    scores, indices = scores[:, :k], indices[:, :k]
    return scores.numpy(), torch.where(torch.isinf(scores), -1, indices).numpy()


def ray_reciprocal_topk(
    pref: Any,
    bias: Any,
    looks: Any,
    k: int,
    *,
    group: Any = None,
    seeks: Any = None,
    exclude: Any = None,
    combine: str = "harmonic",
    block_size: int | None = None,
    device: str | None = None,
    partitions: int | None = None,
    address: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``engine.scoring.reciprocal_topk`` computed by Ray tasks; same arguments, same result.

    Parameters
    ----------
    partitions : int, optional
        Number of seeker groups ``P`` (``P (P - 1) / 2`` tasks, one per pair of groups); default:
        Ray's CPU count, at most 8.
    address : str, optional
        A Ray cluster to join; default starts (or reuses) a local Ray runtime.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    arrays = {
        "pref": np.ascontiguousarray(pref, dtype=np.float64),
        "bias": np.ascontiguousarray(bias, dtype=np.float64),
        "looks": np.ascontiguousarray(looks, dtype=np.float64),
        "group": None if group is None else np.asarray(group, dtype=np.int64),
        "seeks": None if seeks is None else np.asarray(seeks, dtype=np.int64),
        "exclude": None if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(2, -1),
    }
    n = len(arrays["pref"])
    if n == 0:
        return reciprocal_topk(pref, bias, looks, k, group=group, seeks=seeks, exclude=exclude, combine=combine)
    p = partitions or max(1, min(8, int(ray.cluster_resources().get("CPU", 1))))
    p = max(1, min(p, n))
    bounds = np.linspace(0, n, p + 1).astype(np.int64)
    groups = [np.arange(bounds[g], bounds[g + 1]) for g in range(p)]
    shared = ray.put(arrays)
    options = {"combine": combine, "block_size": block_size, "device": device}
    task = ray.remote(_subproblem)
    pairs = [(a, b) for a in range(p) for b in range(a + 1, p)] or [(0, 0)]
    futures = [
        task.remote(shared, np.concatenate([groups[a], groups[b]]) if a != b else groups[a], k, options)
        for a, b in pairs
    ]
    return _merge(n, k, ray.get(futures))
