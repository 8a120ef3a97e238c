"""The orchestrator's side of experiment tracking: when runs open, and what they report back.

Callbacks named ``_on_…`` run on the tracker's thread; they only touch the store and
the change feed, both thread-safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..cluster import ClusterBackend
from ..package import read_meta
from ..runner.supervisor import deliver_run_id
from ..store import JobRecord, JobStore
from ..tracking import MlflowTracker, TrackingHooks, tracking_uri
from .attempts import Running
from .config import OrchestratorConfig
from .feed import ChangeFeed


class TrackingBridge:
    """A mixin of ``Orchestrator`` (same state)."""

    # Provided by Orchestrator.
    store: JobStore
    backend: ClusterBackend
    feed: ChangeFeed
    config: OrchestratorConfig
    tracking: TrackingHooks | None
    mlflow_uri: str | None
    _running: dict[str, Running]
    _spawn: Callable[[Any], asyncio.Task[Any]]

    def _make_tracking(self) -> TrackingHooks | None:
        uri = tracking_uri(self.config.mlflow, self.config.data_dir)
        if uri is None:
            return None
        tracker = MlflowTracker(uri, self.config.data_dir / "mlartifacts", self.config.mlflow_ui_url or None)
        self.mlflow_uri = uri
        return TrackingHooks(
            tracker,
            on_warning=lambda job_id, message: self._add_mlflow_info(job_id, warning=message),
            on_final_metrics=lambda job_id, metrics: self._add_mlflow_info(job_id, metrics=metrics),
        )

    def _add_mlflow_info(self, job_id: str, **info: Any) -> None:
        """Merge into the job's ``mlflow`` field (run ids, warning, metrics, model) and say so."""
        job = self.store.get_job(job_id)
        if job is None or not any(info.values()):
            return
        self.store.update_job(job_id, mlflow={**job.mlflow, **info})
        self.feed.publish("job", job_id, state=job.state, mlflow=sorted(info))

    def _model_registered(self, job_id: str, version: dict[str, Any]) -> None:
        self._add_mlflow_info(job_id, model=version)

    def _tracking_env(self) -> dict[str, str]:
        if self.tracking is None:
            return {}
        return {"MLFLOW_TRACKING_URI": self.mlflow_uri or "", "TRAINORCH_TRACKING": "1"}

    def _track_submission(self, record: JobRecord, package: bytes | None) -> None:
        if self.tracking is not None:
            self.tracking.job_submitted(
                record.to_dict(), record.spec, read_meta(package),
                done=lambda info: self._add_mlflow_info(record.id, **info),
            )  # fmt: skip

    def _open_attempt_run_soon(self, job: JobRecord, run: Running) -> None:
        """The attempt's run opens while its process starts (the child waits for the id)."""
        if self.tracking is not None:
            self._spawn(self._open_attempt_run(job, run))

    async def _open_attempt_run(self, job: JobRecord, run: Running) -> None:
        run_id = await self.tracking.attempt_started(  # type: ignore[union-attr]
            job.to_dict(), job.mlflow, run.n, run.worker, list(run.gpu_ids)
        )
        run.mlflow_run_id = run_id
        if run_id:
            self.store.update_attempt(run.job_id, run.n, mlflow_run_id=run_id)
        for _ in range(100):  # until the supervisor has registered the attempt
            if self._running.get(run.job_id) is not run:
                return
            try:
                delivered = await self.backend.client.run(
                    deliver_run_id, run.key, run_id or "", workers=[run.worker]
                )
            except Exception:  # noqa: BLE001 - worker gone: the lost-worker path ends it
                return
            if any(delivered.values()):
                return
            await asyncio.sleep(0.05)
