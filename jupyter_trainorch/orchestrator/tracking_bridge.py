"""The orchestrator's side of experiment tracking: which run an attempt logs into, and
what the runs report back.

An attempt is dispatched with a run reserved ahead (``tracking.pool``): its id is in the
attempt's environment, so the job's process logs into it from its first line and waits
for nothing; a job starting for the first time gets one for its own run too. When none is
left, the run is made while the process starts and its id follows (``deliver_run_id``);
the process does not wait for it unless it imports MLflow first (``runner.mlflow_run``).
Names, tags, params and artifacts follow in the tracking process.

Callbacks from the tracking threads only touch the store and the change feed, both
thread-safe. With tracking off every method is a no-op, so callers never check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..package import read_meta
from ..runner.protocol import MLFLOW_RUN_ID_ENV, TRACKING_ENV
from ..runner.supervisor import deliver_run_id as deliver_on_worker
from ..store import JobRecord, JobStore
from ..tracking import TrackingHooks, tracking_uri
from ..tracking.fields import experiment_name, run_url
from . import gangs
from .config import OrchestratorConfig
from .feed import ChangeFeed
from .tracking_news import TrackingNews

if TYPE_CHECKING:
    from .attempts import AttemptTracker, Running

# Lists the runs reserved ahead and not handed out, for the next start to delete.
LEDGER_FILE = "mlflow-reserved-runs.json"

Opening = Callable[["AttemptTracker"], Awaitable[None]]


class TrackingBridge:
    def __init__(self, store: JobStore, feed: ChangeFeed, config: OrchestratorConfig) -> None:
        self.store = store
        self.feed = feed
        self.config = config
        self.hooks: TrackingHooks | None = None
        self.uri: str | None = None
        self.news = TrackingNews(store, feed)
        # Attempts whose run is being made, by job id then n: what their job reports
        # meanwhile (metrics, the attempt's end, the job's end) waits here for the run's id.
        self._held: dict[str, dict[int, list[Callable[[str | None], None]]]] = {}
        # Runs reserved for jobs at their first start, until their attempt names them.
        self._job_runs: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        uri = tracking_uri(self.config.mlflow, self.config.data_dir)
        if uri is None:
            return
        self.uri = uri
        self.hooks = TrackingHooks(
            self.config.tracker_class, uri, self.config.data_dir / "mlartifacts",
            self.config.mlflow_ui_url or None,
            on_info=self.news.add,
            ledger=self.config.data_dir / LEDGER_FILE,
        )  # fmt: skip

    def close(self) -> None:
        if self.hooks is not None:
            self.hooks.close()
        self.news.flush()

    @property
    def enabled(self) -> bool:
        return self.hooks is not None

    def backlog(self) -> int:
        """What is still to record: operations the tracking process has not carried out,
        attempts whose run is still being made, news not yet in the store."""
        if self.hooks is None:
            return 0
        opening = sum(map(len, self._held.values()))
        return self.hooks.backlog() + opening + self.news.pending()

    def env(self, run: Running) -> dict[str, str]:
        """What a job's process needs to log into its attempt's run."""
        if self.hooks is None:
            return {}
        env = {"MLFLOW_TRACKING_URI": self.uri or ""}
        if run.mlflow_run_id:
            env["MLFLOW_RUN_ID"] = env[MLFLOW_RUN_ID_ENV] = run.mlflow_run_id
        else:
            env[TRACKING_ENV] = "1"  # the id follows (``deliver_run_id``)
        return env

    def submitted(self, record: JobRecord) -> None:
        """Nothing is made for a queued job; runs are reserved for its experiment."""
        if self.hooks is not None:
            self.hooks.job_submitted(experiment_name(record.spec))

    def reserve_run(self, job: JobRecord) -> str | None:
        """A run reserved ahead for the attempt about to be dispatched, if one is left."""
        if self.hooks is None:
            return None
        reserved = self.hooks.reserve(experiment_name(job.spec))
        return reserved.run_id if reserved else None

    def reserve_job_run(self, job: JobRecord) -> dict[str, Any]:
        """``{"mlflow": …}`` for a job starting for the first time, when a run is left to
        be its own: the job then shows its run from its start (else the tracking process
        makes one, a moment later)."""
        if self.hooks is None or job.mlflow.get("run_id"):
            return {}
        reserved = self.hooks.reserve(experiment_name(job.spec))
        if reserved is None:
            return {}
        experiment_id, run_id = reserved.experiment_id, reserved.run_id
        url = run_url(self.config.mlflow_ui_url, experiment_id, run_id)
        info = {"experiment_id": experiment_id, "run_id": run_id, "url": url}
        self._job_runs[job.id] = info
        return {"mlflow": {**job.mlflow, **info}}

    def attempt_starting(
        self, job: JobRecord, run: Running, package: bytes | None
    ) -> Opening | None:
        """Name the attempt's reserved run; without one, what opens a run meanwhile."""
        if self.hooks is None:
            return None
        if run.mlflow_run_id:
            self._name_attempt(job, run, lambda: read_meta(package))
            return None
        self._held.setdefault(run.job_id, {})[run.n] = []
        return lambda tracker: self._open_attempt_run(tracker, job, run, package)

    def attempt_waits(self, run: Running) -> None:
        """The attempt's process waits for its run (it imports ``mlflow``, or it is a
        command): if it is still being made, it is made next."""
        if self.hooks is not None and run.n in self._held.get(run.job_id, {}):
            self.hooks.hurry(run.job_id)

    def attempt_adopted(self, job: JobRecord, run: Running) -> None:
        """After a restart: name the runs again, in case the service stopped before it had."""
        if self.hooks is not None and run.mlflow_run_id:
            self._name_attempt(job, run, lambda: self._stored_meta(job.id), adopted=True)

    async def _open_attempt_run(
        self, tracker: AttemptTracker, job: JobRecord, run: Running, package: bytes | None
    ) -> None:
        assert self.hooks is not None
        run_id = None
        try:
            run_id = await self.hooks.reserve_now(job.id, experiment_name(job.spec))
            if run_id:
                run.mlflow_run_id = run_id
                self.store.update_attempt(run.job_id, run.n, mlflow_run_id=run_id)
                self._name_attempt(job, run, lambda: read_meta(package))
        finally:
            opening = self._held.get(run.job_id, {})
            waiting = opening.pop(run.n, [])
            if not opening:
                self._held.pop(run.job_id, None)
            for held in waiting:
                held(run_id)
        await deliver_run_id(tracker, run, run_id or "")

    def _name_attempt(
        self, job: JobRecord, run: Running, meta: Callable[[], dict[str, str]],
        adopted: bool = False,
    ) -> None:  # fmt: skip
        assert self.hooks is not None and run.mlflow_run_id
        reserved = self._job_runs.pop(job.id, None)
        self.hooks.attempt_started(
            job.id, job.to_dict, job.spec, job.created, meta, reserved or job.mlflow,
            None if adopted else reserved is not None, run.mlflow_run_id, run.n, run.worker,
            list(run.gpu_ids),
        )  # fmt: skip

    def _stored_meta(self, job_id: str) -> dict[str, str]:
        """The ``meta/`` texts of the job's code package, read from the store."""
        found = self.store.get_jobs([job_id], with_packages=True).get(job_id)
        return read_meta(found[1]) if found else {}

    def _when_run(self, run: Running, record: Callable[[str], None]) -> None:
        """``record(run id)`` now, or once the attempt's run is made (never without one)."""
        if run.mlflow_run_id:
            record(run.mlflow_run_id)
        elif run.n in self._held.get(run.job_id, {}):
            self._held[run.job_id][run.n].append(lambda run_id: run_id and record(run_id))

    def metrics(self, run: Running, points: list[dict[str, Any]]) -> None:
        if self.hooks is not None:
            hooks, job_id = self.hooks, run.job_id
            self._when_run(run, lambda run_id: hooks.metrics(job_id, run_id, points))

    def attempt_ended(
        self, run: Running, state: str, read_log: Callable[[], str],
        versions: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """``versions``: the kernel's and the worker's of what the cell imports; ``data``:
        its inputs as staged (``DataRecord`` by name)."""
        if self.hooks is not None:
            hooks, job_id = self.hooks, run.job_id
            self._when_run(
                run,
                lambda run_id: hooks.attempt_ended(job_id, run_id, state, read_log, versions, data),
            )

    def job_ended(self, job: JobRecord, state: str) -> None:
        if self.hooks is None:
            return
        opening = self._held.get(job.id)
        if opening:  # after its latest attempt's run, which the tracking process makes last
            opening[max(opening)].append(lambda run_id: self._job_ended(job, state, run_id))
        else:
            self._job_ended(job, state, None)

    def _job_ended(self, job: JobRecord, state: str, last_run: str | None) -> None:
        assert self.hooks is not None
        last_run = last_run or next(
            (a.mlflow_run_id for a in reversed(job.attempts) if a.mlflow_run_id), None
        )
        self.hooks.job_ended(
            job.id, job.to_dict, job.spec, job.created, lambda: self._stored_meta(job.id),
            job.mlflow, state, attempt_run=last_run,
        )  # fmt: skip


async def deliver_run_id(tracker: AttemptTracker, run: Running, run_id: str) -> None:
    """Give the waiting child (each rank's) its MLflow run id once the supervisor has
    registered the attempt."""
    waiting = gangs.members(run)
    for _ in range(100):
        if tracker.running.get(run.job_id) is not run:
            return
        for member in list(waiting):
            try:
                delivered = await tracker.backend.client.run(
                    deliver_on_worker, member.key, run_id, workers=[member.worker]
                )
            except Exception:  # noqa: BLE001 - worker gone: the lost-worker path ends it
                return
            if any(delivered.values()):
                waiting.remove(member)
        if not waiting:
            return
        await asyncio.sleep(0.05)
