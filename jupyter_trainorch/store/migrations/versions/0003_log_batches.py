"""Log lines are stored a batch to a row, compressed: a row per line cost more to write,
to read and to keep (an index entry and 60 bytes of row per line) than the line itself.
The lines already stored move into batches, in their order.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json
import zlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH_LINES = 2048  # store.logs.MAX_BATCH_LINES; a migration keeps its own copy
_LINE_COLUMNS = ("job_id", "attempt", "seq", "stream", "text", "time")


def upgrade() -> None:
    batches = op.create_table(
        "log_batches",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_log_batches_job_attempt", "log_batches", ["job_id", "attempt"])
    bind = op.get_bind()
    logs = sa.table("logs", sa.column("id"), *(sa.column(name) for name in _LINE_COLUMNS))
    query = sa.select(*(logs.c[name] for name in _LINE_COLUMNS)).order_by(
        logs.c.job_id, logs.c.attempt, logs.c.id
    )
    pending: list[tuple] = []
    for row in bind.execute(query):
        if pending and (pending[0][:2] != tuple(row[:2]) or len(pending) == BATCH_LINES):
            bind.execute(batches.insert().values(**_batch(pending)))
            pending = []
        pending.append(tuple(row))
    if pending:
        bind.execute(batches.insert().values(**_batch(pending)))
    op.drop_index("ix_logs_job_attempt_seq", table_name="logs")
    op.drop_table("logs")


def _batch(rows: list[tuple]) -> dict:
    lines = [[seq, stream, text, time] for _, _, seq, stream, text, time in rows]
    return {
        "job_id": rows[0][0], "attempt": rows[0][1], "first_seq": min(r[2] for r in rows),
        "last_seq": max(r[2] for r in rows), "lines": len(rows),
        "data": zlib.compress(json.dumps(lines).encode(), 1),
    }  # fmt: skip


def downgrade() -> None:
    logs = op.create_table(
        "logs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
    )
    op.create_index("ix_logs_job_attempt_seq", "logs", ["job_id", "attempt", "seq"], unique=True)
    bind = op.get_bind()
    batches = sa.table("log_batches", sa.column("id"), sa.column("job_id"),
                       sa.column("attempt"), sa.column("data"))  # fmt: skip
    for job_id, attempt, data in bind.execute(
        sa.select(batches.c.job_id, batches.c.attempt, batches.c.data).order_by(batches.c.id)
    ):
        lines = json.loads(zlib.decompress(data))
        bind.execute(logs.insert(), [dict(zip(_LINE_COLUMNS, (job_id, attempt, *line), strict=True)) for line in lines])  # fmt: skip
    op.drop_index("ix_log_batches_job_attempt", table_name="log_batches")
    op.drop_table("log_batches")
