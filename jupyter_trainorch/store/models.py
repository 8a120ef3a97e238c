"""Plain records the store hands out; the ORM rows never leave ``store``."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..contract.states import (  # noqa: F401 - the store speaks in these states
    ACTIVE_STATES,
    ALL_STATES,
    CANCELLED,
    FAILED,
    PENDING,
    PREEMPTED,
    QUEUED,
    RETRYING,
    RUNNING,
    STARTING,
    SUCCEEDED,
    TERMINAL_STATES,
)


def iso(ts: float | None) -> str | None:
    """``2026-12-07T07:00:01.250000Z``, as ``datetime.isoformat`` writes it (no fraction
    when it is 0). Log pages format thousands of times within a few seconds: the part up
    to the second is formatted once."""
    if ts is None:
        return None
    whole = math.floor(ts)
    micro = round((ts - whole) * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    second = _second_text(whole)
    return f"{second}.{micro:06d}Z" if micro else f"{second}Z"


@functools.lru_cache(maxsize=256)
def _second_text(whole: int) -> str:
    return datetime.fromtimestamp(whole, tz=timezone.utc).isoformat().replace("+00:00", "")


def failure_cause(infrastructure: bool, error: str | None) -> str:
    """The kind of a failed attempt, as retry rules name it (``RetryPolicy.on``)."""
    if infrastructure:
        return "infrastructure"
    error = error or ""
    if error.startswith("out of memory"):
        return "out_of_memory"
    if error.startswith("timed out after"):
        return "timeout"
    return "job"


@dataclass
class AttemptRecord:
    job_id: str
    n: int
    state: str = STARTING
    worker: str | None = None
    gpu_ids: list[str] = field(default_factory=list)
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    error: str | None = None
    infrastructure: bool = False  # a lost worker or restart, not the job's own fault
    mlflow_run_id: str | None = None
    process_started: float | None = None  # the child process began executing the body
    pid: int | None = None  # the child's pid on ``worker``

    @property
    def cause(self) -> str | None:
        """Why an attempt that did not succeed ended: ``job`` (its own code failed),
        ``out_of_memory``, ``timeout``, ``infrastructure`` (a lost worker, a restart),
        ``preempted`` or ``cancelled``; None while it runs or once it succeeded."""
        if self.state in (PREEMPTED, CANCELLED):
            return self.state
        if self.state != FAILED:
            return None
        return failure_cause(self.infrastructure, self.error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "state": self.state,
            "worker": self.worker,
            "gpu_ids": list(self.gpu_ids),
            "started": iso(self.started),
            "ended": iso(self.ended),
            "exit_code": self.exit_code,
            "error": self.error,
            "infrastructure": self.infrastructure,
            "cause": self.cause,
            "mlflow_run_id": self.mlflow_run_id,
            "process_started": iso(self.process_started),
            "pid": self.pid,
        }


@dataclass
class JobRecord:
    id: str
    seq: int
    name: str
    user: str
    state: str
    priority: int
    spec: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    not_before: float | None = None  # backoff: not dispatched before this time
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    mlflow: dict[str, Any] = field(default_factory=dict)
    has_outputs: bool = False
    retry_from: int = 1
    code_hash: str = ""
    rerun_of: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    idempotency_key: str | None = None  # unique per user when set
    request_hash: str | None = None

    @property
    def max_retries(self) -> int:
        return int(self.spec.get("retries", {}).get("max", 0))

    @property
    def conditions(self) -> dict[str, str]:
        """Each dependency's id and when the job may run after it (``ok``, ``any``,
        ``notok``); jobs stored before conditions existed wait on success."""
        given = {d.get("job"): d.get("when", "ok") for d in self.spec.get("dependencies") or []}
        return {dep_id: given.get(dep_id, "ok") for dep_id in self.depends_on}

    @property
    def user_failures(self) -> int:
        return sum(
            1
            for a in self.attempts
            if a.state == FAILED and not a.infrastructure and a.n >= self.retry_from
        )

    @property
    def reexecutions(self) -> int:
        """Times the job's code had started and had to run again because its worker was
        lost or the service stopped it (not because the code failed)."""
        return sum(1 for a in self.attempts if a.infrastructure and a.process_started is not None)

    @property
    def infrastructure_failures(self) -> int:
        return sum(
            1
            for a in self.attempts
            if a.state == FAILED and a.infrastructure and a.n >= self.retry_from
        )

    def to_dict(self) -> dict[str, Any]:
        """The public job JSON (DESIGN.md)."""
        from ..spec.units import priority_name

        spec = self.spec
        resources = spec.get("resources", {})
        return {
            "id": self.id,
            "name": self.name,
            "user": self.user,
            "state": self.state,
            "priority": self.priority,
            "priority_class": priority_name(self.priority),
            "kind": spec.get("kind", "python"),
            "resources": {
                "gpus": resources.get("gpus", 0),
                "cpus": resources.get("cpus", 1),
                "memory": resources.get("memory", 0),
                "nodes": resources.get("nodes", 1),
            },
            "depends_on": list(self.depends_on),
            "dependencies": [{"job_id": k, "when": v} for k, v in self.conditions.items()],
            "template": dict(spec.get("template", {})),
            "params": dict(spec.get("params", {})),
            "attempts": [a.to_dict() for a in self.attempts],
            "max_retries": self.max_retries,
            "attempts_allowed": self.max_retries + 1,
            "reexecutions": self.reexecutions,
            "terminal": self.state in TERMINAL_STATES,
            "timeout": spec.get("timeout"),
            "progress": dict(self.progress)
            or {"step": None, "total": None, "fraction": None, "message": None},
            "mlflow": dict(self.mlflow) or {"experiment_id": None, "run_id": None, "url": None},
            "error": self.error,
            "outputs": list(spec.get("outputs", [])),
            "experiment": spec.get("experiment", ""),
            "group": spec.get("group", ""),
            "code_hash": self.code_hash,
            "rerun_of": self.rerun_of,
            "has_outputs": self.has_outputs,
            "created": iso(self.created),
            "started": iso(self.started),
            "ended": iso(self.ended),
        }


class DuplicateSubmission(Exception):
    """A job with this user's idempotency key already exists: ``job_id`` is that job."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with this idempotency key already exists: {job_id}")
        self.job_id = job_id


@dataclass
class LogLine:
    id: int
    job_id: str
    attempt: int
    seq: int
    stream: str
    text: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt": self.attempt,
            "seq": self.seq,
            "stream": self.stream,
            "text": self.text,
            "time": iso(self.time),
        }


@dataclass
class Lease:
    owner: str
    url: str | None
    pid: int
    host: str
    expires: float
