"""Engine and session factory. One engine per process; sessions are per request or per job."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["create_db_engine", "create_session_factory"]


def create_db_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create the engine; ``pool_pre_ping`` survives a database restart without a 500."""
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so services can build responses post-commit."""
    return sessionmaker(engine, expire_on_commit=False)
