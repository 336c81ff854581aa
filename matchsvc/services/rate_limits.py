"""The rate limit shared by every worker process: token buckets in PostgreSQL, spent through leases.

Decisions D24 (the shared table) and D40 (leases) in docs/decisions.md.
"""

from __future__ import annotations

import math
import threading

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from matchsvc.repositories import rate_limits as rate_limits_repo

__all__ = ["SharedTokenBucket"]


class SharedTokenBucket:
    """Token buckets keyed by client in PostgreSQL, of which each process holds small leases.

    Same contract as the in-process ``api.middleware.TokenBucket``: ``take`` returns the seconds
    to wait (0 when allowed); a cost above the burst is allowed from a full bucket, leaving debt.

    A take that reaches the database (one atomic ``INSERT ... ON CONFLICT DO UPDATE ...
    RETURNING``) also takes a lease of up to ``lease`` tokens more for the same client, as many as
    the bucket holds; the process spends them on that client's next requests without a statement
    (:meth:`take_held`, cheap enough for the event loop). Leased tokens left the shared bucket
    when they were leased, so over any span the N processes together admit what the bucket
    granted: the long-run rate is exact. The burst is exceeded by at most the leases held,
    N x ``lease``; a client whose requests move to another process strands at most ``lease``
    tokens in the old one (D40). ``lease`` is a tenth of the burst, rounded down: with a burst
    under 10 there are no leases and every take is a statement, as before.

    ``blocking``: :meth:`take` may do I/O, so async callers try :meth:`take_held` first and run
    :meth:`take` in a thread.
    """

    blocking = True
    #: Share of the burst a process may hold for one client.
    LEASE_SHARE = 0.1
    #: Clients with a lease remembered at most; past it the leases are dropped (their tokens lost,
    #: which only ever refuses, never admits, more).
    MAX_LEASES = 100_000

    def __init__(self, engine: Engine, *, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.lease = float(math.floor(burst * self.LEASE_SHARE))
        # One statement, atomic on its own: autocommit spares the BEGIN and COMMIT round trips.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()

    def take_held(self, key: str, cost: float = 1.0) -> bool:
        """Spend ``cost`` of the tokens this process holds for ``key``; False, spending nothing, if fewer."""
        with self._lock:
            held = self._held.get(key, 0.0)
            if held < cost:
                return False
            if held == cost:
                del self._held[key]
            else:
                self._held[key] = held - cost
            return True

    def take(self, key: str, cost: float = 1.0) -> float:
        if self.take_held(key, cost):
            return 0.0
        need = min(cost, self.burst)
        with Session(self._engine) as session:
            tokens, granted = rate_limits_repo.take_tokens(
                session, key=key, cost=cost, need=need, lease=self.lease, rate=self.rate, burst=self.burst
            )
        if not granted:
            return (need - tokens) / self.rate
        if granted > cost:
            with self._lock:
                if len(self._held) >= self.MAX_LEASES:
                    self._held.clear()
                self._held[key] = self._held.get(key, 0.0) + granted - cost
        return 0.0
