"""rating path: running privacy totals, on-device spends, the refit queue

* ``privacy_scope_totals`` and ``privacy_user_totals``: the ledger's sums kept up to date with each
  spend (same transaction, under the user's writer lock), so the cap check reads two rows instead
  of summing every spend. Backfilled here from ``privacy_ledger``, which stays the record.
* ``privacy_ledger.randomized_on_device``: the spend's randomized response ran on the client.
* ``refit_jobs``: users whose released model is behind their ratings, worked by the refit workers
  of every process (``FOR UPDATE SKIP LOCKED``, with a lease so a crashed worker's job returns).
* ``rate_buckets``: the rate limiter's token buckets, shared by every worker process. UNLOGGED:
  not written to the WAL and emptied after a crash, which only refills everyone's bucket.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-07 02:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


def upgrade() -> None:
    op.add_column(
        "privacy_ledger",
        sa.Column("randomized_on_device", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "privacy_scope_totals",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), _user_fk(), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "scope"),
    )
    op.create_table(
        "privacy_user_totals",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), _user_fk(), primary_key=True),
        sa.Column("model_epsilon", sa.Float(), nullable=False),
        sa.Column("model_delta", sa.Float(), nullable=False),
        sa.Column("worst_rating_epsilon", sa.Float(), nullable=False),
        sa.Column("worst_rating_delta", sa.Float(), nullable=False),
        sa.Column("spends", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "refit_jobs",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), _user_fk(), primary_key=True),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_refit_jobs_requested_at", "refit_jobs", ["requested_at"])
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=80), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        prefixes=["UNLOGGED"],
    )
    op.execute(
        """
        INSERT INTO privacy_scope_totals (user_id, scope, epsilon, delta)
        SELECT user_id, scope, sum(epsilon), sum(delta) FROM privacy_ledger
        WHERE scope <> 'model' GROUP BY user_id, scope
        """
    )
    op.execute(
        """
        INSERT INTO privacy_user_totals
            (user_id, model_epsilon, model_delta, worst_rating_epsilon, worst_rating_delta, spends)
        SELECT u.user_id,
               coalesce((SELECT sum(epsilon) FROM privacy_ledger l WHERE l.user_id = u.user_id AND scope = 'model'), 0),
               coalesce((SELECT sum(delta) FROM privacy_ledger l WHERE l.user_id = u.user_id AND scope = 'model'), 0),
               coalesce(w.epsilon, 0), coalesce(w.delta, 0), u.spends
        FROM (SELECT user_id, count(*) AS spends FROM privacy_ledger GROUP BY user_id) u
        LEFT JOIN (
            SELECT DISTINCT ON (user_id) user_id, epsilon, delta FROM privacy_scope_totals
            ORDER BY user_id, epsilon DESC
        ) w ON w.user_id = u.user_id
        """
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_index("ix_refit_jobs_requested_at", table_name="refit_jobs")
    op.drop_table("refit_jobs")
    op.drop_table("privacy_user_totals")
    op.drop_table("privacy_scope_totals")
    op.drop_column("privacy_ledger", "randomized_on_device")
