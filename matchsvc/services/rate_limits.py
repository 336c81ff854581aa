"""The rate limit shared by every worker process: token buckets in PostgreSQL (decision in docs/decisions.md)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from matchsvc.repositories import rate_limits as rate_limits_repo

__all__ = ["SharedTokenBucket"]


class SharedTokenBucket:
    """Token buckets keyed by client, one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` per take.

    Same contract as the in-process ``api.middleware.TokenBucket``: ``take`` returns the seconds
    to wait (0 when allowed); a cost above the burst is allowed from a full bucket, leaving debt.
    ``blocking``: it does I/O, so async callers run it in a thread.
    """

    blocking = True

    def __init__(self, engine: Engine, *, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        # One statement, atomic on its own: autocommit spares the BEGIN and COMMIT round trips.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def take(self, key: str, cost: float = 1.0) -> float:
        need = min(cost, self.burst)
        with Session(self._engine) as session:
            tokens, allowed = rate_limits_repo.take_tokens(
                session, key=key, cost=cost, need=need, rate=self.rate, burst=self.burst
            )
        return 0.0 if allowed else (need - tokens) / self.rate
