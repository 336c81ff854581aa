"""login throttle: failed logins per account, shared by every API process (issue 13)

One row per attempted username while it has recent failures, keyed by an HMAC of the normalised
username under a server key, so neither usernames nor whatever was typed into the username field
is stored. No foreign key to ``users``: unknown usernames are throttled exactly like real ones.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("account_key", sa.LargeBinary(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_attempt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("octet_length(account_key) = 32", name=op.f("ck_login_throttle_account_key_is_hmac")),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_login_throttle_failures_not_negative")),
        sa.PrimaryKeyConstraint("account_key", name=op.f("pk_login_throttle")),
    )
    op.create_index(op.f("ix_login_throttle_last_attempt"), "login_throttle", ["last_attempt"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_throttle_last_attempt"), table_name="login_throttle")
    op.drop_table("login_throttle")
