"""The privacy ledger: one row per spend."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from matchsvc.db.models import LedgerEntry
from matchsvc.db.statements import Statement, Write

__all__ = [
    "MODEL_SCOPE",
    "TOTALS_COLUMNS",
    "TOTALS_JOINS",
    "ScopeTotals",
    "scope_totals",
    "spend_writes",
    "totals_by_mechanism",
    "worst_case_by_user",
]

#: Scope of a spend that touches every rating at once (a model release).
MODEL_SCOPE = "model"


@dataclass(frozen=True)
class ScopeTotals:
    """Composed (summed) epsilon/delta of the model scope, of the worst rating scope and of one scope; the spend count."""

    model_epsilon: float
    model_delta: float
    worst_rating_epsilon: float
    worst_rating_delta: float
    rating_scope_epsilon: float = 0.0  # of the scope asked about, 0 if none
    rating_scope_delta: float = 0.0
    spends: int = 0

    @classmethod
    def from_row(cls, row: Any) -> ScopeTotals:
        """From a row with the columns of :data:`TOTALS_COLUMNS` (NULL: no spend yet)."""
        return cls(
            model_epsilon=row.model_epsilon or 0.0,
            model_delta=row.model_delta or 0.0,
            worst_rating_epsilon=row.worst_rating_epsilon or 0.0,
            worst_rating_delta=row.worst_rating_delta or 0.0,
            rating_scope_epsilon=row.scope_epsilon or 0.0,
            rating_scope_delta=row.scope_delta or 0.0,
            spends=row.spends or 0,
        )


# Prebuilt: the rating path runs these on every request, and building them per call cost more
# Python time than the round trips (docs/benchmarks.md, issue 14).
_SPEND = Statement(
    """
    INSERT INTO privacy_ledger (user_id, mechanism, epsilon, delta, neighbouring, scope, randomized_on_device)
    VALUES (:user_id, :mechanism, :epsilon, :delta, :neighbouring, :scope, :on_device)
    RETURNING id
    """
)
_USER_TOTALS = Statement(
    """
    INSERT INTO privacy_user_totals AS t
        (user_id, model_epsilon, model_delta, worst_rating_epsilon, worst_rating_delta, spends)
    VALUES (:user_id, :model_epsilon, :model_delta, :worst_epsilon, :worst_delta, :spends)
    ON CONFLICT (user_id) DO UPDATE SET
        model_epsilon = EXCLUDED.model_epsilon, model_delta = EXCLUDED.model_delta,
        worst_rating_epsilon = EXCLUDED.worst_rating_epsilon, worst_rating_delta = EXCLUDED.worst_rating_delta,
        spends = EXCLUDED.spends
    RETURNING user_id
    """
)
_SCOPE_TOTALS = Statement(
    """
    INSERT INTO privacy_scope_totals (user_id, scope, epsilon, delta)
    VALUES (:user_id, :scope, :epsilon, :delta)
    ON CONFLICT (user_id, scope) DO UPDATE SET epsilon = EXCLUDED.epsilon, delta = EXCLUDED.delta
    RETURNING user_id
    """
)
#: What :meth:`ScopeTotals.from_row` reads, from ``privacy_user_totals AS t`` and ``privacy_scope_totals AS s``
#: joined on ``:user_id`` and ``:scope`` (:data:`TOTALS_JOINS`).
TOTALS_COLUMNS = (
    "t.model_epsilon, t.model_delta, t.worst_rating_epsilon, t.worst_rating_delta, t.spends, "
    "s.epsilon AS scope_epsilon, s.delta AS scope_delta"
)
TOTALS_JOINS = (
    "LEFT JOIN privacy_user_totals AS t ON t.user_id = :user_id "
    "LEFT JOIN privacy_scope_totals AS s ON s.user_id = :user_id AND s.scope = :scope"
)
_TOTALS = text(f"SELECT {TOTALS_COLUMNS} FROM (SELECT 1) AS one {TOTALS_JOINS}")


def spend_writes(
    *,
    user_id: uuid.UUID,
    mechanism: str,
    epsilon: float,
    delta: float,
    neighbouring: str,
    scope: str,
    totals: ScopeTotals,
    randomized_on_device: bool = False,
) -> list[Write]:
    """The writes that record a spend and move the running totals (``totals``: as read by
    :func:`scope_totals`), to be sent together (:func:`matchsvc.db.statements.execute_writes`)."""
    model_eps, model_delta = totals.model_epsilon, totals.model_delta
    worst_eps, worst_delta = totals.worst_rating_epsilon, totals.worst_rating_delta
    writes = [
        Write(_SPEND, {
            "user_id": user_id, "mechanism": mechanism, "epsilon": epsilon, "delta": delta,
            "neighbouring": neighbouring, "scope": scope, "on_device": randomized_on_device,
        })
    ]
    if scope == MODEL_SCOPE:
        model_eps, model_delta = model_eps + epsilon, model_delta + delta
    else:
        scope_eps, scope_delta = totals.rating_scope_epsilon + epsilon, totals.rating_scope_delta + delta
        if scope_eps > worst_eps:
            worst_eps, worst_delta = scope_eps, scope_delta
        writes.append(
            Write(_SCOPE_TOTALS, {"user_id": user_id, "scope": scope, "epsilon": scope_eps, "delta": scope_delta})
        )
    writes.append(
        Write(_USER_TOTALS, {
            "user_id": user_id, "model_epsilon": model_eps, "model_delta": model_delta,
            "worst_epsilon": worst_eps, "worst_delta": worst_delta, "spends": totals.spends + 1,
        })
    )
    return writes


def scope_totals(session: Session, *, user_id: uuid.UUID, rating_scope: str | None = None) -> ScopeTotals:
    """The running totals of one user (and of ``rating_scope``) in one statement.

    Read under the caller's row lock on the user, so no concurrent spend can move them before
    :func:`spend_writes`'s writes move them.
    """
    return ScopeTotals.from_row(session.execute(_TOTALS, {"user_id": user_id, "scope": rating_scope or MODEL_SCOPE}).one())


def totals_by_mechanism(session: Session) -> dict[str, dict[str, float]]:
    """Sum of epsilon and delta and the number of spends, per mechanism, over all users."""
    query = select(
        LedgerEntry.mechanism, func.sum(LedgerEntry.epsilon), func.sum(LedgerEntry.delta), func.count()
    ).group_by(LedgerEntry.mechanism)
    return {
        mechanism: {"epsilon": float(eps), "delta": float(delta), "spends": int(count)}
        for mechanism, eps, delta, count in session.execute(query)
    }


def worst_case_by_user(session: Session) -> list[tuple[uuid.UUID, float, float]]:
    """(user, worst-case epsilon, its delta) per user with spends: model scope + worst rating scope."""
    per_scope = (
        select(
            LedgerEntry.user_id,
            LedgerEntry.scope,
            func.sum(LedgerEntry.epsilon).label("eps"),
            func.sum(LedgerEntry.delta).label("delta"),
        )
        .group_by(LedgerEntry.user_id, LedgerEntry.scope)
        .subquery()
    )
    is_model = per_scope.c.scope == MODEL_SCOPE
    model_eps = func.coalesce(func.sum(per_scope.c.eps).filter(is_model), 0.0)
    model_delta = func.coalesce(func.sum(per_scope.c.delta).filter(is_model), 0.0)
    worst_eps = func.coalesce(func.max(per_scope.c.eps).filter(~is_model), 0.0)
    worst_delta = func.coalesce(func.max(per_scope.c.delta).filter(~is_model), 0.0)
    query = select(per_scope.c.user_id, model_eps + worst_eps, model_delta + worst_delta).group_by(per_scope.c.user_id)
    return [(user_id, float(eps), float(delta)) for user_id, eps, delta in session.execute(query)]
