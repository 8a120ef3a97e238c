"""Idempotent submission (a key per user, the request's hash) and the child process of an
attempt (when its body began executing, its pid on the worker).

All additions are nullable, so rows written by 0.1.0 stay valid as they are.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("request_hash", sa.String(64), nullable=True))
    # NULL keys are distinct in a unique index on both SQLite and PostgreSQL, so jobs
    # submitted without a key never collide.
    op.create_index(
        "ix_jobs_user_idempotency_key", "jobs", ["user", "idempotency_key"], unique=True
    )
    op.add_column("attempts", sa.Column("process_started", sa.Float(), nullable=True))
    op.add_column("attempts", sa.Column("pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_index("ix_jobs_user_idempotency_key", table_name="jobs")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("pid")
        batch.drop_column("process_started")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
