"""SQLAlchemy tables. Only ``store.sql`` uses these.

They must match the head revision in ``migrations/versions`` (a test compares them): a change
here is a new migration there.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(255))
    user: Mapped[str] = mapped_column(String(255), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict] = mapped_column(JSON)
    depends_on: Mapped[list] = mapped_column(JSON, default=list)
    created: Mapped[float] = mapped_column(Float)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True)
    not_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    mlflow: Mapped[dict] = mapped_column(JSON, default=dict)
    package: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    outputs: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    has_outputs: Mapped[bool] = mapped_column(Boolean, default=False)
    # Failures of attempts numbered below this do not count against max_retries
    # (a manual retry grants a fresh budget).
    retry_from: Mapped[int] = mapped_column(Integer, default=1)
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rerun_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # A client's key for one submission: a retried POST finds the job it already made.
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Hash of the submitted request, to tell a retry from a different request reusing a key.
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    # NULL keys are distinct, so jobs without a key never collide.
    __table_args__ = (
        Index("ix_jobs_user_idempotency_key", "user", "idempotency_key", unique=True),
    )


class AttemptRow(Base):
    __tablename__ = "attempts"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    n: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    gpu_ids: Mapped[list] = mapped_column(JSON, default=list)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    infrastructure: Mapped[bool] = mapped_column(Boolean, default=False)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When the child process began executing the job's body, and its pid on the worker.
    process_started: Mapped[float | None] = mapped_column(Float, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_attempt_job_n", "job_id", "n", unique=True),)


class LogBatchRow(Base):
    """Lines of one attempt as they arrived together: ``data`` is zlib-compressed JSON of
    ``[[seq, stream, text, time], …]``. A line's id (readers' cursor) is
    ``id * LINE_ID_STRIDE + its index`` (``store.logs``)."""

    __tablename__ = "log_batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    lines: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_log_batches_job_attempt", "job_id", "attempt"),
        # Ids make readers' cursors: SQLite must never hand one out twice.
        {"sqlite_autoincrement": True},
    )


class LeaseRow(Base):
    __tablename__ = "lease"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    pid: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    expires: Mapped[float] = mapped_column(Float)
