"""A periodic in-process runner for batch jobs (the matching job when the API serves).

One daemon thread per job; a run that fails is logged and retried at the next tick, so a bad
night does not take the API down. Several API processes each run their own schedule; wrapped in
:func:`exclusive`, a tick runs the job only in the process that gets a PostgreSQL advisory lock,
so one run happens at a time across all of them (the others skip that tick).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TypeVar

import structlog
from sqlalchemy import Engine, text

__all__ = ["PeriodicJob", "exclusive"]

T = TypeVar("T")

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
                if result is not None:  # None: skipped (another process holds the job) or idle
                    log.info("job_finished", job=self.name, result=str(result))
            except Exception:  # noqa: BLE001 - a failed run must not kill the schedule
                log.exception("job_failed", job=self.name)


def exclusive(engine: Engine, name: str, func: Callable[[], T]) -> Callable[[], T | None]:
    """``func`` behind a session-level advisory lock named ``name``: None (skipped) when another process holds it.

    The lock lives on the connection that took it, so a process that dies releases it with its
    connection; a try-lock never waits, so a long run in one process never queues ticks elsewhere.
    """
    key = int.from_bytes(hashlib.sha256(f"matchsvc/{name}".encode()).digest()[:8], "big", signed=True)

    def run() -> T | None:
        with engine.connect() as connection:
            if not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one():
                connection.rollback()
                return None
            try:
                connection.commit()  # the lock is the session's, not the transaction's
                return func()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()

    return run
