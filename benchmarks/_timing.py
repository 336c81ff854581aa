"""Small timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_seconds"]


def median_seconds(func: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``func`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)
