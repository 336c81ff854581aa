"""The CPU engine: the C kernel in ``_native.c``, built at install time, driven block by block.

Per block pair two torch GEMMs give both directions' logits; the kernel then fuses the
statistic, the cutoff test, exact scoring and the per-row top-k insert into one pass per
direction, lets every row's cutoff rise entry by entry, and meets every row's own diagonal
block first, where seeding a cutoff is cheapest. The kernel is a file built by setuptools when
the package is installed (``pip install .`` or ``pip install -e .``; the Docker image builds it
in its build stage), so nothing is compiled at run time (docs/decisions.md, D22).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from engine.scoring._bounds import COMBINE_CODE, NO_CUT, STAT_GAP, TANGENTS, exclusion_counts, logits

__all__ = ["load_kernel", "run_native"]

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded: list[ctypes.CDLL | None] = []
#: ``kernel_abi()`` of a kernel whose ``state_t`` matches :class:`_NativeState`.
_ABI = 2


def load_kernel() -> ctypes.CDLL | None:
    """The built kernel, loaded once per process; None (logged once) when it was not built.

    It is missing only where the package was not installed through its build (a bare source
    tree on ``PYTHONPATH``); the torch engine then serves the CPU, several times slower.
    """
    with _lock:
        if not _loaded:
            lib = None
            try:
                module = importlib.import_module("engine.scoring._kernel")
                lib = _bind(ctypes.CDLL(module.__file__))
            except (ImportError, OSError) as exc:
                _log.warning(
                    "the scoring kernel is not built (reinstall with `pip install -e .`); "
                    "the slower torch engine serves the CPU: %s",
                    exc,
                )
            _loaded.append(lib)
        return _loaded[0]


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """The kernel's entry points typed, or OSError for a file built from older sources."""
    if not hasattr(lib, "kernel_abi") or lib.kernel_abi() != _ABI:
        raise OSError("the built kernel predates these sources (its state layout differs)")
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    state = ctypes.POINTER(_NativeState)
    lib.scan_rows.restype = None
    lib.scan_rows.argtypes = [p, p, i64, i64, i64, i64, i64, i64, i32, state, p, p]
    lib.scan_cols.restype = None
    lib.scan_cols.argtypes = [p, p, i64, i64, i64, i64, i64, i64, state, p]
    return lib


class _NativeState(ctypes.Structure):
    """Mirror of ``state_t`` in ``_native.c``: the per-row lists and what scoring needs."""

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
        ("label", ctypes.c_void_p),
    ]


def run_native(
    lib: ctypes.CDLL,
    left: Tensor,
    right: Tensor,
    bias: Tensor,
    n: int,
    excl: Tensor | None,
    k: int,
    combine: str,
    block: int,
    workers: int,
    pairs: list[tuple[int, int]],
    label: Tensor,
) -> Tensor:
    """The block ``pairs`` through the C kernel; returns the (n, k) descending key lists.

    Keys hold ``label[column]`` (int64, (n,)), the caller's index of each user, so ties go to
    the lower label. Per pair, two GEMMs, then each of ``workers`` threads (this thread and
    ``workers - 1`` pool threads) scans a share of rows ``I`` along the block and a share of rows ``J``
    down it. Those row sets are disjoint, so no two workers write the same row; ctypes releases
    the GIL for the scans.
    """
    padded = left.shape[0]
    bias32 = torch.zeros(padded, dtype=torch.float32)
    bias32[:n] = bias
    run = torch.full((padded, k), -1, dtype=torch.int64)
    cut = torch.full((padded,), NO_CUT, dtype=torch.float32)
    ecount = exclusion_counts(excl, n, padded)
    excl_t = excl if excl is not None else torch.zeros(1, dtype=torch.int64)
    ta = torch.tensor([a for a, _ in TANGENTS], dtype=torch.float32)
    tb = torch.tensor([b for _, b in TANGENTS], dtype=torch.float32)
    label = label.to(torch.int64).contiguous()
    state = _NativeState(
        bias32.data_ptr(), n, run.data_ptr(), cut.data_ptr(), ecount.data_ptr(), k,
        COMBINE_CODE[combine], ta.data_ptr(), tb.data_ptr(), STAT_GAP[combine],
        excl_t.data_ptr(), 0 if excl is None else excl.numel(), label.data_ptr(),
    )
    state_at = ctypes.byref(state)
    xy = torch.empty(2, block, block)
    x_at, y_at = xy[0].data_ptr(), xy[1].data_ptr()
    workers = max(1, min(workers, block))
    bufs = [(torch.empty(block), torch.empty(block)) for _ in range(workers)]

    def scan(w: int, i0: int, j0: int, a_end: int, b_end: int) -> None:
        buf, tmp = bufs[w][0].data_ptr(), bufs[w][1].data_ptr()
        a_lo, a_hi = a_end * w // workers, a_end * (w + 1) // workers
        lib.scan_rows(x_at, y_at, block, a_lo, a_hi, b_end, i0, j0, int(i0 == j0), state_at, buf, tmp)
        if i0 != j0:
            b_lo, b_hi = b_end * w // workers, b_end * (w + 1) // workers
            lib.scan_cols(x_at, y_at, block, b_lo, b_hi, a_end, i0, j0, state_at, buf)

    pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="scoring") if workers > 1 else None
    # ``pairs`` come diagonal blocks first: each row's first block is its own, read along its
    # rows, where seeding a cutoff for rows without a full list is cheapest.
    try:
        for bi, bj in pairs:
            i0, j0 = bi * block, bj * block
            a_end, b_end = min(block, n - i0), min(block, n - j0)
            logits(left, right, i0, j0, block, xy)
            # Worker 0 is this thread; the pool runs the others alongside it.
            others = [pool.submit(scan, w, i0, j0, a_end, b_end) for w in range(1, workers)] if pool else []
            scan(0, i0, j0, a_end, b_end)
            for job in others:
                job.result()
    finally:
        if pool is not None:
            pool.shutdown()
    return run[:n]
