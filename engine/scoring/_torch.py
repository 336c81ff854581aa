"""The torch engine: the same pruned blocked search as torch operations, for CUDA.

On CUDA (and on a CPU without the C kernel) each block pair's two GEMMs are followed by a
``torch.compile``-fused pass that computes chunk minima of the statistic; chunks that may beat a
row's cutoff are scored exactly in batches and merged into per-row top-k lists.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Final

import torch
from torch import Tensor

from engine.scoring._bounds import (
    INELIGIBLE,
    NO_CUT,
    TANGENTS,
    cutoff,
    exclusion_counts,
    floor,
    grouping,
    logits,
    low_logit,
    pack_keys,
    score64,
    unpack_keys,
)

__all__ = ["run_torch"]

_log = logging.getLogger(__name__)

# Pending candidates per row before a merge, chunks found before they are scored (bounds
# memory, keeps cutoffs fresh), and the work that repays compiling the pass (one compile per
# block shape, so tiny or few blocks stay eager).
_PENDING: Final = 16
_FLUSH_CHUNKS: Final = 8192
_COMPILE_PAIRS: Final = 64
_COMPILE_MIN_BLOCK: Final = 64

# A cheap elementwise lower bound on the log-statistic ``log T`` of each pair, where the score
# is ``s = 2 / (2 + T)`` (harmonic, ``T = u + v``), ``1 / T`` (product), ``T ** -0.5``
# (geometric, both ``T = (1 + u)(1 + v)``) or ``1 / (1 + T)`` (min, ``T = max(u, v)``), with
# ``u = exp(-x)`` and ``v = exp(-y)``. No exp is taken: ``log(1 + exp(-d))`` is replaced by the
# envelope of a few tangents, which undershoots by at most ``_STAT_GAP``. An ineligible pair
# has a logit near ``-2**100`` and so a statistic of at least ``2**99`` (``+inf`` on the
# diagonal), above every cutoff.


def _softplus_lb(d: Tensor) -> Tensor:
    """Lower bound on ``log(1 + exp(-d))`` for ``d >= 0``."""
    (a0, b0), *rest = TANGENTS
    h = torch.clamp(a0 - b0 * d, min=0.0)
    for a, b in rest:
        h = torch.maximum(h, a - b * d)
    return h


def _stat_harmonic(x: Tensor, y: Tensor) -> Tensor:
    m = torch.minimum(x, y)
    # log(u + v) = -min(x, y) + log(1 + exp(-|x - y|))
    return _softplus_lb(torch.abs(x - y)) - m


def _stat_product(x: Tensor, y: Tensor) -> Tensor:
    # log((1 + u)(1 + v)) = softplus(-x) + softplus(-y); softplus(-a) = relu(-a) + f(|a|)
    return torch.relu(-x) + torch.relu(-y) + _softplus_lb(torch.abs(x)) + _softplus_lb(torch.abs(y))


def _stat_min(x: Tensor, y: Tensor) -> Tensor:
    return -torch.minimum(x, y)


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


class _TopK:
    """Per-row running top-k of int64 keys with a small pending buffer.

    New candidates are appended to the row's pending slots; only when those would overflow (or
    at the end) is the row merged, so each merge amortises over many blocks. ``thr`` is a lower
    bound on the row's final k-th score: nothing scoring ``< thr`` can enter the result.
    """

    def __init__(self, rows: int, real: int, k: int, combine: str, device: torch.device) -> None:
        self.k = k
        self.combine = combine
        self.run = torch.full((rows, k), -1, dtype=torch.int64, device=device)
        self.pend = torch.full((rows, _PENDING), -1, dtype=torch.int64, device=device)
        self.fill = torch.zeros(rows, dtype=torch.int64, device=device)
        self.thr = torch.full((rows,), -math.inf, dtype=torch.float32, device=device)
        self.cut = torch.full((rows,), NO_CUT, dtype=torch.float32, device=device)
        self.low = torch.full((rows,), INELIGIBLE, dtype=torch.float32, device=device)
        # Padding rows: nothing beats +inf and no statistic is below -inf.
        self.thr[real:] = math.inf
        self.cut[real:] = -math.inf
        self.low[real:] = math.inf

    def raise_thr(self, rows: Tensor, thr: Tensor) -> None:
        new = torch.maximum(self.thr.index_select(0, rows), thr)
        self.thr.index_copy_(0, rows, new)
        self.cut.index_copy_(0, rows, cutoff(new, self.combine))
        self.low.index_copy_(0, rows, low_logit(new, self.combine))

    def _merge(self, rows: Tensor, extra: Tensor | None) -> None:
        parts = [self.run.index_select(0, rows), self.pend.index_select(0, rows)]
        if extra is not None:
            parts.append(extra)
        merged = torch.cat(parts, 1).topk(self.k, 1).values
        self.run.index_copy_(0, rows, merged)
        self.pend.index_fill_(0, rows, -1)
        self.fill.index_fill_(0, rows, 0)
        self.raise_thr(rows, unpack_keys(merged[:, -1])[0])

    def insert(self, rows: Tensor, keys: Tensor) -> None:
        """Add candidates (``rows`` in any order) to the rows' pending slots."""
        order = grouping(rows)
        rows, keys = rows.index_select(0, order), keys.index_select(0, order)
        m = rows.numel()
        head = torch.ones(m, dtype=torch.bool, device=rows.device)
        head[1:] = rows[1:] != rows[:-1]
        group = torch.cumsum(head, 0) - 1
        starts = torch.nonzero(head)[:, 0]
        uniq = rows.index_select(0, starts)
        cnt = torch.diff(starts, append=starts.new_tensor([m]))
        rank = torch.arange(m, device=rows.device) - starts.index_select(0, group)
        fill = self.fill.index_select(0, uniq)
        new_fill = fill + cnt
        slots = rows * _PENDING + fill.index_select(0, group) + rank
        over = new_fill > _PENDING
        if bool(over.any()):
            # Rows whose pending slots would overflow merge now, their new candidates included.
            over_each = over.index_select(0, group)
            moved = torch.nonzero(over_each)[:, 0]
            width = int(cnt[over].max())
            place = (torch.cumsum(over, 0) - 1).index_select(0, group).index_select(0, moved)
            extra = torch.full((int(over.sum()) * width,), -1, dtype=torch.int64, device=rows.device)
            extra.index_copy_(0, place * width + rank.index_select(0, moved), keys.index_select(0, moved))
            self._merge(uniq[over], extra.view(-1, width))
            stay = torch.nonzero(~over_each)[:, 0]
            slots, keys = slots.index_select(0, stay), keys.index_select(0, stay)
            uniq, new_fill = uniq[~over], new_fill[~over]
        if slots.numel():
            self.pend.view(-1).index_copy_(0, slots, keys)
            self.fill.index_copy_(0, uniq, new_fill)

    def seed(self, rows: Tensor, chunk_min: Tensor, extra_rank: Tensor) -> None:
        """Give rows without a threshold one from a block's chunk minima of the statistic.

        Each chunk minimum is the statistic of a real entry in a distinct chunk, so the
        ``(k + e)``-th smallest of them (``e`` = the row's excluded partners, which may hide up to
        ``e`` of those entries) bounds the row's final k-th score from below via :func:`~engine.scoring._bounds.floor`.
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
        self.raise_thr(rows, floor(low.gather(1, rank[:, None])[:, 0], self.combine))

    def finish(self, n: int) -> Tensor:
        """Merge what is still pending; the (n, k) descending key lists."""
        rows = torch.nonzero(self.fill[:n] > 0)[:, 0]
        for start in range(0, rows.numel(), 65536):
            self._merge(rows[start : start + 65536], None)
        return self.run[:n]


def _chunk_for(block: int) -> int:
    return next(c for c in (8, 4, 2, 1) if block % c == 0)


def run_torch(
    left: Tensor,
    right: Tensor,
    n: int,
    excl: Tensor | None,
    k: int,
    combine: str,
    block: int,
    dev: torch.device,
    pairs: list[tuple[int, int]],
    label: Tensor,
) -> Tensor:
    """The block ``pairs`` as torch operations; returns the (n, k) descending key lists.

    Keys hold ``label[column]``, the caller's index of each user, so ties go to the lower label.
    """
    padded = left.shape[0]
    label = label.to(dev)
    chunk = _chunk_for(block)
    left, right = left.to(dev), right.to(dev)
    extra = exclusion_counts(excl, n, padded).to(dev)
    if excl is not None:
        excl = excl.to(dev)
    state = _TopK(padded, n, k, combine, dev)
    xy = torch.empty(2, block, block, device=dev)
    x, y = xy[0], xy[1]
    x_chunks, y_chunks = x.view(-1, chunk), y.view(-1, chunk)
    x_flat, y_flat = x.view(-1), y.view(-1)
    per_row = block // chunk
    worth_it = block >= _COMPILE_MIN_BLOCK and len(pairs) >= _COMPILE_PAIRS
    chunk_pass = _chunk_pass(combine, dev, block, chunk, compile_it=worth_it)
    # Flat offsets of one column chunk's entries: chunk ``h`` of column ``b`` starts at h*c*B + b.
    down = torch.arange(chunk, device=dev) * block
    local = torch.arange(block, device=dev)
    found: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    held = 0
    # Rows seed their threshold from the first block they meet.
    fresh = set(range(padded // block))
    for bi, bj in sorted(pairs):
        i0, j0 = bi * block, bj * block
        logits(left, right, i0, j0, block, xy)
        if bi == bj:
            x.diagonal().fill_(-math.inf)
        rmin, cmin = chunk_pass(x, y, chunk)
        if bi in fresh:
            state.seed(local + i0, rmin, extra[i0 : i0 + block])
            fresh.discard(bi)
        if bj in fresh:
            state.seed(local + j0, cmin.t(), extra[j0 : j0 + block])
            fresh.discard(bj)
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
            _offer(state, found, excl, n, label)
            found, held = [], 0
    if found:
        _offer(state, found, excl, n, label)
    return state.finish(n)


def _offer(
    state: _TopK,
    found: list[tuple[Tensor, Tensor, Tensor, Tensor]],
    excl: Tensor | None,
    n: int,
    label: Tensor,
) -> None:
    """Score surviving chunks exactly and hand the real candidates to the running top-k.

    Each item is ``(rows, first, x, y)``: chunk ``m`` is row ``rows[m]`` at columns
    ``first[m] + 0 .. c-1`` with logits ``x[m]``, ``y[m]`` (M, c). Entries are screened by
    ``min(x, y)`` against the row's :func:`~engine.scoring._bounds.low_logit`, then scored exactly in float64.
    """
    rows = torch.cat([f[0] for f in found])
    first = torch.cat([f[1] for f in found])
    x = torch.cat([f[2] for f in found])
    y = torch.cat([f[3] for f in found])
    chunk = x.shape[1]
    low = state.low.index_select(0, rows)
    at = torch.nonzero((torch.minimum(x, y) > low[:, None]).view(-1))[:, 0]
    if not at.numel():
        return
    m = torch.div(at, chunk, rounding_mode="floor")
    r = rows.index_select(0, m)
    c = first.index_select(0, m) + (at - m * chunk)
    xs = x.view(-1).index_select(0, at).double()
    ys = y.view(-1).index_select(0, at).double()
    s = score64(xs, ys, state.combine).float()
    # ``>=``: a candidate tying the row's k-th score may still win on a lower label.
    keep = torch.nonzero(s >= state.thr.index_select(0, r))[:, 0]
    r, c, s = r.index_select(0, keep), c.index_select(0, keep), s.index_select(0, keep)
    if excl is not None:
        pair = r * n + c
        pos = torch.searchsorted(excl, pair).clamp_(max=excl.numel() - 1)
        keep = torch.nonzero(excl.index_select(0, pos) != pair)[:, 0]
        r, c, s = r.index_select(0, keep), c.index_select(0, keep), s.index_select(0, keep)
    if r.numel():
        state.insert(r, pack_keys(s, label.index_select(0, c)))
