"""The durable job store: jobs, attempts, log lines and the orchestrator lease.

SQLAlchemy over SQLite (WAL) by default, PostgreSQL (``postgresql+psycopg://``) for shared
deployments; the schema is kept by Alembic migrations (``store.migrations``). Every method opens its own short session, so readers on other threads
(REST handlers) never wait on the orchestrator's writes for long.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker, undefer

from ..processes import pid_alive
from .engine import make_engine
from .logs import LogStore
from .migrations import ensure_schema
from .models import SUCCEEDED, AttemptRecord, DuplicateSubmission, JobRecord, Lease
from .orm import AttemptRow, JobRow, LeaseRow

_LEASE_NAME = "orchestrator"


def _attempt(row: AttemptRow) -> AttemptRecord:
    return AttemptRecord(
        job_id=row.job_id,
        n=row.n,
        state=row.state,
        worker=row.worker,
        gpu_ids=list(row.gpu_ids or []),
        started=row.started,
        ended=row.ended,
        exit_code=row.exit_code,
        error=row.error,
        infrastructure=bool(row.infrastructure),
        mlflow_run_id=row.mlflow_run_id,
        process_started=row.process_started,
        pid=row.pid,
    )


def _job(row: JobRow, attempts: Sequence[AttemptRow]) -> JobRecord:
    return JobRecord(
        id=row.id,
        seq=row.seq,
        name=row.name,
        user=row.user,
        state=row.state,
        priority=row.priority,
        spec=dict(row.spec or {}),
        depends_on=list(row.depends_on or []),
        created=row.created,
        started=row.started,
        ended=row.ended,
        not_before=row.not_before,
        progress=dict(row.progress or {}),
        error=row.error,
        mlflow=dict(row.mlflow or {}),
        has_outputs=bool(row.has_outputs),
        retry_from=row.retry_from or 1,
        code_hash=row.code_hash or "",
        rerun_of=row.rerun_of,
        attempts=[_attempt(a) for a in sorted(attempts, key=lambda a: a.n)],
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
    )


_ORDERS = {
    "newest": (JobRow.seq.desc(),),
    "oldest": (JobRow.seq.asc(),),
    "priority": (JobRow.priority.desc(), JobRow.seq.asc()),
}


def _filtered(query: Any, states: Iterable[str] | None, user: str | None, text: str | None) -> Any:
    if states:
        query = query.where(JobRow.state.in_(list(states)))
    if user:
        query = query.where(JobRow.user == user)
    if text:
        needle = text.lower()
        query = query.where(
            or_(
                func.lower(JobRow.name).contains(needle, autoescape=True),
                JobRow.id.startswith(text, autoescape=True),
            )
        )
    return query


class JobStore(LogStore):
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        ensure_schema(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    # -- jobs -------------------------------------------------------------
    def create_job(self, record: JobRecord, package: bytes | None) -> JobRecord:
        """Insert a new job; raise ``DuplicateSubmission`` if its user already used its key."""
        return self.create_jobs([(record, package)])[0]

    def create_jobs(self, jobs: Sequence[tuple[JobRecord, bytes | None]]) -> list[JobRecord]:
        """Insert new jobs in one transaction (all or none), numbered in the given order;
        raise ``DuplicateSubmission`` if their user already used one of their keys."""
        try:
            return self._insert_jobs(jobs)
        except IntegrityError:
            for record, _ in jobs:
                if record.idempotency_key is not None:
                    existing = self.find_by_idempotency_key(record.user, record.idempotency_key)
                    if existing is not None:
                        raise DuplicateSubmission(existing.id) from None
            raise  # some other constraint (a job id reused)

    def _insert_jobs(self, jobs: Sequence[tuple[JobRecord, bytes | None]]) -> list[JobRecord]:
        with self._session.begin() as session:
            rows = [
                JobRow(
                    id=record.id, name=record.name, user=record.user, state=record.state,
                    priority=record.priority, spec=record.spec, depends_on=record.depends_on,
                    created=record.created, code_hash=record.code_hash, rerun_of=record.rerun_of,
                    idempotency_key=record.idempotency_key, request_hash=record.request_hash,
                    progress={}, mlflow={}, package=package,
                )
                for record, package in jobs
            ]  # fmt: skip
            for row in rows:
                session.add(row)
                session.flush()  # one by one: the seq numbers follow the given order
            for (record, _), row in zip(jobs, rows, strict=True):
                record.seq = row.seq
        return [record for record, _ in jobs]

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._session() as session:
            row = session.scalar(select(JobRow).where(JobRow.id == job_id))
            if row is None:
                return None
            attempts = session.scalars(select(AttemptRow).where(AttemptRow.job_id == job_id)).all()
            return _job(row, attempts)

    def find_by_idempotency_key(self, user: str, key: str) -> JobRecord | None:
        """The job ``user`` submitted with idempotency ``key``, if any."""
        with self._session() as session:
            job_id = session.scalar(
                select(JobRow.id).where(JobRow.user == user, JobRow.idempotency_key == key)
            )
        return None if job_id is None else self.get_job(job_id)

    def get_jobs(
        self, job_ids: Sequence[str], with_packages: bool = False
    ) -> dict[str, tuple[JobRecord, bytes | None]]:
        """Several jobs (and their code packages) in one session, for a dispatch round."""
        if not job_ids:
            return {}
        with self._session() as session:
            query = select(JobRow).where(JobRow.id.in_(list(job_ids)))
            if with_packages:
                query = query.options(undefer(JobRow.package))
            rows = session.scalars(query).all()
            by_job: dict[str, list[AttemptRow]] = {row.id: [] for row in rows}
            for attempt in session.scalars(
                select(AttemptRow).where(AttemptRow.job_id.in_(list(by_job)))
            ):
                by_job[attempt.job_id].append(attempt)
            return {
                row.id: (_job(row, by_job[row.id]), row.package if with_packages else None)
                for row in rows
            }

    def list_jobs(
        self,
        states: Iterable[str] | None = None,
        user: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        order: str = "newest",
        text: str | None = None,
    ) -> list[JobRecord]:
        """Jobs by ``order``: ``newest`` or ``oldest`` submitted first, or ``priority``
        (dispatch order: higher priority, then earlier submission); ``text`` matches a
        part of the name or the start of the id, ignoring case."""
        with self._session() as session:
            query = _filtered(select(JobRow), states, user, text)
            query = query.order_by(*_ORDERS[order])
            if offset:
                query = query.offset(offset)
            if limit is not None:
                query = query.limit(limit)
            rows = session.scalars(query).all()
            by_job: dict[str, list[AttemptRow]] = {row.id: [] for row in rows}
            if by_job:
                for attempt in session.scalars(
                    select(AttemptRow).where(AttemptRow.job_id.in_(list(by_job)))
                ):
                    by_job[attempt.job_id].append(attempt)
            return [_job(row, by_job[row.id]) for row in rows]

    def count_jobs(
        self, states: Iterable[str] | None = None, user: str | None = None, text: str | None = None
    ) -> int:
        with self._session() as session:
            query = _filtered(select(func.count()).select_from(JobRow), states, user, text)
            return int(session.scalar(query) or 0)

    def count_in_groups(self, states: Iterable[str], groups: Iterable[str]) -> dict[str, int]:
        """Jobs in ``states`` that count against each of ``groups`` (their spec's
        ``quota_groups``): only that part of each spec is read."""
        wanted = set(groups)
        counts = dict.fromkeys(wanted, 0)
        if not wanted:
            return counts
        with self._session() as session:
            query = select(JobRow.spec["quota_groups"]).where(JobRow.state.in_(list(states)))
            for value in session.scalars(query):
                for group in value or ():
                    if group in wanted:
                        counts[group] += 1
        return counts

    def recent_runtimes(
        self, keys: Iterable[tuple[str, str]], per_key: int = 5, scan: int = 500
    ) -> dict[tuple[str, str], list[float]]:
        """Run times (seconds from start to end) of the latest succeeded jobs of each
        ``(user, name)``, newest first, at most ``per_key`` each, from the ``scan`` newest."""
        wanted = set(keys)
        if not wanted:
            return {}
        with self._session() as session:
            query = (
                select(JobRow.user, JobRow.name, JobRow.started, JobRow.ended)
                .where(
                    JobRow.state == SUCCEEDED,
                    JobRow.name.in_({name for _, name in wanted}),
                    JobRow.user.in_({user for user, _ in wanted}),
                    JobRow.started.is_not(None),
                    JobRow.ended.is_not(None),
                )
                .order_by(JobRow.ended.desc())
                .limit(scan)
            )
            found: dict[tuple[str, str], list[float]] = {}
            for user, name, started, ended in session.execute(query):
                runs = found.setdefault((user, name), [])
                if (user, name) in wanted and len(runs) < per_key:
                    runs.append(max(0.0, ended - started))
            return {key: runs for key, runs in found.items() if runs}

    def gpu_holdings(self, since: float) -> list[tuple[str, int, float, float | None]]:
        """``(user, GPUs, start, end)`` of the attempts that held GPUs after ``since`` (end
        None while running): what fair share weighs."""
        with self._session() as session:
            query = (
                select(JobRow.user, AttemptRow.gpu_ids, AttemptRow.started, AttemptRow.ended)
                .join(JobRow, JobRow.id == AttemptRow.job_id)
                .where(
                    AttemptRow.started.is_not(None),
                    or_(AttemptRow.ended.is_(None), AttemptRow.ended >= since),
                )
            )
            return [
                (user, len(gpu_ids or []), started, ended)
                for user, gpu_ids, started, ended in session.execute(query)
                if gpu_ids
            ]

    def job_counts(self) -> list[tuple[str, int, str, int]]:
        """``(state, priority, user, jobs)`` for every combination present."""
        with self._session() as session:
            query = select(JobRow.state, JobRow.priority, JobRow.user, func.count()).group_by(
                JobRow.state, JobRow.priority, JobRow.user
            )
            return [
                (state, priority, user, int(n))
                for state, priority, user, n in session.execute(query)
            ]

    def attempt_counts(self) -> list[tuple[str, bool, bool, int]]:
        """``(state, infrastructure, first, attempts)``: attempts by how they ended, whether
        the cause was infrastructure, and whether they were a job's first."""
        with self._session() as session:
            first = AttemptRow.n == 1
            query = select(
                AttemptRow.state, AttemptRow.infrastructure, first, func.count()
            ).group_by(AttemptRow.state, AttemptRow.infrastructure, first)
            return [
                (state, bool(infra), bool(one), int(n))
                for state, infra, one, n in session.execute(query)
            ]

    def queue_waits(self, newest: int = 10_000) -> list[float]:
        """Seconds from submission to the first start, of the ``newest`` jobs that started."""
        with self._session() as session:
            query = (
                select(JobRow.created, JobRow.started)
                .where(JobRow.started.is_not(None))
                .order_by(JobRow.seq.desc())
                .limit(newest)
            )
            return [max(0.0, started - created) for created, started in session.execute(query)]

    def dispatch_latencies(self, newest: int = 10_000) -> list[float]:
        """Seconds from dispatch (the attempt stored and handed to Dask) to the job's
        process running, of the ``newest`` attempts that got that far."""
        with self._session() as session:
            query = (
                select(AttemptRow.started, AttemptRow.process_started)
                .where(AttemptRow.started.is_not(None), AttemptRow.process_started.is_not(None))
                .order_by(AttemptRow.pk.desc())
                .limit(newest)
            )
            return [max(0.0, running - started) for started, running in session.execute(query)]

    def count_reexecutions(self) -> int:
        """Attempts whose code had started and that ended for a reason not the job's own
        (a lost worker, a stopped service): each one's job ran its code again."""
        with self._session() as session:
            query = (
                select(func.count())
                .select_from(AttemptRow)
                .where(AttemptRow.infrastructure.is_(True), AttemptRow.process_started.is_not(None))
            )
            return int(session.scalar(query) or 0)

    def update_job(self, job_id: str, **fields: Any) -> None:
        with self._session.begin() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(**fields))

    def update_jobs(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Several job updates in one transaction (a scheduling round)."""
        if not changes:
            return
        with self._session.begin() as session:
            for job_id, fields in changes:
                session.execute(update(JobRow).where(JobRow.id == job_id).values(**fields))

    def get_outputs(self, job_id: str) -> bytes | None:
        with self._session() as session:
            return session.scalar(select(JobRow.outputs).where(JobRow.id == job_id))

    def existing_ids(self, job_ids: Iterable[str]) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        with self._session() as session:
            return set(session.scalars(select(JobRow.id).where(JobRow.id.in_(ids))))

    # -- attempts ---------------------------------------------------------
    def add_attempts(self, attempts: Sequence[AttemptRecord]) -> None:
        with self._session.begin() as session:
            for a in attempts:
                session.add(
                    AttemptRow(
                        job_id=a.job_id,
                        n=a.n,
                        state=a.state,
                        worker=a.worker,
                        gpu_ids=list(a.gpu_ids),
                        started=a.started,
                        ended=a.ended,
                        exit_code=a.exit_code,
                        error=a.error,
                        infrastructure=a.infrastructure,
                        mlflow_run_id=a.mlflow_run_id,
                        process_started=a.process_started,
                        pid=a.pid,
                    )
                )

    def update_job_and_attempt(
        self, job_id: str, n: int, job: dict[str, Any], attempt: dict[str, Any]
    ) -> None:
        """One transaction for a transition that changes both (an attempt starts running)."""
        with self._session.begin() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(**job))
            session.execute(
                update(AttemptRow)
                .where(AttemptRow.job_id == job_id, AttemptRow.n == n)
                .values(**attempt)
            )

    def update_attempt(self, job_id: str, n: int, **fields: Any) -> None:
        with self._session.begin() as session:
            session.execute(
                update(AttemptRow)
                .where(AttemptRow.job_id == job_id, AttemptRow.n == n)
                .values(**fields)
            )

    # -- lease ------------------------------------------------------------
    def current_lease(self) -> Lease | None:
        with self._session() as session:
            row = session.get(LeaseRow, _LEASE_NAME)
            if row is None:
                return None
            return Lease(row.owner, row.url, row.pid, row.host, row.expires)

    def acquire_lease(self, owner: str, url: str | None, now: float, ttl: float) -> Lease | None:
        """Take or renew the single-owner lease; return the other holder if it is alive."""
        try:
            return self._acquire_lease(owner, url, now, ttl)
        except IntegrityError:
            # Two processes inserted the first lease row at once. The row exists now, so the
            # retry's SELECT ... FOR UPDATE serialises them (SQLite serialises all writers).
            return self._acquire_lease(owner, url, now, ttl)

    def _acquire_lease(self, owner: str, url: str | None, now: float, ttl: float) -> Lease | None:
        host = socket.gethostname()
        with self._session.begin() as session:
            row = session.get(LeaseRow, _LEASE_NAME, with_for_update=True)
            if row is not None and row.owner != owner and row.expires > now:
                if not (row.host == host and not pid_alive(row.pid)):
                    return Lease(row.owner, row.url, row.pid, row.host, row.expires)
            if row is None:
                session.add(
                    LeaseRow(
                        name=_LEASE_NAME,
                        owner=owner,
                        url=url,
                        pid=os.getpid(),
                        host=host,
                        expires=now + ttl,
                    )
                )
            else:
                row.owner, row.url, row.pid, row.host = owner, url, os.getpid(), host
                row.expires = now + ttl
        return None

    def release_lease(self, owner: str) -> None:
        with self._session.begin() as session:
            row = session.get(LeaseRow, _LEASE_NAME)
            if row is not None and row.owner == owner:
                session.delete(row)
