"""Engines for the job store's two databases: SQLite (the default) and PostgreSQL."""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import Table, create_engine, event
from sqlalchemy.engine import Engine

BUSY_SECONDS = 30.0


def tune_sqlite_connection(dbapi_connection: Any, _record: Any = None) -> None:
    """Write-ahead log and one sync per checkpoint instead of one per commit: a crash of a
    process loses nothing, a crash of the machine at most the last commits."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
    _use_write_ahead_log(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_write_ahead_log(cursor: Any) -> None:
    """Switching a new database to WAL needs it to itself, and SQLite answers "locked" at
    once, without waiting, while another process creates or migrates it: try again."""
    import sqlite3

    deadline = time.monotonic() + BUSY_SECONDS
    delay = 0.02
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", tune_sqlite_connection)
        return engine
    return create_engine(url, pool_pre_ping=True)


def insert_ignoring_duplicates(dialect: str, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the databases that have it."""
    # Imported here: the PostgreSQL dialect alone costs ~30 ms at import time.
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert

        return insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"the job store supports SQLite and PostgreSQL, not {dialect}")
