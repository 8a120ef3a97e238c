"""What the operator makes of its job, apart from Airflow: the sentence a failed job fails
its task with, the outputs XCom can hold, the job's log in the task log, and the key that
makes one job per task try."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from collections.abc import Mapping
from typing import Any

from ..client.job import Job
from ..client.transport import HTTPTransport


def failure_sentence(job: Mapping[str, Any]) -> str:
    """``trainorch job ID (NAME) failed: <the job's error>``."""
    error = job.get("error")
    reason = f": {error}" if error and error != job["state"] else ""
    return f"trainorch job {job['id']} ({job.get('name', '')}) {job['state']}{reason}"


def json_outputs(
    transport: HTTPTransport, job: Mapping[str, Any], log: logging.Logger
) -> dict[str, Any]:
    """The job's ``--out`` values that XCom can hold (JSON); the others are named in the log.
    The service pickled them: it is the service this connection trusts with the job, as
    ``Job.result()`` trusts it."""
    blob = transport.outputs(job["id"])
    try:
        values = pickle.loads(blob) if blob else {}
    except Exception as err:  # a value whose class cannot be imported here
        log.warning(
            "the outputs of trainorch job %s cannot be read here (%s: %s); "
            "read them with jupyter_trainorch.client.get_job(%r).result()",
            job["id"], type(err).__name__, err, job["id"],
        )  # fmt: skip
        return {}
    kept = {}
    for name, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            log.warning(
                "output %s of trainorch job %s (%s) is not JSON and stays out of XCom",
                name, job["id"], type(value).__name__,
            )  # fmt: skip
            continue
        kept[name] = value
    return kept


def log_tail(transport: HTTPTransport, job_id: str, log: logging.Logger, most: int) -> None:
    """The last ``most`` lines of the job's log, into ``log``."""
    lines = Job(job_id, transport).logs().splitlines()
    if len(lines) > most:
        log.info("... %d earlier lines of the job's log left out", len(lines) - most)
    for line in lines[-most:] if most > 0 else []:
        log.info("%s", line)


def idempotency_key(ti: Any) -> str:
    """One job per task try: a submit retried after a lost answer finds the same job."""
    identity = "\0".join(
        str(part)
        for part in (ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1), ti.try_number)
    )
    return "airflow-" + hashlib.sha256(identity.encode()).hexdigest()[:48]


class LogStream(io.TextIOBase):
    """A text stream whose lines go to a logger (the task log)."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._log.info("%s", line)
        return len(text)
