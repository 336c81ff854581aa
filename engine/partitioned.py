"""Reciprocal top-k that skips pairs of partitions which can never match.

Users are partitioned by their group (the scoring kernel's 64-bit group code: in the service,
gender x age bucket). A partition's *seek mask* is the union of its members' seeks masks: no
member of ``p`` can want anyone of ``q`` unless bit ``q`` is in it. A pair of partitions is scored
only when each one's mask holds the other (the two-way rule of ``engine.scoring``), so every pair
of users the kernel would find eligible lies in a scored partition pair, and nothing else is
touched.

Each unordered pair of partitions ``{p, q}`` is scored in tiles: two float32 products give both
directions' logits for the tile, the reciprocal score is evaluated in float64 from them and
rounded once to float32 (the rule of ``engine.scoring``), and the tile feeds the running top-k of
its rows and, transposed, of its columns. Every unordered pair of users is scored exactly once.
Lists are ordered by ``(score desc, index asc)`` through int64 keys, as in ``engine.scoring``, so
the result equals :func:`engine.scoring.reciprocal_topk` on the same inputs up to float32
rounding of the products (which can reorder only near-ties closer than the kernel's stated error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from engine._validation import InvalidInputError

__all__ = ["PartitionPlan", "pair_scores", "partitioned_topk", "plan_partitions"]

_LOW32 = 0xFFFFFFFF
_TILE = 2048
#: Tiles smaller than this run on one torch thread.
_PARALLEL_ENTRIES = 1 << 20
#: float32 scores are within ~2**-20 (relative) of the exact ones; a pair is pruned only when its
#: float32 score is below the row's k-th best by more than this, so pruning never drops a result.
_SLACK = 2.0**-14


@dataclass(frozen=True)
class PartitionPlan:
    """Which partitions meet: ``pairs`` holds ``(p, q)`` with ``p <= q``, group codes."""

    members: dict[int, np.ndarray]  # group code -> member indices, ascending
    pairs: list[tuple[int, int]]
    pairs_total: int  # ordered pairs of distinct users
    pairs_scored: int  # ordered pairs of distinct users inside scored partition pairs

    @property
    def skipped_fraction(self) -> float:
        return 1.0 - self.pairs_scored / self.pairs_total if self.pairs_total else 0.0


def _bit(mask: int, code: int) -> bool:
    return bool((mask >> code) & 1)


def plan_partitions(group: np.ndarray, seeks: np.ndarray) -> PartitionPlan:
    """Partition by group code and keep the partition pairs whose seek masks accept each other."""
    group = np.asarray(group, dtype=np.int64)
    seeks = np.asarray(seeks, dtype=np.int64)
    order = np.argsort(group, kind="stable")
    codes, starts = np.unique(group[order], return_index=True)
    bounds = [*starts.tolist(), len(order)]
    members = {int(c): order[bounds[i] : bounds[i + 1]] for i, c in enumerate(codes)}
    union = {c: int(np.bitwise_or.reduce(seeks[m])) if m.size else 0 for c, m in members.items()}
    pairs = [
        (p, q)
        for p in members
        for q in members
        if p <= q and _bit(union[p], q) and _bit(union[q], p)
    ]
    n = len(group)
    scored = sum(
        len(members[p]) * (len(members[p]) - 1) if p == q else 2 * len(members[p]) * len(members[q]) for p, q in pairs
    )
    return PartitionPlan(members=members, pairs=pairs, pairs_total=n * (n - 1), pairs_scored=scored)


def _combine(x: Tensor, y: Tensor, combine: str) -> Tensor:
    """Reciprocal score from two logits (the forms of ``engine.scoring``) in the inputs' dtype."""
    u, v = torch.exp(-x), torch.exp(-y)
    if combine == "harmonic":
        return 2.0 / (2.0 + u + v)
    if combine == "min":
        return 1.0 / (1.0 + torch.maximum(u, v))
    if combine == "product":
        return 1.0 / ((1.0 + u) * (1.0 + v))
    if combine == "geometric":
        return 1.0 / torch.sqrt((1.0 + u) * (1.0 + v))
    raise InvalidInputError(f"combine must be harmonic, geometric, min or product, got {combine!r}")


class _Best:
    """Running top-k keys per user (n, k); -1 is an empty slot."""

    def __init__(self, n: int, k: int) -> None:
        self.k = k
        self.keys = torch.full((n, k), -1, dtype=torch.int64)

    def offer(self, rows: Tensor, keys: Tensor) -> None:
        merged = torch.cat([self.keys[rows], keys], dim=1)
        self.keys[rows] = torch.topk(merged, self.k, dim=1, sorted=True).values

    def floor(self, rows: Tensor) -> Tensor:
        """Each row's k-th best score lowered by the float32 pruning slack (-inf while not full)."""
        last = self.keys[rows, -1]
        score = (last >> 32).to(torch.int32).view(torch.float32)
        return torch.where(last < 0, torch.full_like(score, -np.inf), score * (1.0 - _SLACK))

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        empty = self.keys < 0
        scores = (self.keys >> 32).to(torch.int32).view(torch.float32).masked_fill(empty, -np.inf)
        indices = (_LOW32 - (self.keys & _LOW32)).masked_fill(empty, -1)
        return scores.numpy(), indices.numpy()


def _column_sets(plan: PartitionPlan) -> dict[int, list[tuple[np.ndarray, bool]]]:
    """Per row partition: its own members (when it meets itself) and every later partition it
    meets, concatenated, so small partitions still make large tiles. Each unordered pair once."""
    sets: dict[int, list[tuple[np.ndarray, bool]]] = {}
    for p in plan.members:
        later = [plan.members[q] for a, q in plan.pairs if a == p and q != p]
        sets[p] = [(plan.members[p], True)] if (p, p) in plan.pairs else []
        if later:
            sets[p].append((np.concatenate(later), False))
    return sets


class _Exclusions:
    """Excluded partners per user (both directions), for masking tiles in time proportional to them."""

    def __init__(self, exclude: np.ndarray | None, n: int) -> None:
        e = np.empty((2, 0), dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64).reshape(2, -1)
        rows, cols = np.concatenate([e[0], e[1]]), np.concatenate([e[1], e[0]])
        order = np.argsort(rows, kind="stable")
        self.cols = cols[order]
        self.offsets = np.searchsorted(rows[order], np.arange(n + 1))
        self.position = np.full(n, -1, dtype=np.int64)

    def mask(self, ok: Tensor, rr: np.ndarray, cc: np.ndarray) -> None:
        """Clear ``ok[i, j]`` wherever ``(rr[i], cc[j])`` is excluded."""
        counts = self.offsets[rr + 1] - self.offsets[rr]
        if not counts.any():
            return
        row_pos = np.repeat(np.arange(len(rr)), counts)
        partners = self.cols[np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rr[counts > 0]])]
        self.position[cc] = np.arange(len(cc))
        col_pos = self.position[partners]
        self.position[cc] = -1
        hit = col_pos >= 0
        ok[torch.from_numpy(row_pos[hit]), torch.from_numpy(col_pos[hit])] = False


def partitioned_topk(
    pref: np.ndarray,
    bias: np.ndarray,
    looks: np.ndarray,
    k: int,
    *,
    group: np.ndarray,
    seeks: np.ndarray,
    exclude: np.ndarray | None = None,
    combine: str = "harmonic",
    plan: PartitionPlan | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each user's ``k`` best mutually eligible partners, scoring only partition pairs that can meet.

    Same inputs and result layout as ``engine.scoring.reciprocal_topk`` (scores ``(n, k)`` float32
    descending, ``-inf``/``-1`` padding), as numpy arrays, plus the number of ordered pairs scored.
    ``plan`` defaults to :func:`plan_partitions` of ``group`` and ``seeks``. ``rows`` (optional,
    user indices) limits the work to tiles that touch those users: their lists are exact, other
    rows see only those tiles (the incremental run's use).
    """
    n = len(pref)
    group = np.asarray(group, dtype=np.int64)
    seeks = np.asarray(seeks, dtype=np.int64)
    plan = plan or plan_partitions(group, seeks)
    arrays = {
        "pref": np.ascontiguousarray(pref, dtype=np.float32),
        "looks": np.ascontiguousarray(looks, dtype=np.float32),
        "bias": np.ascontiguousarray(bias, dtype=np.float32),
        "group": torch.from_numpy(group),
        "seeks": torch.from_numpy(seeks),
    }
    exclusions = _Exclusions(exclude, n)
    focus = None
    if rows is not None:
        focus = np.zeros(n, dtype=bool)
        focus[np.asarray(rows, dtype=np.int64)] = True
    best = _Best(n, k)
    scored = 0
    threads = torch.get_num_threads()
    try:
        for p, partners in _column_sets(plan).items():
            mp = plan.members[p]
            for r0 in range(0, len(mp), _TILE):
                rr = mp[r0 : r0 + _TILE]
                for columns, diagonal_block in partners:
                    for c0 in range(r0 if diagonal_block else 0, len(columns), _TILE):
                        cc = columns[c0 : c0 + _TILE]
                        if focus is not None and not bool(focus[rr].any() or focus[cc].any()):
                            continue
                        diagonal = diagonal_block and c0 == r0
                        # Torch's thread pool costs milliseconds per op on small tiles of a busy host.
                        torch.set_num_threads(1 if len(rr) * len(cc) < _PARALLEL_ENTRIES else threads)
                        _tile(best, rr, cc, arrays, exclusions, combine, diagonal=diagonal)
                        scored += len(rr) * (len(rr) - 1) if diagonal else 2 * len(rr) * len(cc)
    finally:
        torch.set_num_threads(threads)
    scores, indices = best.decode()
    return scores, indices, scored


def pair_scores(
    pref: np.ndarray, bias: np.ndarray, looks: np.ndarray, i: np.ndarray, j: np.ndarray, *, combine: str = "harmonic"
) -> np.ndarray:
    """Reciprocal scores of the pairs ``(i[t], j[t])`` (float32 logits, float64 combine, float32).

    For re-ranking a few known pairs; the products may round differently from a tile's, so only
    near-ties closer than the float32 logit error can order differently from :func:`partitioned_topk`.
    """
    p32, l32, b32 = (np.asarray(a, dtype=np.float32) for a in (pref, looks, bias))
    x = np.einsum("td,td->t", p32[i], l32[j]) + b32[i]
    y = np.einsum("td,td->t", p32[j], l32[i]) + b32[j]
    return _combine(torch.from_numpy(x).double(), torch.from_numpy(y).double(), combine).to(torch.float32).numpy()


def _tile(
    best: _Best,
    rr: np.ndarray,
    cc: np.ndarray,
    arrays: dict[str, Any],
    exclusions: _Exclusions,
    combine: str,
    *,
    diagonal: bool,
) -> None:
    """Score rows ``rr`` against columns ``cc`` both ways and offer the results to both sides.

    A float32 pass prunes every pair that cannot enter either side's running top-k; survivors are
    scored exactly (float64 from the float32 logits, rounded once to float32).
    """
    r, c = torch.from_numpy(rr), torch.from_numpy(cc)
    pref, looks, bias, group, seeks = (arrays[key] for key in ("pref", "looks", "bias", "group", "seeks"))
    x = torch.from_numpy(pref[rr] @ looks[cc].T + bias[rr, None])  # r likes c
    y = torch.from_numpy((pref[cc] @ looks[rr].T + bias[cc, None]).T)  # c likes r
    codes, segment = torch.unique(group[c], return_inverse=True)
    ok = ((seeks[r, None] >> codes[None, :]) & 1).bool()[:, segment]
    ok &= ((seeks[c] >> group[r][:, None]) & 1).bool()
    if diagonal:
        ok.fill_diagonal_(False)
    exclusions.mask(ok, rr, cc)
    approx = _combine(x, y, combine).masked_fill_(~ok, -np.inf)
    keep = approx >= _floors(best, r, approx, dim=1)[:, None]
    if not diagonal:
        keep |= approx >= _floors(best, c, approx, dim=0)[None, :]
    i, j = torch.nonzero(keep & ok, as_tuple=True)
    exact = _combine(x[i, j].double(), y[i, j].double(), combine).to(torch.float32)
    bits = exact.view(torch.int32).to(torch.int64) << 32
    best.offer(r, _compact(i, bits | (_LOW32 - c[j]), len(rr)))
    if not diagonal:
        order = torch.argsort(j, stable=True)
        best.offer(c, _compact(j[order], (bits | (_LOW32 - r[i]))[order], len(cc)))


def _floors(best: _Best, users: Tensor, approx: Tensor, *, dim: int) -> Tensor:
    """Per user of this side: the float32 score below which a pair of this tile cannot make their
    top-k: the higher of their running k-th best and the tile's own k-th best, less the slack."""
    width = min(best.k, approx.shape[dim])
    kth = torch.topk(approx, width, dim=dim, sorted=False).values.amin(dim=dim)
    tile = torch.where(torch.isfinite(kth), kth * (1.0 - _SLACK), kth) if width == best.k else torch.full_like(kth, -np.inf)
    return torch.maximum(best.floor(users), tile)


def _compact(owner: Tensor, keys: Tensor, size: int) -> Tensor:
    """Keys grouped by owner (``owner`` sorted ascending) as a (size, widest) matrix padded with -1."""
    counts = torch.bincount(owner, minlength=size)
    width = max(1, int(counts.max()) if counts.numel() else 1)
    starts = torch.cumsum(counts, 0) - counts
    table = torch.full((size, width), -1, dtype=torch.int64)
    table[owner, torch.arange(owner.numel()) - starts[owner]] = keys
    return table
