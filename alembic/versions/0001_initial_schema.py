"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 15:34:10.972427
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('faces',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('backend', sa.String(length=32), nullable=False),
    sa.Column('latent', postgresql.ARRAY(sa.Float()), nullable=False),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_faces'))
    )
    op.create_table('users',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('username', sa.String(length=32), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('birth_year', sa.SmallInteger(), nullable=False),
    sa.Column('scopes', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('face_images',
    sa.Column('face_id', sa.UUID(), nullable=False),
    sa.Column('png', sa.LargeBinary(), nullable=False),
    sa.Column('etag', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_face_images_face_id_faces'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('face_id', name=op.f('pk_face_images'))
    )
    op.create_table('face_impressions',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('face_id', sa.UUID(), nullable=False),
    sa.Column('served_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_face_impressions_face_id_faces'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_face_impressions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'face_id', name=op.f('pk_face_impressions'))
    )
    op.create_table('idempotency_keys',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('request_mac', sa.LargeBinary(), nullable=False),
    sa.Column('status_code', sa.SmallInteger(), nullable=False),
    sa.Column('response_body', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_idempotency_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('preference_states',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('state_ct', sa.LargeBinary(), nullable=False),
    sa.Column('n_ratings', sa.Integer(), nullable=False),
    sa.Column('pending_updates', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_preference_states_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_preference_states'))
    )
    op.create_table('privacy_ledger',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('mechanism', sa.String(length=64), nullable=False),
    sa.Column('epsilon', sa.Float(), nullable=False),
    sa.Column('delta', sa.Float(), nullable=False),
    sa.Column('neighbouring', sa.Text(), nullable=False),
    sa.Column('scope', sa.String(length=80), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('epsilon >= 0 AND delta >= 0 AND delta < 1', name=op.f('ck_privacy_ledger_valid_spend')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_privacy_ledger_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_privacy_ledger'))
    )
    op.create_index(op.f('ix_privacy_ledger_user_id'), 'privacy_ledger', ['user_id'], unique=False)
    op.create_table('ratings',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('face_id', sa.UUID(), nullable=False),
    sa.Column('label_ct', sa.LargeBinary(), nullable=False),
    sa.Column('label_epsilon', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_ratings_face_id_faces'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ratings_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ratings')),
    sa.UniqueConstraint('user_id', 'face_id', name=op.f('uq_ratings_user_id_face_id'))
    )
    op.create_index(op.f('ix_ratings_user_id'), 'ratings', ['user_id'], unique=False)
    op.create_table('user_keys',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
    sa.Column('kek_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_keys'))
    )
    op.create_index(op.f('ix_user_keys_kek_version'), 'user_keys', ['kek_version'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_user_keys_kek_version'), table_name='user_keys')
    op.drop_table('user_keys')
    op.drop_index(op.f('ix_ratings_user_id'), table_name='ratings')
    op.drop_table('ratings')
    op.drop_index(op.f('ix_privacy_ledger_user_id'), table_name='privacy_ledger')
    op.drop_table('privacy_ledger')
    op.drop_table('preference_states')
    op.drop_table('idempotency_keys')
    op.drop_table('face_impressions')
    op.drop_table('face_images')
    op.drop_table('users')
    op.drop_table('faces')
