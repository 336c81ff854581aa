"""Apply Alembic migrations programmatically (``matchsvc db upgrade`` and ``serve`` on start)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade"]

#: ``alembic/`` at the project root (see ARCHITECTURE.md) when the service runs from a source
#: checkout; an installed wheel (the Docker image) names the folder in ``MATCHSVC_MIGRATIONS_DIR``,
#: with ``alembic.ini`` beside it.
MIGRATIONS_DIR = Path(os.environ.get("MATCHSVC_MIGRATIONS_DIR") or Path(__file__).resolve().parents[2] / "alembic")


def alembic_config(url: str) -> Config:
    config = Config(str(MIGRATIONS_DIR.parent / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision``; idempotent, safe to run on every start."""
    command.upgrade(alembic_config(url), revision)
