"""match runs: the record incremental matching runs start from

One row per finished run of the matching job (issue 15): the database time its snapshot was read,
its mode (full or incremental) and what it recomputed. The next incremental run refreshes the
users whose appearance, filters, model, blocks, decisions or matches changed after the last run's
``started_at``; a full run every ``MATCHSVC_MATCH_FULL_EVERY`` runs bounds staleness. No column
refers to a user.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-07 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "match_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("refreshed", sa.Integer(), nullable=False),
        sa.Column("pairs_scored", sa.BigInteger(), nullable=False),
        sa.Column("pairs_skipped_fraction", sa.Float(), nullable=False),
        sa.CheckConstraint("mode IN ('full', 'incremental')", name=op.f("ck_match_runs_known_mode")),
        sa.CheckConstraint(
            "users >= 0 AND refreshed >= 0 AND pairs_scored >= 0", name=op.f("ck_match_runs_valid_counts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_runs")),
    )
    op.create_index(op.f("ix_match_runs_started_at"), "match_runs", ["started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_match_runs_started_at"), table_name="match_runs")
    op.drop_table("match_runs")
