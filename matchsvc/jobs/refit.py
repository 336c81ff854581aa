"""The refit workers: exact refits of users whose released model is behind their ratings.

Every serving process runs one :func:`refit_worker` thread; they share the queue in
``refit_jobs`` (``FOR UPDATE SKIP LOCKED`` with a lease, so a crashed worker's job comes back
after ``lease_seconds``). :func:`run_refits` is the same work done synchronously (tests, CLI).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from engine.latent import LatentSpace
from matchsvc.jobs.scheduler import PeriodicJob
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import refits as refits_repo
from matchsvc.services.preferences import refit_user

__all__ = ["LEASE_SECONDS", "RefitRun", "refit_worker", "run_refits"]

#: A claimed job returns to the queue after this long without completing (a crashed worker).
LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class RefitRun:
    refitted: int
    #: Jobs queued or running when the run ended; None when an idle worker tick did not count them.
    pending: int | None


def _one(sessions: sessionmaker[Session], *, keys: KeyRingStore, space: LatentSpace, settle: float) -> bool:
    """Claim and work one job asked for at least ``settle`` seconds ago; False when none is."""
    with sessions() as session:
        job = refits_repo.claim(session, lease_seconds=LEASE_SECONDS, settle_seconds=settle)
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
    sessions: sessionmaker[Session],
    *,
    keys: KeyRingStore,
    space: LatentSpace,
    wait: bool = True,
    timeout: float = 60.0,
    settle: float = 0.0,
) -> RefitRun:
    """Work the queue until it is empty; with ``wait``, also until jobs other workers hold are done.

    ``settle``: leave jobs asked for less than that many seconds ago (the workers' coalescing,
    :func:`refit_worker`); synchronous callers drain everything.
    """
    done = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _one(sessions, keys=keys, space=space, settle=settle):
            done += 1
            continue
        if not wait and not done:  # an idle tick: the claim was its one statement
            return RefitRun(refitted=0, pending=None)
        with sessions() as session:
            left = refits_repo.pending(session)
        if not wait or left == 0:
            return RefitRun(refitted=done, pending=left)
        time.sleep(0.02)
    with sessions() as session:
        return RefitRun(refitted=done, pending=refits_repo.pending(session))


def refit_worker(
    sessions: sessionmaker[Session], *, keys: KeyRingStore, space: LatentSpace, poll: float = 0.1, settle: float = 0.0
) -> PeriodicJob:
    """A daemon job that works the queue dry every ``poll`` seconds (start it with ``.start()``).

    It takes a job once it was asked for ``settle`` seconds ago: a user rating faster than the
    refits fall due then gets one refit per ``settle`` seconds or so instead of one per
    ``refit_every`` ratings, each taking in everything rated meanwhile (docs/privacy.md states the lag).
    """

    def drain() -> RefitRun | None:
        run = run_refits(sessions, keys=keys, space=space, wait=False, settle=settle)
        return run if run.refitted else None  # nothing to log for an idle tick

    return PeriodicJob(name="refit", interval=poll, func=drain)
