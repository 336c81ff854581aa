"""The arithmetic both engines share: exact scores, the pruning bounds, the key layout.

Every combine is increasing in both probabilities, so ``s > t`` holds exactly when a
per-combine statistic ``T`` of ``u = exp(-x)``, ``v = exp(-y)`` (``x``, ``y`` the pair's two
logits) stays below a cutoff ``T_t``. The engines screen entries with a cheap exp-free lower
bound on ``log T`` (tangents under the softplus, at most ``TANGENT_GAP`` short) against each
row's cutoff, which rises with the row's running ``k``-th best score; only survivors are scored
exactly. The C kernel (``_native.c``) mirrors these functions; the constants it needs are
passed in or spelled out there with the same values.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BIG",
    "COMBINES",
    "COMBINE_CODE",
    "INELIGIBLE",
    "MAX_LOGIT",
    "NO_CUT",
    "STAT_GAP",
    "TANGENTS",
    "TANGENT_GAP",
    "cutoff",
    "exclusion_counts",
    "floor",
    "grouping",
    "logits",
    "low_logit",
    "pack_keys",
    "score64",
    "unpack_keys",
]

#: The reciprocal combines :func:`engine.scoring.reciprocal_topk` accepts.
COMBINES: Final[tuple[str, ...]] = ("harmonic", "geometric", "min", "product")
#: The combine's number in ``_native.c``.
COMBINE_CODE: Final = {"harmonic": 0, "geometric": 1, "min": 2, "product": 3}

# A logit this low marks a pair as ineligible. 2**100 is exact in float32, dwarfs any real logit
# (inputs are checked to stay under MAX_LOGIT) and leaves 2**28 of headroom below float32 max.
BIG: Final = 2.0**100
INELIGIBLE: Final = -(2.0**99)
#: Cutoff of a row with no threshold yet: passes every eligible pair, no ineligible one.
NO_CUT: Final = 2.0**98
MAX_LOGIT: Final = 2.0**60
_LOW32: Final = 0xFFFFFFFF
# Pruning slack: relative rounding of a float32 score, and of a float32 statistic.
_T_SLACK: Final = 2.0**-22
_STAT_SLACK: Final = 2.0**-18


def score64(x: Tensor, y: Tensor, combine: str) -> Tensor:
    """Exact reciprocal scores in float64 from logits ``x = logit p`` and ``y = logit q``.

    Written through ``u = exp(-x)``, ``v = exp(-y)`` so that no form divides zero by zero:
    ``harmonic = 2 / (2 + u + v)``, ``product = 1 / ((1 + u)(1 + v))``, ``geometric`` its square
    root and ``min = 1 / (1 + max(u, v))``.
    """
    u = torch.exp(-x)
    v = torch.exp(-y)
    if combine == "harmonic":
        return 2.0 / (2.0 + u + v)
    if combine == "min":
        return 1.0 / (1.0 + torch.maximum(u, v))
    prod = (1.0 + u) * (1.0 + v)
    if combine == "product":
        return 1.0 / prod
    return 1.0 / torch.sqrt(prod)


def _softplus_tangents() -> tuple[tuple[tuple[float, float], ...], float]:
    """Tangent lines ``a - b * d`` under ``f(d) = log(1 + exp(-d))`` on ``d >= 0``, and their gap.

    ``f`` is convex, so the upper envelope of its tangents (and of 0) lies below it; the largest
    shortfall sits where neighbouring tangents cross or where the last one reaches 0. The
    intercepts are nudged down by ``2**-20`` so the float32 evaluation stays below ``f`` too.
    """
    points = (0.0, 1.2, 2.5, 4.0)
    lines = [(math.log1p(math.exp(-p)) + p / (1.0 + math.exp(p)), 1.0 / (1.0 + math.exp(p))) for p in points]
    gap = 0.0
    for (a1, b1), (a2, b2) in zip(lines, lines[1:]):
        d = (a1 - a2) / (b1 - b2)
        gap = max(gap, math.log1p(math.exp(-d)) - (a1 - b1 * d))
    a_last, b_last = lines[-1]
    gap = max(gap, math.log1p(math.exp(-a_last / b_last)))
    return tuple((a - 2.0**-20, b) for a, b in lines), gap + 2.0**-20


TANGENTS, TANGENT_GAP = _softplus_tangents()
#: How far the chunk statistic may undershoot the exact log-statistic, per combine.
STAT_GAP: Final = {"harmonic": TANGENT_GAP, "product": 2 * TANGENT_GAP, "geometric": 2 * TANGENT_GAP, "min": 0.0}


def _log_cutoff(t: Tensor, combine: str) -> Tensor:
    """``log T(t)`` in float64, where ``s > t`` exactly when the log-statistic is below it."""
    tc = t.clamp(min=1e-300, max=1.0)
    if combine == "harmonic":
        return math.log(2.0) + torch.log1p(-tc) - torch.log(tc)
    if combine == "product":
        return -torch.log(tc)
    if combine == "geometric":
        return -2.0 * torch.log(tc)
    return torch.log1p(-tc) - torch.log(tc)


def cutoff(thr: Tensor, combine: str) -> Tensor:
    """The chunk statistic a row's candidates must stay below, float32.

    Rows without a threshold get ``2**98``: that only screens out ineligible pairs.

    The score threshold is lowered by ``2**-22`` relative (float32 rounding of the score) and the
    cutoff raised by ``2**-18 (1 + |cut|)`` (float32 rounding of the statistic), so no entry that
    can score above ``thr`` is ever pruned.
    """
    t = thr.double() * (1.0 - _T_SLACK)
    cut = _log_cutoff(t, combine)
    cut = cut + _STAT_SLACK * (1.0 + cut.abs())
    cut = torch.where(t > 0.0, cut, torch.full_like(cut, NO_CUT))
    return cut.clamp(max=NO_CUT).to(torch.float32)


def low_logit(thr: Tensor, combine: str) -> Tensor:
    """The ``min(x, y)`` a pair needs to possibly score above ``thr`` (float32).

    Every combine is at most ``2 min(p, q) / (1 + min(p, q))`` (harmonic: ``u + v < 2/t - 2``
    bounds the larger of ``u`` and ``v``), ``min(p, q)`` (min, product) or ``sqrt(min(p, q))``
    (geometric), so ``s > t`` needs ``min(x, y) > log(t / (2 (1 - t)))``, ``logit(t)`` or
    ``logit(t**2)``. A cheap per-entry filter ahead of exact scoring; same slack as
    :func:`cutoff`. Rows without a threshold only require eligibility.
    """
    t = thr.double() * (1.0 - _T_SLACK)
    tc = t.clamp(min=1e-300, max=1.0)
    if combine == "harmonic":
        low = torch.log(tc) - math.log(2.0) - torch.log1p(-tc)
    elif combine == "geometric":
        low = 2.0 * torch.log(tc) - torch.log1p(-tc * tc)
    else:
        low = torch.log(tc) - torch.log1p(-tc)
    low = low - _STAT_SLACK * (1.0 + low.abs())
    low = torch.where(t > 0.0, low, torch.full_like(low, INELIGIBLE))
    return low.clamp(min=INELIGIBLE).to(torch.float32)


def floor(stat: Tensor, combine: str) -> Tensor:
    """Strict score threshold implied by one real entry whose chunk statistic is ``stat``.

    The exact log-statistic is at most ``stat`` plus the combine's tangent gap and rounding
    slack; mapping that back to a score and lowering it by ``2**-22`` gives a value every such
    entry's float32 score exceeds. ``-inf`` where ``stat`` is ineligible or the
    bound underflows (a statistic of ``2**98`` or more marks an ineligible pair).
    """
    z = stat.double()
    log_t = z + STAT_GAP[combine] + _STAT_SLACK * (1.0 + z.abs())
    big_t = torch.exp(log_t)
    if combine == "harmonic":
        low = 2.0 / (2.0 + big_t)
    elif combine == "product":
        low = 1.0 / big_t
    elif combine == "geometric":
        low = torch.exp(-0.5 * log_t)
    else:
        low = 1.0 / (1.0 + big_t)
    low = low * (1.0 - _T_SLACK)
    ok = (z < NO_CUT) & (low > 0.0)
    return torch.where(ok, low, torch.full_like(low, -math.inf)).to(torch.float32)


def pack_keys(scores: Tensor, cols: Tensor) -> Tensor:
    """Unique int64 sort keys: ``(score desc, index asc)`` becomes plain descending order."""
    bits = scores.contiguous().view(torch.int32).to(torch.int64)
    return (bits << 32) | (_LOW32 - cols)


def unpack_keys(packed: Tensor) -> tuple[Tensor, Tensor]:
    """Scores (float32, ``-inf`` when empty) and indices (int64, ``-1`` when empty) of keys."""
    empty = packed < 0
    bits = (packed >> 32).to(torch.int32)
    scores = bits.view(torch.float32).masked_fill(empty, -math.inf)
    idx = (_LOW32 - (packed & _LOW32)).masked_fill(empty, -1)
    return scores, idx


def grouping(rows: Tensor) -> Tensor:
    """A permutation that sorts ``rows`` (int64 in ``[0, 2**31)``); ties in any order.

    On the CPU this sorts ``row << 32 | position`` with NumPy, whose vectorised integer sort is
    several times faster than ``torch.sort`` at these sizes; the low bits give the permutation.
    """
    if rows.device.type != "cpu":
        return torch.argsort(rows)
    packed = (rows << 32) | torch.arange(rows.numel(), dtype=torch.int64)
    return torch.from_numpy(np.sort(packed.numpy())) & _LOW32


def exclusion_counts(excl: Tensor | None, n: int, padded: int) -> Tensor:
    """Excluded partners per row (padded,), int64: each may hide one entry from a seed."""
    counts = torch.zeros(padded, dtype=torch.int64)
    if excl is not None:
        counts[:n] = torch.bincount(torch.div(excl, n, rounding_mode="floor"), minlength=n)
    return counts


def logits(left: Tensor, right: Tensor, i0: int, j0: int, block: int, xy: Tensor) -> None:
    """Both directions of block pair ``(I, J)`` into ``xy`` (2, B, B), one GEMM each.

    ``x = left_I right_J^T`` is ``logit p[I, J]``; ``y = right_I left_J^T`` is ``logit p[J, I]``
    laid out like ``x``: entry ``[a, b]`` concerns users ``I_a`` and ``J_b`` in both.
    """
    torch.mm(left[i0 : i0 + block], right[j0 : j0 + block].t(), out=xy[0])
    torch.mm(right[i0 : i0 + block], left[j0 : j0 + block].t(), out=xy[1])
