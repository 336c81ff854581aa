"""A user's appearance (a latent made on the device), the filters two-way matching needs, and the
eligibility rule stored candidate pairs are checked against whenever they are read or the filters change
(decision D26): lists are written from a snapshot, so every read re-checks the pair against the
current profiles, ages and blocks, and a filter change prunes the pairs it breaks at once.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection
from datetime import UTC, datetime

import numpy as np
from sqlalchemy.orm import Session

from engine.latent import PRIOR_BOUND, LatentSpace, encode_png
from engine.latent._prior import ADULT_AGE_YEARS, AGE_OFFSET_YEARS, AGE_SCALE_YEARS
from matchsvc.errors import InvalidInput, NotFound
from matchsvc.keys import KeyRingStore, UserCipher
from matchsvc.repositories import matching as matching_repo
from matchsvc.repositories import profiles as profiles_repo
from matchsvc.services.filters import MIN_AGE, Filters, Gender, mutually_accept
from matchsvc.services.keys import open_cipher, user_cipher
from matchsvc.services.sealed import PASS, open_choice, open_filters, open_latent, seal_filters, seal_latent

__all__ = [
    "AGE_BUCKETS",
    "APPEARANCE_BOUND",
    "age_of",
    "appearance_box",
    "eligible_partners",
    "group_code",
    "preview_appearance",
    "prune_candidates",
    "render_avatar",
    "seeks_mask",
    "set_appearance",
    "set_filters",
    "get_filters",
]

#: Ages are bucketed for the scoring kernel's 64-bit group masks: 4 genders x 16 buckets.
AGE_BUCKETS = 16
_BUCKET_YEARS = 4
#: Every coordinate of an appearance lies in [-APPEARANCE_BOUND, APPEARANCE_BOUND] (the prior's box).
APPEARANCE_BOUND = PRIOR_BOUND

_GENDERS = list(Gender)


def age_of(birth_year: int, *, today: datetime | None = None) -> int:
    """Age as of this year (birth years only); the adult check at registration is stricter."""
    return (today or datetime.now(UTC)).year - birth_year


def _bucket(age: int) -> int:
    return min(AGE_BUCKETS - 1, max(0, (age - MIN_AGE) // _BUCKET_YEARS))


def group_code(gender: Gender, age: int) -> int:
    """The scoring kernel's group id in [0, 63]: gender and coarse age bucket."""
    return _GENDERS.index(gender) * AGE_BUCKETS + _bucket(age)


def seeks_mask(filters: Filters) -> int:
    """int64 bitmask of every group the filters could accept (coarse; exact ages are checked after)."""
    mask = 0
    buckets = range(_bucket(filters.age_min), _bucket(filters.age_max) + 1)
    for gender in filters.seeks:
        for bucket in buckets:
            mask |= 1 << (_GENDERS.index(gender) * AGE_BUCKETS + bucket)
    return mask - (1 << 64) if mask >= 1 << 63 else mask


def _valid_appearance(space: LatentSpace, latent: list[float]) -> np.ndarray:
    """The one rule for an appearance, shared by storing and previewing it."""
    z = np.asarray(latent, dtype=np.float64)
    if z.shape != (space.dim,):
        raise InvalidInput(f"latent must have {space.dim} values, got {z.size}")
    if not np.isfinite(z).all():
        raise InvalidInput("latent values must be finite numbers")
    if np.abs(z).max() > APPEARANCE_BOUND:
        raise InvalidInput(f"latent values must lie in [-{APPEARANCE_BOUND:g}, {APPEARANCE_BOUND:g}]")
    if bool(space.in_safety_region(z)):
        raise InvalidInput("this appearance is in the safety region (apparent age under 18)")
    return z


def appearance_box(space: LatentSpace) -> tuple[list[float], list[float]]:
    """Per-coordinate bounds of the looks a device may draw: the prior's box, with the apparent-age
    coordinate (when the space has one) starting at the adult threshold, so that no draw inside
    the box falls in the safety region and a device never has to guess and retry."""
    lower = [-APPEARANCE_BOUND] * space.dim
    age_index = getattr(space, "age_index", None)
    if age_index is not None:
        lower[age_index] = (ADULT_AGE_YEARS - AGE_OFFSET_YEARS) / AGE_SCALE_YEARS
    return lower, [APPEARANCE_BOUND] * space.dim


def preview_appearance(*, space: LatentSpace, latent: list[float]) -> bytes:
    """PNG of a candidate appearance, validated as if it were stored, but neither stored nor logged:
    a client builds a look by comparing rendered candidates before it commits to one."""
    return encode_png(space.render(_valid_appearance(space, latent)))


def set_appearance(
    session: Session, *, user_id: uuid.UUID, keys: KeyRingStore, space: LatentSpace, latent: list[float]
) -> None:
    """Validate and store the user's appearance latent (sealed); nothing is stored when invalid."""
    z = _valid_appearance(space, latent)
    cipher = user_cipher(session, keys=keys, user_id=user_id, for_update=True)
    profiles_repo.put_appearance(session, user_id=user_id, latent_ct=seal_latent(cipher, z))
    session.commit()


def render_avatar(session: Session, *, user_id: uuid.UUID, keys: KeyRingStore, space: LatentSpace) -> bytes:
    """PNG of a user's generated avatar, rendered on request: a cached image would be a plaintext appearance."""
    blob = profiles_repo.get_appearance(session, user_id)
    if blob is None:
        raise NotFound("no appearance has been set")
    cipher = user_cipher(session, keys=keys, user_id=user_id)
    return encode_png(space.render(open_latent(cipher, blob)))


def set_filters(session: Session, *, user_id: uuid.UUID, keys: KeyRingStore, filters: Filters) -> None:
    """Store the filters; pairs they (or the other side's filters) no longer accept leave both lists now."""
    cipher = user_cipher(session, keys=keys, user_id=user_id, for_update=True)
    profiles_repo.put_profile(session, user_id=user_id, filters_ct=seal_filters(cipher, filters))
    prune_candidates(session, keys=keys, user_id=user_id)
    session.commit()


def get_filters(session: Session, *, user_id: uuid.UUID, keys: KeyRingStore) -> Filters:
    blob = profiles_repo.get_profile(session, user_id)
    if blob is None:
        raise NotFound("no profile has been set")
    return open_filters(user_cipher(session, keys=keys, user_id=user_id), blob)


def eligible_partners(
    session: Session, *, keys: KeyRingStore, user_id: uuid.UUID, others: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of ``others`` who exist, have a profile, accept and are accepted by the user at today's
    ages, and share no block and no pass with the user (either way: a run that read the state before
    a pass may store the pair again, D26). Opens each profile and each decision with its owner's
    key, in memory only."""
    others = set(others) - {user_id}
    if not others:
        return set()
    rows = profiles_repo.filter_rows(session, others | {user_id})
    if user_id not in rows:
        return set()

    @functools.cache  # one unwrap per person: the user's key opens their filters and each of their decisions
    def cipher(owner: uuid.UUID) -> UserCipher:
        return open_cipher(keys=keys, user_id=owner, wrapped=rows[owner].wrapped_key)

    def opened(owner: uuid.UUID) -> tuple[Filters, int]:
        return open_filters(cipher(owner), rows[owner].filters_ct), age_of(rows[owner].birth_year)

    mine, my_age = opened(user_id)
    excluded = matching_repo.blocked_with(session, user_id, others) | {
        decision.target_id if decision.decider_id == user_id else decision.decider_id
        for decision in matching_repo.decisions_between(session, user_id, others & rows.keys())
        if open_choice(cipher(decision.decider_id), target_id=decision.target_id, blob=decision.choice_ct) == PASS
    }
    return {
        other
        for other in others
        if other in rows and other not in excluded and mutually_accept(mine, my_age, *opened(other))
    }


def prune_candidates(session: Session, *, keys: KeyRingStore, user_id: uuid.UUID) -> int:
    """Remove, both ways, the user's candidate pairs that no longer hold (caller's transaction).

    Returns how many partners were dropped.
    """
    partners = matching_repo.candidate_partners(session, user_id)
    stale = partners - eligible_partners(session, keys=keys, user_id=user_id, others=partners)
    matching_repo.remove_candidates(session, user_id, stale)
    return len(stale)
