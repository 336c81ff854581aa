"""audit log: append-only, hash-chained

The table is append-only in the database itself: a statement-level trigger refuses every UPDATE
and DELETE, whoever issues it (decision D7 in docs/decisions.md).

TRUNCATE is deliberately not covered. It needs the TRUNCATE privilege, which in production belongs
to the migration role (the table owner) only; the application role is granted SELECT and INSERT on
``audit_log`` (and USAGE on its identity sequence) and nothing else. The test-suite, running as the
owner, empties the table between tests with TRUNCATE. Anyone holding the owner role can also disable
the trigger: that is what the hash chain is for, since such an edit cannot go unnoticed by
``matchsvc audit verify``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_REFUSE_FUNCTION = """
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit entries are never edited or deleted; append a new entry instead';
END
$$
"""

_REFUSE_TRIGGER = """
CREATE TRIGGER audit_log_append_only
BEFORE UPDATE OR DELETE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()
"""


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor_id", sa.UUID(), nullable=True),
        sa.Column("actor_scope", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("entry_hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "octet_length(prev_hash) = 32 AND octet_length(entry_hash) = 32", name=op.f("ck_audit_log_hash_lengths")
        ),
        sa.CheckConstraint("subject ~ '^[0-9a-f]{64}$'", name=op.f("ck_audit_log_subject_is_pseudonym")),
        sa.CheckConstraint("jsonb_typeof(details) = 'object'", name=op.f("ck_audit_log_details_is_object")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_log_prev_hash")),
    )
    op.create_index(op.f("ix_audit_log_action"), "audit_log", ["action"], unique=False)
    op.create_index(op.f("ix_audit_log_subject"), "audit_log", ["subject"], unique=False)
    op.execute(_REFUSE_FUNCTION)
    op.execute(_REFUSE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION audit_log_refuse_change()")
    op.drop_index(op.f("ix_audit_log_subject"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_action"), table_name="audit_log")
    op.drop_table("audit_log")
