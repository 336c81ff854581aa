"""Shared fixtures: one real PostgreSQL per test session (embedded unless DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from matchsvc.db.base import Base
from matchsvc.runtime import Runtime
from matchsvc.settings import Settings

#: Generous limits so functional tests never trip the rate limiter; its own test sets tight ones.
TEST_SETTINGS = {"rate_limit_per_minute": 1_000_000, "rate_limit_burst": 1_000_000, "match_interval_seconds": 0}


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    rt = Runtime.start(Settings(**TEST_SETTINGS), ephemeral=True)
    yield rt
    rt.close()


@pytest.fixture
def db(runtime: Runtime) -> Iterator[Runtime]:
    """The runtime, with every table emptied after the test so tests stay independent."""
    yield runtime
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with runtime.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def client(db: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(db), raise_server_exceptions=False) as test_client:
        yield test_client
