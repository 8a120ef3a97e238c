"""JobService: the one front door to the orchestrator, in plain JSON-able values.

REST handlers call it from worker threads; the in-process client (a kernel or script
with no server) calls it directly. Both get the same validation, rendering and
error sentences. The orchestrator itself starts on first use.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

from ..spec import JobSpec, SpecError, default_user
from ..store import ALL_STATES, TERMINAL_STATES, JobStore
from .config import OrchestratorConfig
from .host import OrchestratorHost
from .service import JobNotFound

MAX_LIMIT = 1000
MAX_WAIT = 30.0


class JobService:
    def __init__(self, config: OrchestratorConfig, url: str | None = None) -> None:
        self.config = config
        self.url = url
        self._host: OrchestratorHost | None = None
        self._store: JobStore | None = None
        self._lock = threading.Lock()
        self._registry: Any = None
        self._metrics_reader: Any = None

    # -- lifecycle -----------------------------------------------------------------
    @property
    def store(self) -> JobStore:
        with self._lock:
            if self._store is None:
                self._store = JobStore(self.config.db_url)
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

    def stop(self) -> None:
        with self._lock:
            if self._host is not None:
                self._host.stop()
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
    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"spec": {...}, "package": base64?}`` or ``{"template": name, "params": {...},
        "overrides": {...}, "source": str?, "depends_on": [...], "user": str?}``."""
        if not isinstance(body, dict):
            raise SpecError("the request body must be a JSON object")
        package = None
        if body.get("package"):
            try:
                package = base64.b64decode(body["package"], validate=True)
            except ValueError:
                raise SpecError("package must be base64-encoded bytes") from None
        if "spec" in body:
            spec = JobSpec.from_dict(body["spec"])
            spec.user = spec.user or default_user()
        elif "template" in body:
            from ..package import template_files, with_files

            template = self.templates_registry.get(str(body["template"]))
            spec = self._render(template, body)
            spec.group = str(body.get("group") or "")
            package = with_files(package, template_files(template))
        else:
            raise SpecError("the request must contain either spec or template")
        host = self.host
        record = host.call(lambda o: o.submit(spec, package))
        return self.get(record.id)

    def _render(self, template: Any, body: dict[str, Any]) -> JobSpec:
        from ..spec.render import render_spec

        return render_spec(
            template,
            params=body.get("params") or {},
            overrides=body.get("overrides") or {},
            source=body.get("source"),
            user=str(body.get("user") or default_user()),
            depends_on=list(body.get("depends_on") or []),
            outputs=body.get("outputs"),
            workdir=body.get("workdir"),
            name=body.get("name"),
        )

    def cancel(self, job_id: str) -> dict[str, Any]:
        self.host.call(lambda o: o.cancel(job_id))
        return self.get(job_id)

    def update(self, job_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change what may change after submission: the priority of a waiting job."""
        from ..spec import parse_priority

        if not isinstance(changes, dict) or set(changes) != {"priority"}:
            raise SpecError("only priority can be changed, as {\"priority\": \"high\"}")
        priority = parse_priority(changes["priority"])
        self.host.call(lambda o: o.set_priority(job_id, priority))
        return self.get(job_id)

    def rerun(self, job_id: str) -> dict[str, Any]:
        record = self.host.call(lambda o: o.rerun(job_id))
        return self.get(record.id)

    def package(self, job_id: str) -> bytes | None:
        self.get(job_id)
        return self.store.get_jobs([job_id], with_packages=True)[job_id][1]

    def retry(self, job_id: str) -> dict[str, Any]:
        self.host.call(lambda o: o.retry(job_id))
        return self.get(job_id)

    # -- reads (straight from the store; no orchestrator round trip) -----------------
    def get(self, job_id: str) -> dict[str, Any]:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return {**job.to_dict(), "spec": job.spec}

    def list(
        self, state: str | None = None, user: str | None = None, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        states = None
        if state:
            states = [s.strip() for s in state.split(",") if s.strip()]
            unknown = [s for s in states if s not in ALL_STATES]
            if unknown:
                raise SpecError(f"state must be one of {', '.join(ALL_STATES)}, not {unknown[0]!r}")
        if limit < 1 or limit > MAX_LIMIT:
            raise SpecError(f"limit must be between 1 and {MAX_LIMIT}")
        if offset < 0:
            raise SpecError("offset must not be negative")
        store = self.store
        jobs = store.list_jobs(states=states, user=user or None, limit=limit, offset=offset)
        return {
            "jobs": [j.to_dict() for j in jobs],
            "total": store.count_jobs(states=states, user=user or None),
            "limit": limit,
            "offset": offset,
        }

    def logs(
        self, job_id: str, attempt: int | None = None, after: int = 0, wait: float = 0.0, limit: int = 5000
    ) -> dict[str, Any]:
        """Log lines after the cursor ``after``; with ``wait``, block until some arrive
        or the job ends (a long poll for ``--follow``). Reading alone starts nothing."""
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        feed_seq = -1
        while True:
            job = self.store.get_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            lines = self.store.read_logs(job_id, attempt=attempt, after=after, limit=limit)
            finished = job.state in TERMINAL_STATES
            remaining = deadline - time.monotonic()
            if lines or finished or remaining <= 0:
                return {
                    "job_id": job_id,
                    "state": job.state,
                    "lines": [line.to_dict() for line in lines],
                    "next": lines[-1].id if lines else after,
                    "finished": finished,
                }
            # Waiting for an unfinished job needs its orchestrator running (started here
            # on first use, like any command).
            feed = self.host.orchestrator.feed  # type: ignore[union-attr]
            if feed_seq < 0:
                feed_seq = feed.last_seq
                continue
            changes = feed.wait(feed_seq, remaining)
            if changes:
                feed_seq = changes[-1]["seq"]

    def metric_history(self, job_id: str) -> dict[str, Any]:
        """Metric histories of every attempt's MLflow run: ``{key: [[step, value, time_ms]]}``."""
        from ..tracking import MlflowTracker, tracking_uri

        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        result: dict[str, Any] = {"job_id": job_id, "attempts": []}
        uri = tracking_uri(self.config.mlflow, self.config.data_dir)
        if uri is None:
            return {**result, "warning": "tracking is off"}
        if self._metrics_reader is None or self._metrics_reader.tracking_uri != uri:
            self._metrics_reader = MlflowTracker(uri)
        client = self._metrics_reader.client
        try:
            for attempt in job.attempts:
                histories: dict[str, list[list[float]]] = {}
                if attempt.mlflow_run_id:
                    for key in client.get_run(attempt.mlflow_run_id).data.metrics:
                        points = client.get_metric_history(attempt.mlflow_run_id, key)
                        histories[key] = [[m.step, m.value, m.timestamp] for m in points]
                result["attempts"].append({"n": attempt.n, "run_id": attempt.mlflow_run_id, "metrics": histories})
        except Exception as err:  # noqa: BLE001 - MLflow down: say so, the rest of the panel works
            return {**result, "warning": f"MLflow could not be read: {type(err).__name__}: {err}"[:400]}
        return result

    def outputs(self, job_id: str) -> bytes | None:
        self.get(job_id)
        return self.store.get_outputs(job_id)

    def events(self, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        feed = self.host.orchestrator.feed  # type: ignore[union-attr]
        changes = feed.wait(after, min(max(timeout, 0.0), MAX_WAIT)) if timeout else feed.since(after)
        return {"changes": changes, "last": changes[-1]["seq"] if changes else max(after, 0)}

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job reaches a final state (or ``timeout`` passes)."""
        host = self.host
        deadline = None if timeout is None else time.monotonic() + timeout
        seq = host.orchestrator.feed.last_seq if host.orchestrator else 0
        while True:
            job = self.get(job_id)
            if job["state"] in TERMINAL_STATES:
                return job
            remaining = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
            if remaining <= 0:
                return job
            changes = host.orchestrator.feed.wait(seq, remaining)  # type: ignore[union-attr]
            if changes:
                seq = changes[-1]["seq"]

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
