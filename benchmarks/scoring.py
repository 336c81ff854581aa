"""Batch reciprocal scoring against its floors: a bare blocked GEMM and FAISS exact search.

For each ``(n, d)`` the benchmark times, in this process and on the same thread count:

* ``reciprocal_topk``: :func:`engine.scoring.reciprocal_topk` (default harmonic combine, default
  block size), both directions, top ``k``.
* ``gemm_floor``: the one-directional logits ``pref_I @ looks_J^T + b_I`` for every block pair,
  blocked like ``reciprocal_topk`` and written into one reused ``B x B`` buffer: the matrix
  work any exact method must do, with no scoring and no selection.
* ``faiss_flat_ip``: FAISS ``IndexFlatIP`` exact top ``k`` of ``pref . looks`` (one direction,
  so half the semantic work; the per-user bias does not change a row's ranking).
* ``dense_reference``: the naive dense ``n x n`` harmonic reciprocal matrix and ``torch.topk``,
  only where its float32 matrices fit comfortably in memory; ``index_agreement`` is the share
  of top-``k`` indices it shares with ``reciprocal_topk`` (float32 near-ties may differ).

Every method runs on ``threads`` CPU threads (default one, where the targets are stated); a
``threads_row`` per case repeats ``reciprocal_topk`` and FAISS on all the cores the process is
given (``os.sched_getaffinity``) and reports their speed-ups. Seconds are medians over
``repeats`` warm runs (after one untimed run); ratios divide those medians, so they compare like
with like on a shared machine. ``cold_seconds`` is one run in a
fresh process, compile and build steps included. ``peak_memory_bytes`` is measured in that
fresh process too: on the CPU the growth of the peak resident set (``VmHWM``, reset just before
with ``/proc/self/clear_refs``; ``ru_maxrss`` elsewhere) over the method's set-up and one call,
with the inputs already allocated, so it counts every allocator (torch, FAISS, the C kernel's
buffers) and code loaded on the way; on CUDA the growth of ``torch.cuda.max_memory_allocated``,
which sees the torch allocator only.

Data: appearance latents from the standard normal prior clipped to the valid box, preference
directions ``N(0, 4/d)`` per coordinate (logits of standard deviation about 2, as fitted
preferences give), intercepts ``N(0, 0.25)``; float32, one seed for every method.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from engine.latent.base import PRIOR_BOUND
from engine.scoring import cores_given, reciprocal_topk, scoring_backend
from benchmarks._timing import median_seconds

__all__ = ["run_scoring_benchmark"]

_METHODS = ("reciprocal_topk", "gemm_floor", "faiss_flat_ip", "dense_reference")
# The dense reference holds about three float32 n x n matrices; it runs only when those fit
# within this budget and a quarter of the memory available now.
_DENSE_BUDGET_BYTES = 4 << 30


def _inputs(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    looks = np.clip(rng.standard_normal((n, d)), -PRIOR_BOUND, PRIOR_BOUND).astype(np.float32)
    pref = (rng.standard_normal((n, d)) * (2.0 / math.sqrt(d))).astype(np.float32)
    bias = (rng.standard_normal(n) * 0.5).astype(np.float32)
    return pref, bias, looks


def _default_block(device: torch.device) -> int:
    return 4096 if device.type == "cuda" else 1024


def _gemm_floor(pref: np.ndarray, bias: np.ndarray, looks: np.ndarray, device: torch.device) -> Callable[[], object]:
    block = _default_block(device)
    p = torch.from_numpy(pref).to(device)
    b = torch.from_numpy(bias).to(device)
    lt = torch.from_numpy(looks).to(device).t().contiguous()
    n = p.shape[0]
    out = torch.empty(block, block, device=device)

    def floor() -> None:
        for i in range(0, n, block):
            rows = min(block, n - i)
            for j in range(0, n, block):
                cols = min(block, n - j)
                torch.addmm(b[i : i + rows, None], p[i : i + rows], lt[:, j : j + cols], out=out[:rows, :cols])
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return floor


def _faiss(pref: np.ndarray, looks: np.ndarray, k: int) -> Callable[[], object]:
    import faiss  # optional (the "bench" extra); imported only when benchmarking

    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(looks.shape[1])
    index.add(looks)
    return lambda: index.search(pref, k)


def _dense(
    pref: np.ndarray, bias: np.ndarray, looks: np.ndarray, k: int, device: torch.device
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    p = torch.from_numpy(pref).to(device)
    b = torch.from_numpy(bias).to(device)
    lk = torch.from_numpy(looks).to(device)

    def dense() -> tuple[np.ndarray, np.ndarray]:
        prob = torch.sigmoid(torch.addmm(b[:, None], p, lk.t()))
        s = 2 * prob * prob.t() / (prob + prob.t())
        s.fill_diagonal_(-math.inf)
        top = torch.topk(s, min(k, s.shape[0]), dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return top.values.cpu().numpy(), top.indices.cpu().numpy()

    return dense


def _available_memory() -> int:
    """Bytes of physical memory free now, or 0 where the OS does not say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def _dense_skip_reason(n: int) -> str | None:
    need = 3 * 4 * n * n
    available = _available_memory()
    budget = min(_DENSE_BUDGET_BYTES, available // 4) if available else _DENSE_BUDGET_BYTES
    if need > budget:
        return f"needs about {need / 2**30:.1f} GiB for three n x n float32 matrices; budget {budget / 2**30:.1f} GiB"
    return None


def _method(
    name: str, pref: np.ndarray, bias: np.ndarray, looks: np.ndarray, k: int, device: torch.device
) -> Callable[[], object]:
    if name == "reciprocal_topk":
        return lambda: reciprocal_topk(pref, bias, looks, k, device=device)
    if name == "gemm_floor":
        return _gemm_floor(pref, bias, looks, device)
    if name == "faiss_flat_ip":
        return _faiss(pref, looks, k)
    return _dense(pref, bias, looks, k, device)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_bytes() -> int:
    """The process's peak resident set so far (``VmHWM`` on Linux, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _reset_peak_rss() -> None:
    """Lower the peak resident set to the current one (Linux ``clear_refs``), so the peak
    measured next belongs to what runs next rather than to earlier temporaries. Where that is
    unavailable the later growth is a lower bound."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass


def _fresh_run(name: str, n: int, d: int, k: int, seed: int, device: str, threads: int) -> dict[str, float]:
    """One call in this (fresh) process: cold seconds, and the peak memory that the method's
    set-up (index, buffers) and the call added on top of the inputs."""
    torch.set_num_threads(threads)
    dev = torch.device(device)
    pref, bias, looks = _inputs(n, d, seed)
    if dev.type == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        _reset_peak_rss()
        base = _peak_rss_bytes()
    call = _method(name, pref, bias, looks, k, dev)
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    grown = torch.cuda.max_memory_allocated(dev) - base if dev.type == "cuda" else _peak_rss_bytes() - base
    return {"cold_seconds": seconds, "peak_memory_bytes": max(0, int(grown))}


def _in_fresh_process(name: str, n: int, d: int, k: int, seed: int, device: torch.device) -> dict[str, float]:
    """:func:`_fresh_run` in a new interpreter (a plain subprocess: no re-import of __main__)."""
    args = (name, n, d, k, seed, str(device), torch.get_num_threads())
    code = f"import json; from benchmarks.scoring import _fresh_run; print(json.dumps(_fresh_run(*{args!r})))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {name} at n={n}, d={d} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _case(n: int, d: int, *, k: int, device: torch.device, repeats: int, seed: int) -> dict[str, Any]:
    pref, bias, looks = _inputs(n, d, seed)
    pairs = n * n
    case: dict[str, Any] = {"n": n, "d": d, "block_size": min(_default_block(device), n), "pairs": pairs}
    for name in _METHODS:
        reason = None
        if name == "dense_reference":
            reason = _dense_skip_reason(n)
        if name == "faiss_flat_ip" and reason is None:
            try:
                import faiss  # noqa: F401 - only probing that the optional extra is installed
            except ImportError:
                reason = "faiss is not installed (pip install 'matchsvc[bench]')"
            if device.type == "cuda":
                reason = reason or "FAISS CPU index; compared on CPU runs only"
        if reason is not None:
            case[name] = {"seconds": None, "reason": reason}
            continue
        fresh = _in_fresh_process(name, n, d, k, seed, device)
        # The cold run happened elsewhere; on CUDA one untimed call still absorbs lazy set-up.
        warmup = 1 if device.type == "cuda" else 0
        seconds = median_seconds(_method(name, pref, bias, looks, k, device), repeats=repeats, warmup=warmup)
        case[name] = {"seconds": seconds, "pairs_per_second": pairs / seconds, **fresh}
    ours = case["reciprocal_topk"]["seconds"]
    for name, key in (("gemm_floor", "ratio_to_gemm_floor"), ("faiss_flat_ip", "ratio_to_faiss")):
        floor = case[name]["seconds"]
        case["reciprocal_topk"][key] = None if floor is None else ours / floor
    if case["dense_reference"]["seconds"] is not None:
        _, ours_idx = reciprocal_topk(pref, bias, looks, k, device=device)
        _, dense_idx = _dense(pref, bias, looks, k, device)()
        case["dense_reference"]["index_agreement"] = float((ours_idx == dense_idx).mean())
    if device.type == "cpu":
        case["threads_row"] = _threads_row(case, pref, bias, looks, k=k, device=device, repeats=repeats)
    return case


def _threads_row(
    case: dict[str, Any],
    pref: np.ndarray,
    bias: np.ndarray,
    looks: np.ndarray,
    *,
    k: int,
    device: torch.device,
    repeats: int,
) -> dict[str, Any]:
    """``reciprocal_topk`` and FAISS again on every core given, with speed-ups over the main row."""
    cores, threads = cores_given(), torch.get_num_threads()
    if cores <= threads:
        return {"threads": threads, "reason": f"the process is given {cores} core(s): the main row uses them all"}
    row: dict[str, Any] = {"threads": cores}
    torch.set_num_threads(cores)
    try:
        for name in ("reciprocal_topk", "faiss_flat_ip"):
            if case[name]["seconds"] is None:
                continue
            seconds = median_seconds(_method(name, pref, bias, looks, k, device), repeats=repeats)
            row[name] = {"seconds": seconds, "speedup": case[name]["seconds"] / seconds}
    finally:
        torch.set_num_threads(threads)
    if "faiss_flat_ip" in row:
        row["ratio_to_faiss"] = row["reciprocal_topk"]["seconds"] / row["faiss_flat_ip"]["seconds"]
    return row


def run_scoring_benchmark(
    *,
    sizes: Sequence[int] = (10_000, 50_000, 100_000),
    dims: Sequence[int] | None = None,
    k: int = 20,
    device: str | torch.device | None = None,
    repeats: int = 3,
    seed: int = 0,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Time :func:`engine.scoring.reciprocal_topk` against its floors for every ``(n, d)``.

    Parameters
    ----------
    sizes : sequence of int
        User counts ``n``.
    dims : sequence of int, optional
        Latent dimensions ``d``; ``None`` means ``(24, 128)`` (24 is the procedural space's).
    k : int
        Candidates per user.
    device : str or torch.device, optional
        As for ``reciprocal_topk``: ``None`` is CUDA when available, else the CPU.
    repeats : int
        Warm runs per method; seconds are their median.
    seed : int
        Seed of the synthetic users.
    threads : int, optional
        CPU threads for every method (torch, the C kernel, FAISS) for the duration: one by
        default, where the targets are stated; ``None`` keeps ``torch.get_num_threads()``. Each
        CPU case also gets a ``threads_row`` on every core the process is given.

    Returns
    -------
    dict
        JSON-able: the machine (device name, torch version, threads, cores given, the scoring
        backend that ran) and one entry per ``(n, d)`` with seconds, pairs per second, cold
        seconds, peak memory, for ``reciprocal_topk`` the ratios to the GEMM floor and to FAISS,
        and the threads row.
    """
    dims = (24, 128) if dims is None else tuple(dims)
    for name, values in (("sizes", sizes), ("dims", dims)):
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
            raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(sizes, dims, k=k, device=device, repeats=repeats, seed=seed)
    finally:
        torch.set_num_threads(saved)


def _run(
    sizes: Sequence[int], dims: Sequence[int], *, k: int, device: str | torch.device | None, repeats: int, seed: int
) -> dict[str, Any]:
    backend = scoring_backend(device=device)
    if device is None:
        device = "cuda" if backend.startswith("cuda") else "cpu"
    dev = torch.device(device)
    cases = [_case(n, d, k=k, device=dev, repeats=repeats, seed=seed) for n in sizes for d in dims]
    return {
        "benchmark": "scoring",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "scoring_backend": backend,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores_given": cores_given(),
        "k": k,
        "repeats": repeats,
        "seed": seed,
        "pairs_note": "pairs = n * n ordered (user, candidate) pairs for every method",
        "memory_note": (
            "peak_memory_bytes: growth of the peak resident set (VmHWM after clear_refs) over set-up "
            "and one call in a fresh process, inputs excluded (CPU); growth of "
            "torch.cuda.max_memory_allocated (CUDA)"
        ),
        "cases": cases,
    }
