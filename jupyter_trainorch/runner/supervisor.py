"""The Dask task that supervises one attempt on a worker.

``run_attempt`` runs in a worker thread: it starts the job's process in a new process
group (forked by the worker's zygote, or a fresh interpreter: ``launch``), streams its
output and progress back to the orchestrator as batched Dask events (and to a durable file
on the worker), and stops it on cancel or timeout (SIGTERM to the group, grace, SIGKILL).
It knows nothing about the store.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..files import write_private
from ..package import build_package, extract_files, read_package
from .gang import gang_environment, meet_rank_zero
from .launch import JobProcess, start_job_process, stop_group, worker_environment
from .local_code import recorded, unpack_local_code, with_modules_path
from .masking import SecretMask
from .protocol import (
    ATTEMPT_DIR_ENV,
    ATTEMPT_ENV,
    CHECKPOINT_DIR_ENV,
    CHECKPOINTS_DIR,
    EVENT_TOPIC,
    JOB_ID_ENV,
    JOB_NAME_ENV,
    LOG_FILE,
    OUTCOME_FILE,
    OUTPUTS_FILE,
    PROGRESS_FD_ENV,
    REQUEST_FILE,
    RUN_ID_FILE,
    STATUS_FILE,
    UPSTREAM_DIR,
    UPSTREAM_DIR_ENV,
    UPSTREAM_INDEX,
    VARIABLES_FILE,
    WANTS_RUN_ID,
    AttemptOutcome,
    AttemptReport,
    AttemptRequest,
    attempt_key,
)
from .streams import LineBatcher, read_lines
from .system_metrics import MEMORY_CHECK_SECONDS, SystemSampler, size_text, tree_memory

_registry: dict[str, Supervisor] = {}
_registry_lock = threading.Lock()


def _attempt_root(worker: Any = None) -> Path:
    """Where attempts keep their files on this worker: a folder the worker was given (it
    outlives the worker process), else the worker's own local directory."""
    configured = os.environ.get(ATTEMPT_DIR_ENV)
    if configured:
        return Path(configured)
    try:
        from distributed import get_worker

        base = Path((worker or get_worker()).local_directory)
    except (ImportError, ValueError):
        base = Path(tempfile.gettempdir())
    return base / "trainorch"


class Supervisor:
    def __init__(self, request: AttemptRequest, send: Any) -> None:
        self.request = request
        self.gang = request.get("gang")
        rank, ranks = (self.gang["rank"], self.gang["world_size"]) if self.gang else (0, 1)
        self.key = attempt_key(request["job_id"], request["attempt"], rank)
        self.dir = _attempt_root() / self.key
        # request.json holds the job's secrets, and all else here is its owner's alone.
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # a folder left by an earlier try of the same key
        self.cancel_requested = threading.Event()
        # Older orchestrators send neither secrets nor a cap.
        self.mask = SecretMask((request.get("secret_env") or {}).values())
        self.batcher = LineBatcher(
            send=lambda payload: send({"type": "output", **self._ids(), **payload}),
            log_path=self.dir / LOG_FILE,
            mask=self.mask,
            max_bytes=int(request.get("max_log_bytes") or 0),
            rank=rank,
            ranks=ranks,
        )
        self.send = send
        self.proc: JobProcess | None = None
        self.master_port = 0  # a multi-node attempt's, once rank 0 has chosen it
        self.process_started: float | None = None
        self.out_of_memory = 0  # bytes used when stopped for passing its memory claim

    def _ids(self) -> dict[str, Any]:
        ids = {"job_id": self.request["job_id"], "attempt": self.request["attempt"]}
        if self.gang:
            ids["rank"] = self.gang["rank"]
        return ids

    # -- process -----------------------------------------------------------
    def _environment(self, progress_fd: int) -> dict[str, str]:
        req = self.request
        env = worker_environment()
        env.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
        env.update({str(k): str(v) for k, v in (req.get("secret_env") or {}).items()})
        env.update(
            {
                "CUDA_VISIBLE_DEVICES": ",".join(req.get("gpu_ids") or []),
                JOB_ID_ENV: req["job_id"],
                JOB_NAME_ENV: req["name"],
                ATTEMPT_ENV: str(req["attempt"]),
                CHECKPOINT_DIR_ENV: self._checkpoint_dir(),
                PROGRESS_FD_ENV: str(progress_fd),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if "upstream" in req:
            env[UPSTREAM_DIR_ENV] = str(self.dir / UPSTREAM_DIR)
        if self.gang:
            env.update(gang_environment(self.gang, self.master_port))
        return with_modules_path(env, self.dir)

    def _checkpoint_dir(self) -> str:
        return self.request.get("checkpoint_dir") or str(self.dir / CHECKPOINTS_DIR)

    def _workdir(self) -> str:
        wanted = self.request.get("workdir")
        if wanted and os.path.isdir(wanted) and not self.has_inputs:
            return wanted
        return str(self.dir)

    def start(self) -> None:
        req: dict[str, Any] = dict(self.request)
        package = req.pop("package", None)
        self._write_upstream(req.pop("upstream", None))
        self.has_inputs = False
        if package:
            variables, files = read_package(package)
            if variables:
                (self.dir / VARIABLES_FILE).write_bytes(build_package(variables))
            # A job that ships its input files runs among them, on any worker.
            extract_files(files, self.dir)
            self.has_inputs = bool(files)
            unpack_local_code(package, self.dir)
        write_private(self.dir / REQUEST_FILE, json.dumps(req))
        os.makedirs(self._checkpoint_dir(), exist_ok=True)
        if self.gang:
            self.master_port = meet_rank_zero(self.gang, self.cancel_requested)
        read_fd, write_fd = os.pipe()
        try:
            env = self._environment(write_fd)
            self.proc = start_job_process(self.dir, env, self._workdir(), write_fd, req)
        finally:
            os.close(write_fd)
        self.process_started = time.time()
        self.readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._pump_progress, args=(read_fd,), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        self.send(
            {"type": "started", **self._ids(), "pid": self.proc.pid, "time": self.process_started}
        )
        self.sampler = SystemSampler(
            self.proc.pid, list(self.request.get("gpu_ids") or []),
            float(self.request.get("system_metrics_interval") or 0), self.batcher.metrics_point,
        ).start()  # fmt: skip

    def _write_upstream(self, upstream: list[dict[str, Any]] | None) -> None:
        """The jobs this one waited on, for ``jupyter_trainorch.upstream``: an index, and
        each one's pickled ``--out`` values in a folder named by its id."""
        if upstream is None:
            return
        folder = self.dir / UPSTREAM_DIR
        folder.mkdir(mode=0o700, exist_ok=True)
        for entry in upstream:
            outputs = entry.get("outputs")
            if outputs is not None:
                (folder / entry["job_id"]).mkdir(mode=0o700, exist_ok=True)
                (folder / entry["job_id"] / OUTPUTS_FILE).write_bytes(outputs)
        index = [{k: v for k, v in e.items() if k != "outputs"} for e in upstream]
        write_private(folder / UPSTREAM_INDEX, json.dumps(index))

    def _pump(self, pipe: Any) -> None:
        # Read to the end even past the log cap: a child blocked on a full pipe never ends.
        read_lines(pipe.fileno(), self.batcher.add, self.batcher.progress)
        pipe.close()

    def _pump_progress(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and "checkpoint" in record:
                    self.send({"type": "checkpoint", **self._ids(), "time": record["checkpoint"]})
                    continue
                if isinstance(record, dict) and record.get(WANTS_RUN_ID):
                    self.send({"type": WANTS_RUN_ID, **self._ids()})
                    continue
                self.batcher.progress(record)

    # -- lifecycle -----------------------------------------------------------
    def wait(self) -> AttemptOutcome:
        assert self.proc is not None
        timeout = self.request.get("timeout")
        grace = float(self.request.get("grace", 5.0))
        deadline = time.monotonic() + timeout if timeout else None
        cancelled = timed_out = False
        limit = int(self.request.get("memory_limit") or 0)
        next_check = time.monotonic()
        while self.proc.poll() is None:
            if self.cancel_requested.wait(0.05):
                cancelled = True
                stop_group(self.proc, grace)
                break
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                stop_group(self.proc, grace)
                break
            if limit and time.monotonic() >= next_check:
                next_check = time.monotonic() + MEMORY_CHECK_SECONDS
                used = tree_memory(self.proc.pid)
                if used > limit:
                    # Past its claim it would take memory placed for other jobs: no grace.
                    self.out_of_memory = used
                    stop_group(self.proc, 0)
                    break
        exit_code = self.proc.wait()
        self.sampler.stop()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray grandchildren must not hold the GPU
        except (ProcessLookupError, PermissionError):
            pass
        for reader in self.readers:
            reader.join(timeout=5)
        self.batcher.close()
        try:  # a job that saved nothing leaves no folder behind
            os.rmdir(self._checkpoint_dir())
        except OSError:
            pass
        return self._result(exit_code, cancelled, timed_out)

    def _result(self, exit_code: int, cancelled: bool, timed_out: bool) -> AttemptOutcome:
        status: dict[str, Any] = {}
        status_path = self.dir / STATUS_FILE
        if status_path.exists():
            status = json.loads(status_path.read_text())
        outputs_path = self.dir / OUTPUTS_FILE
        error = status.get("error")
        # Its parent zygote died: the job's fault no more than a lost worker would be.
        lost = self.proc.lost if self.proc is not None and not cancelled else None
        if lost:
            error, status = lost, {**status, "retryable": True}
        elif timed_out:
            error = f"timed out after {self.request['timeout']:g}s"
        elif cancelled:
            error = "cancelled"
        elif self.out_of_memory:
            error = (
                f"out of memory: its processes used {size_text(self.out_of_memory)} "
                f"(claimed {size_text(int(self.request.get('memory_limit') or 0))})"
            )
            status = {**status, "retryable": False}
        elif exit_code != 0 and not error:
            error = f"exited with code {exit_code}" + (
                f" (signal {-exit_code})" if exit_code < 0 else ""
            )
        return {
            **self._ids(),
            "exit_code": exit_code,
            "error": None if error is None else self.mask(error),
            "retryable": bool(status.get("retryable", True)) and not cancelled,
            "infrastructure": bool(lost),
            "cancelled": cancelled,
            "timed_out": timed_out,
            "outputs": outputs_path.read_bytes()
            if exit_code == 0 and outputs_path.exists()
            else None,
            "log_lines": self.batcher.count,
            "log_path": str(self.dir / LOG_FILE),
            "pid": self.proc.pid if self.proc else None,
            "process_started": self.process_started,
            **recorded(self.dir),
        }

    def report(self) -> AttemptReport:
        """What a reattaching orchestrator needs to know about this running attempt."""
        return {
            "state": "running",
            "pid": self.proc.pid if self.proc else None,
            "process_started": self.process_started,
            "log_lines": self.batcher.count,
            "log_path": str(self.dir / LOG_FILE),
        }

    def record_outcome(self, outcome: AttemptOutcome) -> None:
        """Keep the outcome on the worker until the orchestrator has stored it: it may be
        away (restarting) when the attempt ends. Outputs stay in their own file."""
        durable = {k: v for k, v in outcome.items() if k != "outputs"}
        write_private(self.dir / OUTCOME_FILE, json.dumps(durable))


def run_attempt(request: AttemptRequest) -> AttemptOutcome:
    """The Dask task of one attempt: start, stream, wait, report."""
    from distributed import get_worker

    worker = get_worker()

    def send(message: dict[str, Any]) -> None:
        worker.log_event(EVENT_TOPIC, message)

    supervisor = Supervisor(request, send)
    with _registry_lock:
        _registry[supervisor.key] = supervisor
    try:
        supervisor.start()
        outcome = supervisor.wait()
        supervisor.record_outcome(outcome)
        return outcome
    except BaseException as err:
        # Not even started (no such executable, disk full): an outcome all the same, so
        # nobody mistakes the attempt for one that is still running.
        raw = f"{type(err).__name__}: {err}"
        error = supervisor.mask(raw)
        supervisor.record_outcome(
            {**supervisor._ids(), "exit_code": None, "error": error,
             "infrastructure": True, "log_lines": supervisor.batcher.count,
             "log_path": str(supervisor.dir / LOG_FILE)}
        )  # fmt: skip
        if error != raw:
            # The orchestrator stores the task's error text: it must not carry a secret.
            raise RuntimeError(error) from None
        raise
    finally:
        # Only once the outcome is on disk: at every moment the attempt is either
        # registered here or has its outcome file.
        with _registry_lock:
            _registry.pop(supervisor.key, None)


# -- commands the orchestrator runs on workers with ``Client.run`` -----------------
def cancel_attempt(key: str) -> bool:
    """Ask the supervisor of ``key`` on this worker to stop its child."""
    with _registry_lock:
        supervisor = _registry.get(key)
    if supervisor is None:
        return False
    supervisor.cancel_requested.set()
    return True


def deliver_run_id(key: str, run_id: str) -> bool:
    """Give the attempt its MLflow run id ("" for none); its child waits for this file."""
    with _registry_lock:
        supervisor = _registry.get(key)
    if supervisor is None:
        return False
    write_run_id(supervisor.dir, run_id)
    return True


def write_run_id(attempt_dir: Path, run_id: str) -> None:
    """Put the run id in the attempt's folder whole: the child reads an empty file as "no run"."""
    staged = attempt_dir / f"{RUN_ID_FILE}.tmp"
    staged.write_text(run_id)
    staged.rename(attempt_dir / RUN_ID_FILE)


def attempt_reports(keys: list[str], dask_worker: Any = None) -> dict[str, AttemptReport]:
    """The attempts among ``keys`` that this worker knows: running, or finished with the
    outcome that nobody has collected yet. Keys it has never seen are left out."""
    root = _attempt_root(dask_worker)
    reports: dict[str, AttemptReport] = {}
    for key in keys:
        with _registry_lock:
            supervisor = _registry.get(key)
        if supervisor is not None:
            reports[key] = supervisor.report()
            continue
        try:
            outcome = json.loads((root / key / OUTCOME_FILE).read_text())
        except (FileNotFoundError, ValueError):
            continue
        outputs = root / key / OUTPUTS_FILE
        if outcome.get("exit_code") == 0 and outputs.exists():
            outcome["outputs"] = outputs.read_bytes()
        reports[key] = {"state": "finished", "outcome": outcome}
    return reports


def forget_finished(
    attempts: dict[str, list[str]], checkpoints: dict[str, list[str]], dask_worker: Any = None
) -> int:
    """This worker's part (by its address) of what finished jobs leave: the files of
    attempts whose outcome the orchestrator has stored, and the checkpoint folders of jobs
    done with them. One call for every worker: a call per finished job was a round trip per
    job in a burst of short ones."""
    import shutil

    address = getattr(dask_worker, "address", "")
    root = _attempt_root(dask_worker)
    removed = 0
    for key in attempts.get(address, []):
        with _registry_lock:
            if key in _registry:
                continue
        if (root / key / OUTCOME_FILE).exists():
            shutil.rmtree(root / key, ignore_errors=True)
            removed += 1
    for folder in checkpoints.get(address, []):
        if Path(folder).is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def cancel_jobs(job_ids: list[str]) -> list[str]:
    """Stop every attempt of these jobs on this worker (the service is being stopped)."""
    wanted = set(job_ids)
    stopped = []
    with _registry_lock:
        supervisors = list(_registry.values())
    for supervisor in supervisors:
        if supervisor.request["job_id"] in wanted:
            supervisor.cancel_requested.set()
            stopped.append(supervisor.key)
    return stopped


def read_log(path: str, after_seq: int) -> list[list[Any]]:
    """Lines of the durable worker log with a sequence number above ``after_seq``."""
    lines = []
    try:
        with open(path, encoding="utf-8") as handle:
            for raw in handle:
                try:
                    records = json.loads(raw)
                except ValueError:  # the write a killed worker left unfinished
                    continue
                lines.extend(record for record in records if record[0] > after_seq)
    except FileNotFoundError:
        pass
    return lines
