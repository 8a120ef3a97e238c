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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .mlflow_tracker import MlflowTracker

log = logging.getLogger(__name__)
MAX_LOG_ARTIFACT_BYTES = 5 * 2**20


def tracking_uri(setting: str, data_dir: Path) -> str | None:
    """``off`` disables tracking; empty means ``MLFLOW_TRACKING_URI`` or SQLite in data_dir."""
    if setting.strip().lower() in ("off", "none", "false", "0"):
        return None
    if setting.strip():
        return setting.strip()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir / 'mlflow.db'}"


class TrackingHooks:
    def __init__(self, tracker: MlflowTracker, on_warning: Callable[[str, str], None]) -> None:
        self.tracker = tracker
        self._on_warning = on_warning
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="trainorch-mlflow")
        self._warned: set[str] = set()
        self._job_runs: dict[str, dict[str, Any]] = {}  # touched only on the tracker thread

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

    def _guarded(self, job_id: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - tracking must never fail a job
            message = f"MLflow tracking failed ({what}): {type(err).__name__}: {str(err).splitlines()[0][:300]}"
            if job_id not in self._warned:
                self._warned.add(job_id)
                log.warning("job %s: %s", job_id, message)
                self._on_warning(job_id, message)
            return None

    def submit(self, job_id: str, what: str, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        return self._executor.submit(self._guarded, job_id, what, fn, *args)

    async def run(self, job_id: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.submit(job_id, what, fn, *args))

    # -- what the orchestrator calls ---------------------------------------------
    def job_submitted(self, job: dict[str, Any], spec: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        def start() -> None:
            info = self.tracker.start_job(job, spec)
            self._job_runs[job["id"]] = info
            done(info)

        self.submit(job["id"], "creating the job's run", start)

    async def attempt_started(
        self, job: dict[str, Any], stored: dict[str, Any], n: int, worker: str, gpu_ids: list[str]
    ) -> str | None:
        """The attempt's run id; ``stored`` is the job's run as the store knows it (after a restart)."""

        def start() -> str | None:
            # Queued behind the job's own run on this thread, so it exists by now.
            parent = self._job_runs.get(job["id"]) or stored
            if not parent.get("run_id"):
                return None
            return self.tracker.start_attempt(
                parent["experiment_id"], parent["run_id"], job, n, worker, gpu_ids
            )

        return await self.run(job["id"], "creating the attempt's run", start)

    def metrics(self, job_id: str, run_id: str, metrics: dict[str, Any], step: Any) -> None:
        self.submit(job_id, "logging metrics", self.tracker.log_metrics, run_id, metrics, step)

    def attempt_ended(self, job_id: str, run_id: str, state: str, read_log: Callable[[], str]) -> None:
        def end() -> None:
            text = read_log()
            if len(text) > MAX_LOG_ARTIFACT_BYTES:
                text = "[…earlier lines cut…]\n" + text[-MAX_LOG_ARTIFACT_BYTES:]
            self.tracker.end_attempt(run_id, state, text)

        self.submit(job_id, "closing the attempt's run", end)

    def job_ended(self, job_id: str, stored: dict[str, Any], state: str) -> None:
        def end() -> None:
            parent = self._job_runs.pop(job_id, None) or stored
            if parent.get("run_id"):
                self.tracker.end_job(parent["run_id"], state)

        self.submit(job_id, "closing the job's run", end)
