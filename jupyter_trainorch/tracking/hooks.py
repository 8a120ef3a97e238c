"""The orchestrator's tracking hooks: MLflow kept off the path of a starting job.

Every MLflow call is made by the tracking process (``worker``), never on the orchestrator's
threads. What an attempt needs to start is here already: runs reserved ahead (``pool``),
taken at dispatch without waiting (for the attempt, and for its job at the job's first
start). When none is left, a run is asked for (``reserve_now``) and the attempt starts
meanwhile; it is made in turn, or first when the attempt's process waits for it (``hurry``).
A queued job costs nothing until it starts. Recording (names, tags, artifacts, metrics,
closing runs) follows in the tracking process, below the jobs' CPU priority.

Any failure is reported as ``mlflow.warning`` on the job; nothing here can fail a job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .channel import Setup, TrackingChannel, class_path
from .pool import Ledger, Reserved, RunPool

log = logging.getLogger(__name__)
# The attempt's process does not wait for a run made on demand (only ``import mlflow``
# does, bounded: ``runner.mlflow_run``). Under a long burst of starts the run may come
# minutes later; the orchestrator gives up only when the tracking process has carried out
# nothing for this long.
ATTEMPT_RUN_WAIT = 300.0
STALL_CHECK_EVERY = 30.0
# After runs could not be reserved, attempts make their own for this long.
PAUSE_AFTER_FAILURE = 60.0
REFRESH_EVERY = 10.0  # reserved runs too old are replaced, unused ones deleted
CLOSE_TIMEOUT = 600.0  # for what is still to record when the service stops
LOST = "the tracking process ended before it recorded all of this job; its runs may be incomplete"

Lazy = Callable[[], Any]


def tracking_uri(setting: str, data_dir: Path) -> str | None:
    """``off`` disables tracking; empty means ``MLFLOW_TRACKING_URI`` or SQLite in data_dir."""
    if setting.strip().lower() in ("off", "none", "false", "0"):
        return None
    if setting.strip():
        return setting.strip()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir / 'mlflow.db'}"


def _resolve(future: concurrent.futures.Future[str | None], run_id: str | None) -> bool:
    """Hand ``run_id`` to an attempt waiting for it; False if it no longer waits."""
    try:
        future.set_result(run_id)
    except concurrent.futures.InvalidStateError:  # cancelled: the service is stopping
        return False
    return True


class TrackingHooks:
    def __init__(
        self,
        tracker_class: type,
        uri: str,
        artifact_root: Path | None,
        ui_url: str | None,
        on_info: Callable[[str, dict[str, Any]], None],
        ledger: Path | None = None,
    ) -> None:
        """``on_info(job_id, info)``: what goes into the job's ``mlflow`` field."""
        self.uri = uri
        self._on_info = on_info
        self.pool = RunPool()
        self._ledger = Ledger(ledger, uri)
        self._lock = threading.Lock()
        self._asking: dict[str, int] = {}  # runs asked for, by experiment, not yet made
        self._pool_paused_until = -math.inf
        self._waiting: dict[int, tuple[str, concurrent.futures.Future[str | None]]] = {}
        self._requests = itertools.count(1)
        self._stopped = threading.Event()
        # Fail fast against a server that is down (MLflow's defaults retry for minutes).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        setup: Setup = {
            "tracker_class": class_path(tracker_class), "tracking_uri": uri,
            "artifact_root": str(artifact_root) if artifact_root else None, "ui_url": ui_url,
            "sys_path": list(sys.path),
        }  # fmt: skip
        self._channel = TrackingChannel(setup, self._received, self._lost, self._restarted)
        # Reserved runs an earlier service left (it did not stop cleanly): deleted once the
        # first attempt is dispatched, after recovery named those its adopted attempts had
        # taken (``discard_reserved`` leaves named runs alone).
        self._left_behind = self._ledger.read()
        threading.Thread(target=self._refresh, name="trainorch-mlflow-pool", daemon=True).start()

    def close(self) -> None:
        """Record everything sent so far, then delete the reserved runs nobody took."""
        self._stopped.set()
        left = self.pool.drain() + self._left_behind
        if left:
            self._channel.send("", lambda: {"op": "discard", "run_ids": left})
        done = self._channel.stop(CLOSE_TIMEOUT)
        # Runs made after the pool was emptied, and what could not be deleted: next time.
        self._ledger.write(self.pool.drain() + ([] if done else left))

    def wait_ready(self, timeout: float) -> str | None:
        """The tracker class the tracking process built (``module:name``), once it has."""
        return self._channel.wait_ready(timeout)

    def backlog(self) -> int:
        """Tracking operations not carried out yet."""
        return self._channel.pending()

    # -- what the tracking process says ------------------------------------------
    def _received(self, message: dict[str, Any]) -> None:
        if "reserved" in message:
            self._reserved(message)
        elif "reserve_failed" in message:
            experiment = message["reserve_failed"]
            with self._lock:
                self._asking[experiment] = max(0, self._asking.get(experiment, 0) - 1)
                self._pool_paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            log.warning("MLflow: could not reserve runs for %s: %s", experiment, message["error"])
        elif "job_id" in message:
            info = {k: v for k, v in message.items() if k != "job_id"}
            self._on_info(message["job_id"], info.pop("job_run", None) or info)

    def _reserved(self, message: dict[str, Any]) -> None:
        experiment, run_id, request = (
            message["experiment"],
            message["reserved"],
            message.get("request"),
        )
        if request:
            with self._lock:
                waiting = self._waiting.pop(request, None)
            if waiting is not None and _resolve(waiting[1], run_id):
                return
            # The attempt gave up waiting (or stopped): the next one takes it.
        else:
            with self._lock:
                self._asking[experiment] = max(0, self._asking.get(experiment, 0) - 1)
        if run_id and message.get("experiment_id"):
            self.pool.add(experiment, run_id, message["experiment_id"])
            self._ledger.write(self.pool.run_ids())
        self._top_up(experiment)

    def _lost(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            log.warning("job %s: %s", job_id, LOST)
            self._on_info(job_id, {"warning": LOST})

    def _restarted(self) -> None:
        """A new tracking process knows nothing of what the last one was asked."""
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
            self._asking.clear()
        for _, future in waiting:
            _resolve(future, None)

    # -- reserved runs -------------------------------------------------------------
    def job_submitted(self, experiment: str) -> None:
        """Its attempt will want a run soon: reserve some ahead."""
        self.pool.note_demand(experiment)
        self._top_up(experiment)

    def reserve(self, experiment: str) -> Reserved | None:
        """A run made ahead for ``experiment`` (no waiting, no MLflow call)."""
        reserved = self.pool.take(experiment)
        self._top_up(experiment)
        if self._left_behind:
            left, self._left_behind = self._left_behind, []
            self._channel.send("", lambda: {"op": "discard", "run_ids": left})
        return reserved

    async def reserve_now(self, job_id: str, experiment: str) -> str | None:
        """A run for an attempt that found none reserved, made in turn with the runs
        reserved ahead (first once ``hurry``-ed). None when MLflow failed, or when the
        tracking process carried out nothing for ``ATTEMPT_RUN_WAIT`` (the attempt runs
        untracked, and the job says so)."""
        request = next(self._requests)
        future: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        with self._lock:
            self._waiting[request] = (job_id, future)
        self._channel.send(job_id, lambda: {"op": "reserve", "experiment": experiment,
                                            "job_id": job_id, "request": request})  # fmt: skip
        answer = asyncio.wrap_future(future)
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(answer), STALL_CHECK_EVERY)
            except asyncio.TimeoutError:
                if self._channel.stalled_for() < ATTEMPT_RUN_WAIT:
                    continue
            with self._lock:
                self._waiting.pop(request, None)
            message = f"MLflow did nothing for {ATTEMPT_RUN_WAIT:g}s; the attempt runs untracked"
            log.warning("job %s: %s", job_id, message)
            self._on_info(job_id, {"warning": message})
            return None

    def hurry(self, job_id: str) -> None:
        """The process of ``job_id``'s attempt waits for the run asked for it: make it next."""
        with self._lock:
            requests = [r for r, (waiting, _) in self._waiting.items() if waiting == job_id]
        for request in requests:
            self._channel.send(job_id, lambda r=request: {"op": "hurry", "request": r})

    def _top_up(self, experiment: str) -> None:
        expired = self.pool.expired()
        if expired:
            self._channel.send("", lambda: {"op": "discard", "run_ids": expired})
        with self._lock:
            if self._stopped.is_set() or time.monotonic() < self._pool_paused_until:
                return
            more = self.pool.wanted(experiment) - self._asking.get(experiment, 0)
            if more <= 0:
                return
            self._asking[experiment] = self._asking.get(experiment, 0) + more
        for _ in range(more):
            self._channel.send("", lambda: {"op": "reserve", "experiment": experiment,
                                            "job_id": "", "request": 0})  # fmt: skip

    def _refresh(self) -> None:
        while not self._stopped.wait(REFRESH_EVERY):
            for experiment in self.pool.experiments():
                self._top_up(experiment)

    # -- recording -----------------------------------------------------------------
    def attempt_started(
        self, job_id: str, job: Lazy, spec: dict[str, Any], created: float, meta: Lazy,
        stored: dict[str, Any], name_job: bool | None, run_id: str, n: int, worker: str,
        gpu_ids: list[str],
    ) -> None:  # fmt: skip
        """Make the reserved run ``run_id`` attempt ``n``'s. ``stored``: the job's run as
        the store knows it; ``name_job``: whether it is a reserved run to make the job's
        (None: unknown, after a restart). ``job`` (its dict) and ``meta`` (the package's
        texts, for a job run not named yet) are read on the writer thread."""
        self._channel.send(job_id, lambda: {
            "op": "attempt_started", "job": job(), "spec": spec, "created": created,
            "meta": meta() if name_job is not False or not stored.get("run_id") else {},
            "stored": stored, "name_job": name_job, "run_id": run_id, "n": n,
            "worker": worker, "gpu_ids": gpu_ids,
        })  # fmt: skip

    def metrics(self, job_id: str, run_id: str, points: list[dict[str, Any]]) -> None:
        self._channel.send(job_id, lambda: {"op": "metrics", "job_id": job_id,
                                            "run_id": run_id, "points": points})  # fmt: skip

    def attempt_ended(
        self, job_id: str, run_id: str, state: str, read_log: Callable[[], str],
        versions: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self._channel.send(job_id, lambda: {
            "op": "attempt_ended", "job_id": job_id, "run_id": run_id, "state": state,
            "log_text": read_log(), "versions": versions, "data": data,
        })  # fmt: skip

    def job_ended(
        self, job_id: str, job: Lazy, spec: dict[str, Any], created: float, meta: Lazy,
        stored: dict[str, Any], state: str, attempt_run: str | None = None,
    ) -> None:  # fmt: skip
        """A job that never ran gets its run now (``meta`` is read for it)."""
        self._channel.send(job_id, lambda: {
            "op": "job_ended", "job": job(), "spec": spec, "created": created,
            "meta": {} if stored.get("run_id") else meta(), "stored": stored, "state": state,
            "attempt_run": attempt_run,
        })  # fmt: skip
