"""A periodic in-process runner for batch jobs (the matching job when the API serves).

One daemon thread per job; a run that fails is logged and retried at the next tick, so a bad
night does not take the API down. Several API processes each run their own schedule; the job is
idempotent (it replaces candidate lists), so overlapping runs are wasteful, not wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

__all__ = ["PeriodicJob"]

log = structlog.get_logger(__name__)


class PeriodicJob:
    """Run ``func`` every ``interval`` seconds (first run after one interval) until ``stop``."""

    def __init__(self, *, name: str, interval: float, func: Callable[[], object]) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.name = name
        self.interval = interval
        self._func = func
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"job-{name}", daemon=True)
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                result = self._func()
                self.runs += 1
                log.info("job_finished", job=self.name, result=str(result))
            except Exception:  # noqa: BLE001 - a failed run must not kill the schedule
                log.exception("job_failed", job=self.name)
