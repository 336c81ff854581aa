"""The privacy ledger: one row per spend."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, literal, select, true
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import LedgerEntry, ScopeTotal, UserTotal

__all__ = [
    "MODEL_SCOPE",
    "ScopeTotals",
    "add_spend",
    "scope_totals",
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


def add_spend(
    session: Session,
    *,
    user_id: uuid.UUID,
    mechanism: str,
    epsilon: float,
    delta: float,
    neighbouring: str,
    scope: str,
    totals: ScopeTotals,
    randomized_on_device: bool = False,
) -> None:
    """Record a spend and move the running totals (``totals``: as read by :func:`scope_totals`), in one statement."""
    spend = insert(LedgerEntry).values(
        user_id=user_id, mechanism=mechanism, epsilon=epsilon, delta=delta, neighbouring=neighbouring,
        scope=scope, randomized_on_device=randomized_on_device,
    )
    ctes = [spend.cte("spend")]
    model_eps, model_delta = totals.model_epsilon, totals.model_delta
    worst_eps, worst_delta = totals.worst_rating_epsilon, totals.worst_rating_delta
    if scope == MODEL_SCOPE:
        model_eps, model_delta = model_eps + epsilon, model_delta + delta
    else:
        scope_eps, scope_delta = totals.rating_scope_epsilon + epsilon, totals.rating_scope_delta + delta
        if scope_eps > worst_eps:
            worst_eps, worst_delta = scope_eps, scope_delta
        scope_row = insert(ScopeTotal).values(user_id=user_id, scope=scope, epsilon=scope_eps, delta=scope_delta)
        scope_row = scope_row.on_conflict_do_update(
            index_elements=[ScopeTotal.user_id, ScopeTotal.scope],
            set_={"epsilon": scope_row.excluded.epsilon, "delta": scope_row.excluded.delta},
        )
        ctes.append(scope_row.cte("scope_total"))
    values = {
        "model_epsilon": model_eps,
        "model_delta": model_delta,
        "worst_rating_epsilon": worst_eps,
        "worst_rating_delta": worst_delta,
        "spends": totals.spends + 1,
    }
    user_row = insert(UserTotal).values(user_id=user_id, **values)
    session.execute(user_row.on_conflict_do_update(index_elements=[UserTotal.user_id], set_=values).add_cte(*ctes))


def scope_totals(session: Session, *, user_id: uuid.UUID, rating_scope: str | None = None) -> ScopeTotals:
    """The running totals of one user (and of ``rating_scope``) in one statement.

    Read under the caller's row lock on the user, so no concurrent spend can move them before
    :func:`add_spend` writes the new ones.
    """
    scope = (
        select(ScopeTotal.epsilon, ScopeTotal.delta)
        .where(ScopeTotal.user_id == user_id, ScopeTotal.scope == (rating_scope or MODEL_SCOPE))
        .subquery()
    )
    user = select(UserTotal).where(UserTotal.user_id == user_id).subquery()
    query = (
        select(
            user.c.model_epsilon, user.c.model_delta, user.c.worst_rating_epsilon, user.c.worst_rating_delta,
            user.c.spends, scope.c.epsilon, scope.c.delta,
        )
        .select_from(select(literal(1).label("one")).subquery())
        .outerjoin(user, true())
        .outerjoin(scope, true())
    )
    model_eps, model_delta, worst_eps, worst_delta, spends, scope_eps, scope_delta = session.execute(query).one()
    return ScopeTotals(
        model_epsilon=model_eps or 0.0,
        model_delta=model_delta or 0.0,
        worst_rating_epsilon=worst_eps or 0.0,
        worst_rating_delta=worst_delta or 0.0,
        rating_scope_epsilon=scope_eps or 0.0,
        rating_scope_delta=scope_delta or 0.0,
        spends=spends or 0,
    )


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
