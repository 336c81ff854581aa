"""The privacy ledger: one row per spend."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from matchsvc.db.models import LedgerEntry

__all__ = ["MODEL_SCOPE", "ScopeTotals", "add_spend", "list_spends", "scope_totals"]

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
