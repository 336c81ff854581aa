"""The privacy ledger and budget: every spend is recorded, and no rating's loss may pass the cap.

Accounting unit: one rating (label-level DP, ``LABEL_CHANGE``). Label releases of different faces
touch disjoint records, so they compose in parallel; everything that touches one face composes
sequentially (basic composition: epsilons and deltas add). A rating's lifetime loss is therefore

    loss(face) = sum of spends scoped to that face + sum of spends scoped to the whole model,

and the user's reported loss is the worst face. Spends proven under another relation are converted
to ``LABEL_CHANGE`` first (add/remove-one: group privacy, ``(2 eps, (1 + e^eps) delta)``).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from engine.preference import mechanism_guarantee
from matchsvc.db.statements import Write
from matchsvc.errors import Conflict, InvalidInput, PrivacyBudgetExhausted
from matchsvc.repositories import ledger as ledger_repo
from matchsvc.settings import Settings
from privacy.mechanisms import ADD_REMOVE_ONE, LABEL_CHANGE, Guarantee

__all__ = ["BudgetReport", "PrivacyPolicy", "budget_report", "checked_spend", "rating_scope"]

LABEL_MECHANISM = "randomized_response"


@dataclass(frozen=True)
class PrivacyPolicy:
    """The deployment's privacy configuration, fixed at start-up."""

    mechanism: str
    epsilon: float
    delta: float
    cap: float
    refit_every: int
    #: Epsilons a client may randomize a rating with on the device (:meth:`on_device_guarantee`).
    local_epsilon_min: float = 0.5
    local_epsilon_max: float = 8.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivacyPolicy:
        return cls(
            mechanism=settings.privacy_mechanism,
            epsilon=settings.privacy_epsilon,
            delta=settings.privacy_delta if settings.privacy_mechanism == "dpsgd" else 0.0,
            cap=settings.privacy_cap,
            refit_every=settings.refit_every,
            local_epsilon_min=settings.local_epsilon_min,
            local_epsilon_max=settings.local_epsilon_max,
        )

    @property
    def privatises_labels(self) -> bool:
        """True when labels are randomised at ingestion (refits are then free post-processing)."""
        return self.mechanism == LABEL_MECHANISM

    @property
    def guarantee(self) -> Guarantee:
        """Per rating (``randomized_response``) or per model release (``objective_perturbation``, ``dpsgd``)."""
        return mechanism_guarantee(self.mechanism, epsilon=self.epsilon, delta=self.delta)

    def on_device_guarantee(self, epsilon: float) -> Guarantee:
        """A label the client randomized with ``epsilon``: the same mechanism and relation as ours.

        Raises
        ------
        InvalidInput
            ``epsilon`` lies outside ``[local_epsilon_min, local_epsilon_max]``.
        Conflict
            The deployment does not randomize labels (it releases private models instead).
        """
        if not self.local_epsilon_min <= epsilon <= self.local_epsilon_max:
            raise InvalidInput(
                f"epsilon must lie within [{self.local_epsilon_min:g}, {self.local_epsilon_max:g}], got {epsilon!r}"
            )
        if not self.privatises_labels:
            raise Conflict(f"this deployment uses {self.mechanism!r}, not randomized response: send `liked`")
        return mechanism_guarantee(LABEL_MECHANISM, epsilon=epsilon, delta=0.0)


def rating_scope(face_id: uuid.UUID) -> str:
    return f"rating:{face_id}"


def _label_change_cost(guarantee: Guarantee) -> tuple[float, float, str]:
    """(epsilon, delta, relation) of a spend, restated for the ledger's ``LABEL_CHANGE`` unit."""
    if guarantee.neighbouring == ADD_REMOVE_ONE:
        relation = f"{LABEL_CHANGE} (group privacy from {ADD_REMOVE_ONE})"
        return 2 * guarantee.epsilon, (1 + math.exp(guarantee.epsilon)) * guarantee.delta, relation
    return guarantee.epsilon, guarantee.delta, guarantee.neighbouring


def checked_spend(
    session: Session,
    *,
    user_id: uuid.UUID,
    guarantee: Guarantee,
    scope: str,
    cap: float,
    randomized_on_device: bool = False,
    totals: ledger_repo.ScopeTotals | None = None,
) -> list[Write]:
    """The writes that record a spend in ``scope`` (a ``rating_scope`` or the model), once it is
    checked against the cap. Nothing is recorded until the caller sends them, in the same
    transaction (:func:`matchsvc.db.statements.execute_writes`), with the rest of its writes.

    The caller must hold the user's write lock (``user_cipher(..., for_update=True)``) so two
    concurrent spends cannot both pass the check. The check reads the running totals (one row
    per user and per scope, moved by each spend), so it costs the same at the thousandth spend as
    at the first. ``randomized_on_device`` marks a label the client randomized before sending it.
    ``totals``: the user's totals (and ``scope``'s) already read under that lock, to spare the read.

    Raises
    ------
    PrivacyBudgetExhausted
        If the spend would take some rating's lifetime loss above ``cap``; nothing is recorded.
    """
    epsilon, delta, relation = _label_change_cost(guarantee)
    if totals is None:
        totals = ledger_repo.scope_totals(session, user_id=user_id, rating_scope=scope)
    if scope == ledger_repo.MODEL_SCOPE:
        after = totals.model_epsilon + totals.worst_rating_epsilon + epsilon
    else:
        after = totals.model_epsilon + totals.rating_scope_epsilon + epsilon
    if after > cap + 1e-12:
        what = "another model release" if scope == ledger_repo.MODEL_SCOPE else "another rating of this face"
        raise PrivacyBudgetExhausted(
            f"{what} would raise a rating's privacy loss to epsilon={after:.3g}, above the lifetime cap of {cap:g}"
        )
    return ledger_repo.spend_writes(
        user_id=user_id,
        mechanism=guarantee.mechanism,
        epsilon=epsilon,
        delta=delta,
        neighbouring=relation,
        scope=scope,
        totals=totals,
        randomized_on_device=randomized_on_device,
    )


@dataclass(frozen=True)
class BudgetReport:
    mechanism: str
    epsilon_spent: float
    delta_spent: float
    epsilon_cap: float
    spends: int
    guarantee: str
    #: What a client needs to rate: the epsilon the server randomizes ``liked`` with, and the
    #: range it accepts for ``randomized_like`` (all None when labels are not randomized).
    epsilon_per_rating: float | None
    on_device_epsilon_min: float | None
    on_device_epsilon_max: float | None


def budget_report(session: Session, *, user_id: uuid.UUID, policy: PrivacyPolicy) -> BudgetReport:
    """Worst-case lifetime loss over the user's ratings, and what it means in one sentence."""
    totals = ledger_repo.scope_totals(session, user_id=user_id)
    spent = totals.model_epsilon + totals.worst_rating_epsilon
    delta = totals.model_delta + totals.worst_rating_delta
    spends = totals.spends
    delta_text = f" (except with probability {delta:.2g})" if delta > 0 else ""
    sentence = (
        f"Whatever we store or release about you would be at most e^{spent:.3g} = {math.exp(spent):.3g} times "
        f"more or less likely had you answered any single face the other way{delta_text}; "
        f"this can never exceed e^{policy.cap:g}."
    )
    return BudgetReport(
        mechanism=policy.mechanism,
        epsilon_spent=spent,
        delta_spent=delta,
        epsilon_cap=policy.cap,
        spends=spends,
        guarantee=sentence,
        epsilon_per_rating=policy.epsilon if policy.privatises_labels else None,
        on_device_epsilon_min=policy.local_epsilon_min if policy.privatises_labels else None,
        on_device_epsilon_max=policy.local_epsilon_max if policy.privatises_labels else None,
    )


@dataclass(frozen=True)
class PopulationBudgetReport:
    """What an auditor needs to check the deployment's privacy claims across all users."""

    mechanism: str
    epsilon_per_release: float
    delta_per_release: float
    epsilon_cap: float
    users: int
    users_at_cap: int
    per_mechanism: dict[str, dict[str, float]]
    spent_quantiles: dict[str, float]
    per_user: list[tuple[uuid.UUID, float, float]]


def population_budget(session: Session, *, policy: PrivacyPolicy) -> PopulationBudgetReport:
    """Per-mechanism totals, the distribution of users' worst-case loss, and who is at the cap.

    A user is *at the cap* when one more charge of the deployment's size would be refused.
    """
    per_user = ledger_repo.worst_case_by_user(session)
    spent = sorted(eps for _, eps, _ in per_user)
    step = _label_change_cost(policy.guarantee)[0]
    quantiles = (
        {f"p{q}": spent[min(len(spent) - 1, int(q / 100 * len(spent)))] for q in (50, 90, 99)} | {"max": spent[-1]}
        if spent
        else {}
    )
    return PopulationBudgetReport(
        mechanism=policy.mechanism,
        epsilon_per_release=policy.epsilon,
        delta_per_release=policy.delta,
        epsilon_cap=policy.cap,
        users=len(per_user),
        users_at_cap=sum(eps + step > policy.cap + 1e-12 for eps in spent),
        per_mechanism=ledger_repo.totals_by_mechanism(session),
        spent_quantiles=quantiles,
        per_user=per_user,
    )
