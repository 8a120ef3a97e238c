"""The orchestrator's side of experiment tracking: when runs open, and what they report back.

Callbacks from the tracker's thread only touch the store and the change feed, both
thread-safe. With tracking off every method is a no-op, so callers never check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..package import read_meta
from ..runner.protocol import TRACKING_ENV
from ..store import JobRecord, JobStore
from ..tracking import TrackingHooks, tracking_uri
from .config import OrchestratorConfig
from .feed import ChangeFeed

if TYPE_CHECKING:
    from .attempts import Running


class TrackingBridge:
    def __init__(self, store: JobStore, feed: ChangeFeed, config: OrchestratorConfig) -> None:
        self.store = store
        self.feed = feed
        self.config = config
        self.hooks: TrackingHooks | None = None
        self.uri: str | None = None

    def start(self) -> None:
        uri = tracking_uri(self.config.mlflow, self.config.data_dir)
        if uri is None:
            return
        tracker = self.config.tracker_class(
            uri, self.config.data_dir / "mlartifacts", self.config.mlflow_ui_url or None
        )
        self.uri = uri
        self.hooks = TrackingHooks(
            tracker,
            on_warning=lambda job_id, message: self.add_info(job_id, warning=message),
            on_final_metrics=lambda job_id, metrics: self.add_info(job_id, metrics=metrics),
        )

    def close(self) -> None:
        if self.hooks is not None:
            self.hooks.close()

    @property
    def enabled(self) -> bool:
        return self.hooks is not None

    def env(self) -> dict[str, str]:
        """What a job's process needs to log into its attempt's run."""
        if self.hooks is None:
            return {}
        return {"MLFLOW_TRACKING_URI": self.uri or "", TRACKING_ENV: "1"}

    def add_info(self, job_id: str, **info: Any) -> None:
        """Merge into the job's ``mlflow`` field (run ids, warning, metrics, model) and say so."""
        job = self.store.get_job(job_id)
        if job is None or not any(info.values()):
            return
        self.store.update_job(job_id, mlflow={**job.mlflow, **info})
        self.feed.publish("job", job_id, user=job.user, state=job.state, mlflow=sorted(info))

    def submitted(self, record: JobRecord, package: bytes | None) -> None:
        if self.hooks is not None:
            self.hooks.job_submitted(
                record.to_dict(), record.spec, read_meta(package),
                done=lambda info: self.add_info(record.id, **info),
            )  # fmt: skip

    async def open_attempt_run(
        self, job: JobRecord, run: Running, deliver: Callable[[Running, str], Awaitable[None]]
    ) -> None:
        """The attempt's run opens while its process starts; the child waits for the id."""
        assert self.hooks is not None
        run_id = await self.hooks.attempt_started(
            job.to_dict(), job.mlflow, run.n, run.worker, list(run.gpu_ids)
        )
        run.mlflow_run_id = run_id
        if run_id:
            self.store.update_attempt(run.job_id, run.n, mlflow_run_id=run_id)
        await deliver(run, run_id or "")

    def metrics(self, job_id: str, run_id: str, points: list[dict[str, Any]]) -> None:
        if self.hooks is not None:
            self.hooks.metrics(job_id, run_id, points)

    def attempt_ended(
        self, job_id: str, run_id: str, state: str, read_log: Callable[[], str],
        versions: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """``versions``: the kernel's and the worker's of what the cell imports."""
        if self.hooks is not None:
            self.hooks.attempt_ended(job_id, run_id, state, read_log, versions)

    def job_ended(self, job: JobRecord, state: str) -> None:
        if self.hooks is None:
            return
        last_run = next((a.mlflow_run_id for a in reversed(job.attempts) if a.mlflow_run_id), None)
        self.hooks.job_ended(
            job.id, job.mlflow, state, job.spec.get("register_model", ""),
            lambda job_id, version: self.add_info(job_id, model=version), attempt_run=last_run,
        )  # fmt: skip
