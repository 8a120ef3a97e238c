"""Whether finished jobs are in MLflow as trainorch records them: a run per job, a nested,
named run per attempt, both closed. Used by the benchmarks and tests that load tracking."""

from __future__ import annotations

from typing import Any

from .fields import PARENT_TAG, RUN_NAME_TAG

CLOSED = ("FINISHED", "FAILED", "KILLED")


def _runs(client: Any, experiment_ids: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        found.update((run.info.run_id, run) for run in page)
        token = page.token
        if not token:
            return found


def untracked(tracking_uri: str, jobs: list[dict[str, Any]]) -> dict[str, str]:
    """``{job id: what is missing}`` for the finished ``jobs`` (``Job.to_dict()`` shape)
    whose runs are not all there."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = sorted(
        {j["mlflow"]["experiment_id"] for j in jobs if j["mlflow"].get("experiment_id")}
    )
    runs = _runs(client, experiments) if experiments else {}
    missing: dict[str, str] = {}
    for job in jobs:
        parent = runs.get(job["mlflow"].get("run_id") or "")
        if job["mlflow"].get("warning"):
            missing[job["id"]] = f"warning: {job['mlflow']['warning']}"
        elif parent is None:
            missing[job["id"]] = "no run for the job"
        elif parent.data.tags.get("trainorch.job_id") != job["id"]:
            missing[job["id"]] = "the job's run is not tagged with it"
        elif parent.info.status not in CLOSED:
            missing[job["id"]] = f"the job's run is {parent.info.status}"
        for attempt in job["attempts"] if job["id"] not in missing else ():
            run = runs.get(attempt.get("mlflow_run_id") or "")
            name = f"{job['name']} attempt {attempt['n']}"
            if run is None:
                missing[job["id"]] = f"no run for attempt {attempt['n']}"
            elif run.data.tags.get(RUN_NAME_TAG) != name or run.info.run_name != name:
                missing[job["id"]] = f"attempt {attempt['n']}'s run is named {run.info.run_name!r}"
            elif run.data.tags.get(PARENT_TAG) != parent.info.run_id:
                missing[job["id"]] = f"attempt {attempt['n']}'s run is not nested in the job's"
            elif run.info.status not in CLOSED:
                missing[job["id"]] = f"attempt {attempt['n']}'s run is {run.info.status}"
    return missing
