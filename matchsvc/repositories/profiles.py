"""Sealed appearances and filter profiles."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from matchsvc.db.models import Appearance, PreferenceState, Profile, User, UserKey
from matchsvc.repositories.id_ranges import IdRange, within

__all__ = [
    "FilterRow",
    "MatchableRow",
    "filter_rows",
    "get_appearance",
    "get_profile",
    "matchable_rows",
    "put_appearance",
    "put_profile",
]


class FilterRow(NamedTuple):
    birth_year: int
    filters_ct: bytes
    wrapped_key: bytes


class MatchableRow(NamedTuple):
    """A user as the matching job reads them; the sealed columns are None where not set."""

    user_id: uuid.UUID
    birth_year: int
    latent_ct: bytes | None
    filters_ct: bytes | None
    state_ct: bytes | None
    n_ratings: int
    wrapped_key: bytes


def _upsert(session: Session, model: type, *, user_id: uuid.UUID, column: str, blob: bytes) -> None:
    statement = insert(model).values(user_id=user_id, **{column: blob})
    statement = statement.on_conflict_do_update(
        index_elements=[model.user_id], set_={column: getattr(statement.excluded, column), "updated_at": func.now()}
    )
    session.execute(statement)


def put_appearance(session: Session, *, user_id: uuid.UUID, latent_ct: bytes) -> None:
    _upsert(session, Appearance, user_id=user_id, column="latent_ct", blob=latent_ct)


def get_appearance(session: Session, user_id: uuid.UUID) -> bytes | None:
    return session.scalar(select(Appearance.latent_ct).where(Appearance.user_id == user_id))


def put_profile(session: Session, *, user_id: uuid.UUID, filters_ct: bytes) -> None:
    _upsert(session, Profile, user_id=user_id, column="filters_ct", blob=filters_ct)


def get_profile(session: Session, user_id: uuid.UUID) -> bytes | None:
    return session.scalar(select(Profile.filters_ct).where(Profile.user_id == user_id))


def filter_rows(session: Session, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, FilterRow]:
    """Birth year, sealed filters and wrapped data key of those of ``user_ids`` who exist and have
    set a profile, in one query."""
    if not user_ids:
        return {}
    query = (
        select(User.id, User.birth_year, Profile.filters_ct, UserKey.wrapped_key)
        .join(Profile, Profile.user_id == User.id)
        .join(UserKey, UserKey.user_id == User.id)
    )
    rows = session.execute(query.where(User.id.in_(list(user_ids))))
    return {row.id: FilterRow(row.birth_year, row.filters_ct, row.wrapped_key) for row in rows}


def matchable_rows(session: Session, *, ranges: Sequence[IdRange] | None = None) -> list[MatchableRow]:
    """Every user (in ``ranges``, if given) with their appearance, filters, model state, ratings and
    wrapped data key. One query: the job must not pay a round trip per user for the key."""
    query = (
        select(
            User.id,
            User.birth_year,
            Appearance.latent_ct,
            Profile.filters_ct,
            PreferenceState.state_ct,
            func.coalesce(PreferenceState.n_ratings, 0),
            UserKey.wrapped_key,
        )
        .join(UserKey, UserKey.user_id == User.id)
        .outerjoin(Appearance, Appearance.user_id == User.id)
        .outerjoin(Profile, Profile.user_id == User.id)
        .outerjoin(PreferenceState, PreferenceState.user_id == User.id)
        .where(User.scopes.contains(["user"]), within(User.id, ranges))
        .order_by(User.id)
    )
    return [MatchableRow(*row) for row in session.execute(query)]
