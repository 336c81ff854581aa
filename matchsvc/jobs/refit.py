"""The refit workers: exact refits of users whose released model is behind their ratings.

Every serving process runs one :class:`RefitWorker` thread; they share the queue in
``refit_jobs`` (``FOR UPDATE SKIP LOCKED`` with a lease, so a crashed worker's job comes back
after ``lease_seconds``). :func:`run_refits` is the same work done synchronously (tests, CLI).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import structlog
from sqlalchemy.orm import Session, sessionmaker

from engine.latent import LatentSpace
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import refits as refits_repo
from matchsvc.services.preferences import refit_user

__all__ = ["LEASE_SECONDS", "RefitRun", "RefitWorker", "run_refits"]

log = structlog.get_logger(__name__)

#: A claimed job returns to the queue after this long without completing (a crashed worker).
LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class RefitRun:
    refitted: int
    pending: int


def _one(sessions: sessionmaker[Session], *, keys: KeyRingStore, space: LatentSpace) -> bool:
    """Claim and work one job; False when none is free."""
    with sessions() as session:
        job = refits_repo.claim(session, lease_seconds=LEASE_SECONDS)
        session.commit()
        if job is None:
            return False
        try:
            refit_user(session, keys=keys, user_id=job.user_id, space=space)
        except LookupError:  # the user was deleted meanwhile; the job went with them
            session.rollback()
            return True
        refits_repo.complete(session, job=job)
        session.commit()
    return True


def run_refits(
    sessions: sessionmaker[Session], *, keys: KeyRingStore, space: LatentSpace, wait: bool = True, timeout: float = 60.0
) -> RefitRun:
    """Work the queue until it is empty; with ``wait``, also until jobs other workers hold are done."""
    done = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _one(sessions, keys=keys, space=space):
            done += 1
            continue
        with sessions() as session:
            left = refits_repo.pending(session)
        if not wait or left == 0:
            return RefitRun(refitted=done, pending=left)
        time.sleep(0.02)
    with sessions() as session:
        return RefitRun(refitted=done, pending=refits_repo.pending(session))


class RefitWorker:
    """A daemon thread that works the queue, polling every ``poll`` seconds when it is empty."""

    def __init__(
        self, sessions: sessionmaker[Session], *, keys: KeyRingStore, space: LatentSpace, poll: float = 0.1
    ) -> None:
        if poll <= 0:
            raise ValueError(f"poll must be > 0 seconds, got {poll!r}")
        self._sessions, self._keys, self._space, self._poll = sessions, keys, space, poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="refit-worker", daemon=True)
        self.refitted = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = _one(self._sessions, keys=self._keys, space=self._space)
            except Exception:  # noqa: BLE001 - a failed refit must not stop the worker; its lease expires
                log.exception("refit_failed")
                worked = False
            if worked:
                self.refitted += 1
            else:
                self._stop.wait(self._poll)
