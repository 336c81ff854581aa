"""The privacy ledger: one row per spend."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from matchsvc.db.models import LedgerEntry

__all__ = [
    "MODEL_SCOPE",
    "ScopeTotals",
    "add_spend",
    "list_spends",
    "scope_totals",
    "totals_by_mechanism",
    "worst_case_by_user",
]

#: Scope of a spend that touches every rating at once (a model release).
MODEL_SCOPE = "model"


@dataclass(frozen=True)
class ScopeTotals:
    """Composed (summed) epsilon/delta of the model scope and of the worst single-rating scope."""

    model_epsilon: float
    model_delta: float
    worst_rating_epsilon: float
    worst_rating_delta: float
    rating_scope_epsilon: float  # of the scope asked about, 0 if none


def add_spend(
    session: Session,
    *,
    user_id: uuid.UUID,
    mechanism: str,
    epsilon: float,
    delta: float,
    neighbouring: str,
    scope: str,
) -> None:
    session.add(
        LedgerEntry(
            user_id=user_id, mechanism=mechanism, epsilon=epsilon, delta=delta, neighbouring=neighbouring, scope=scope
        )
    )
    session.flush()


def scope_totals(session: Session, *, user_id: uuid.UUID, rating_scope: str | None = None) -> ScopeTotals:
    """Sums per scope for one user, locked against concurrent spends by the caller's row lock."""
    per_scope = (
        select(
            LedgerEntry.scope,
            func.sum(LedgerEntry.epsilon).label("epsilon"),
            func.sum(LedgerEntry.delta).label("delta"),
        )
        .where(LedgerEntry.user_id == user_id)
        .group_by(LedgerEntry.scope)
    )
    model_eps = model_delta = worst_eps = worst_delta = scope_eps = 0.0
    for scope, epsilon, delta in session.execute(per_scope):
        if scope == MODEL_SCOPE:
            model_eps, model_delta = float(epsilon), float(delta)
            continue
        if float(epsilon) > worst_eps:
            worst_eps, worst_delta = float(epsilon), float(delta)
        if scope == rating_scope:
            scope_eps = float(epsilon)
    return ScopeTotals(model_eps, model_delta, worst_eps, worst_delta, scope_eps)


def list_spends(session: Session, *, user_id: uuid.UUID) -> Sequence[LedgerEntry]:
    return session.scalars(select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)).all()


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
