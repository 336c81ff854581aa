"""The rate limiter's shared token buckets (``rate_buckets``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from matchsvc.db.statements import Statement

__all__ = ["take_tokens"]

# All SET expressions read the row as it was, so ``level`` (the refilled bucket) and ``grant`` are
# computed from the same old values: the check, the take and the lease are one atomic statement.
_LEVEL = "least(:burst, b.tokens + extract(epoch FROM now() - b.updated_at) * :rate)"
_GRANT = f"CASE WHEN {_LEVEL} >= :need THEN :cost + least(greatest({_LEVEL} - :cost, 0), :lease) ELSE 0 END"
_FRESH_GRANT = "(:cost + least(greatest(:burst - :cost, 0), :lease))"  # a new bucket is full: level = burst >= need
_TAKE = Statement(
    f"""
    INSERT INTO rate_buckets AS b (key, tokens, granted, updated_at)
    VALUES (:key, :burst - {_FRESH_GRANT}, {_FRESH_GRANT}, now())
    ON CONFLICT (key) DO UPDATE SET
        granted = {_GRANT},
        tokens = {_LEVEL} - {_GRANT},
        updated_at = now()
    RETURNING tokens, granted
    """
)


def take_tokens(
    session: Session, *, key: str, cost: float, need: float, lease: float, rate: float, burst: float
) -> tuple[float, float]:
    """Refill ``key``'s bucket at ``rate`` per second up to ``burst``; if ``need`` tokens are there,
    take ``cost`` and up to ``lease`` more (as many as are left).

    Returns the tokens left and the tokens granted: ``cost`` plus the lease, or 0 when refused.
    """
    params = {"key": key, "cost": cost, "need": need, "lease": lease, "rate": rate, "burst": burst}
    row = _TAKE.execute(session, params).fetchone()
    return float(row.tokens), float(row.granted)
