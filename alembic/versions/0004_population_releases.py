"""population releases: the user-level DP population model and its ledger

One row per release of ``engine.population.PopulationModel``, inserted by ``matchsvc population
fit`` and never edited. Plaintext by design (decision D14 in docs/decisions.md): a release is
(epsilon, delta)-DP under adding or removing one user's whole history, and no column refers to a
user, so the data-subject schema walk (foreign keys to ``users.id``) leaves it alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "population_releases",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("mechanism", sa.String(length=32), nullable=False),
        sa.Column("neighbouring", sa.String(length=32), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("noise_multiplier", sa.Float(), nullable=False),
        sa.Column("sample_rate", sa.Float(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("max_grad_norm", sa.Float(), nullable=False),
        sa.Column("n_users", sa.Integer(), nullable=False),
        sa.Column("n_personas", sa.SmallInteger(), nullable=False),
        sa.Column("rank", sa.SmallInteger(), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_population_releases_positive_version")),
        sa.CheckConstraint(
            "epsilon > 0 AND delta > 0 AND delta < 1", name=op.f("ck_population_releases_valid_guarantee")
        ),
        sa.CheckConstraint(
            "noise_multiplier > 0 AND sample_rate > 0 AND sample_rate <= 1 AND steps >= 1 AND max_grad_norm > 0",
            name=op.f("ck_population_releases_valid_accounting"),
        ),
        sa.CheckConstraint(
            "n_users >= 1 AND n_personas >= 1 AND rank >= 1", name=op.f("ck_population_releases_valid_shape")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_population_releases")),
        sa.UniqueConstraint("version", name=op.f("uq_population_releases_version")),
    )


def downgrade() -> None:
    op.drop_table("population_releases")
