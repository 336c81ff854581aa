"""Migrations are the only schema path: applying them yields exactly the ORM's schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from matchsvc.db.base import Base
from matchsvc.runtime import Runtime


def test_models_and_migrations_agree(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"models differ from migrations; add an Alembic revision: {diff}"


def test_migrations_are_idempotent(runtime: Runtime) -> None:
    from matchsvc.db.migrate import upgrade

    upgrade(runtime.engine.url.render_as_string(hide_password=False))
    with runtime.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is not None
