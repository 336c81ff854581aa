"""Reciprocal top-k candidates for every user, scored both ways, in blocks.

User ``i`` likes user ``j`` with the one-way probability

    p[i, j] = sigmoid(pref[i] . looks[j] + bias[i])

and the pair's reciprocal score is ``s[i, j] = combine(p[i, j], p[j, i])`` (harmonic mean by
default, so a pair only scores well when *both* sides are likely to like each other).
:func:`reciprocal_topk` returns each user's ``k`` best eligible partners without ever holding the
``n x n`` score matrix.

How it stays fast
-----------------
The users are cut into blocks of ``B``. One batched GEMM per block pair ``(I, J)`` with
``J >= I`` gives both logit matrices ``x = logit p[I, J]`` and ``y = logit p[J, I]^T``, and that
one product serves rows ``I`` (read along rows) and rows ``J`` (read along columns): every
unordered pair is multiplied once. Bias, group eligibility and edge padding are folded into the
GEMM as extra coordinates (a pair that is not mutually sought gets a logit below ``-2**99``), so
the elementwise pass only takes ``min(x, y)`` and its maxima over chunks of ``c`` entries along
rows and along columns. Every combine is increasing in both probabilities and bounded above by a
function of ``min(p, q)``, so a chunk whose maximum is under a row's limit (derived from that
row's running ``k``-th best score) cannot hold a candidate and is never scored. Surviving chunks
are scored exactly and merged into per-row top-k lists; as those fill up the limits rise and
almost every chunk is pruned, so the cost approaches that of the GEMM plus one cheap pass.

Precision and ties
------------------
All products run in float32; each candidate's score is evaluated in float64 from its two float32
logits and rounded once to float32, so equal logits always give equal scores wherever they sit.
Against a float64 reference each score has relative error at most ``2 * delta + 2**-23``, where
``delta`` bounds the float32 logit error (about ``(d + 3) * 2**-24 * (|pref_i| |looks_j| + |b_i|)``;
every combine moves by at most twice the logit error in log space). Rows are ordered by
``(score desc, index asc)`` on the float32 scores, so exact ties go to the lower index. Hence, for
every row and every ``r``, the first ``r`` indices equal the float64 reference's whenever the
reference's ``r``-th and ``(r + 1)``-th scores differ by more than twice that relative error;
within closer near-ties the order may differ from the reference.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import Final

import numpy as np
import torch
from torch import Tensor

__all__ = ["COMBINES", "reciprocal_topk"]

#: The reciprocal combines :func:`reciprocal_topk` accepts.
COMBINES: Final[tuple[str, ...]] = ("harmonic", "geometric", "min", "product")

_log = logging.getLogger(__name__)

# A logit this low marks a pair as ineligible. 2**100 is exact in float32, dwarfs any real logit
# (inputs are checked to stay under _MAX_LOGIT) and leaves 2**28 of headroom below float32 max.
_BIG: Final = 2.0**100
_INELIGIBLE: Final = -(2.0**99)
_MAX_LOGIT: Final = 2.0**60
_MAX_USERS: Final = 2**31 - 1
_LOW32: Final = 0xFFFFFFFF
# Pending candidates per row before they are merged into the row's running top-k.
_PENDING: Final = 32
# Pruning slack: relative rounding of a float32 score, and of a float32 chunk statistic.
_T_SLACK: Final = 2.0**-22
_STAT_SLACK: Final = 2.0**-18
_DEFAULT_BLOCK: Final = {"cpu": 1024, "cuda": 4096}
# Chunks found before they are scored and merged (bounds the memory held, keeps limits fresh).
_FLUSH_CHUNKS: Final = 8192
# Compile the chunk pass only when there are enough block pairs to repay the compile time.
_COMPILE_PAIRS: Final = 64


# --------------------------------------------------------------------------- validation


def _as_tensor(name: str, value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint64:
            # A seeks mask with bit 63 set is a negative int64; uint64 holds the same bits.
            value = value.view(np.int64)
        if value.dtype == object or value.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a numeric array, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _real(name: str, value: object, shape: tuple[int, ...]) -> Tensor:
    t = _as_tensor(name, value)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    t = t.to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or infinite values")
    return t


def _integer(name: str, value: object, ndim: int) -> Tensor:
    t = _as_tensor(name, value)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name} must hold integers, got dtype {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t.to(device="cpu", dtype=torch.int64)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be None, 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cpu":
        raise ValueError(f"device must be None, 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def _block_size(block_size: object, device: torch.device) -> int:
    if block_size is None:
        return _DEFAULT_BLOCK[device.type]
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)


def _eligibility(group: object, seeks: object, n: int) -> tuple[Tensor, Tensor]:
    """Each user's slot among the groups present (n,) and whom they seek (n, G) as bools."""
    if (group is None) != (seeks is None):
        raise ValueError("group and seeks must be given together (both None: all eligible)")
    if group is None:
        return torch.zeros(n, dtype=torch.int64), torch.ones(n, 1, dtype=torch.bool)
    g = _integer("group", group, 1)
    s = _integer("seeks", seeks, 1)
    if tuple(g.shape) != (n,):
        raise ValueError(f"group must have shape ({n},), got {tuple(g.shape)}")
    if tuple(s.shape) != (n,):
        raise ValueError(f"seeks must have shape ({n},), got {tuple(s.shape)}")
    if n and (int(g.min()) < 0 or int(g.max()) > 63):
        bad = int(g.min()) if int(g.min()) < 0 else int(g.max())
        raise ValueError(f"group values must lie in [0, 63], got {bad}")
    present, slot = torch.unique(g, return_inverse=True)
    # An arithmetic shift of a negative int64 still brings bit 63 down to bit 0.
    sought = ((s[:, None] >> present[None, :]) & 1).bool()
    return slot, sought


def _exclusions(exclude: object, n: int) -> Tensor | None:
    """Sorted unique keys ``i * n + j`` of excluded ordered pairs, both directions, or None."""
    if exclude is None:
        return None
    e = _integer("exclude", exclude, 2)
    if e.shape[0] != 2:
        raise ValueError(f"exclude must have shape (2, m), got {tuple(e.shape)}")
    if e.shape[1] == 0:
        return None
    lo, hi = int(e.min()), int(e.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"exclude holds user index {lo if lo < 0 else hi}, outside [0, {n})")
    i, j = e[0], e[1]
    keep = i != j
    i, j = i[keep], j[keep]
    if i.numel() == 0:
        return None
    return torch.unique(torch.cat([i * n + j, j * n + i]))


# --------------------------------------------------------------------------- score arithmetic


def _score64(x: Tensor, y: Tensor, combine: str) -> Tensor:
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


_TANGENTS, _TANGENT_GAP = _softplus_tangents()
# How far the chunk statistic may undershoot the exact log-statistic, per combine.
_STAT_GAP: Final = {"harmonic": _TANGENT_GAP, "product": 2 * _TANGENT_GAP, "geometric": 2 * _TANGENT_GAP, "min": 0.0}


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


def _cutoff(thr: Tensor, combine: str) -> Tensor:
    """The chunk statistic a row's candidates must stay below, float32 (``+inf``: no pruning).

    The score threshold is lowered by ``2**-22`` relative (float32 rounding of the score) and the
    cutoff raised by ``2**-18 (1 + |cut|)`` (float32 rounding of the statistic), so no entry that
    can score above ``thr`` is ever pruned.
    """
    t = thr.double() * (1.0 - _T_SLACK)
    cut = _log_cutoff(t, combine)
    cut = cut + _STAT_SLACK * (1.0 + cut.abs())
    return torch.where(t > 0.0, cut, torch.full_like(cut, math.inf)).to(torch.float32)


def _low_logit(thr: Tensor, combine: str) -> Tensor:
    """The ``min(x, y)`` a pair needs to possibly score above ``thr`` (float32).

    Every combine is at most ``2 min(p, q) / (1 + min(p, q))`` (harmonic: ``u + v < 2/t - 2``
    bounds the larger of ``u`` and ``v``), ``min(p, q)`` (min, product) or ``sqrt(min(p, q))``
    (geometric), so ``s > t`` needs ``min(x, y) > log(t / (2 (1 - t)))``, ``logit(t)`` or
    ``logit(t**2)``. A cheap per-entry filter ahead of exact scoring; same slack as
    :func:`_cutoff`. Rows without a threshold only require eligibility.
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
    low = torch.where(t > 0.0, low, torch.full_like(low, _INELIGIBLE))
    return low.clamp(min=_INELIGIBLE).to(torch.float32)


def _floor(stat: Tensor, combine: str) -> Tensor:
    """Strict score threshold implied by one real entry whose chunk statistic is ``stat``.

    The exact log-statistic is at most ``stat`` plus the combine's tangent gap and rounding
    slack; mapping that back to a score and lowering it by ``2**-22`` gives a value every such
    entry's float32 score exceeds. ``-inf`` where ``stat`` is ``+inf`` (ineligible) or the
    bound underflows.
    """
    z = stat.double()
    log_t = z + _STAT_GAP[combine] + _STAT_SLACK * (1.0 + z.abs())
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
    ok = torch.isfinite(z) & (low > 0.0)
    return torch.where(ok, low, torch.full_like(low, -math.inf)).to(torch.float32)


def _keys(scores: Tensor, cols: Tensor) -> Tensor:
    """Unique int64 sort keys: ``(score desc, index asc)`` becomes plain descending order."""
    bits = scores.contiguous().view(torch.int32).to(torch.int64)
    return (bits << 32) | (_LOW32 - cols)


def _decode(keys: Tensor) -> tuple[Tensor, Tensor]:
    empty = keys < 0
    bits = (keys >> 32).to(torch.int32)
    scores = bits.view(torch.float32).masked_fill(empty, -math.inf)
    idx = (_LOW32 - (keys & _LOW32)).masked_fill(empty, -1)
    return scores, idx


# --------------------------------------------------------------------------- the chunk pass
# A cheap elementwise lower bound on the log-statistic ``log T`` of each pair, where the score
# is ``s = 2 / (2 + T)`` (harmonic, ``T = u + v``), ``1 / T`` (product), ``T ** -0.5``
# (geometric, both ``T = (1 + u)(1 + v)``) or ``1 / (1 + T)`` (min, ``T = max(u, v)``), with
# ``u = exp(-x)`` and ``v = exp(-y)``. No exp is taken: ``log(1 + exp(-d))`` is replaced by the
# envelope of a few tangents, which undershoots by at most ``_STAT_GAP``. Ineligible pairs
# get ``+inf``.


def _softplus_lb(d: Tensor) -> Tensor:
    """Lower bound on ``log(1 + exp(-d))`` for ``d >= 0``."""
    (a0, b0), *rest = _TANGENTS
    h = torch.clamp(a0 - b0 * d, min=0.0)
    for a, b in rest:
        h = torch.maximum(h, a - b * d)
    return h


def _stat_harmonic(x: Tensor, y: Tensor) -> Tensor:
    m = torch.minimum(x, y)
    # log(u + v) = -min(x, y) + log(1 + exp(-|x - y|))
    return torch.where(m > _INELIGIBLE, _softplus_lb(torch.abs(x - y)) - m, math.inf)


def _stat_product(x: Tensor, y: Tensor) -> Tensor:
    m = torch.minimum(x, y)
    # log((1 + u)(1 + v)) = softplus(-x) + softplus(-y); softplus(-a) = relu(-a) + f(|a|)
    lb = torch.relu(-x) + torch.relu(-y) + _softplus_lb(torch.abs(x)) + _softplus_lb(torch.abs(y))
    return torch.where(m > _INELIGIBLE, lb, math.inf)


def _stat_min(x: Tensor, y: Tensor) -> Tensor:
    m = torch.minimum(x, y)
    return torch.where(m > _INELIGIBLE, -m, math.inf)


# Separate functions (not one taking ``combine``) so each compiles to its own fused kernel.
# The statistic is evaluated once per reduction: recomputing it is cheaper than a B x B buffer.
def _pass_harmonic(x: Tensor, y: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    b = x.shape[0]
    return (
        _stat_harmonic(x, y).view(b, b // chunk, chunk).amin(2),
        _stat_harmonic(x, y).view(b // chunk, chunk, b).amin(1),
    )


def _pass_product(x: Tensor, y: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    b = x.shape[0]
    return (
        _stat_product(x, y).view(b, b // chunk, chunk).amin(2),
        _stat_product(x, y).view(b // chunk, chunk, b).amin(1),
    )


def _pass_min(x: Tensor, y: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    b = x.shape[0]
    return (
        _stat_min(x, y).view(b, b // chunk, chunk).amin(2),
        _stat_min(x, y).view(b // chunk, chunk, b).amin(1),
    )


_PASSES: Final[dict[str, Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]]] = {
    "harmonic": _pass_harmonic,
    "product": _pass_product,
    "geometric": _pass_product,
    "min": _pass_min,
}
_compiled: dict[tuple[str, str, int, int], Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]] = {}
_compile_lock = threading.Lock()


def _chunk_pass(
    combine: str, device: torch.device, block: int, chunk: int, *, compile_it: bool
) -> Callable[[Tensor, Tensor, int], tuple[Tensor, Tensor]]:
    """The chunk pass, compiled once per process and shape when torch.compile works here."""
    eager = _PASSES[combine]
    if not compile_it:
        return eager
    key = (eager.__name__, device.type, block, chunk)
    with _compile_lock:
        fn = _compiled.get(key)
        if fn is None:
            fn = eager
            try:
                compiled = torch.compile(eager, dynamic=False)
                probe = torch.zeros(block, block, device=device)
                compiled(probe, probe, chunk)
                fn = compiled
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
                _log.warning("torch.compile failed for the scoring pass, running eager: %s", exc)
            _compiled[key] = fn
        return fn


# --------------------------------------------------------------------------- running top-k


class _TopK:
    """Per-row running top-k of int64 keys with a small pending buffer.

    New candidates are appended to the row's pending slots; only when those would overflow (or
    at the end) is the row merged, so each merge amortises over many blocks. ``thr`` is a lower
    bound on the row's final k-th score: nothing scoring ``<= thr`` can enter the result.
    """

    def __init__(self, rows: int, real: int, k: int, combine: str, device: torch.device) -> None:
        self.k = k
        self.combine = combine
        self.run = torch.full((rows, k), -1, dtype=torch.int64, device=device)
        self.pend = torch.full((rows, _PENDING), -1, dtype=torch.int64, device=device)
        self.fill = torch.zeros(rows, dtype=torch.int64, device=device)
        self.thr = torch.full((rows,), -math.inf, dtype=torch.float32, device=device)
        self.cut = torch.full((rows,), math.inf, dtype=torch.float32, device=device)
        self.low = torch.full((rows,), _INELIGIBLE, dtype=torch.float32, device=device)
        # Padding rows: nothing beats +inf and no statistic is below -inf.
        self.thr[real:] = math.inf
        self.cut[real:] = -math.inf
        self.low[real:] = math.inf

    def raise_thr(self, rows: Tensor, thr: Tensor) -> None:
        new = torch.maximum(self.thr.index_select(0, rows), thr)
        self.thr.index_copy_(0, rows, new)
        self.cut.index_copy_(0, rows, _cutoff(new, self.combine))
        self.low.index_copy_(0, rows, _low_logit(new, self.combine))

    def _merge(self, rows: Tensor, extra: Tensor | None) -> None:
        parts = [self.run.index_select(0, rows), self.pend.index_select(0, rows)]
        if extra is not None:
            parts.append(extra)
        merged = torch.cat(parts, 1).topk(self.k, 1).values
        self.run.index_copy_(0, rows, merged)
        self.pend.index_fill_(0, rows, -1)
        self.fill.index_fill_(0, rows, 0)
        self.raise_thr(rows, _decode(merged[:, -1])[0])

    def insert(self, rows: Tensor, keys: Tensor) -> None:
        """Add candidates (``rows`` in any order)."""
        rows, order = torch.sort(rows, stable=True)
        keys = keys.index_select(0, order)
        uniq, cnt = torch.unique_consecutive(rows, return_counts=True)
        starts = torch.cumsum(cnt, 0) - cnt
        rank = torch.arange(rows.numel(), device=rows.device) - torch.repeat_interleave(starts, cnt)
        fill = self.fill.index_select(0, uniq)
        new_fill = fill + cnt
        over = new_fill > _PENDING
        slots = rows * _PENDING + torch.repeat_interleave(fill, cnt) + rank
        if bool(over.any()):
            # Rows whose pending slots would overflow merge now, new candidates included.
            o_rows = uniq[over]
            cand_over = torch.repeat_interleave(over, cnt)
            o_at = torch.nonzero(cand_over)[:, 0]
            o_slot = torch.repeat_interleave(torch.cumsum(over, 0) - 1, cnt).index_select(0, o_at)
            width = int(cnt[over].max())
            extra = torch.full((o_rows.numel() * width,), -1, dtype=torch.int64, device=rows.device)
            extra.index_copy_(0, o_slot * width + rank.index_select(0, o_at), keys.index_select(0, o_at))
            self._merge(o_rows, extra.view(-1, width))
            keep = torch.nonzero(~cand_over)[:, 0]
            slots, keys = slots.index_select(0, keep), keys.index_select(0, keep)
            under = ~over
            uniq, new_fill = uniq[under], new_fill[under]
        if slots.numel():
            self.pend.view(-1).index_copy_(0, slots, keys)
            self.fill.index_copy_(0, uniq, new_fill)

    def seed(self, rows: Tensor, chunk_min: Tensor, extra_rank: Tensor) -> None:
        """Give rows without a threshold one from a block's chunk minima of the statistic.

        Each chunk minimum is the statistic of a real entry in a distinct chunk, so the
        ``(k + e)``-th smallest of them (``e`` = the row's excluded partners, which may hide up to
        ``e`` of those entries) bounds the row's final k-th score from below via :func:`_floor`.
        """
        need = torch.isneginf(self.thr[rows])
        if not bool(need.any()):
            return
        rows, chunk_min, rank = rows[need], chunk_min[need], self.k - 1 + extra_rank[need]
        width = chunk_min.shape[1]
        ok = rank < width
        if not bool(ok.any()):
            return
        rows, chunk_min, rank = rows[ok], chunk_min[ok], rank[ok]
        low = chunk_min.topk(int(rank.max()) + 1, 1, largest=False).values
        self.raise_thr(rows, _floor(low.gather(1, rank[:, None])[:, 0], self.combine))

    def finish(self, n: int) -> tuple[Tensor, Tensor]:
        rows = torch.nonzero(self.fill[:n] > 0)[:, 0]
        for start in range(0, rows.numel(), 65536):
            self._merge(rows[start : start + 65536], None)
        return _decode(self.run[:n])


# --------------------------------------------------------------------------- public entry


def reciprocal_topk(
    pref: np.ndarray | Tensor,
    bias: np.ndarray | Tensor,
    looks: np.ndarray | Tensor,
    k: int,
    *,
    group: np.ndarray | Tensor | None = None,
    seeks: np.ndarray | Tensor | None = None,
    exclude: np.ndarray | Tensor | None = None,
    combine: str = "harmonic",
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Each user's ``k`` best mutually eligible partners by reciprocal score.

    Parameters
    ----------
    pref : array or tensor, shape (n, d)
        Each user's preference direction ``w`` in latent space.
    bias : array or tensor, shape (n,)
        Each user's intercept ``b``.
    looks : array or tensor, shape (n, d)
        Each user's appearance latent.
    k : int
        Candidates per user, ``>= 1``; may exceed ``n - 1`` (rows are padded).
    group : int array, shape (n,), optional
        Each user's group in ``[0, 63]``.
    seeks : int64 array, shape (n,), optional
        Bitmask of the groups each user wants to meet (bit 63 makes it negative; uint64 numpy
        arrays are read as the same bits). Give both ``group`` and ``seeks`` or neither.
    exclude : int array, shape (2, m), optional
        Pairs ``(i, j)`` never to propose, in either direction (blocks, passes, matches).
    combine : {"harmonic", "geometric", "min", "product"}
        How the two one-way probabilities combine into the reciprocal score.
    block_size : int, optional
        Users per block (default 1024 on CPU, 4096 on CUDA); memory is ``O(n k + B^2)``.
    device : str or torch.device, optional
        ``None`` uses CUDA when available, else the CPU; ``"cpu"`` forces the CPU.

    Returns
    -------
    scores : Tensor, shape (n, k), float32, on the CPU
        Reciprocal scores in descending order; ``-inf`` pads rows with fewer than ``k``
        eligible partners.
    indices : Tensor, shape (n, k), int64, on the CPU
        Partner indices; exact ties go to the lower index; ``-1`` pads.

    Raises
    ------
    ValueError
        On a bad shape, dtype, non-finite value, ``k < 1``, unknown ``combine``, half-given
        ``group``/``seeks``, out-of-range group or exclusion index, or an unusable device.

    Notes
    -----
    See the module docstring for the algorithm and the exact precision and tie contract.
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {', '.join(COMBINES)}; got {combine!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = int(k)
    pref_t = _as_tensor("pref", pref)
    if pref_t.dim() != 2:
        raise ValueError(f"pref must be 2-D (n, d), got shape {tuple(pref_t.shape)}")
    n, d = (int(s) for s in pref_t.shape)
    if d < 1:
        raise ValueError(f"pref must have at least one latent dimension, got shape {(n, d)}")
    if n > _MAX_USERS:
        raise ValueError(f"at most {_MAX_USERS} users are supported, got {n}")
    pref64 = _real("pref", pref, (n, d))
    bias64 = _real("bias", bias, (n,))
    looks64 = _real("looks", looks, (n, d))
    slot, sought = _eligibility(group, seeks, n)
    excl = _exclusions(exclude, n)
    dev = _resolve_device(device)
    block = _block_size(block_size, dev)
    if n == 0:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
    reach = float(pref64.norm(dim=1).max() * looks64.norm(dim=1).max() + bias64.abs().max())
    if reach > _MAX_LOGIT:
        raise ValueError(
            f"pref, looks and bias are too large for float32 scoring: logits may reach {reach:.3g}"
        )
    left, right = _augment(pref64, bias64, looks64, slot, sought, -(-n // min(block, n)) * min(block, n))
    with _ieee_matmul():
        scores, indices = _run(left, right, n, excl, k, combine, min(block, n), dev)
    return scores.cpu(), indices.cpu()


@contextlib.contextmanager
def _ieee_matmul() -> Iterator[None]:
    """Full float32 products for the duration (no TF32 on CUDA, no bfloat16 on oneDNN)."""
    saved = torch.get_float32_matmul_precision()
    if saved == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def _augment(
    pref: Tensor, bias: Tensor, looks: Tensor, slot: Tensor, sought: Tensor, padded: int
) -> tuple[Tensor, Tensor]:
    """Float32 row vectors whose dot products are the full logits, eligibility included.

    ``[pref_i, b_i, pen_i] . [looks_j, 1, onehot_j] = pref_i . looks_j + b_i + pen_i[slot_j]``
    with ``pen_i`` 0 for sought groups and ``-2**100`` otherwise. One more slot marks the edge
    padding up to ``padded`` rows: nobody seeks it and the padding seeks nobody.
    """
    n, d = pref.shape
    g = sought.shape[1]
    left = torch.zeros(padded, d + g + 2, dtype=torch.float64)
    right = torch.zeros(padded, d + g + 2, dtype=torch.float64)
    left[:n, :d] = pref
    left[:n, d] = bias
    left[:n, d + 1 : d + 1 + g] = torch.where(sought, 0.0, -_BIG)
    left[:, -1] = -_BIG
    left[n:, d + 1 :] = -_BIG
    right[:n, :d] = looks
    right[:n, d] = 1.0
    right[torch.arange(n), d + 1 + slot] = 1.0
    right[n:, -1] = 1.0
    return left.float(), right.float()


def _chunk_for(block: int) -> int:
    return next(c for c in (16, 8, 4, 2, 1) if block % c == 0)


def _run(
    left: Tensor,
    right: Tensor,
    n: int,
    excl: Tensor | None,
    k: int,
    combine: str,
    block: int,
    dev: torch.device,
) -> tuple[Tensor, Tensor]:
    padded, dim = left.shape
    nb = padded // block
    chunk = _chunk_for(block)
    lb = left.view(nb, block, dim)
    rb = right.view(nb, block, dim)
    # x = left_I right_J^T = logit p[I, J];  y = right_I left_J^T = logit p[J, I] laid out [a, b].
    lhs = torch.stack([lb, rb], 1).to(dev)
    rhs = torch.stack([rb, lb], 1).transpose(2, 3).contiguous().to(dev)
    extra = torch.zeros(padded, dtype=torch.int64)
    if excl is not None:
        extra[:n] = torch.bincount(excl // n, minlength=n)
        excl = excl.to(dev)
    extra = extra.to(dev)
    state = _TopK(padded, n, k, combine, dev)
    xy = torch.empty(2, block, block, device=dev)
    x, y = xy[0], xy[1]
    x_chunks, y_chunks = x.view(-1, chunk), y.view(-1, chunk)
    x_flat, y_flat = x.view(-1), y.view(-1)
    per_row = block // chunk
    chunk_pass = _chunk_pass(combine, dev, block, chunk, compile_it=nb * (nb + 1) // 2 >= _COMPILE_PAIRS)
    # Flat offsets of one column chunk's entries: chunk ``h`` of column ``b`` starts at h*c*B + b.
    down = torch.arange(chunk, device=dev) * block
    local = torch.arange(block, device=dev)
    found: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    held = 0
    for bi in range(nb):
        i0 = bi * block
        for bj in range(bi, nb):
            j0 = bj * block
            torch.bmm(lhs[bi], rhs[bj], out=xy)
            if bi == bj:
                x.diagonal().fill_(-math.inf)
            rmin, cmin = chunk_pass(x, y, chunk)
            if bi == 0:
                # Every row sees its first block in this outer step: seed its threshold there.
                if bj == 0:
                    state.seed(local, rmin, extra[:block])
                else:
                    state.seed(local + j0, cmin.t(), extra[j0 : j0 + block])
            # Rows I read along the rows of the block: chunk h of row a holds columns j0 + h*c ...
            hit = torch.nonzero((rmin < state.cut[i0 : i0 + block, None]).view(-1))[:, 0]
            if hit.numel():
                rows = torch.div(hit, per_row, rounding_mode="floor")
                first = (hit - rows * per_row) * chunk + j0
                xv, yv = x_chunks.index_select(0, hit), y_chunks.index_select(0, hit)
                found.append((rows + i0, first, xv, yv))
                held += hit.numel()
            if bi != bj:
                # ... and rows J read down its columns: chunk h of column b holds rows i0 + h*c ...
                # Hits come ordered by (h, b) and are gathered strip by strip (index [r, m]), so
                # the reads sweep each c-row strip of the block in order instead of striding.
                hit = torch.nonzero((cmin < state.cut[None, j0 : j0 + block]).view(-1))[:, 0]
                if hit.numel():
                    h = torch.div(hit, block, rounding_mode="floor")
                    cols_b = hit - h * block
                    at = (down[:, None] + (h * (chunk * block) + cols_b)[None, :]).view(-1)
                    xv = x_flat.index_select(0, at).view(chunk, -1).t()
                    yv = y_flat.index_select(0, at).view(chunk, -1).t()
                    found.append((cols_b + j0, h * chunk + i0, xv, yv))
                    held += hit.numel()
            # Score what was found in batches: fewer, larger operations; the thresholds used
            # then are at least as high as the ones the chunks were screened with.
            if held >= _FLUSH_CHUNKS:
                _offer(state, found, excl, n)
                found, held = [], 0
    if found:
        _offer(state, found, excl, n)
    return state.finish(n)


def _offer(
    state: _TopK, found: list[tuple[Tensor, Tensor, Tensor, Tensor]], excl: Tensor | None, n: int
) -> None:
    """Score surviving chunks exactly and hand the real candidates to the running top-k.

    Each item is ``(rows, first, x, y)``: chunk ``m`` is row ``rows[m]`` at columns
    ``first[m] + 0 .. c-1`` with logits ``x[m]``, ``y[m]`` (M, c). Entries are screened by
    ``min(x, y)`` against the row's :func:`_low_logit`, then scored exactly in float64.
    """
    rows = torch.cat([f[0] for f in found])
    first = torch.cat([f[1] for f in found])
    x = torch.cat([f[2] for f in found])
    y = torch.cat([f[3] for f in found])
    low = state.low.index_select(0, rows)
    at_m, at_c = torch.nonzero(torch.minimum(x, y) > low[:, None], as_tuple=True)
    if not at_m.numel():
        return
    r = rows.index_select(0, at_m)
    c = first.index_select(0, at_m) + at_c
    s = _score64(x[at_m, at_c].double(), y[at_m, at_c].double(), state.combine).float()
    keep = torch.nonzero(s > state.thr.index_select(0, r))[:, 0]
    r, c, s = r.index_select(0, keep), c.index_select(0, keep), s.index_select(0, keep)
    if excl is not None:
        pair = r * n + c
        pos = torch.searchsorted(excl, pair).clamp_(max=excl.numel() - 1)
        keep = torch.nonzero(excl.index_select(0, pos) != pair)[:, 0]
        r, c, s = r.index_select(0, keep), c.index_select(0, keep), s.index_select(0, keep)
    if r.numel():
        state.insert(r, _keys(s, c))
