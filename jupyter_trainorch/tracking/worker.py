"""The tracking process: every MLflow call the orchestrator makes, away from its event loop.

``python -m jupyter_trainorch.tracking.worker``, started and stopped by ``TrackingHooks``.
MLflow's client is CPU-bound Python (7-20 ms a call on a SQLite store); on a thread of the
orchestrator it held the GIL against the event loop, which then waited up to 5 ms each time
it took the GIL back after a socket call. Here it only competes for a CPU.

JSON lines on stdin: the first is ``Setup``, then operations (``op``), each numbered
(``seq``) and acknowledged with ``{"done": seq}`` once carried out. On stdout: what the
orchestrator keeps (runs reserved, a job's run, warnings, final metrics, model versions).
Two lanes (``lanes.RecordLane``): one makes runs, the other records; both yield while
attempts start on busy CPUs. A run asked for an attempt that found none reserved goes
before those reserved ahead, and yields all the same, unless the attempt's process waits
for it (it imports ``mlflow``, or it is a command): then the orchestrator hurries it
(``hurry``) and it is made next, without a pause.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from .channel import GATHER_EVERY, Setup, class_path, import_class
from .lanes import LATER, SHARE_WHILE_STARTING, SOON, URGENT, CpuLoad, RecordLane
from .recording import Recording

log = logging.getLogger(__name__)
PAUSE_AFTER_FAILURE = 60.0
# Recording yields while an attempt started this recently (and the CPUs are busy).
STARTING_WINDOW = 1.0
OPERATIONS = ("attempt_started", "metrics", "attempt_ended", "job_ended")
# Below the jobs, but not so far that tracking stalls while training keeps every core busy:
# at 10 it still gets about a tenth of a busy core (metrics batches, runs for new attempts).
NICENESS = 10


class Outbox:
    """Lines to the orchestrator, whole, from any thread; what comes within
    ``GATHER_EVERY`` of the last write goes in one write (each write wakes a thread of
    the orchestrator, which takes the GIL from its event loop). ``close`` writes the rest."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._closed = False
        self._changed = threading.Condition()
        self._writer = threading.Thread(target=self._write, name="trainorch-outbox", daemon=True)
        self._writer.start()

    def send(self, **message: Any) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._changed:
            self._lines.append(line)
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._writer.join()

    def _write(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._lines or self._closed)
                lines, self._lines, closed = self._lines, [], self._closed
            if lines:
                self._stream.write("".join(lines))
                self._stream.flush()
            if closed:
                return
            time.sleep(GATHER_EVERY)


class TrackingWorker(Recording):
    def __init__(self, tracker: Any, out: Outbox) -> None:
        super().__init__(
            on_final_metrics=lambda job_id, metrics: out.send(job_id=job_id, metrics=metrics),
            on_job_run=lambda job_id, info: out.send(job_id=job_id, job_run=info),
            on_model=lambda job_id, version: out.send(job_id=job_id, model=version),
        )
        self.tracker = tracker
        self.out = out
        self._paused_until = 0.0
        self._warned: set[str] = set()
        self._experiments: dict[str, str] = {}
        self._last_start = 0.0
        # Runs asked for attempts, by request, until made: a hurried one is asked twice.
        self._asked: dict[int, dict[str, Any]] = {}
        self._asked_lock = threading.Lock()
        cpu = CpuLoad()

        def attempts_starting() -> bool:
            return time.monotonic() - self._last_start < STARTING_WINDOW and cpu.busy()

        share = SHARE_WHILE_STARTING / 2
        self._runs = RecordLane(attempts_starting, name="trainorch-mlflow-runs", share=share)
        self._record = RecordLane(attempts_starting, share=share)

    # -- what Recording needs ----------------------------------------------------
    def record(self, priority: int, job_id: str, what: str, fn: Any, *args: Any) -> Any:
        return self._record.submit(priority, self._guarded, job_id, what, fn, *args)

    def _guarded(self, job_id: str, what: str, fn: Any, *args: Any) -> Any:
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
    def _with_retries(fn: Any, *args: Any) -> Any:
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
        if job_id and job_id not in self._warned:
            self._warned.add(job_id)
            log.warning("job %s: %s", job_id, message)
            self.out.send(job_id=job_id, warning=message)

    # -- operations ----------------------------------------------------------------
    def handle(self, message: dict[str, Any]) -> None:
        """Queue operation ``message``; it is acknowledged once carried out."""
        op, seq = message.pop("op"), message.pop("seq")
        if op == "attempt_started":
            self._last_start = time.monotonic()
        if op == "reserve":
            for_attempt = bool(message["job_id"])  # else one to reserve ahead
            if for_attempt:  # an attempt started without one
                self._last_start = time.monotonic()
                with self._asked_lock:
                    self._asked[message["request"]] = message
            done = self._runs.submit(SOON if for_attempt else LATER, self._reserve, **message)
        elif op == "hurry":
            with self._asked_lock:
                asked = self._asked.get(message["request"])
            if asked is None:  # made already
                self.out.send(done=seq)
                return
            # Asked again, first; whichever of the two comes first makes the run.
            done = self._runs.submit(URGENT, self._reserve, **asked)
        elif op == "discard":
            done = self._record.submit(LATER, self._discard, **message)
        elif op in OPERATIONS:
            done = getattr(self, op)(**message)
        else:
            log.error("unknown tracking operation %r", op)
            self.out.send(done=seq)
            return

        def acknowledge(future: Any) -> None:
            if future.exception() is not None:  # a bug: recording itself never raises
                log.error("tracking operation %s failed: %r", op, future.exception())
            self.out.send(done=seq)

        done.add_done_callback(acknowledge)

    def _reserve(self, experiment: str, job_id: str, request: int) -> None:
        """A run for ``experiment``: for the pool, or for an attempt of ``job_id`` waiting
        for it (``request`` tells the orchestrator which)."""

        def make() -> tuple[str, str]:
            if experiment not in self._experiments:
                self._experiments[experiment] = self.tracker.experiment_id(experiment)
            made = self._experiments[experiment]
            return str(self.tracker.reserve_run(made)), made

        if job_id:
            with self._asked_lock:
                if self._asked.pop(request, None) is None:
                    return  # made already, by the same request hurried
            run_id, made = self._guarded(job_id, "creating the attempt's run", make) or ("", "")
            self.out.send(reserved=run_id or None, experiment=experiment, request=request)
            return
        try:
            run_id, made = self._with_retries(make)
            self.out.send(reserved=run_id, experiment=experiment, experiment_id=made)
        except Exception as err:  # noqa: BLE001 - attempts make their own run meanwhile
            self.out.send(reserve_failed=experiment, error=f"{type(err).__name__}: {err}"[:300])

    def _discard(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                self.tracker.discard_reserved(run_id)
            except Exception as err:  # noqa: BLE001 - stays a reserved run: harmless
                log.debug("could not delete the reserved run %s: %s", run_id, err)

    def warm_up(self) -> None:
        try:
            self.tracker.warm_up()
        except Exception as err:  # noqa: BLE001 - a job's own call reports it, if it lasts
            log.debug("MLflow could not be reached yet: %s", err)

    def close(self) -> None:
        """Carry out everything received, then end."""
        self._runs.close()
        self._record.close()


def main() -> int:
    if hasattr(os, "nice"):
        # Jobs go first: nothing a starting job needs is made here any more urgently than
        # the CPUs allow (runs reserved ahead are taken; a run made on demand is awaited
        # only by ``import mlflow``). Tracking catches up when a burst of starts is over.
        os.nice(NICENESS)
    logging.basicConfig(level=logging.WARNING, format="trainorch tracking: %(message)s")
    # Protocol lines only on stdout: anything else a library prints goes to stderr.
    out = Outbox(sys.stdout)
    sys.stdout = sys.stderr
    setup: Setup = json.loads(sys.stdin.readline())
    sys.path.extend(p for p in setup["sys_path"] if p not in sys.path)
    tracker = import_class(setup["tracker_class"])(
        setup["tracking_uri"],
        Path(setup["artifact_root"]) if setup["artifact_root"] else None,
        setup["ui_url"],
    )
    worker = TrackingWorker(tracker, out)
    out.send(ready=class_path(type(tracker)))
    worker._runs.submit(URGENT, worker.warm_up)
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("op") == "stop":
            break
        worker.handle(message)
    worker.close()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
