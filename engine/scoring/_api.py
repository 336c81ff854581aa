"""``reciprocal_topk``: validation, the engine choice, and the eligibility-augmented inputs.

The arithmetic lives in ``_bounds``, the CPU engine in ``_native`` (the C kernel built at
install time), the CUDA engine in ``_torch``; the algorithm and the precision contract are
stated in the package docstring.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Final, TypeVar

import numpy as np
import torch
from torch import Tensor

from engine._validation import InvalidInputError
from engine.scoring._blocks import group_order, meeting_blocks, skipped_share, visit_order
from engine.scoring._bounds import BIG, COMBINES, MAX_LOGIT, unpack_keys
from engine.scoring._native import load_kernel, run_native
from engine.scoring._torch import run_torch

__all__ = ["ArrayT", "cores_given", "cpu_threads", "pairs_skipped", "reciprocal_topk", "scoring_backend"]

#: numpy arrays in, numpy arrays out; tensors in, tensors out.
ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)
_MAX_USERS: Final = 2**31 - 1
_DEFAULT_BLOCK: Final = {"cpu": 1024, "cuda": 4096}


def _as_tensor(name: str, value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint64:
            # A seeks mask with bit 63 set is a negative int64; uint64 holds the same bits.
            value = value.view(np.int64)
        if value.dtype == object or value.dtype.kind not in "biuf":
            raise InvalidInputError(f"{name} must be a numeric array, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    raise InvalidInputError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _real(name: str, value: object, shape: tuple[int, ...]) -> Tensor:
    """A finite float32 CPU copy of a real array (float64 inputs are rounded once, here)."""
    t = _as_tensor(name, value)
    if t.dtype == torch.bool or t.is_complex():
        raise InvalidInputError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if tuple(t.shape) != shape:
        raise InvalidInputError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    t = t.to("cpu")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise InvalidInputError(f"{name} must be finite; it holds NaN or infinite values")
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise InvalidInputError(f"{name} is too large for float32 scoring: it has values beyond 3.4e38")
    return t


def _integer(name: str, value: object, ndim: int) -> Tensor:
    t = _as_tensor(name, value)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise InvalidInputError(f"{name} must hold integers, got dtype {t.dtype}")
    if t.dim() != ndim:
        raise InvalidInputError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t.to(device="cpu", dtype=torch.int64)


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"device must be None, 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {device!r} requested but CUDA is not available")
        return dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
    if dev.type != "cpu":
        raise InvalidInputError(f"device must be None, 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def _block_size(block_size: object, device: torch.device) -> int:
    if block_size is None:
        return _DEFAULT_BLOCK[device.type]
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise InvalidInputError(f"block_size must be a positive int or None, got {block_size!r}")
    if block_size < 1:
        raise InvalidInputError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)


def _eligibility(group: object, seeks: object, n: int) -> tuple[Tensor, Tensor]:
    """Each user's slot among the groups present (n,) and whom they seek (n, G) as bools."""
    if (group is None) != (seeks is None):
        raise InvalidInputError("group and seeks must be given together (both None: all eligible)")
    if group is None:
        return torch.zeros(n, dtype=torch.int64), torch.ones(n, 1, dtype=torch.bool)
    g = _integer("group", group, 1)
    s = _integer("seeks", seeks, 1)
    if tuple(g.shape) != (n,):
        raise InvalidInputError(f"group must have shape ({n},), got {tuple(g.shape)}")
    if tuple(s.shape) != (n,):
        raise InvalidInputError(f"seeks must have shape ({n},), got {tuple(s.shape)}")
    if n and (int(g.min()) < 0 or int(g.max()) > 63):
        bad = int(g.min()) if int(g.min()) < 0 else int(g.max())
        raise InvalidInputError(f"group values must lie in [0, 63], got {bad}")
    present, slot = torch.unique(g, return_inverse=True)
    # An arithmetic shift of a negative int64 still brings bit 63 down to bit 0.
    sought = ((s[:, None] >> present[None, :]) & 1).bool()
    return slot, sought


def _exclusions(exclude: object, n: int, rank: Tensor | None) -> Tensor | None:
    """Sorted unique keys ``i * n + j`` of excluded ordered pairs, both directions, or None.

    With ``rank`` (each user's position in the scoring order) the keys are in that order.
    """
    if exclude is None:
        return None
    e = _integer("exclude", exclude, 2)
    if e.shape[0] != 2:
        raise InvalidInputError(f"exclude must have shape (2, m), got {tuple(e.shape)}")
    if e.shape[1] == 0:
        return None
    lo, hi = int(e.min()), int(e.max())
    if lo < 0 or hi >= n:
        raise InvalidInputError(f"exclude holds user index {lo if lo < 0 else hi}, outside [0, {n})")
    i, j = e[0], e[1]
    keep = i != j
    i, j = i[keep], j[keep]
    if i.numel() == 0:
        return None
    if rank is not None:
        i, j = rank[i], rank[j]
    return torch.unique(torch.cat([i * n + j, j * n + i]))


def reciprocal_topk(
    pref: ArrayT,
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
) -> tuple[ArrayT, ArrayT]:
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
    scores : array or tensor, shape (n, k), float32
        Reciprocal scores in descending order; ``-inf`` pads rows with fewer than ``k``
        eligible partners.
    indices : array or tensor, shape (n, k), int64
        Partner indices in the same order; exact ties go to the lower index; ``-1`` pads.

    Both are numpy arrays when ``pref`` is one and tensors on ``pref``'s device when it is a
    tensor (faiss's convention), whatever ``device`` computed them.

    Raises
    ------
    InvalidInputError
        On a bad shape, dtype or non-finite value, ``k < 1``, an unknown ``combine``, only one
        of ``group``/``seeks``, a group outside ``[0, 63]``, an exclusion index outside
        ``[0, n)``, inputs large enough to overflow float32 logits, or an unusable device.

    Notes
    -----
    The package docstring states the algorithm and the exact precision and tie contract. For
    the duration of the call torch's float32 matmul precision is ``"highest"`` (it is restored
    afterwards); on the CPU the work is split over :func:`cpu_threads` threads.
    """
    if not isinstance(combine, str) or combine not in COMBINES:
        raise InvalidInputError(f"combine must be one of {', '.join(COMBINES)}; got {combine!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidInputError(f"k must be an int >= 1, got {k!r}")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    k = int(k)
    pref_t = _as_tensor("pref", pref)
    if pref_t.dim() != 2:
        raise InvalidInputError(f"pref must be 2-D (n, d), got shape {tuple(pref_t.shape)}")
    n, d = (int(s) for s in pref_t.shape)
    if d < 1:
        raise InvalidInputError(f"pref must have at least one latent dimension, got shape {(n, d)}")
    if n > _MAX_USERS:
        raise InvalidInputError(f"at most {_MAX_USERS} users are supported, got {n}")
    pref32 = _real("pref", pref_t, (n, d))
    bias32 = _real("bias", bias, (n,))
    looks32 = _real("looks", looks, (n, d))
    slot, sought = _eligibility(group, seeks, n)
    # Users are scored in group order, so that whole block pairs that cannot meet are skipped;
    # keys carry the caller's indices (``label``), so results and ties do not depend on it.
    order = group_order(slot) if group is not None else None
    rank = None
    if order is not None:
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n)
        pref32, bias32, looks32, slot, sought = (t[order] for t in (pref32, bias32, looks32, slot, sought))
    excl = _exclusions(exclude, n, rank)
    dev = _resolve_device(device)
    block = _block_size(block_size, dev)
    if n == 0:
        return _like(pref, torch.empty(0, k), torch.empty(0, k, dtype=torch.int64))
    norms = [torch.linalg.vector_norm(t, dim=1, dtype=torch.float64).max() for t in (pref32, looks32)]
    reach = float(norms[0] * norms[1] + bias32.abs().max())
    if reach > MAX_LOGIT:
        raise InvalidInputError(
            f"pref, looks and bias are too large for float32 scoring: logits may reach {reach:.3g}"
        )
    block = min(block, n)
    padded = -(-n // block) * block
    pairs = visit_order(meeting_blocks(slot, sought, block))
    label = order if order is not None else torch.arange(n)
    lib = load_kernel() if dev.type == "cpu" else None
    with _ieee_matmul():
        if lib is not None:
            left, right = _augment(pref32, None, looks32, slot, sought, padded)
            threads = cpu_threads()
            run = run_native(lib, left, right, bias32, n, excl, k, combine, block, threads, pairs, label)
        else:
            left, right = _augment(pref32, bias32, looks32, slot, sought, padded)
            run = run_torch(left, right, n, excl, k, combine, block, dev, pairs, label)
    if order is not None:
        run = torch.empty_like(run).index_copy_(0, order.to(run.device), run)
    return _like(pref, *unpack_keys(run))


def pairs_skipped(
    group: np.ndarray | Tensor,
    seeks: np.ndarray | Tensor,
    *,
    block_size: int | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Share of ordered pairs of distinct users :func:`reciprocal_topk` never computes.

    With the same ``group``, ``seeks``, ``block_size`` and ``device`` as the call it describes:
    users are scored in group order and a block pair is skipped when, in one direction or the
    other, no user of one block seeks a group present in the other. Every skipped pair is
    ineligible; pairs in visited blocks are computed whether eligible or not. For reports
    (``pairs_scored = n (n - 1) (1 - share)``). Raises :class:`InvalidInputError` as
    :func:`reciprocal_topk` does for these arguments.
    """
    n = int(_integer("group", group, 1).shape[0])
    slot, sought = _eligibility(group, seeks, n)
    block = _block_size(block_size, _resolve_device(device))
    if n < 2:
        return 0.0
    order = group_order(slot)
    block = min(block, n)
    return skipped_share(meeting_blocks(slot[order], sought[order], block), n, block)


def _like(pref: ArrayT, scores: Tensor, indices: Tensor) -> tuple[ArrayT, ArrayT]:
    """The result in the caller's kind: numpy arrays for a numpy ``pref``, else tensors beside it."""
    if isinstance(pref, Tensor):
        return scores.to(pref.device), indices.to(pref.device)
    return scores.cpu().numpy(), indices.cpu().numpy()


def cores_given() -> int:
    """CPU cores this process may run on: its affinity mask (``taskset``, a container's
    ``--cpuset-cpus``), or the OS's count where there is none."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads() -> int:
    """Threads the CPU engine scans with: torch's intra-op count, at most :func:`cores_given`.

    ``torch.set_num_threads`` lowers it, for instance to one thread in benchmarks.
    """
    return max(1, min(torch.get_num_threads(), cores_given()))


def scoring_backend(*, device: str | torch.device | None = None) -> str:
    """Which engine :func:`reciprocal_topk` uses for ``device``, for reports and benchmarks.

    ``"cpu-native"`` (the C kernel built at install time), ``"cpu-torch"`` (the package was
    not installed through its build, so the kernel is missing) or ``"cuda-torch"``.
    """
    dev = _resolve_device(device)
    if dev.type == "cuda":
        return "cuda-torch"
    return "cpu-native" if load_kernel() is not None else "cpu-torch"


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
        left[n:, d] = -BIG
        right[:n, d] = 1.0
    if g:
        left[:n, d + nb :] = torch.where(sought, 0.0, -BIG)
        right[torch.arange(n), d + nb + slot] = 1.0
    return left, right
