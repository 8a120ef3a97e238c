"""What is recorded of a job and its attempts, in order, on the tracking process's lanes.

A job's run is made when its first attempt starts (or, for a job that never ran, when it
ends), with the submit time as its start; each attempt's run, reserved ahead, is named
and tagged as the attempt's and nested under the job's. Tasks for one job keep their
order on the lane (``lanes``): a run is named before its metrics and its end, an
attempt's run is closed before its job's.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from .lanes import LATER, SOON
from .mlflow_tracker import MlflowTracker

MAX_LOG_ARTIFACT_BYTES = 5 * 2**20
PARAMS_KEPT = (
    "the job's code logged other values of its params first; its attempt's run keeps those"
)


Future = concurrent.futures.Future[Any]


class Recording:
    """Subclassed by ``worker.TrackingWorker``, which provides the lanes and the failure
    guard. Each operation returns the future of its last task (done: carried out)."""

    tracker: MlflowTracker

    def __init__(
        self,
        on_final_metrics: Callable[[str, dict[str, float]], None],
        on_job_run: Callable[[str, dict[str, Any]], None],
        on_model: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self._on_final_metrics = on_final_metrics
        self._on_job_run = on_job_run
        self._on_model = on_model
        # Only touched on the record lane's thread.
        self._job_runs: dict[str, dict[str, Any]] = {}
        self._last_attempt_run: dict[str, str] = {}
        # Metrics waiting for the lane, by run: one batch however many events came.
        self._points: dict[str, tuple[list[dict[str, Any]], Future]] = {}
        self._points_lock = threading.Lock()

    def record(
        self, priority: int, job_id: str, what: str, fn: Callable[..., Any], *args: Any
    ) -> Future:
        raise NotImplementedError

    def _guarded(self, job_id: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def _warn(self, job_id: str, message: str) -> None:
        raise NotImplementedError

    # -- the job's run -----------------------------------------------------------
    def _job_run(
        self, job: dict[str, Any], spec: dict[str, Any], created: float, meta: dict[str, str],
        stored: dict[str, Any], name_job: bool | None = False,
    ) -> dict[str, Any]:  # fmt: skip
        """The job's run, made now if it has none. ``stored``: as the store knows it;
        ``name_job``: it is a run reserved at the job's first start, to be made the job's
        (None: it may be, after a restart)."""
        job_id = job["id"]
        if job_id in self._job_runs:
            return self._job_runs[job_id]
        if stored.get("run_id"):
            if name_job is None:
                name_job = bool(
                    self._guarded(
                        job_id, "reading the job's run", self.tracker.is_reserved, stored["run_id"]
                    )  # fmt: skip
                )
            if name_job:
                self._guarded(
                    job_id, "naming the job's run", self.tracker.name_job, stored["run_id"],
                    job, spec,
                )  # fmt: skip
                self._describe(job_id, stored, spec, meta)
            self._job_runs[job_id] = stored
            return stored
        info = self._guarded(
            job_id, "creating the job's run", self.tracker.start_job, job, spec, created
        )
        if not info:
            return {}
        self._job_runs[job_id] = info
        self._on_job_run(job_id, info)
        self._describe(job_id, info, spec, meta)
        return info

    def _describe(
        self, job_id: str, info: dict[str, Any], spec: dict[str, Any], meta: dict[str, str]
    ) -> None:
        self.record(
            LATER, job_id, "logging the job's artifacts", self.tracker.describe_job,
            info["run_id"], spec, meta,
        )  # fmt: skip

    # -- what the orchestrator calls ---------------------------------------------
    def attempt_started(
        self, job: dict[str, Any], spec: dict[str, Any], created: float, meta: dict[str, str],
        stored: dict[str, Any], name_job: bool | None, run_id: str, n: int, worker: str,
        gpu_ids: list[str],
    ) -> Future:  # fmt: skip
        """Make the reserved run ``run_id`` attempt ``n``'s (its job's run first, if new).
        The attempt runs meanwhile: this yields to a burst of starts like the rest."""

        def name() -> None:
            parent = self._job_run(job, spec, created, meta, stored, name_job)
            self._last_attempt_run[job["id"]] = run_id
            if not self.tracker.name_attempt(run_id, parent.get("run_id"), job, n, worker, gpu_ids):
                self._warn(job["id"], PARAMS_KEPT)

        return self.record(SOON, job["id"], "naming the attempt's run", name)

    def metrics(self, job_id: str, run_id: str, points: list[dict[str, Any]]) -> Future:
        with self._points_lock:
            if run_id in self._points:
                waiting, logged = self._points[run_id]
                waiting.extend(points)
                return logged

            def log_waiting() -> None:
                with self._points_lock:
                    batch, _ = self._points.pop(run_id)
                self.tracker.log_metrics(run_id, batch)

            logged = self.record(LATER, job_id, "logging metrics", log_waiting)
            self._points[run_id] = (list(points), logged)
            return logged

    def attempt_ended(
        self, job_id: str, run_id: str, state: str, log_text: str,
        versions: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
    ) -> Future:  # fmt: skip
        def end() -> None:
            text = log_text
            if len(text) > MAX_LOG_ARTIFACT_BYTES:
                text = "[…earlier lines cut…]\n" + text[-MAX_LOG_ARTIFACT_BYTES:]
            if versions:  # guarded on its own: the run is closed even when this fails
                self._guarded(
                    job_id, "logging the versions", self.tracker.log_versions, run_id, versions
                )
            if data:  # its inputs' hashes, on this run and (the latest) on the job's
                job_run = self._job_runs.get(job_id, {}).get("run_id")
                self._guarded(
                    job_id, "logging the data inputs", self.tracker.log_data, run_id, job_run, data
                )
            self.tracker.end_attempt(run_id, state, text)
            self._on_final_metrics(job_id, self.tracker.final_metrics(run_id))

        # After this attempt's metrics, which wait in the same lane.
        return self.record(LATER, job_id, "closing the attempt's run", end)

    def job_ended(
        self, job: dict[str, Any], spec: dict[str, Any], created: float, meta: dict[str, str],
        stored: dict[str, Any], state: str, attempt_run: str | None = None,
    ) -> Future:  # fmt: skip
        """``stored``: the job's run as the store knows it; ``attempt_run``: its last
        attempt's run (both for after a restart). A job that never ran gets its run now."""
        job_id = job["id"]
        register_model = str(spec.get("register_model") or "")

        def end() -> None:
            parent = self._job_run(job, spec, created, meta, stored)
            self._job_runs.pop(job_id, None)
            last = self._last_attempt_run.pop(job_id, None) or attempt_run
            if parent.get("run_id"):
                if last:
                    # MLflow's compare relates a run's params to that run's own metrics,
                    # so the job's run gets its last attempt's. Guarded on its own: the
                    # run is closed even when this fails.
                    self._guarded(
                        job_id, "copying the final metrics", self.tracker.copy_final_metrics,
                        last, parent["run_id"],
                    )  # fmt: skip
                self.tracker.end_job(parent["run_id"], state)
            if state == "succeeded" and register_model and last and parent.get("experiment_id"):
                version = self._guarded(
                    job_id, "registering the model", self.tracker.register_model,
                    register_model, parent["experiment_id"], last,
                )  # fmt: skip
                if version:
                    self._on_model(job_id, version)

        return self.record(LATER, job_id, "closing the job's run", end)
