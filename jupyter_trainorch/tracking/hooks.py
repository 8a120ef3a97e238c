"""The orchestrator's tracking hooks, run on one background thread in call order.

One thread keeps a job's run created before its attempts' runs and keeps MLflow's
latency off the scheduling loop. Any failure is logged once per job and reported as
``mlflow.warning`` on the job; nothing here can fail a job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .mlflow_tracker import MlflowTracker

log = logging.getLogger(__name__)
MAX_LOG_ARTIFACT_BYTES = 5 * 2**20
# After a failure, calls are skipped for this long: an unreachable server must not make
# every attempt wait for MLflow's HTTP retries before it may start.
PAUSE_AFTER_FAILURE = 60.0
# The attempt starts without its run rather than wait longer than this for MLflow.
ATTEMPT_RUN_WAIT = 15.0


def tracking_uri(setting: str, data_dir: Path) -> str | None:
    """``off`` disables tracking; empty means ``MLFLOW_TRACKING_URI`` or SQLite in data_dir."""
    if setting.strip().lower() in ("off", "none", "false", "0"):
        return None
    if setting.strip():
        return setting.strip()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir / 'mlflow.db'}"


class TrackingHooks:
    def __init__(
        self,
        tracker: MlflowTracker,
        on_warning: Callable[[str, str], None],
        on_final_metrics: Callable[[str, dict[str, float]], None] | None = None,
    ) -> None:
        self.tracker = tracker
        self._on_warning = on_warning
        self._on_final_metrics = on_final_metrics
        # Two lanes: runs are created on one thread, so an attempt's run never queues behind
        # artifact uploads, metrics and git calls, which go to the other.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="trainorch-mlflow"
        )
        self._slow = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="trainorch-mlflow-io"
        )
        self._warned: set[str] = set()
        # Written by the run-creating lane, read (and emptied) by the other, always later.
        self._job_runs: dict[str, dict[str, Any]] = {}
        self._last_attempt_run: dict[str, str] = {}
        self._paused_until = 0.0
        # Fail fast against a server that is down (MLflow's defaults retry for minutes).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        self._slow.shutdown(wait=True, cancel_futures=False)

    def _guarded(self, job_id: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        if time.monotonic() < self._paused_until:
            self._warn(job_id, f"MLflow tracking is paused after a failure; {what} was skipped")
            return None
        try:
            return self._with_retries(fn, *args)
        except Exception as err:  # noqa: BLE001 - tracking must never fail a job
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            first_line = (str(err).splitlines() or [""])[0][:300]
            self._warn(
                job_id, f"MLflow tracking failed ({what}): {type(err).__name__}: {first_line}"
            )
            return None

    @staticmethod
    def _with_retries(fn: Callable[..., Any], *args: Any) -> Any:
        # A SQLite tracking store is written by job processes too: "database is locked"
        # passes after a moment and is no reason to stop tracking.
        for wait in (0.2, 0.5, 1.0, 2.0):
            try:
                return fn(*args)
            except Exception as err:  # noqa: BLE001
                if "locked" not in str(err):
                    raise
                time.sleep(wait)
        return fn(*args)

    def _warn(self, job_id: str, message: str) -> None:
        if job_id not in self._warned:
            self._warned.add(job_id)
            log.warning("job %s: %s", job_id, message)
            self._on_warning(job_id, message)

    def submit(
        self, job_id: str, what: str, fn: Callable[..., Any], *args: Any
    ) -> concurrent.futures.Future[Any]:
        return self._executor.submit(self._guarded, job_id, what, fn, *args)

    def submit_slow(self, job_id: str, what: str, fn: Callable[..., Any], *args: Any) -> None:
        self._slow.submit(self._guarded, job_id, what, fn, *args)

    async def run(self, job_id: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.submit(job_id, what, fn, *args))

    # -- what the orchestrator calls ---------------------------------------------
    def job_submitted(
        self, job: dict[str, Any], spec: dict[str, Any], meta: dict[str, str],
        done: Callable[[dict[str, Any]], None],
    ) -> None:  # fmt: skip
        def start() -> dict[str, Any]:
            info = self.tracker.start_job(job, spec)
            self._job_runs[job["id"]] = info
            done(info)
            return info

        created = self.submit(job["id"], "creating the job's run", start)

        def describe() -> None:
            info = created.result()
            if info:
                self.tracker.describe_job(info["run_id"], spec, meta)

        self.submit_slow(job["id"], "logging the job's artifacts", describe)

    async def attempt_started(
        self, job: dict[str, Any], stored: dict[str, Any], n: int, worker: str, gpu_ids: list[str]
    ) -> str | None:
        """The attempt's run id; ``stored`` is the job's run as the store knows it (after a restart)."""

        def start() -> str | None:
            # Queued behind the job's own run on this thread, so it exists by now.
            parent = self._job_runs.get(job["id"]) or stored
            if not parent.get("run_id"):
                return None
            run_id = self.tracker.start_attempt(
                parent["experiment_id"], parent["run_id"], job, n, worker, gpu_ids
            )
            self._last_attempt_run[job["id"]] = run_id
            return run_id

        try:
            return await asyncio.wait_for(
                self.run(job["id"], "creating the attempt's run", start), ATTEMPT_RUN_WAIT
            )
        except asyncio.TimeoutError:
            self._warn(
                job["id"],
                f"MLflow did not answer in {ATTEMPT_RUN_WAIT:g}s; the attempt runs untracked",
            )
            return None

    def metrics(self, job_id: str, run_id: str, points: list[dict[str, Any]]) -> None:
        self.submit_slow(job_id, "logging metrics", self.tracker.log_metrics, run_id, points)

    def attempt_ended(
        self, job_id: str, run_id: str, state: str, read_log: Callable[[], str],
        versions: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        def end() -> None:
            text = read_log()
            if len(text) > MAX_LOG_ARTIFACT_BYTES:
                text = "[…earlier lines cut…]\n" + text[-MAX_LOG_ARTIFACT_BYTES:]
            if versions:  # guarded on its own: the run is closed even when this fails
                self._guarded(
                    job_id, "logging the versions", self.tracker.log_versions, run_id, versions
                )
            self.tracker.end_attempt(run_id, state, text)
            if self._on_final_metrics is not None:
                self._on_final_metrics(job_id, self.tracker.final_metrics(run_id))

        # After this attempt's metrics, which wait in the same lane.
        self.submit_slow(job_id, "closing the attempt's run", end)

    def job_ended(
        self, job_id: str, stored: dict[str, Any], state: str, register_model: str = "",
        registered: Callable[[str, dict[str, Any]], None] | None = None,
        attempt_run: str | None = None,
    ) -> None:  # fmt: skip
        """``attempt_run``: the last attempt's run as the store knows it (after a restart)."""

        def end() -> None:
            parent = self._job_runs.pop(job_id, None) or stored
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
                if version and registered is not None:
                    registered(job_id, version)

        self.submit_slow(job_id, "closing the job's run", end)
