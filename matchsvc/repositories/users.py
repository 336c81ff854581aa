"""User accounts."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from matchsvc.db.models import User

__all__ = ["add_user", "get_user", "get_user_by_username", "set_password_hash"]


def get_user(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def get_user_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def add_user(session: Session, *, username: str, password_hash: str, birth_year: int, scopes: list[str]) -> User:
    user = User(username=username, password_hash=password_hash, birth_year=birth_year, scopes=scopes)
    session.add(user)
    session.flush()
    return user


def set_password_hash(session: Session, *, user: User, password_hash: str) -> None:
    user.password_hash = password_hash
    session.flush()
