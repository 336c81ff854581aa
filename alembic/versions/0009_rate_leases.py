"""rate limit leases: ``rate_buckets.granted`` replaces ``allowed``

A take now hands the worker process a lease of tokens beyond the request's own cost, which the
process spends without a statement (decision D40). The row reports back how many tokens the last
take granted (0: refused) instead of a yes/no. UNLOGGED and worthless after a crash, so the
buckets are emptied rather than converted: every client starts from a full bucket.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 15:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("TRUNCATE rate_buckets")
    op.drop_column("rate_buckets", "allowed")
    op.add_column("rate_buckets", sa.Column("granted", sa.Float(), nullable=False))


def downgrade() -> None:
    op.execute("TRUNCATE rate_buckets")
    op.drop_column("rate_buckets", "granted")
    op.add_column("rate_buckets", sa.Column("allowed", sa.Boolean(), nullable=False))
