"""The rate limiter's shared token buckets (``rate_buckets``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from matchsvc.db.statements import Statement

__all__ = ["take_tokens"]

# All SET expressions read the row as it was, so ``level`` (the refilled bucket) is computed once
# per column from the same old values: the check and the take are one atomic statement.
_LEVEL = "least(:burst, b.tokens + extract(epoch FROM now() - b.updated_at) * :rate)"
_TAKE = Statement(
    f"""
    INSERT INTO rate_buckets AS b (key, tokens, allowed, updated_at)
    VALUES (:key, :burst - :cost, true, now())
    ON CONFLICT (key) DO UPDATE SET
        allowed = {_LEVEL} >= :need,
        tokens = {_LEVEL} - CASE WHEN {_LEVEL} >= :need THEN :cost ELSE 0 END,
        updated_at = now()
    RETURNING tokens, allowed
    """
)


def take_tokens(session: Session, *, key: str, cost: float, need: float, rate: float, burst: float) -> tuple[float, bool]:
    """Refill ``key``'s bucket at ``rate`` per second up to ``burst``, take ``cost`` if ``need`` are there.

    Returns the tokens left and whether the take was allowed.
    """
    row = _TAKE.execute(session, {"key": key, "cost": cost, "need": need, "rate": rate, "burst": burst}).fetchone()
    return float(row.tokens), bool(row.allowed)
