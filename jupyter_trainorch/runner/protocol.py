"""What the orchestrator, an attempt's supervisor and the job's process tell each other.

The orchestrator sends ``run_attempt`` an ``AttemptRequest`` and gets an
``AttemptOutcome`` back; the supervisor and the child share the files of the attempt's
folder and the ``TRAINORCH_*`` variables named in ``names``. Requests and outcomes stay plain
dicts (``TypedDict``): they cross Dask pickled and lie on disk as JSON, so what an older
version wrote still reads. Standard library only.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

# The names of files and variables live in ``names`` (imported by the job's process,
# which must not pay for ``typing``); everything else imports them from here.
from .names import *  # noqa: F403


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
    artifacts: NotRequired[list[dict[str, str]]]  # [{name, path}] to log to MLflow at success
    # Inputs by name (``data_uri``; ``job:`` references already ``runs:/…``), and the ones
    # that cannot be had, with the sentence the attempt fails with.
    data: NotRequired[dict[str, str]]
    data_errors: NotRequired[dict[str, str]]
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
    image: NotRequired[str]  # only for a job that runs in a container image
    container_engine: NotRequired[str]  # with image: auto, podman, docker or off


class DistributionVersions(TypedDict):
    """A distribution the cell imports: its version in the kernel and on the worker."""

    kernel: str
    worker: str | None  # None: not installed where the job ran


class DataRecord(TypedDict, total=False):
    """One data input as the job's process staged it (``DATA_FILE``)."""

    uri: str
    path: str  # local, in TRAINORCH_DATA_<NAME>
    sha256: (
        str | None
    )  # of the file, or of a folder's sorted "path<NUL>hash" lines; None: not hashed
    bytes: int
    files: int
    note: str  # why it was not hashed
    version: str  # a models:/NAME@alias input: the version it was


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
    data: dict[str, DataRecord] | None  # the inputs it was given; None: none
    artifacts: dict[str, str] | None  # name -> the MLflow URI it was logged to


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
