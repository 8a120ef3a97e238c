"""Attempts on workers: launch, follow, collect, stop, and adopt after a restart.

An attempt is a ``runner.run_attempt`` task pinned to one worker (one per rank of a
multi-node job: ``gangs``) and kept alive by ``fire_and_forget``: it outlives the orchestrator's Dask client, so a restarted
orchestrator adopts what still runs instead of running it again. The worker keeps each
outcome on disk until it has been stored here (``forget_finished`` after that), so an
attempt that ended while nobody listened is collected, not lost.

What the outcome means for the job (succeed, retry, fail) is the orchestrator's call:
every ended attempt is handed to ``on_end`` as an ``AttemptEnd``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..cluster import ClusterBackend
from ..log_batches import unpack
from ..runner.protocol import WANTS_RUN_ID, AttemptOutcome, AttemptRequest
from ..runner.supervisor import (
    cancel_attempt,
    cancel_jobs,
    forget_finished,
    read_log,
    run_attempt,
)
from ..store import (
    CANCELLED,
    FAILED,
    PREEMPTED,
    RUNNING,
    SUCCEEDED,
    JobRecord,
    JobStore,
)
from ..store.models import iso
from . import gangs
from .config import OrchestratorConfig
from .feed import ChangeFeed
from .requests import attempt_request, progress_record
from .tracking_bridge import TrackingBridge

log = logging.getLogger(__name__)


@dataclass
class Running:
    job_id: str
    n: int
    worker: str
    gpu_ids: tuple[str, ...]
    cpus: float
    memory: int
    key: str
    user: str = ""
    groups: tuple[str, ...] = ()  # the owner's quota groups the GPUs count against
    priority: int = 100
    started: float = 0.0  # when it was dispatched, on the orchestrator's clock
    timeout: float | None = None  # the job's time limit: it ends by started + timeout
    checkpointed: float | None = None  # the job's last checkpoint, as the job reported it
    preempted_for: str | None = None  # being stopped so that this job can start
    future: Any = None
    started_running: bool = False
    cancel_requested: bool = False
    stopped_by_service: bool = False  # not the user's cancel: it runs again at the next start
    mlflow_run_id: str | None = None
    pid: int | None = None
    since: float = field(default_factory=time.monotonic)
    # While an adopted attempt's missing lines are read from the worker, newer ones wait
    # here, so the stored log keeps the order the job wrote it in.
    held_lines: list[tuple[Any, ...]] | None = None
    ranks: list[Any] = field(default_factory=list)  # a gang's ranks 1..K-1 (gangs.Rank)

    def slots(self) -> list[tuple[str, tuple[str, ...]]]:
        """(worker, GPU ids) of every rank: what the attempt holds."""
        return [(self.worker, self.gpu_ids), *((r.worker, r.gpu_ids) for r in self.ranks)]


@dataclass
class AttemptEnd:
    run: Running
    succeeded: bool
    infrastructure: bool
    retryable: bool
    error: str | None
    outputs: bytes | None = None


class AttemptTracker:
    def __init__(
        self,
        store: JobStore,
        backend: ClusterBackend,
        feed: ChangeFeed,
        config: OrchestratorConfig,
        tracking: TrackingBridge,
        spawn: Callable[[Any], asyncio.Task[Any]],
        on_end: Callable[[AttemptEnd], None],
        wake: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.backend = backend
        self.feed = feed
        self.config = config
        self.tracking = tracking
        self.clock = clock
        self.spawn = spawn
        self._on_end = on_end
        self._wake = wake
        self.running: dict[str, Running] = {}
        # Where stored lines also go (the ECS event log), if anywhere.
        self.line_sink: Callable[[Running, list[tuple[Any, ...]]], None] | None = None
        self.stopping = False
        self._collected: dict[str, set[str]] = {}  # worker -> keys whose files may go
        self._checkpoints: dict[str, set[str]] = {}  # worker -> folders that may go

    # -- launch ------------------------------------------------------------------------
    def launch(self, job: JobRecord, run: Running, package: bytes | None) -> None:
        """Hand the attempt to Dask with its MLflow run reserved (``tracking_bridge``)."""
        self.running[run.job_id] = run
        opening = self.tracking.attempt_starting(job, run, package)
        request = self._request(job, run, package)
        if run.ranks:
            gangs.submit_ranks(self, run, request)
        else:
            run.future = self.submit(request, run.key, run.worker, run.gpu_ids)
        if opening is not None:  # none was reserved: it opens while the process starts
            self.spawn(opening(self))
        self.spawn(gangs.watch_gang(self, run) if run.ranks else self.watch(run))

    def submit(
        self, request: AttemptRequest, key: str, worker: str, gpu_ids: tuple[str, ...]
    ) -> Any:
        """One supervisor task, pinned to ``worker``, that outlives this client."""
        from distributed import fire_and_forget

        known = self.backend.workers.get(worker)
        # The guard counts the worker's own GPUs: those borrowed from workers of its host
        # are held in the orchestrator's accounting (``Scheduler.holdings``).
        own = [g for g in gpu_ids if known is not None and g in known.gpu_ids]
        guard = {"GPU": len(own)} if own and known and known.advertises_gpus else None
        future = self.backend.client.submit(
            run_attempt, request, key=key, workers=[worker], allow_other_workers=False,
            resources=guard, pure=False,
        )  # fmt: skip
        # The supervisor keeps running when this client goes (a restart): adopted later.
        fire_and_forget(future)
        return future

    def _request(self, job: JobRecord, run: Running, package: bytes | None) -> AttemptRequest:
        return attempt_request(job, run, package, self.config, self.tracking)

    # -- events from workers -------------------------------------------------------------
    def on_worker_event(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        run = self.running.get(message.get("job_id", ""))
        if run is None or run.n != message.get("attempt"):
            return  # a stale attempt's late message
        if message.get("rank") and message.get("type") in ("started", "checkpoint"):
            return  # a gang runs and checkpoints as its rank 0 does
        if message.get("type") == "started":
            self.mark_running(run, message.get("pid"), message.get("time"))
            return
        if message.get("type") == WANTS_RUN_ID:
            self.tracking.attempt_waits(run)
            return
        if message.get("type") == "checkpoint":
            saved = message.get("time")
            if isinstance(saved, (int, float)) and math.isfinite(saved):
                run.checkpointed = min(float(saved), self.clock())
            return
        lines = message.get("lines") or []
        if isinstance(lines, bytes) and run.held_lines is None:  # packed, as workers send them
            self.store_batch(run, lines, message.get("seqs"))
        elif lines:  # held while missing lines are read back, or a list from an older worker
            lines = [tuple(line) for line in (unpack(lines) if isinstance(lines, bytes) else lines)]
            if run.held_lines is not None:
                run.held_lines.extend(lines)
            else:
                self.store_lines(run, lines)
        progress = message.get("progress")
        if progress:
            self._store_progress(run, progress)
        points = message.get("metrics")
        if points:
            self.tracking.metrics(run, points)

    def mark_running(self, run: Running, pid: int | None, started: float | None) -> None:
        if run.started_running:
            return
        run.started_running, run.pid = True, pid
        self.store.update_job_and_attempt(
            run.job_id, run.n, {"state": RUNNING},
            {"state": RUNNING, "pid": pid, "process_started": started or self.clock()},
        )  # fmt: skip
        self.feed.publish("job", run.job_id, user=run.user, state=RUNNING)

    def store_batch(self, run: Running, data: bytes, seqs: Any) -> None:
        """A packed batch: stored as it came, decoded only where its lines are wanted."""
        # Dask's messages bring lists back as tuples.
        if not (isinstance(seqs, (list, tuple)) and len(seqs) == 3):
            self.store_lines(run, [tuple(line) for line in unpack(data)])
            return
        stored = self.store.append_log_batch(run.job_id, run.n, data, *seqs)
        self._announce_lines(run, stored, lambda: [tuple(line) for line in unpack(data)])

    def store_lines(self, run: Running, lines: list[tuple[Any, ...]]) -> None:
        if self.store.append_logs(run.job_id, run.n, lines):
            self._announce_lines(run, len(lines), lambda: lines)

    def _announce_lines(
        self, run: Running, count: int, lines: Callable[[], list[tuple[Any, ...]]]
    ) -> None:
        if count:
            self.feed.publish("logs", run.job_id, user=run.user, attempt=run.n, lines=count)
            if self.line_sink is not None:
                self.line_sink(run, lines())

    def _store_progress(self, run: Running, progress: dict[str, Any]) -> None:
        record = progress_record(progress, iso(self.clock()))
        self.store.update_job(run.job_id, progress=record)
        self.feed.publish("progress", run.job_id, user=run.user, progress=record)

    # -- outcomes ------------------------------------------------------------------------
    async def watch(self, run: Running) -> None:
        await self.finish(run, await self.outcome_of(run, run.future))

    async def outcome_of(self, run: Running, future: Any) -> AttemptOutcome:
        """What a supervisor task returned, or what its failure means."""
        try:
            return await future
        except asyncio.CancelledError:
            if self.stopping:
                raise
            return {
                "error": "the attempt's task was cancelled",
                "infrastructure": not (run.cancel_requested or run.preempted_for),
            }
        except Exception as err:  # noqa: BLE001 - worker died (KilledWorker) or task failed
            return {"error": f"{type(err).__name__}: {err}", "infrastructure": True}

    async def finish(self, run: Running, outcome: AttemptOutcome) -> None:
        """Record the attempt's end, then let the orchestrator decide about the job."""
        if self.running.get(run.job_id) is not run:
            return  # already finished through another path (lost worker and task error)
        del self.running[run.job_id]
        self._wake()
        from_worker = "exit_code" in outcome
        if run.stopped_by_service and outcome.get("exit_code") != 0:
            outcome = {**outcome, "error": "the service was stopped", "infrastructure": True}
        await self._fill_log_gap(run, outcome)
        exit_code = outcome.get("exit_code")
        succeeded = exit_code == 0 and not outcome.get("cancelled")
        if succeeded:
            attempt_state = SUCCEEDED
        elif run.cancel_requested:
            attempt_state = CANCELLED
        else:
            attempt_state = PREEMPTED if run.preempted_for else FAILED
        fields: dict[str, Any] = {
            "state": attempt_state,
            "ended": self.clock(),
            "exit_code": exit_code,
            "error": tail(outcome.get("error")),
            "infrastructure": bool(outcome.get("infrastructure")),
        }
        if outcome.get("process_started") and not run.started_running:
            fields.update(process_started=outcome["process_started"], pid=outcome.get("pid"))
        self.store.update_attempt(run.job_id, run.n, **fields)
        store, job_id, n = self.store, run.job_id, run.n
        self.tracking.attempt_ended(
            run, attempt_state,
            lambda: "\n".join(line.text for line in store.read_logs(job_id, attempt=n, limit=10**6)),
            versions=outcome.get("versions"), data=outcome.get("data"),
        )  # fmt: skip
        self._on_end(
            AttemptEnd(
                run=run,
                succeeded=succeeded,
                infrastructure=bool(outcome.get("infrastructure")),
                retryable=bool(outcome.get("retryable", True)),
                error=outcome.get("error"),
                outputs=outcome.get("outputs") if succeeded else None,
            )
        )
        if from_worker:
            self.collected(run.worker, run.key)

    def collected(self, worker: str, key: str) -> None:
        """The attempt (rank) is stored: its worker may now drop its files."""
        self._collected.setdefault(worker, set()).add(key)

    async def _fill_log_gap(self, run: Running, outcome: AttemptOutcome) -> None:
        """Fetch lines whose events never arrived from the worker's durable log."""
        total = int(outcome.get("log_lines") or 0)
        stored = self.store.max_log_seq(run.job_id, run.n) if total else 0
        if total > stored:
            await self.read_missing_lines(run, outcome.get("log_path", ""), after=stored)

    async def read_missing_lines(self, run: Running, path: str, after: int | None = None) -> None:
        """Lines of the worker's durable log after ``after`` (default: the last one stored)."""
        if not path or run.worker not in self.backend.workers:
            return
        if after is None:
            after = self.store.max_log_seq(run.job_id, run.n)
        try:
            got = await self.backend.client.run(read_log, path, after, workers=[run.worker])
        except Exception as err:  # noqa: BLE001
            log.warning("could not fetch the log of %s: %s", run.key, err)
            return
        lines = [tuple(line) for line in got.get(run.worker) or []]
        if lines:
            self.store_lines(run, lines)

    async def forget_collected(self) -> None:
        """Tell workers which finished attempts are stored and which jobs' checkpoints
        are no longer needed: their files go, in one call for all workers."""
        collected, self._collected = self._collected, {}
        checkpoints, self._checkpoints = self._checkpoints, {}
        workers = sorted((collected.keys() | checkpoints.keys()) & self.backend.workers.keys())
        if not workers or self.backend.client is None:
            return
        attempts = {worker: sorted(collected.get(worker, ())) for worker in workers}
        folders = {worker: sorted(checkpoints.get(worker, ())) for worker in workers}
        try:
            await self.backend.client.run(forget_finished, attempts, folders, workers=workers)
        except Exception as err:  # noqa: BLE001 - files stay until the worker goes
            log.debug("could not clean up finished jobs on %s: %s", workers, err)

    # -- stopping ------------------------------------------------------------------------
    async def stop(self, run: Running) -> None:
        """Cancel until the supervisor confirms, or the task never started."""
        run.cancel_requested = True
        await self.halt(run)

    async def preempt(self, run: Running, for_job: str) -> None:
        """Stop the attempt (SIGTERM, grace, SIGKILL) so that ``for_job`` can start; the
        job waits again, first in its class."""
        run.preempted_for = for_job
        await self.halt(run)

    async def halt(self, run: Running) -> None:
        """Stop every rank's child (once its supervisor confirms), or cancel the tasks
        that never started."""
        ranks = gangs.members(run)
        for _ in range(60):
            if run.job_id not in self.running:
                return
            ranks = [r for r in ranks if r.future is None or not r.future.done()]
            for member in list(ranks):
                try:
                    done = await self.backend.client.run(
                        cancel_attempt, member.key, workers=[member.worker]
                    )
                    if any(done.values()):
                        ranks.remove(member)
                        continue
                except Exception:  # noqa: BLE001 - worker gone: the lost-worker path ends it
                    pass
                if (member.rank or not run.started_running) and member.future is not None:
                    await member.future.cancel()
            if not ranks:
                return
            await asyncio.sleep(0.5)

    def drop_checkpoints(self, job: JobRecord) -> None:
        """Have a finished job's checkpoint folder removed, on the workers its attempts ran
        on (each its own, or one shared folder), at the next ``forget_collected``."""
        folder = str(self.config.checkpoint_folder(job.id))
        for worker in {a.worker for a in job.attempts if a.worker}:
            self._checkpoints.setdefault(worker, set()).add(folder)

    async def stop_all(self, timeout: float) -> None:
        """Stop every attempt and wait (up to ``timeout``) for their outcomes."""
        if not self.running or self.backend.client is None:
            return
        for run in self.running.values():
            run.stopped_by_service = True
        try:
            await asyncio.wait_for(
                self.backend.client.run(cancel_jobs, list(self.running)), timeout=10
            )
        except Exception:  # noqa: BLE001 - cluster already gone
            return
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def workers_changed(self, added: list[Any], removed: list[str]) -> None:
        for run in [r for r in self.running.values() if r.worker in removed and not r.ranks]:
            if run.future is not None:
                await run.future.cancel()
            await self.finish(
                run, {"error": f"worker {run.worker} was lost", "infrastructure": True}
            )
        for run in [r for r in self.running.values() if r.ranks]:
            for member in gangs.members(run):
                if member.worker in removed and member.future is not None:
                    # Its rank fails as cancelled: the gang's watch stops the others.
                    await member.future.cancel()
        self._wake()

    def held(self) -> list[Running]:
        return list(self.running.values())


def tail(error: str | None, limit: int = 2000) -> str | None:
    if error is None or len(error) <= limit:
        return error
    return "…" + error[-limit:]
