"""Schema migrations (Alembic), applied by ``JobStore`` whenever it opens a database.

Opening a store is frequent (every CLI call, every test), so the common case, a database
already at head, costs one query and never imports alembic. Otherwise the migration runs under
a lock so that processes opening a new store at the same moment take turns: a file lock beside
an SQLite database, a transaction-scoped advisory lock on PostgreSQL.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in versions/ (a test checks it against alembic's own head).
HEAD = "0003"
# The schema of release 0.1.0, which created its tables without alembic.
BASELINE = "0001"
# Any fixed 64-bit number: every process migrating a trainorch database takes this one.
_PG_LOCK_KEY = 0x7472_616E_6F72_6368  # the bytes of "tranorch"

_HERE = Path(__file__).resolve().parent


class SchemaError(RuntimeError):
    """The database is at a revision this version of jupyter-trainorch does not know."""


def current_revision(engine: Engine) -> str | None:
    """The stamped revision, or None for a new database or one made by release 0.1.0."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        # No alembic_version table (SQLite: OperationalError, PostgreSQL: ProgrammingError).
        return None


def alembic_config(connection: Connection) -> Config:
    """An in-memory alembic configuration bound to ``connection`` (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["connection"] = connection
    return config


def ensure_schema(engine: Engine) -> None:
    """Bring the database to ``HEAD``: create it, or stamp a 0.1.0 database and upgrade it."""
    if current_revision(engine) == HEAD:
        return
    with _file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Released at commit; a second process waits here, then finds the work done.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    tables = set(inspect(connection).get_table_names())
    config = alembic_config(connection)
    if "alembic_version" in tables:
        current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if current == HEAD:
            return  # another process migrated while this one waited for the lock
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if current is not None and current not in known:
            raise SchemaError(
                f"the job store is at schema revision {current!r}, newer than this "
                f"jupyter-trainorch knows (head {HEAD!r}): upgrade jupyter-trainorch"
            )
    elif "jobs" in tables:
        # Made by release 0.1.0: its tables are exactly revision 0001.
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")


@contextmanager
def _file_lock(engine: Engine) -> Iterator[Any]:
    """Serialise migrations of one SQLite file across processes (flock on a sibling file)."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:"):
        yield None
        return
    fd = os.open(f"{os.path.abspath(path)}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock
