"""What a user does with their candidates: like, pass, match, unmatch, block, and see avatars.

Nothing here reveals another user's preference, score or latent: candidates are listed by rank,
and the only view of another person is the rendered avatar of a current candidate or match.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from engine.latent import LatentSpace
from matchsvc.errors import InvalidInput, NotFound
from matchsvc.keys import KeyRingStore
from matchsvc.repositories import matching as matching_repo
from matchsvc.services.keys import user_cipher
from matchsvc.services.profiles import eligible_partners, render_avatar
from matchsvc.services.sealed import LIKE, PASS, open_choice, seal_choice

__all__ = [
    "CandidateSlice",
    "MatchView",
    "block",
    "candidate_avatar",
    "decide",
    "list_candidates",
    "list_matches",
    "match_avatar",
    "unmatch",
]


@dataclass(frozen=True)
class CandidateSlice:
    user_ids: list[uuid.UUID]
    next_after_rank: int | None


def list_candidates(
    session: Session, *, user_id: uuid.UUID, after_rank: int | None, limit: int, keys: KeyRingStore
) -> CandidateSlice:
    """The stored list, best first, without any pair the current state no longer allows (D26)."""
    kept: list[int] = []
    ids: list[uuid.UUID] = []
    cursor, more = after_rank, False
    while not more:
        rows = list(matching_repo.list_candidates(session, user_id=user_id, after_rank=cursor, limit=limit + 1))
        allowed = eligible_partners(session, keys=keys, user_id=user_id, others=[row.candidate_id for row in rows])
        for row in rows:
            if row.candidate_id in allowed:
                if len(ids) == limit:
                    more = True
                    break
                ids.append(row.candidate_id)
                kept.append(row.rank)
        if len(rows) <= limit:
            break
        cursor = rows[-1].rank
    return CandidateSlice(user_ids=ids, next_after_rank=kept[-1] if more else None)


def _current_candidate(session: Session, *, user_id: uuid.UUID, candidate_id: uuid.UUID, keys: KeyRingStore) -> None:
    """404 unless the pair is on the user's stored list *and* still allowed by the current state."""
    if not matching_repo.is_candidate(session, user_id=user_id, candidate_id=candidate_id) or not eligible_partners(
        session, keys=keys, user_id=user_id, others=[candidate_id]
    ):
        raise NotFound(f"candidate {candidate_id} not found")


@dataclass(frozen=True)
class DecisionOutcome:
    matched: bool
    match_id: uuid.UUID | None


def decide(
    session: Session, *, user_id: uuid.UUID, target_id: uuid.UUID, like: bool, keys: KeyRingStore
) -> DecisionOutcome:
    """Like or pass on a current candidate; a like answered by a like creates the match.

    The first decision on a candidate stands: repeating it returns the same result. A pass removes
    the pair from both lists at once (neither is suggested to the other again).
    """
    _current_candidate(session, user_id=user_id, candidate_id=target_id, keys=keys)
    cipher = user_cipher(session, keys=keys, user_id=user_id, for_update=True)
    choice = LIKE if like else PASS
    blob = seal_choice(cipher, target_id=target_id, choice=choice)
    if not matching_repo.add_decision(session, user_id=user_id, target_id=target_id, choice_ct=blob):
        earlier = matching_repo.get_decision(session, user_id=user_id, target_id=target_id)
        assert earlier is not None
        if open_choice(cipher, target_id=target_id, blob=earlier.choice_ct) != choice:
            raise InvalidInput("you already decided on this candidate")
    result = DecisionOutcome(matched=False, match_id=None)
    if not like:
        matching_repo.remove_candidates(session, user_id, [target_id])
    if like:
        theirs = matching_repo.get_decision(session, user_id=target_id, target_id=user_id)
        if theirs is not None:
            their_cipher = user_cipher(session, keys=keys, user_id=target_id)
            if open_choice(their_cipher, target_id=user_id, blob=theirs.choice_ct) == LIKE:
                match = matching_repo.add_match(session, user_id, target_id)
                result = DecisionOutcome(matched=True, match_id=match.id)
    session.commit()
    return result


@dataclass(frozen=True)
class MatchView:
    id: uuid.UUID
    other_user_id: uuid.UUID
    created_at: datetime


def list_matches(session: Session, *, user_id: uuid.UUID) -> list[MatchView]:
    return [
        MatchView(
            id=match.id,
            other_user_id=match.user_high if match.user_low == user_id else match.user_low,
            created_at=match.created_at,
        )
        for match in matching_repo.list_matches(session, user_id=user_id)
    ]


def unmatch(session: Session, *, user_id: uuid.UUID, match_id: uuid.UUID) -> None:
    """Remove the match; the decisions stay, so the pair is not suggested again."""
    if matching_repo.delete_match(session, match_id=match_id, user_id=user_id) is None:
        raise NotFound(f"match {match_id} not found")
    session.commit()


def block(session: Session, *, user_id: uuid.UUID, target_id: uuid.UUID) -> None:
    """Hide both ways at once and forever: candidates and any match between the two are removed.

    Only someone the API has shown the user can be blocked (:func:`matching_repo.was_shown`);
    every other id, existing or not, gets the same 404, so blocking cannot probe for accounts.
    """
    if target_id == user_id:
        raise InvalidInput("you cannot block yourself")
    if not matching_repo.was_shown(session, viewer_id=user_id, other_id=target_id):
        raise NotFound("no such person among your candidates, matches or people you decided on")
    matching_repo.add_block(session, blocker_id=user_id, blocked_id=target_id)
    matching_repo.remove_pair(session, user_id, target_id)
    session.commit()


def candidate_avatar(
    session: Session, *, user_id: uuid.UUID, candidate_id: uuid.UUID, keys: KeyRingStore, space: LatentSpace
) -> bytes:
    _current_candidate(session, user_id=user_id, candidate_id=candidate_id, keys=keys)
    return render_avatar(session, user_id=candidate_id, keys=keys, space=space)


def match_avatar(
    session: Session, *, user_id: uuid.UUID, match_id: uuid.UUID, keys: KeyRingStore, space: LatentSpace
) -> bytes:
    for match in list_matches(session, user_id=user_id):
        if match.id == match_id:
            return render_avatar(session, user_id=match.other_user_id, keys=keys, space=space)
    raise NotFound(f"match {match_id} not found")
