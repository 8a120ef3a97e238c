"""What trainorch writes into MLflow runs: statuses, tags, params and experiment names.

Plain data, no MLflow calls (``mlflow.entities`` is imported only where entities are
built), so the orchestrator can compute names without importing MLflow.
"""

from __future__ import annotations

import time
from typing import Any

STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
# Jobs without an experiment go here, not to MLflow's "Default": that one was made with
# the store and keeps its artifacts in ``./mlruns`` of whichever folder created the store.
DEFAULT_EXPERIMENT = "trainorch"
# The name of a run made ahead of the attempt it will be given to; the attempt's own name
# replaces it once the run is assigned, so a run still called this belongs to nobody.
RESERVED_RUN_NAME = "reserved-by-trainorch"


def ms(seconds: float | None = None) -> int:
    """MLflow's milliseconds since the epoch, of ``seconds`` (default: now)."""
    return int((seconds if seconds is not None else time.time()) * 1000)


def step(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def param_text(value: Any) -> str:
    # str() as mlflow.log_param does: the job's code logging the same param into its
    # attempt's run must write the same text, since MLflow refuses to change a param.
    return str(value)[:6000]  # MLflow's limit on a param value


def params(job: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(str(k), param_text(v)) for k, v in sorted((job.get("params") or {}).items())]


def experiment_name(spec: dict[str, Any]) -> str:
    """The experiment a job's runs go to."""
    experiment = str(spec.get("experiment") or "")
    # Older kernels name MLflow's "Default" when a notebook has no name.
    return experiment if experiment not in ("", "Default") else DEFAULT_EXPERIMENT


def job_tags(job: dict[str, Any]) -> dict[str, str]:
    """The trainorch tags a job's run and each attempt's run carry, so MLflow's search
    and compare can group and filter attempts as well as jobs."""
    template = job.get("template") or {}
    tags = {
        "mlflow.user": job.get("user") or "",
        "trainorch.job_id": job["id"],
        "trainorch.template.name": str(template.get("name", "")),
        "trainorch.template.version": str(template.get("version", "")),
        "trainorch.template.hash": str(template.get("hash", "")),
        "trainorch.priority": str(job.get("priority_class", "")),
        "trainorch.gpus": str((job.get("resources") or {}).get("gpus", 0)),
        "trainorch.code_hash": str(job.get("code_hash") or ""),
    }
    if template.get("commit"):  # a template from a git work tree
        tags["trainorch.template.commit"] = str(template["commit"])
        tags["trainorch.template.dirty"] = str(bool(template.get("dirty"))).lower()
    if job.get("group"):
        tags["trainorch.group"] = str(job["group"])
    if job.get("rerun_of"):
        tags["trainorch.rerun_of"] = str(job["rerun_of"])
    return tags


def job_run_tags(job: dict[str, Any], spec: dict[str, Any]) -> dict[str, str]:
    """The job's own run: the job's tags, its name and where it came from."""
    template = spec.get("template") or {}
    return {
        **job_tags(job),
        RUN_NAME_TAG: job["name"],
        "mlflow.source.name": f"jupyter-trainorch:{template.get('name', '')}",
        "mlflow.source.type": "JOB",
    }


def run_url(ui_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI at ``ui_url``, if there is one."""
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def attempt_tags(
    job: dict[str, Any], parent_run_id: str | None, n: int, worker: str, gpu_ids: list[str]
) -> dict[str, str]:
    """An attempt's run: the job's tags, its name, where it ran and its job's run."""
    tags = {
        **job_tags(job),
        RUN_NAME_TAG: f"{job['name']} attempt {n}",
        "trainorch.attempt": str(n),
        "trainorch.worker": worker,
        "trainorch.gpu_ids": ",".join(gpu_ids),
    }
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    return tags
