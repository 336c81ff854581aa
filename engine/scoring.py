"""Reciprocal top-k candidates for every user, scored both ways, in blocks.

User ``i`` likes user ``j`` with the one-way probability

    p[i, j] = sigmoid(pref[i] . looks[j] + bias[i])

and the pair's reciprocal score is ``s[i, j] = combine(p[i, j], p[j, i])`` (harmonic mean by
default, so a pair only scores well when *both* sides are likely to like each other).
:func:`reciprocal_topk` returns each user's ``k`` best mutually eligible partners without ever
holding the ``n x n`` score matrix: memory is ``O(n k + B^2)`` for blocks of ``B`` users.

How it stays fast
-----------------
* **One product serves both directions.** For a block pair ``(I, J)`` with ``J >= I`` two GEMMs
  give ``x = logit p[I, J]`` and ``y = logit p[J, I]`` laid out the same way; rows ``I`` read
  them along their rows and rows ``J`` down their columns, so every pair's two logits are
  computed once: the multiply work of a one-directional exact search.
* **Eligibility lives in the GEMM.** Group filters are extra coordinates: a pair that is not
  mutually sought gets a logit near ``-2**100`` and can never be a candidate.
* **Prune before scoring.** Every combine is increasing in both probabilities, so ``s > t``
  holds exactly when a per-combine statistic ``T`` of ``u = exp(-x)``, ``v = exp(-y)`` stays
  below a cutoff ``T_t``. A cheap exp-free lower bound on ``log T`` (tangents under the softplus, at most
  ``_TANGENT_GAP`` short) is compared against each row's cutoff, which rises with the row's
  running ``k``-th best score; only survivors are scored exactly.
* **Seeded cutoffs.** A row whose list is not full yet takes a cutoff from the block in hand:
  of its ``k + e`` smallest statistics (``e`` = its excluded partners) at least ``k`` belong to
  real candidates, and each of those scores at least what the largest of them implies. The C
  engine meets every row's own diagonal block first and seeds there.
* **Two engines, same contract.** On the CPU a small C kernel (compiled once per process with
  the system compiler and loaded with ``ctypes``) fuses the statistic, the cutoff test, exact
  scoring and the per-row top-k insert into one pass per direction, threads over rows, and lets
  every row's cutoff rise entry by entry. On CUDA, or when no C compiler is available, the same
  arithmetic runs as torch operations: a ``torch.compile``-fused pass computes chunk minima of
  the statistic, surviving chunks are scored in batches and merged into per-row lists.

Precision and ties
------------------
Products run in float32 (TF32 and bfloat16 shortcuts are switched off for the call). Each
candidate's score is evaluated in float64 from its two float32 logits and rounded once to
float32, so equal logits always give equal scores wherever they sit. Against a float64
reference every score has relative error at most ``2 * delta + 2**-23``, where ``delta`` bounds
the float32 logit error: ``delta <= (d + 3) * 2**-24 * (|pref_i| |looks_j| + |b_i|)`` for the
pair (input rounding plus the dot product; the log of every combine moves by at most the sum of
the two logit errors). Each row is ordered by ``(score desc, index asc)`` on those float32
scores, so exact ties go to the lower index. Hence, for every row and every ``r``, the first
``r`` indices are, as a set, the float64 reference's first ``r`` whenever the reference's
``r``-th and ``(r + 1)``-th scores differ by more than twice that relative error; inside closer
near-ties the order may differ from the reference's. Pruning is exact: a
pair is dropped only when its score provably cannot enter the row's top ``k``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import Tensor

__all__ = ["COMBINES", "reciprocal_topk", "scoring_backend"]

#: The reciprocal combines :func:`reciprocal_topk` accepts.
COMBINES: Final[tuple[str, ...]] = ("harmonic", "geometric", "min", "product")

_log = logging.getLogger(__name__)

# A logit this low marks a pair as ineligible. 2**100 is exact in float32, dwarfs any real logit
# (inputs are checked to stay under _MAX_LOGIT) and leaves 2**28 of headroom below float32 max.
_BIG: Final = 2.0**100
_INELIGIBLE: Final = -(2.0**99)
# Cutoff of a row with no threshold yet: passes every eligible pair, no ineligible one.
_NO_CUT: Final = 2.0**98
_MAX_LOGIT: Final = 2.0**60
_MAX_USERS: Final = 2**31 - 1
_LOW32: Final = 0xFFFFFFFF
# Pruning slack: relative rounding of a float32 score, and of a float32 statistic.
_T_SLACK: Final = 2.0**-22
_STAT_SLACK: Final = 2.0**-18
_DEFAULT_BLOCK: Final = {"cpu": 1024, "cuda": 4096}
# Torch engine: pending candidates per row before a merge, chunks found before they are
# scored (bounds memory, keeps cutoffs fresh), and the work that repays compiling the pass
# (one compile per block shape, so tiny or few blocks stay eager).
_PENDING: Final = 16
_FLUSH_CHUNKS: Final = 8192
_COMPILE_PAIRS: Final = 64
_COMPILE_MIN_BLOCK: Final = 64
_COMBINE_CODE: Final = {"harmonic": 0, "geometric": 1, "min": 2, "product": 3}


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
    """A finite float32 CPU copy of a real array (float64 inputs are rounded once, here)."""
    t = _as_tensor(name, value)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    t = t.to("cpu")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or infinite values")
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} is too large for float32 scoring: it has values beyond 3.4e38")
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


def _exclusion_counts(excl: Tensor | None, n: int, padded: int) -> Tensor:
    """Excluded partners per row (padded,), int64: each may hide one entry from a seed."""
    counts = torch.zeros(padded, dtype=torch.int64)
    if excl is not None:
        counts[:n] = torch.bincount(torch.div(excl, n, rounding_mode="floor"), minlength=n)
    return counts


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
    """The chunk statistic a row's candidates must stay below, float32.

    Rows without a threshold get ``2**98``: that only screens out ineligible pairs.

    The score threshold is lowered by ``2**-22`` relative (float32 rounding of the score) and the
    cutoff raised by ``2**-18 (1 + |cut|)`` (float32 rounding of the statistic), so no entry that
    can score above ``thr`` is ever pruned.
    """
    t = thr.double() * (1.0 - _T_SLACK)
    cut = _log_cutoff(t, combine)
    cut = cut + _STAT_SLACK * (1.0 + cut.abs())
    cut = torch.where(t > 0.0, cut, torch.full_like(cut, _NO_CUT))
    return cut.clamp(max=_NO_CUT).to(torch.float32)


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
    entry's float32 score exceeds. ``-inf`` where ``stat`` is ineligible or the
    bound underflows (a statistic of ``2**98`` or more marks an ineligible pair).
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
    ok = (z < _NO_CUT) & (low > 0.0)
    return torch.where(ok, low, torch.full_like(low, -math.inf)).to(torch.float32)


def _grouping(rows: Tensor) -> Tensor:
    """A permutation that sorts ``rows`` (int64 in ``[0, 2**31)``); ties in any order.

    On the CPU this sorts ``row << 32 | position`` with NumPy, whose vectorised integer sort is
    several times faster than ``torch.sort`` at these sizes; the low bits give the permutation.
    """
    if rows.device.type != "cpu":
        return torch.argsort(rows)
    packed = (rows << 32) | torch.arange(rows.numel(), dtype=torch.int64)
    return torch.from_numpy(np.sort(packed.numpy())) & _LOW32


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
        Candidates per user, ``>= 1``; may exceed ``n - 1`` (rows are then padded).
    group : int array or tensor, shape (n,), optional
        Each user's group in ``[0, 63]``.
    seeks : int64 array or tensor, shape (n,), optional
        Bitmask of the groups each user wants to meet; bit 63 makes the int64 negative, and
        uint64 numpy arrays are read as the same bits. Give both ``group`` and ``seeks`` or
        neither (neither: everyone is eligible).
    exclude : int array or tensor, shape (2, m), optional
        Pairs ``(i, j)`` never to propose, in either direction (blocks, passes, existing
        matches); duplicates and ``i == j`` pairs are harmless.
    combine : {"harmonic", "geometric", "min", "product"}
        How the two one-way probabilities ``p``, ``q`` combine: ``2pq / (p + q)``,
        ``sqrt(pq)``, ``min(p, q)`` or ``pq``.
    block_size : int, optional
        Users per block ``B`` (default 1024 on the CPU, 4096 on CUDA); memory is
        ``O(n k + B^2)``.
    device : str or torch.device, optional
        ``None`` uses CUDA when available, else the CPU; ``"cpu"`` forces the CPU.

    Returns
    -------
    scores : Tensor, shape (n, k), float32, on the CPU
        Reciprocal scores in descending order; ``-inf`` pads rows with fewer than ``k``
        eligible partners.
    indices : Tensor, shape (n, k), int64, on the CPU
        Partner indices in the same order; exact ties go to the lower index; ``-1`` pads.

    Raises
    ------
    ValueError
        On a bad shape, dtype or non-finite value, ``k < 1``, an unknown ``combine``, only one
        of ``group``/``seeks``, a group outside ``[0, 63]``, an exclusion index outside
        ``[0, n)``, inputs large enough to overflow float32 logits, or an unusable device.

    Notes
    -----
    The module docstring states the algorithm and the exact precision and tie contract. For
    the duration of the call torch's float32 matmul precision is ``"highest"`` (it is restored
    afterwards); on the CPU the work is split over ``torch.get_num_threads()`` threads.
    """
    if not isinstance(combine, str) or combine not in COMBINES:
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
    pref32 = _real("pref", pref_t, (n, d))
    bias32 = _real("bias", bias, (n,))
    looks32 = _real("looks", looks, (n, d))
    slot, sought = _eligibility(group, seeks, n)
    excl = _exclusions(exclude, n)
    dev = _resolve_device(device)
    block = _block_size(block_size, dev)
    if n == 0:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.int64)
    norms = [torch.linalg.vector_norm(t, dim=1, dtype=torch.float64).max() for t in (pref32, looks32)]
    reach = float(norms[0] * norms[1] + bias32.abs().max())
    if reach > _MAX_LOGIT:
        raise ValueError(
            f"pref, looks and bias are too large for float32 scoring: logits may reach {reach:.3g}"
        )
    block = min(block, n)
    padded = -(-n // block) * block
    lib = _native() if dev.type == "cpu" else None
    with _ieee_matmul():
        if lib is not None:
            left, right = _augment(pref32, None, looks32, slot, sought, padded)
            run = _run_native(lib, left, right, bias32, n, excl, k, combine, block)
        else:
            left, right = _augment(pref32, bias32, looks32, slot, sought, padded)
            run = _run_torch(left, right, n, excl, k, combine, block, dev)
    scores, indices = _decode(run)
    return scores.cpu(), indices.cpu()


def scoring_backend(*, device: str | torch.device | None = None) -> str:
    """Which engine :func:`reciprocal_topk` uses for ``device``, for reports and benchmarks.

    ``"cpu-native"`` (the compiled C kernel), ``"cpu-torch"`` (no C compiler available) or
    ``"cuda-torch"``. Building the C kernel, if needed, happens here.
    """
    dev = _resolve_device(device)
    if dev.type == "cuda":
        return "cuda-torch"
    return "cpu-native" if _native() is not None else "cpu-torch"


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
    pref: Tensor,
    bias: Tensor | None,
    looks: Tensor,
    slot: Tensor,
    sought: Tensor,
    padded: int,
) -> tuple[Tensor, Tensor]:
    """Row vectors (float32) whose dot products are the logits, eligibility included.

    ``[pref_i, b_i, pen_i] . [looks_j, 1, onehot_j] = pref_i . looks_j + b_i + pen_i[slot_j]``
    with ``pen_i`` 0 for sought groups and ``-2**100`` otherwise; the group columns are left
    out when everyone seeks every group present, and the bias column when ``bias`` is None (the
    C engine adds it itself). Rows are padded with zeros up to ``padded``; with a bias column
    the padding's bias is ``-2**100``, so no pair with padding is ever eligible.
    """
    n, d = pref.shape
    g = 0 if bool(sought.all()) else sought.shape[1]
    nb = 0 if bias is None else 1
    left = torch.zeros(padded, d + nb + g)
    right = torch.zeros(padded, d + nb + g)
    left[:n, :d] = pref
    right[:n, :d] = looks
    if bias is not None:
        left[:n, d] = bias
        left[n:, d] = -_BIG
        right[:n, d] = 1.0
    if g:
        left[:n, d + nb :] = torch.where(sought, 0.0, -_BIG)
        right[torch.arange(n), d + nb + slot] = 1.0
    return left, right


def _logits(left: Tensor, right: Tensor, i0: int, j0: int, block: int, xy: Tensor) -> None:
    """Both directions of block pair ``(I, J)`` into ``xy`` (2, B, B), one GEMM each.

    ``x = left_I right_J^T`` is ``logit p[I, J]``; ``y = right_I left_J^T`` is ``logit p[J, I]``
    laid out like ``x``: entry ``[a, b]`` concerns users ``I_a`` and ``J_b`` in both.
    """
    torch.mm(left[i0 : i0 + block], right[j0 : j0 + block].t(), out=xy[0])
    torch.mm(right[i0 : i0 + block], left[j0 : j0 + block].t(), out=xy[1])


# --------------------------------------------------------------------------- C engine

_C_SOURCE: Final = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The C engine of engine/scoring.py; the statistic, cutoff, floor and key layout mirror the
   torch engine there. Inputs are the float32 logits of one block pair (x: I towards J, y: J
   towards I, both [a, b] = users I_a, J_b) before the biases, which are added here. */
#define HARMONIC 0
#define GEOMETRIC 1
#define MIN 2
#define PRODUCT 3
#define NO_CUT 3.1691265005705735e29f /* 2**98: no threshold yet */
#define T_SLACK 2.384185791015625e-07 /* 2**-22 */
#define STAT_SLACK 3.814697265625e-06 /* 2**-18 */
#define LOW32 0xFFFFFFFFLL
#define SPAN 64 /* entries screened together before any is looked at alone */

typedef struct {
    const float *bias; /* (rows,) float32 */
    int64_t n;         /* real users */
    int64_t *run;      /* (rows, k) keys, descending, -1 = empty */
    float *cut;        /* (rows,) statistic cutoff per row */
    const int64_t *ecount; /* (rows,) excluded partners per row */
    int64_t k;
    int32_t combine;
    const float *ta, *tb; /* tangent lines a - b d under log(1 + exp(-d)), 4 each */
    double gap;           /* how far the statistic may undershoot */
    const int64_t *excl;  /* sorted keys i * n + j of excluded pairs */
    int64_t n_excl;
} state_t;

static inline float lower_softplus(float d, const float *restrict ta, const float *restrict tb) {
    float h = ta[0] - tb[0] * d;
    h = h > 0.0f ? h : 0.0f;
    for (int i = 1; i < 4; i++) {
        float v = ta[i] - tb[i] * d;
        h = v > h ? v : h;
    }
    return h;
}

/* out[t] = statistic of the logits (x[t] + bx, y[t] + by[t]); branch-free so it vectorises. */
static void stats(const float *restrict x, const float *restrict y, float bx,
                  const float *restrict by, int64_t w, const state_t *st, float *restrict out) {
    const float *restrict ta = st->ta, *restrict tb = st->tb;
    if (st->combine == HARMONIC) {
        for (int64_t t = 0; t < w; t++) {
            float p = x[t] + bx, q = y[t] + by[t];
            float m = p < q ? p : q;
            out[t] = lower_softplus(fabsf(p - q), ta, tb) - m;
        }
    } else if (st->combine == MIN) {
        for (int64_t t = 0; t < w; t++) {
            float p = x[t] + bx, q = y[t] + by[t];
            out[t] = -(p < q ? p : q);
        }
    } else {
        for (int64_t t = 0; t < w; t++) {
            float p = x[t] + bx, q = y[t] + by[t];
            float rp = p < 0.0f ? -p : 0.0f, rq = q < 0.0f ? -q : 0.0f;
            out[t] = rp + rq + lower_softplus(fabsf(p), ta, tb) + lower_softplus(fabsf(q), ta, tb);
        }
    }
}

static inline float score(float p, float q, int combine) {
    double u = exp(-(double)p), v = exp(-(double)q);
    double s;
    switch (combine) {
    case HARMONIC: s = 2.0 / (2.0 + u + v); break;
    case MIN: s = 1.0 / (1.0 + (u > v ? u : v)); break;
    case PRODUCT: s = 1.0 / ((1.0 + u) * (1.0 + v)); break;
    default: s = 1.0 / sqrt((1.0 + u) * (1.0 + v)); break;
    }
    return (float)s;
}

/* The statistic an entry must stay below to possibly score above thr: log T(t) with T the
   ratio below. T is formed in double, its log taken in float (off by well under the slack). */
static float cutoff(double thr, int combine) {
    double t = thr * (1.0 - T_SLACK);
    if (!(t > 0.0)) return NO_CUT;
    if (t > 1.0) t = 1.0;
    double r;
    switch (combine) {
    case HARMONIC: r = 2.0 * (1.0 - t) / t; break;
    case PRODUCT: r = 1.0 / t; break;
    case GEOMETRIC: r = 1.0 / (t * t); break;
    default: r = (1.0 - t) / t; break;
    }
    double c = (double)logf((float)r);
    c += STAT_SLACK * (1.0 + fabs(c));
    return c < (double)NO_CUT ? (float)c : NO_CUT;
}

/* A score every entry whose statistic is z exceeds (0 if none is implied). */
static double floor_of(float z, int combine, double gap) {
    double zz = z;
    if (!(zz < (double)NO_CUT)) return 0.0;
    double lt = zz + gap + STAT_SLACK * (1.0 + fabs(zz));
    double big = exp(lt), low;
    switch (combine) {
    case HARMONIC: low = 2.0 / (2.0 + big); break;
    case PRODUCT: low = 1.0 / big; break;
    case GEOMETRIC: low = exp(-0.5 * lt); break;
    default: low = 1.0 / (1.0 + big); break;
    }
    return low * (1.0 - T_SLACK);
}

/* Keep the `cap` smallest values seen in a max-heap h (h[0] the largest kept). */
static void keep_smallest(float *h, int64_t *len, int64_t cap, float v) {
    int64_t i;
    if (*len < cap) {
        i = (*len)++;
        while (i > 0 && h[(i - 1) / 2] < v) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = v;
        return;
    }
    if (!(v < h[0])) return;
    i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= cap) break;
        if (c + 1 < cap && h[c + 1] > h[c]) c++;
        if (!(h[c] > v)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

/* A row without a full list takes a cutoff from one block: of its (k + e) smallest
   statistics, at least k belong to entries that are not excluded, and each of those scores
   above floor_of(the largest of them). */
static float seeded(float cut, const float *h, int64_t len, int64_t need, const state_t *st) {
    if (len < need) return cut;
    double low = floor_of(h[0], st->combine, st->gap);
    if (!(low > 0.0)) return cut;
    float c = cutoff(low, st->combine);
    return c < cut ? c : cut;
}

static inline int64_t make_key(float s, int64_t col) {
    int32_t bits;
    memcpy(&bits, &s, sizeof bits);
    return ((int64_t)bits << 32) | (LOW32 - col);
}

static int excluded(const state_t *st, int64_t pair) {
    int64_t lo = 0, hi = st->n_excl;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (st->excl[mid] < pair) lo = mid + 1;
        else hi = mid;
    }
    return lo < st->n_excl && st->excl[lo] == pair;
}

/* Offer one scored entry to a row's list; returns the row's (possibly lower) cutoff. */
static float offer(const state_t *st, int64_t row, int64_t col, float s, float cut) {
    int64_t k = st->k, *run = st->run + row * k;
    int64_t key = make_key(s, col);
    if (key <= run[k - 1]) return cut;
    if (st->n_excl && excluded(st, row * st->n + col)) return cut;
    int64_t p = k - 1;
    while (p > 0 && run[p - 1] < key) {
        run[p] = run[p - 1];
        p--;
    }
    run[p] = key;
    if (run[k - 1] < 0) return cut;
    float kth;
    int32_t bits = (int32_t)(run[k - 1] >> 32);
    memcpy(&kth, &bits, sizeof kth);
    float c = cutoff(kth, st->combine);
    return c < cut ? c : cut;
}

/* Rows i0 + a, a in [a_lo, a_hi), against columns j0 + b, b in [0, b_end). */
void scan_rows(const float *x, const float *y, int64_t B, int64_t a_lo, int64_t a_hi,
               int64_t b_end, int64_t i0, int64_t j0, int32_t diag, const state_t *st,
               float *buf, float *tmp) {
    /* tmp holds a heap of (k + e) floats; the caller sizes it for the largest such need. */
    const float *by = st->bias + j0;
    for (int64_t a = a_lo; a < a_hi; a++) {
        int64_t row = i0 + a;
        const float *xr = x + a * B, *yr = y + a * B;
        float bx = st->bias[row];
        stats(xr, yr, bx, by, b_end, st, buf);
        if (diag) buf[a] = NO_CUT * 4.0f;
        float c = st->cut[row];
        int64_t need = st->k + st->ecount[row];
        if (st->run[row * st->k + st->k - 1] < 0 && need <= b_end) {
            int64_t len = 0;
            for (int64_t b = 0; b < b_end; b++) keep_smallest(tmp, &len, need, buf[b]);
            c = seeded(c, tmp, len, need, st);
        }
        for (int64_t b0 = 0; b0 < b_end; b0 += SPAN) {
            int64_t e = b0 + SPAN < b_end ? b0 + SPAN : b_end;
            int any = 0;
            for (int64_t b = b0; b < e; b++) any |= buf[b] < c;
            if (!any) continue;
            for (int64_t b = b0; b < e; b++)
                if (buf[b] < c) c = offer(st, row, j0 + b, score(xr[b] + bx, yr[b] + by[b], st->combine), c);
        }
        st->cut[row] = c;
    }
}

/* Rows j0 + b, b in [b_lo, b_hi), against columns i0 + a, a in [0, a_end): the block read
   down its columns, one row-major strip at a time. Rows without a full list are first seeded
   from their whole column. */
void scan_cols(const float *x, const float *y, int64_t B, int64_t b_lo, int64_t b_hi,
               int64_t a_end, int64_t i0, int64_t j0, const state_t *st, float *buf) {
    int64_t w = b_hi - b_lo, k = st->k, fresh = 0;
    const float *by = st->bias + j0 + b_lo;
    float *cut = st->cut + j0 + b_lo;
    int64_t total = 0;
    for (int64_t t = 0; t < w; t++) {
        int64_t need = k + st->ecount[j0 + b_lo + t];
        if (st->run[(j0 + b_lo + t) * k + k - 1] < 0 && need <= a_end) {
            fresh++;
            total += need;
        }
    }
    if (fresh) {
        /* Seed those rows' cutoffs from their whole column, one heap per column. */
        int64_t *which = malloc((size_t)fresh * 3 * sizeof *which);
        float *heaps = malloc((size_t)total * sizeof *heaps);
        if (which && heaps) {
            int64_t *need = which + fresh, *len = which + 2 * fresh, f = 0, at = 0;
            for (int64_t t = 0; t < w; t++) {
                int64_t nd = k + st->ecount[j0 + b_lo + t];
                if (st->run[(j0 + b_lo + t) * k + k - 1] < 0 && nd <= a_end) {
                    which[f] = t;
                    need[f] = nd;
                    len[f] = 0;
                    f++;
                }
            }
            for (int64_t a = 0; a < a_end; a++) {
                stats(x + a * B + b_lo, y + a * B + b_lo, st->bias[i0 + a], by, w, st, buf);
                at = 0;
                for (f = 0; f < fresh; f++) {
                    keep_smallest(heaps + at, len + f, need[f], buf[which[f]]);
                    at += need[f];
                }
            }
            at = 0;
            for (f = 0; f < fresh; f++) {
                cut[which[f]] = seeded(cut[which[f]], heaps + at, len[f], need[f], st);
                at += need[f];
            }
        }
        free(which);
        free(heaps);
    }
    for (int64_t a = 0; a < a_end; a++) {
        const float *xr = x + a * B + b_lo, *yr = y + a * B + b_lo;
        float bx = st->bias[i0 + a];
        stats(xr, yr, bx, by, w, st, buf);
        for (int64_t t0 = 0; t0 < w; t0 += SPAN) {
            int64_t e = t0 + SPAN < w ? t0 + SPAN : w;
            int any = 0;
            for (int64_t t = t0; t < e; t++) any |= buf[t] < cut[t];
            if (!any) continue;
            for (int64_t t = t0; t < e; t++)
                if (buf[t] < cut[t])
                    cut[t] = offer(st, j0 + b_lo + t, i0 + a, score(xr[t] + bx, yr[t] + by[t], st->combine), cut[t]);
        }
    }
}
"""

_native_lock = threading.Lock()
_native_lib: list[ctypes.CDLL | None] = []


def _native() -> ctypes.CDLL | None:
    """The C engine, built on first use in a private temporary directory; None if unavailable.

    Compiling per process (well under a second) avoids trusting a shared cache of shared
    objects. Any failure (no compiler, a compiler error) is logged once and the torch engine
    takes over.
    """
    with _native_lock:
        if not _native_lib:
            lib = None
            try:
                lib = _build_native()
            except (OSError, subprocess.SubprocessError) as exc:
                _log.warning("C scoring kernel unavailable, using the torch engine: %s", exc)
            _native_lib.append(lib)
        return _native_lib[0]


def _build_native() -> ctypes.CDLL:
    compiler = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or "cc"]
    base = ["-O3", "-fno-math-errno", "-fPIC", "-shared"]
    with tempfile.TemporaryDirectory(prefix="matchsvc-scoring-", ignore_cleanup_errors=True) as tmp:
        src = Path(tmp) / "scoring.c"
        out = Path(tmp) / "scoring.so"
        src.write_text(_C_SOURCE)
        errors = ""
        # -march=native first (AVX2/FMA where present); plain flags if the compiler refuses it.
        for flags in (["-march=native", *base], base):
            done = subprocess.run(
                [*compiler, *flags, "-o", str(out), str(src), "-lm"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if done.returncode == 0:
                break
            errors = done.stderr.strip()[-500:]
        else:
            raise OSError(f"{' '.join(compiler)} failed: {errors}")
        lib = ctypes.CDLL(str(out))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    state = ctypes.POINTER(_NativeState)
    lib.scan_rows.restype = None
    lib.scan_rows.argtypes = [p, p, i64, i64, i64, i64, i64, i64, i32, state, p, p]
    lib.scan_cols.restype = None
    lib.scan_cols.argtypes = [p, p, i64, i64, i64, i64, i64, i64, state, p]
    return lib


class _NativeState(ctypes.Structure):
    """Mirror of ``state_t`` in the C source: the per-row lists and what scoring needs."""

    _fields_ = [
        ("bias", ctypes.c_void_p),
        ("n", ctypes.c_int64),
        ("run", ctypes.c_void_p),
        ("cut", ctypes.c_void_p),
        ("ecount", ctypes.c_void_p),
        ("k", ctypes.c_int64),
        ("combine", ctypes.c_int32),
        ("ta", ctypes.c_void_p),
        ("tb", ctypes.c_void_p),
        ("gap", ctypes.c_double),
        ("excl", ctypes.c_void_p),
        ("n_excl", ctypes.c_int64),
    ]


def _run_native(
    lib: ctypes.CDLL,
    left: Tensor,
    right: Tensor,
    bias: Tensor,
    n: int,
    excl: Tensor | None,
    k: int,
    combine: str,
    block: int,
) -> Tensor:
    """All block pairs through the C kernel; returns the (n, k) descending key lists.

    Per pair, two GEMMs, then each of ``T = torch.get_num_threads()`` workers (this thread and
    ``T - 1`` pool threads) scans a share of rows ``I`` along the block and a share of rows ``J``
    down it. Those row sets are disjoint, so no two workers write the same row; ctypes releases
    the GIL for the scans.
    """
    padded = left.shape[0]
    nb = padded // block
    bias32 = torch.zeros(padded, dtype=torch.float32)
    bias32[:n] = bias
    run = torch.full((padded, k), -1, dtype=torch.int64)
    cut = torch.full((padded,), _NO_CUT, dtype=torch.float32)
    ecount = _exclusion_counts(excl, n, padded)
    excl_t = excl if excl is not None else torch.zeros(1, dtype=torch.int64)
    ta = torch.tensor([a for a, _ in _TANGENTS], dtype=torch.float32)
    tb = torch.tensor([b for _, b in _TANGENTS], dtype=torch.float32)
    state = _NativeState(
        bias32.data_ptr(), n, run.data_ptr(), cut.data_ptr(), ecount.data_ptr(), k,
        _COMBINE_CODE[combine], ta.data_ptr(), tb.data_ptr(), _STAT_GAP[combine],
        excl_t.data_ptr(), 0 if excl is None else excl.numel(),
    )
    state_at = ctypes.byref(state)
    xy = torch.empty(2, block, block)
    x_at, y_at = xy[0].data_ptr(), xy[1].data_ptr()
    workers = max(1, min(torch.get_num_threads(), block))
    bufs = [(torch.empty(block), torch.empty(block)) for _ in range(workers)]

    def scan(w: int, i0: int, j0: int, a_end: int, b_end: int) -> None:
        buf, tmp = bufs[w][0].data_ptr(), bufs[w][1].data_ptr()
        a_lo, a_hi = a_end * w // workers, a_end * (w + 1) // workers
        lib.scan_rows(x_at, y_at, block, a_lo, a_hi, b_end, i0, j0, int(i0 == j0), state_at, buf, tmp)
        if i0 != j0:
            b_lo, b_hi = b_end * w // workers, b_end * (w + 1) // workers
            lib.scan_cols(x_at, y_at, block, b_lo, b_hi, a_end, i0, j0, state_at, buf)

    pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="scoring") if workers > 1 else None
    # Diagonal blocks first: each row's first block is its own, read along its rows, where
    # seeding a cutoff for rows without a full list is cheapest.
    pairs = [(bi, bi) for bi in range(nb)] + [(bi, bj) for bi in range(nb) for bj in range(bi + 1, nb)]
    try:
        for bi, bj in pairs:
            i0, j0 = bi * block, bj * block
            a_end, b_end = min(block, n - i0), min(block, n - j0)
            _logits(left, right, i0, j0, block, xy)
            # Worker 0 is this thread; the pool runs the others alongside it.
            others = [pool.submit(scan, w, i0, j0, a_end, b_end) for w in range(1, workers)] if pool else []
            scan(0, i0, j0, a_end, b_end)
            for job in others:
                job.result()
    finally:
        if pool is not None:
            pool.shutdown()
    return run[:n]


# --------------------------------------------------------------------------- torch engine


# A cheap elementwise lower bound on the log-statistic ``log T`` of each pair, where the score
# is ``s = 2 / (2 + T)`` (harmonic, ``T = u + v``), ``1 / T`` (product), ``T ** -0.5``
# (geometric, both ``T = (1 + u)(1 + v)``) or ``1 / (1 + T)`` (min, ``T = max(u, v)``), with
# ``u = exp(-x)`` and ``v = exp(-y)``. No exp is taken: ``log(1 + exp(-d))`` is replaced by the
# envelope of a few tangents, which undershoots by at most ``_STAT_GAP``. An ineligible pair
# has a logit near ``-2**100`` and so a statistic of at least ``2**99`` (``+inf`` on the
# diagonal), above every cutoff.


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
    bound on the row's final k-th score: nothing scoring ``<= thr`` can enter the result.
    """

    def __init__(self, rows: int, real: int, k: int, combine: str, device: torch.device) -> None:
        self.k = k
        self.combine = combine
        self.run = torch.full((rows, k), -1, dtype=torch.int64, device=device)
        self.pend = torch.full((rows, _PENDING), -1, dtype=torch.int64, device=device)
        self.fill = torch.zeros(rows, dtype=torch.int64, device=device)
        self.thr = torch.full((rows,), -math.inf, dtype=torch.float32, device=device)
        self.cut = torch.full((rows,), _NO_CUT, dtype=torch.float32, device=device)
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
        """Add candidates (``rows`` in any order) to the rows' pending slots."""
        order = _grouping(rows)
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

    def finish(self, n: int) -> Tensor:
        """Merge what is still pending; the (n, k) descending key lists."""
        rows = torch.nonzero(self.fill[:n] > 0)[:, 0]
        for start in range(0, rows.numel(), 65536):
            self._merge(rows[start : start + 65536], None)
        return self.run[:n]



def _chunk_for(block: int) -> int:
    return next(c for c in (8, 4, 2, 1) if block % c == 0)


def _run_torch(
    left: Tensor,
    right: Tensor,
    n: int,
    excl: Tensor | None,
    k: int,
    combine: str,
    block: int,
    dev: torch.device,
) -> Tensor:
    """All block pairs as torch operations; returns the (n, k) descending key lists."""
    padded = left.shape[0]
    nb = padded // block
    chunk = _chunk_for(block)
    left, right = left.to(dev), right.to(dev)
    extra = _exclusion_counts(excl, n, padded).to(dev)
    if excl is not None:
        excl = excl.to(dev)
    state = _TopK(padded, n, k, combine, dev)
    xy = torch.empty(2, block, block, device=dev)
    x, y = xy[0], xy[1]
    x_chunks, y_chunks = x.view(-1, chunk), y.view(-1, chunk)
    x_flat, y_flat = x.view(-1), y.view(-1)
    per_row = block // chunk
    worth_it = block >= _COMPILE_MIN_BLOCK and nb * (nb + 1) // 2 >= _COMPILE_PAIRS
    chunk_pass = _chunk_pass(combine, dev, block, chunk, compile_it=worth_it)
    # Flat offsets of one column chunk's entries: chunk ``h`` of column ``b`` starts at h*c*B + b.
    down = torch.arange(chunk, device=dev) * block
    local = torch.arange(block, device=dev)
    found: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    held = 0
    for bi in range(nb):
        i0 = bi * block
        for bj in range(bi, nb):
            j0 = bj * block
            _logits(left, right, i0, j0, block, xy)
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
    s = _score64(xs, ys, state.combine).float()
    keep = torch.nonzero(s > state.thr.index_select(0, r))[:, 0]
    r, c, s = r.index_select(0, keep), c.index_select(0, keep), s.index_select(0, keep)
    if excl is not None:
        pair = r * n + c
        pos = torch.searchsorted(excl, pair).clamp_(max=excl.numel() - 1)
        keep = torch.nonzero(excl.index_select(0, pos) != pair)[:, 0]
        r, c, s = r.index_select(0, keep), c.index_select(0, keep), s.index_select(0, keep)
    if r.numel():
        state.insert(r, _keys(s, c))
