"""A throwaway PostgreSQL server for tests: its own data directory, port and socket.

Nothing outside the test is used or touched: the server is initialised in a temp folder,
listens on 127.0.0.1 at a free port, and is stopped (``pg_ctl stop``) when the test session
ends. PostgreSQL refuses to run as root, so under root it runs as Debian's ``postgres`` user.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import free_port

SUPERUSER = "trainorch"
# Durability is pointless for a server that lives as long as a test session; skipping it makes
# initdb, CREATE DATABASE and every commit much faster.
_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def find_bin_dir() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    return found[-1] if found else None


def unavailable(reason: str) -> NoReturn:
    """Skip, except on CI, where a missing PostgreSQL is a broken setup: fail."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason} (apt-get install postgresql)")


def _runuser() -> str:
    """util-linux's runuser, also when /usr/sbin is not on PATH (a plain user's shell)."""
    found = shutil.which("runuser") or next(
        (path for path in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(path)), None
    )
    if found is None:
        unavailable("runuser is missing; it runs PostgreSQL as its own user when tests run as root")
    return found


class PostgresServer:
    def __init__(self, bin_dir: Path, root: Path, run_as: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.run_as = run_as
        self.port = 0
        self.running = False

    def _run(self, *args: str) -> None:
        prefix = [_runuser(), "-u", self.run_as, "--"] if self.run_as else []
        command = [*prefix, str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{tail}")

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--no-sync", "--no-locale", "--encoding=UTF8",
        )  # fmt: skip
        # A port found free may be taken by another xdist worker before the server binds it.
        for attempt in range(3):
            self.port = free_port()
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {_FAST}"
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                    "-o", options, "-w", "-t", "30", "start",
                )  # fmt: skip
                self.running = True
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(sql)

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        # FORCE: a store a test forgot to close must not keep the database alive.
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[-1]} WITH (FORCE)")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private server (or skip/fail via ``unavailable``); stop it afterwards."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable("initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install 'psycopg[binary]')")
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres"
        try:
            owner = pwd.getpwnam(run_as)
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to run the server as")
    # Under /tmp, not pytest's root-only temp folder, so the postgres user can reach it.
    root = Path(tempfile.mkdtemp(prefix="trainorch-pg-"))
    if run_as:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(bin_dir, root, run_as)
    atexit.register(server.stop)  # if the session dies before the fixture's teardown
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
