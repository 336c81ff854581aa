"""Candidates, decisions, matches and blocks."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import NamedTuple

from sqlalchemy import BindParameter, and_, any_, bindparam, delete, or_, select, union
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import Session

from matchsvc.db.models import Block, Candidate, Decision, Match
from matchsvc.repositories.id_ranges import IdRange, within

__all__ = [
    "DecisionRow",
    "add_block",
    "add_decision",
    "add_match",
    "delete_match",
    "all_decisions",
    "blocked_or_matched_pairs",
    "blocked_with",
    "candidate_partners",
    "get_decision",
    "is_blocked",
    "is_candidate",
    "list_candidates",
    "list_matches",
    "match_between",
    "remove_candidates",
    "remove_pair",
    "replace_candidates",
    "stored_lists",
    "was_shown",
]


def _ordered(a: uuid.UUID, b: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    return (a, b) if a < b else (b, a)


def _uuid_array(ids: Collection[uuid.UUID]) -> BindParameter:
    """One array parameter: ``IN`` would bind one parameter per id, and PostgreSQL takes at most 65535."""
    return bindparam(None, list(ids), type_=ARRAY(PG_UUID(as_uuid=True)))


def replace_candidates(session: Session, ranked: dict[uuid.UUID, list[uuid.UUID]]) -> None:
    """Replace the candidate lists of the users in ``ranked`` (others keep theirs)."""
    if not ranked:
        return
    session.execute(delete(Candidate).where(Candidate.user_id == any_(_uuid_array(ranked))))
    # COPY on the session's own connection (same transaction): millions of rows in seconds.
    raw = session.connection().connection.driver_connection
    with raw.cursor() as cursor, cursor.copy("COPY candidates (user_id, candidate_id, rank) FROM STDIN") as copy:
        for user_id, others in ranked.items():
            for rank, other in enumerate(others):
                copy.write_row((user_id, other, rank))


def stored_lists(session: Session, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The stored candidate lists of ``user_ids``, in rank order (users without one are absent)."""
    lists: dict[uuid.UUID, list[uuid.UUID]] = {}
    if not user_ids:
        return lists
    query = select(Candidate.user_id, Candidate.candidate_id).where(Candidate.user_id == any_(_uuid_array(user_ids)))
    for owner, candidate in session.execute(query.order_by(Candidate.user_id, Candidate.rank)):
        lists.setdefault(owner, []).append(candidate)
    return lists


def list_candidates(session: Session, *, user_id: uuid.UUID, after_rank: int | None, limit: int) -> Sequence[Candidate]:
    query = select(Candidate).where(Candidate.user_id == user_id)
    if after_rank is not None:
        query = query.where(Candidate.rank > after_rank)
    return session.scalars(query.order_by(Candidate.rank).limit(limit)).all()


def is_candidate(session: Session, *, user_id: uuid.UUID, candidate_id: uuid.UUID) -> bool:
    return session.get(Candidate, (user_id, candidate_id)) is not None


def get_decision(session: Session, *, user_id: uuid.UUID, target_id: uuid.UUID) -> Decision | None:
    return session.get(Decision, (user_id, target_id))


def add_decision(session: Session, *, user_id: uuid.UUID, target_id: uuid.UUID, choice_ct: bytes) -> bool:
    """False when the user already decided on this target (the first decision stands)."""
    statement = (
        insert(Decision)
        .values(user_id=user_id, target_id=target_id, choice_ct=choice_ct)
        .on_conflict_do_nothing()
        .returning(Decision.user_id)
    )
    return session.execute(statement).first() is not None


def match_between(session: Session, a: uuid.UUID, b: uuid.UUID) -> Match | None:
    low, high = _ordered(a, b)
    return session.scalar(select(Match).where(Match.user_low == low, Match.user_high == high))


def add_match(session: Session, a: uuid.UUID, b: uuid.UUID) -> Match:
    low, high = _ordered(a, b)
    statement = insert(Match).values(id=uuid.uuid4(), user_low=low, user_high=high).on_conflict_do_nothing()
    session.execute(statement)
    match = match_between(session, a, b)
    assert match is not None
    return match


def list_matches(session: Session, *, user_id: uuid.UUID) -> Sequence[Match]:
    query = select(Match).where(or_(Match.user_low == user_id, Match.user_high == user_id))
    return session.scalars(query.order_by(Match.created_at, Match.id)).all()


def delete_match(session: Session, *, match_id: uuid.UUID, user_id: uuid.UUID) -> Match | None:
    """Delete a match the user is part of; returns it, or None if there is no such match for them."""
    match = session.get(Match, match_id)
    if match is None or user_id not in (match.user_low, match.user_high):
        return None
    session.delete(match)
    return match


def add_block(session: Session, *, blocker_id: uuid.UUID, blocked_id: uuid.UUID) -> None:
    session.execute(insert(Block).values(blocker_id=blocker_id, blocked_id=blocked_id).on_conflict_do_nothing())


def is_blocked(session: Session, a: uuid.UUID, b: uuid.UUID) -> bool:
    query = select(Block.blocker_id).where(
        or_(and_(Block.blocker_id == a, Block.blocked_id == b), and_(Block.blocker_id == b, Block.blocked_id == a))
    )
    return session.scalar(query.limit(1)) is not None


def was_shown(session: Session, *, viewer_id: uuid.UUID, other_id: uuid.UUID) -> bool:
    """True when the API has shown ``other_id`` to ``viewer_id``: a current candidate or match,
    someone the viewer decided on (every past match is one), or someone they already blocked."""
    low, high = _ordered(viewer_id, other_id)
    shown = union(
        select(Candidate.user_id).where(Candidate.user_id == viewer_id, Candidate.candidate_id == other_id),
        select(Match.user_low).where(Match.user_low == low, Match.user_high == high),
        select(Decision.user_id).where(Decision.user_id == viewer_id, Decision.target_id == other_id),
        select(Block.blocker_id).where(Block.blocker_id == viewer_id, Block.blocked_id == other_id),
    )
    return session.execute(shown.limit(1)).first() is not None


def candidate_partners(session: Session, user_id: uuid.UUID) -> set[uuid.UUID]:
    """Everyone on the user's list and everyone whose list holds the user."""
    query = union(
        select(Candidate.candidate_id).where(Candidate.user_id == user_id),
        select(Candidate.user_id).where(Candidate.candidate_id == user_id),
    )
    return set(session.scalars(query))


def remove_candidates(session: Session, user_id: uuid.UUID, others: Collection[uuid.UUID]) -> None:
    """Remove the candidate entries between the user and each of ``others``, both directions."""
    if not others:
        return
    listed = list(others)
    session.execute(
        delete(Candidate).where(
            or_(
                and_(Candidate.user_id == user_id, Candidate.candidate_id.in_(listed)),
                and_(Candidate.candidate_id == user_id, Candidate.user_id.in_(listed)),
            )
        )
    )


def blocked_with(session: Session, user_id: uuid.UUID, others: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``others`` who blocked the user or whom the user blocked."""
    if not others:
        return set()
    listed = list(others)
    query = union(
        select(Block.blocked_id).where(Block.blocker_id == user_id, Block.blocked_id.in_(listed)),
        select(Block.blocker_id).where(Block.blocked_id == user_id, Block.blocker_id.in_(listed)),
    )
    return set(session.scalars(query))


def remove_pair(session: Session, a: uuid.UUID, b: uuid.UUID) -> None:
    """Remove every candidate entry and the match between two users (both directions)."""
    remove_candidates(session, a, [b])
    low, high = _ordered(a, b)
    session.execute(delete(Match).where(Match.user_low == low, Match.user_high == high))


def blocked_or_matched_pairs(
    session: Session, *, ranges: Sequence[IdRange] | None = None
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Pairs never to suggest to each other again: blocks and existing matches (both users in
    ``ranges``, if given)."""
    query = union(
        select(Block.blocker_id, Block.blocked_id).where(within(Block.blocker_id, ranges), within(Block.blocked_id, ranges)),
        select(Match.user_low, Match.user_high).where(within(Match.user_low, ranges), within(Match.user_high, ranges)),
    )
    return [tuple(row) for row in session.execute(query)]


class DecisionRow(NamedTuple):
    decider_id: uuid.UUID
    target_id: uuid.UUID
    choice_ct: bytes


def decisions_between(session: Session, user_id: uuid.UUID, others: Collection[uuid.UUID]) -> list[DecisionRow]:
    """The decisions of the user on ``others`` and of ``others`` on the user."""
    if not others:
        return []
    listed = list(others)
    query = union(
        select(Decision.user_id, Decision.target_id, Decision.choice_ct).where(
            Decision.user_id == user_id, Decision.target_id.in_(listed)
        ),
        select(Decision.user_id, Decision.target_id, Decision.choice_ct).where(
            Decision.target_id == user_id, Decision.user_id.in_(listed)
        ),
    )
    return [DecisionRow(*row) for row in session.execute(query)]


def all_decisions(session: Session, *, ranges: Sequence[IdRange] | None = None) -> list[DecisionRow]:
    """Every decision (both users in ``ranges``, if given); the job opens each sealed choice with
    the decider's key."""
    query = select(Decision.user_id, Decision.target_id, Decision.choice_ct).where(
        within(Decision.user_id, ranges), within(Decision.target_id, ranges)
    )
    return [DecisionRow(*row) for row in session.execute(query)]
