"""JobService: the service's one front door to the orchestrator, in plain JSON-able values.

REST handlers call it from worker threads with the authenticated ``Caller``; it applies
who-may-do-what (``access``), validation and rendering, and answers every mistake with
one sentence. Reads go straight to the store; commands run on the orchestrator's loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from ..contract.jobs import BatchRequest
from ..contract.limits import JOB_ORDERS, MAX_LIST_LIMIT, MAX_WAIT_SECONDS
from ..spec import SpecError
from ..spec.model import validate
from ..spec.secrets import public_spec
from ..store import (
    ALL_STATES,
    PENDING,
    PREEMPTED,
    QUEUED,
    RETRYING,
    RUNNING,
    TERMINAL_STATES,
    JobRecord,
    JobStore,
)
from . import access
from .access import Caller
from .config import OrchestratorConfig
from .dependencies import dependency_reason
from .errors import JobNotFound, JobStateError
from .host import OrchestratorHost
from .intake import Intake, key_and_hash
from .quota_use import QuotaUse
from .quotas import Quotas


class JobService:
    def __init__(
        self, config: OrchestratorConfig, url: str | None = None, others_jobs: str = "queue"
    ) -> None:
        if others_jobs not in access.OTHERS_JOBS:
            raise SpecError(
                f"others_jobs must be one of {', '.join(access.OTHERS_JOBS)}, not {others_jobs!r}"
            )
        self.config = config
        self.url = url
        self.others_jobs = others_jobs
        self._host: OrchestratorHost | None = None
        self._store: JobStore | None = None
        self._lock = threading.Lock()
        self._registry: Any = None
        self._metrics_reader: Any = None
        self.quotas = Quotas.from_config(config)
        self.intake = Intake(self.quotas, lambda: self.templates_registry)
        self.quota_use = QuotaUse(self.quotas, lambda: self.store, self._gpus_held)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def store(self) -> JobStore:
        with self._lock:
            if self._store is None:
                self._store = self.config.store_class(self.config.db_url)
            return self._store

    @property
    def host(self) -> OrchestratorHost:
        """The running orchestrator, started on first use."""
        store = self.store
        with self._lock:
            if self._host is None or not self._host.running:
                self._host = OrchestratorHost(self.config, self.url, store=store).start()
            return self._host

    @property
    def started(self) -> bool:
        return self._host is not None and self._host.running

    @property
    def orchestrator(self) -> Any:
        """The running orchestrator, or None (never starts one)."""
        return self._host.orchestrator if self._host is not None and self.started else None

    def stop(self, detach: bool = True) -> None:
        """``detach``: running attempts go on and the next start adopts them."""
        with self._lock:
            if self._host is not None:
                self._host.stop(detach=detach)
                self._host = None
            if self._store is not None:
                self._store.close()
                self._store = None

    @property
    def templates_registry(self) -> Any:
        from ..spec.templates import TemplateRegistry

        if self._registry is None:
            self._registry = TemplateRegistry()
        return self._registry

    # -- commands ------------------------------------------------------------------
    def submit(
        self, caller: Caller, body: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """``{"spec": {...}, "package": base64?}`` or ``{"template": name, "params": {...},
        "overrides": {...}, "source": str?, "depends_on": [...]}``; the job belongs to the
        caller whatever the body says. Returns the job and whether it was created now
        (False: the key was seen before and this is that job)."""
        spec, package = self.intake.spec(caller, body)
        key, digest = key_and_hash(body, idempotency_key)
        self.quota_use.check_submit(caller, key)
        admin = caller.admin
        if key is None:
            record, created = self.host.call(lambda o: o.submit(spec, package, admin=admin)), True
        else:
            record, created = self.host.call(
                lambda o: o.submit_once(spec, package, key, digest, admin)
            )
        return self._job_dict(caller, record.id), created

    def submit_batch(
        self, caller: Caller, body: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """``{"jobs": [submit bodies]}``: jobs that may name each other in their
        dependencies, all created or none (see ``orchestrator.groups``)."""
        if not isinstance(body, dict):
            raise SpecError("the request body must be a JSON object")
        validate(BatchRequest, body)
        jobs = []
        for n, item in enumerate(body["jobs"]):
            try:
                jobs.append(self.intake.spec(caller, item))
            except SpecError as err:
                raise SpecError(f"jobs[{n}]: {err}") from None
        key, digest = key_and_hash(body, idempotency_key, reserve=len("#999"))
        self.quota_use.check_submit(caller, None if key is None else f"{key}#0", len(jobs))
        admin = caller.admin
        records, created = self.host.call(lambda o: o.submit_group(jobs, admin, key, digest))
        return {"jobs": [self._job_dict(caller, r.id) for r in records]}, created

    def cancel(self, caller: Caller, job_id: str) -> dict[str, Any]:
        self._owned(caller, job_id, "cancel it")
        self.host.call(lambda o: o.cancel(job_id))
        return self.get(caller, job_id)

    def update(self, caller: Caller, job_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change what may change after submission: the priority of a waiting job."""
        from ..spec import parse_priority

        if not isinstance(changes, dict) or set(changes) != {"priority"}:
            raise SpecError('only priority can be changed, as {"priority": "high"}')
        self._owned(caller, job_id, "change its priority")
        priority = parse_priority(changes["priority"])
        self.host.call(lambda o: o.set_priority(job_id, priority))
        return self.get(caller, job_id)

    def rerun(self, caller: Caller, job_id: str) -> dict[str, Any]:
        self._owned(caller, job_id, "rerun it")
        record = self.host.call(lambda o: o.rerun(job_id, user=caller.name))
        return self.get(caller, record.id)

    def retry(self, caller: Caller, job_id: str) -> dict[str, Any]:
        self._owned(caller, job_id, "retry it")
        self.host.call(lambda o: o.retry(job_id))
        return self.get(caller, job_id)

    # -- reads (straight from the store; no orchestrator round trip) -----------------
    def _owned(self, caller: Caller, job_id: str, what: str) -> JobRecord:
        """The job, if the caller may ``what`` (as a sentence: "read its logs")."""
        job = self.store.get_job(job_id)
        if job is None or (not caller.owns(job.user) and self.others_jobs == "hidden"):
            raise JobNotFound(job_id)
        access.require_owner(caller, job_id, job.user, what)
        return job

    def _job_dict(self, caller: Caller, job_id: str) -> dict[str, Any]:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        data = {**job.to_dict(), "spec": public_spec(job.spec)}
        data.update(self._placement([job]).get(job_id, {}))
        shown = access.view(caller, data, self.others_jobs)
        if shown is None:
            raise JobNotFound(job_id)
        return shown

    def _placement(self, jobs: list[JobRecord]) -> dict[str, dict[str, Any]]:
        """For waiting jobs: ``queue_position`` (1 = dispatched next) and ``wait_reason``,
        one sentence: the policy's for queued jobs, the dependency or the backoff else; and
        ``estimated_start`` (queued) or ``estimated_end`` (running) where run times tell."""
        found: dict[str, dict[str, Any]] = {}
        if self.started:
            asked = [j.id for j in jobs if j.state in (QUEUED, PREEMPTED, RUNNING)]
            if asked:
                found = self.host.call_sync(lambda o: o.waiting(asked))
        pending = [job for job in jobs if job.state == PENDING]
        # One read for the dependencies of the whole page, not one per dependency.
        deps = self.store.get_jobs([d for job in pending for d in job.depends_on])
        states = {dep_id: record.state for dep_id, (record, _) in deps.items()}
        now = time.time()
        for job in jobs:
            if job.state == PENDING:
                found[job.id] = {"wait_reason": dependency_reason(job, states)}
            elif job.state == RETRYING:
                delay = max(0.0, (job.not_before or now) - now)
                found[job.id] = {
                    "wait_reason": f"retrying in {delay:.0f} s, after a failed attempt"
                }
        return found

    def get(self, caller: Caller, job_id: str) -> dict[str, Any]:
        return self._job_dict(caller, job_id)

    def me(self, caller: Caller, mode: str) -> dict[str, Any]:
        return {
            "name": caller.name,
            "admin": caller.admin,
            "mode": mode,
            "others_jobs": "all" if caller.admin else self.others_jobs,
            "may": {
                "submit": True,
                "act_on_others_jobs": caller.admin,
                "see_others_jobs": caller.admin or self.others_jobs != "hidden",
                "stop_service": caller.admin,
            },
            "quota": self.quota_use.view(caller),
        }

    def _gpus_held(self) -> tuple[dict[str, int], dict[str, int]]:
        if not self.started:
            return {}, {}
        return self.host.call_sync(lambda o: o.gpus_held())

    def list(
        self, caller: Caller, state: str | None = None, user: str | None = None,
        limit: int = 100, offset: int = 0, q: str | None = None, sort: str = "newest",
    ) -> dict[str, Any]:  # fmt: skip
        """A page of jobs; ``q`` matches part of a name or the start of an id, ``sort`` is
        newest (default), oldest or priority (dispatch order)."""
        if sort not in JOB_ORDERS:
            raise SpecError(f"sort must be one of {', '.join(JOB_ORDERS)}, not {sort[:40]!r}")
        if q is not None and (len(q) > 200 or "\x00" in q):
            raise SpecError("q must be at most 200 characters without NUL")
        states = None
        if state:
            states = [s.strip() for s in state.split(",") if s.strip()]
            unknown = [s for s in states if s not in ALL_STATES]
            if unknown:
                raise SpecError(f"state must be one of {', '.join(ALL_STATES)}, not {unknown[0]!r}")
        if limit < 1 or limit > MAX_LIST_LIMIT:
            raise SpecError(f"limit must be between 1 and {MAX_LIST_LIMIT}")
        if offset < 0:
            raise SpecError("offset must not be negative")
        if self.others_jobs == "hidden" and not caller.admin:
            if user and user != caller.name:
                return {"jobs": [], "total": 0, "limit": limit, "offset": offset}
            user = caller.name
        store = self.store
        jobs = store.list_jobs(states=states, user=user or None, limit=limit, offset=offset,
                               order=sort, text=q or None)  # fmt: skip
        placement = self._placement(jobs)
        shown = [
            access.view(caller, {**j.to_dict(), **placement.get(j.id, {})}, self.others_jobs)
            for j in jobs
        ]
        return {
            "jobs": [j for j in shown if j is not None],
            "total": store.count_jobs(states=states, user=user or None, text=q or None),
            "limit": limit,
            "offset": offset,
        }

    async def logs(
        self, caller: Caller, job_id: str, attempt: int | None = None, after: int = 0,
        wait: float = 0.0, limit: int = 10_000,
    ) -> dict[str, Any]:  # fmt: skip
        """Log lines after the cursor ``after``; with ``wait``, until some arrive or the job
        ends (a long poll for ``--follow``), holding no thread while it waits."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._owned, caller, job_id, "read its logs")
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        feed = await self._feed()
        while True:
            seen = feed.last_seq
            page = await loop.run_in_executor(None, self._log_page, job_id, attempt, after, limit)
            remaining = deadline - time.monotonic()
            if page["lines"] or page["finished"] or remaining <= 0:
                return page
            await feed.changed(seen, remaining)

    def _log_page(self, job_id: str, attempt: int | None, after: int, limit: int) -> dict[str, Any]:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        lines = self.store.read_log_page(job_id, attempt=attempt, after=after, limit=limit)
        return {
            "job_id": job_id,
            "state": job.state,
            "lines": lines,
            "next": lines[-1]["id"] if lines else after,
            "finished": job.state in TERMINAL_STATES,
        }

    async def _feed(self) -> Any:
        host = await asyncio.get_running_loop().run_in_executor(None, lambda: self.host)
        return host.orchestrator.feed

    def metric_history(self, caller: Caller, job_id: str) -> dict[str, Any]:
        """Metric histories of every attempt's MLflow run: ``{key: [[step, value, time_ms]]}``."""
        from ..tracking import tracking_uri

        job = self._owned(caller, job_id, "read its metrics")
        result: dict[str, Any] = {"job_id": job_id, "attempts": []}
        uri = tracking_uri(self.config.mlflow, self.config.data_dir)
        if uri is None:
            return {**result, "warning": "tracking is off"}
        if self._metrics_reader is None or self._metrics_reader.tracking_uri != uri:
            self._metrics_reader = self.config.tracker_class(uri)
        client = self._metrics_reader.client
        try:
            for attempt in job.attempts:
                histories: dict[str, list[list[float]]] = {}
                if attempt.mlflow_run_id:
                    for key in client.get_run(attempt.mlflow_run_id).data.metrics:
                        points = client.get_metric_history(attempt.mlflow_run_id, key)
                        histories[key] = [[m.step, m.value, m.timestamp] for m in points]
                result["attempts"].append(
                    {"n": attempt.n, "run_id": attempt.mlflow_run_id, "metrics": histories}
                )
        except Exception as err:  # noqa: BLE001 - MLflow down: say so, the rest of the panel works
            return {
                **result,
                "warning": f"MLflow could not be read: {type(err).__name__}: {err}"[:400],
            }
        return result

    def package(self, caller: Caller, job_id: str) -> bytes | None:
        self._owned(caller, job_id, "download its code package")
        return self.store.get_jobs([job_id], with_packages=True)[job_id][1]

    def outputs(self, caller: Caller, job_id: str) -> bytes | None:
        self._owned(caller, job_id, "read its outputs")
        return self.store.get_outputs(job_id)

    async def events(self, caller: Caller, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        """Changes after ``after`` (waiting up to ``timeout`` for one, holding no thread);
        ``reset`` when ``after`` is from an earlier run of the service (its numbering started
        again): the client re-reads what it shows."""
        feed = await self._feed()
        if after > feed.last_seq:
            return {"changes": [], "last": feed.last_seq, "reset": True}
        if timeout > 0:
            await feed.changed(after, min(timeout, MAX_WAIT_SECONDS))
        changes = feed.since(after)
        visible = [
            c for c in (access.visible_change(caller, c, self.others_jobs) for c in changes) if c
        ]
        return {"changes": visible, "last": changes[-1]["seq"] if changes else max(after, 0)}

    def running_attempts(self) -> int:
        return self.host.call_sync(lambda o: len(o.attempts.running))

    def prepare_stop(self, caller: Caller, force: bool, drain: bool) -> int:
        """May the service stop now? With ``drain``, no new job starts from here on; the
        answer is how many running jobs a drain waits for (0: stop at once)."""
        if not caller.admin:
            raise access.Forbidden("only admins may stop the trainorch service")
        running = self.running_attempts()
        if running and not (force or drain):
            raise JobStateError(
                f"{running} job(s) are running; stop with force (they are stopped and run again "
                "at the next start) or drain (no new job starts; the service stops when they end)"
            )
        if not (drain and running):
            return 0
        self.host.call_sync(lambda o: setattr(o, "draining", True))
        return running

    def cluster(self) -> dict[str, Any]:
        return self.host.call_sync(lambda o: o.cluster_status())

    def templates(self) -> dict[str, Any]:
        registry = self.templates_registry
        registry.reload()
        return {
            "templates": [t.to_dict() for t in registry.list()],
            "errors": dict(registry.errors),
        }

    def template(self, name: str) -> dict[str, Any]:
        return self.templates_registry.get(name).to_dict()

    def prometheus(self) -> str:
        from .metrics import render_metrics

        return render_metrics(self.host)
