"""What the orchestrator, an attempt's supervisor and the job's process tell each other.

The orchestrator sends ``run_attempt`` an ``AttemptRequest`` and gets an
``AttemptOutcome`` back; the supervisor and the child share the files of the attempt's
folder and the ``TRAINORCH_*`` variables named here. Requests and outcomes stay plain
dicts (``TypedDict``): they cross Dask pickled and lie on disk as JSON, so what an older
version wrote still reads. Standard library only: every job's process imports this.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

# Dask event topic of the supervisors' messages (output batches, "started").
EVENT_TOPIC = "trainorch"

# -- files of an attempt's folder on its worker ---------------------------------------
REQUEST_FILE = "request.json"  # the AttemptRequest without its package (mode 0600)
OUTCOME_FILE = "outcome.json"  # the AttemptOutcome without outputs, until collected
STATUS_FILE = "status.json"  # the child's ChildStatus, when it failed in a known way
OUTPUTS_FILE = "outputs.pkl"  # the variables the job gives back (cloudpickle)
VARIABLES_FILE = "variables.zip"  # the captured variables the job starts with
LOG_FILE = "log.jsonl"  # every output line, ``[seq, stream, text, time]``
RUN_ID_FILE = "mlflow_run_id"  # the attempt's MLflow run id ("" for none)
CHECKPOINTS_DIR = "checkpoints"  # when the orchestrator names no checkpoint folder
UPSTREAM_DIR = "upstream"  # the jobs this one waited on: UPSTREAM_INDEX, ID/OUTPUTS_FILE
UPSTREAM_INDEX = "upstream.json"  # [UpstreamJob without outputs], in dependency order
MODULES_DIR = "modules"  # the kernel's local modules from the package, first on the import path
KERNEL_VERSIONS_FILE = "kernel_versions.json"  # {distribution: version} the kernel had
VERSIONS_FILE = "versions.json"  # {distribution: DistributionVersions}, written by the child

# -- environment ----------------------------------------------------------------------
# Of the worker: where attempts keep their folders (else the worker's local directory).
ATTEMPT_DIR_ENV = "TRAINORCH_ATTEMPT_DIR"
# Of the job's process, set by the supervisor.
JOB_ID_ENV = "TRAINORCH_JOB_ID"
JOB_NAME_ENV = "TRAINORCH_JOB_NAME"
ATTEMPT_ENV = "TRAINORCH_ATTEMPT"
CHECKPOINT_DIR_ENV = "TRAINORCH_CHECKPOINT_DIR"
PROGRESS_FD_ENV = "TRAINORCH_PROGRESS_FD"  # where ``progress()`` writes its JSON lines
UPSTREAM_DIR_ENV = "TRAINORCH_UPSTREAM_DIR"  # set when the job has dependencies
# Set by the orchestrator when tracking is on: the child waits for its run id.
TRACKING_ENV = "TRAINORCH_TRACKING"
# Set by the child to the attempt's run id (MLflow removes MLFLOW_RUN_ID once read).
MLFLOW_RUN_ID_ENV = "TRAINORCH_MLFLOW_RUN_ID"


class GangRole(TypedDict):
    """One rank of a multi-node attempt: where it stands, and how it finds rank 0."""

    rank: int
    world_size: int
    local_rank: int  # among the ranks on the same host
    local_world_size: int
    node_rank: int  # the host's index among the attempt's hosts, in rank order
    master_addr: str  # rank 0's host
    rendezvous: str  # the Dask Variable where rank 0 publishes its MASTER_PORT


class UpstreamJob(TypedDict):
    """A job this one waited on, as its attempt is told (never its environment)."""

    job_id: str
    name: str
    state: str
    when: str  # the condition: ok, any or notok
    error: str | None
    output_names: list[str]
    outputs: bytes | None  # its pickled --out values; None: none, or over the bound
    outputs_note: str | None  # why outputs is None although it has some
    workdir: str | None
    checkpoint_dir: str
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None


class AttemptRequest(TypedDict):
    """One attempt of a job, as the orchestrator hands it to ``run_attempt``."""

    job_id: str
    attempt: int
    name: str
    kind: str  # "python" or "command"
    source: str
    command: str
    params: dict[str, Any]
    env: dict[str, str]
    secret_env: dict[str, str]  # in the job's environment, masked in all it reports
    outputs: list[str]
    workdir: str | None
    timeout: float | None
    gpu_ids: list[str]
    grace: float  # seconds between SIGTERM and SIGKILL
    system_metrics_interval: float  # 0: no samples
    checkpoint_dir: str
    package: bytes | None  # captured variables and input files
    max_log_bytes: int  # output kept per attempt; 0: all of it
    memory_limit: NotRequired[int]  # bytes its processes may use together; 0: no limit
    upstream: NotRequired[list[UpstreamJob]]  # only for a job with dependencies
    gang: NotRequired[GangRole]  # only for a rank of a multi-node job


class DistributionVersions(TypedDict):
    """A distribution the cell imports: its version in the kernel and on the worker."""

    kernel: str
    worker: str | None  # None: not installed where the job ran


class AttemptOutcome(TypedDict, total=False):
    """How an attempt ended. The supervisor fills every field; one the orchestrator makes
    up itself (lost worker, failed task) has only ``error`` and ``infrastructure``."""

    job_id: str
    attempt: int
    rank: int  # of a multi-node attempt (0 otherwise)
    exit_code: int | None  # None: the process never started
    error: str | None
    retryable: bool
    cancelled: bool
    timed_out: bool
    infrastructure: bool  # not the job's fault: retried on a separate budget
    outputs: bytes | None
    log_lines: int
    log_path: str
    pid: int | None
    process_started: float | None
    versions: dict[str, DistributionVersions] | None  # None: the package recorded none


class AttemptReport(TypedDict, total=False):
    """What a worker knows of an attempt: ``running``, or ``finished`` with its outcome."""

    state: str
    pid: int | None
    process_started: float | None
    log_lines: int
    log_path: str
    outcome: AttemptOutcome


class ChildStatus(TypedDict):
    """``status.json``: a failure the child understood, and whether retrying may help."""

    error: str
    retryable: bool


def attempt_key(job_id: str, attempt: int, rank: int = 0) -> str:
    """The Dask key of an attempt's task, also the name of its folder on the worker; of a
    multi-node attempt's rank 0 too, and ``…-rankR`` of its other ranks."""
    key = f"trainorch-{job_id}-{attempt}"
    return f"{key}-rank{rank}" if rank else key
