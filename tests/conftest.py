"""Shared fixtures: one real PostgreSQL per test session (embedded unless DATABASE_URL is set)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from matchsvc.runtime import Runtime
from matchsvc.settings import Settings
from tests.support.scenario import truncate_all

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
    truncate_all(runtime)


@pytest.fixture
def cli_env(db: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The CLI against the test database and its key ring; its logging setup is undone afterwards."""
    assert db.scratch is not None
    monkeypatch.setenv("DATABASE_URL", db.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("MATCHSVC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MATCHSVC_KEYRING_FILE", str(db.scratch / "keyring.json"))
    monkeypatch.setenv("MATCHSVC_LOG_LEVEL", "ERROR")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield monkeypatch
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def client(db: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(db), raise_server_exceptions=False) as test_client:
        yield test_client
