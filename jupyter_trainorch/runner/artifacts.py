"""A job's ``artifacts``: after its code succeeded, the job's process logs the files it
wrote to its attempt's MLflow run, as ``artifacts/<name>``.

Here, not in the service: the files are on the job's worker, which the service may not
see, and the job's process already talks to MLflow (``MLFLOW_TRACKING_URI``,
``MLFLOW_RUN_ID``). A job that waits on this one reads them as
``job:NAME/artifacts/<name>`` (``orchestrator.data_inputs`` turns that into this run's
``runs:/`` URI). A declared artifact the job did not write fails the attempt; MLflow
being down does not (tracking never fails a job): the attempt warns, and a job reading
the artifact later says it is not found.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from ..data_uri import ARTIFACTS_DIR
from .data_inputs import WriteStatus, first_line, update_data_file
from .names import MLFLOW_RUN_ID_ENV, TRACKING_ENV


def upload_artifacts(
    attempt_dir: str, request: Any, write_status: WriteStatus, workdir: str
) -> int:
    """Log the job's artifacts (paths relative to ``workdir``, where the job started,
    whatever folder its code moved to); the attempt's exit code (0, or 3 for a missing file)."""
    if (request.get("gang") or {}).get("rank"):
        return 0  # rank 0 logs them: the ranks of one job write the same files
    found: dict[str, str] = {}
    for entry in request.get("artifacts") or []:
        path = os.path.join(workdir, os.path.expanduser(entry["path"]))
        if not os.path.exists(path):
            message = f"artifact {entry['name']!r} was not written by the job: {path}"
            print(message, file=sys.stderr, flush=True)
            write_status(attempt_dir, request, message, False)
            return 3
        found[entry["name"]] = path
    run_id = _run_id(attempt_dir)
    if not run_id:
        print(
            "trainorch: the artifacts were not logged: this attempt has no MLflow run "
            "(tracking is off or did not answer)",
            file=sys.stderr,
            flush=True,
        )
        return 0
    try:
        logged = _log(run_id, found)
    except Exception as err:  # noqa: BLE001 - MLflow down must not fail a finished job
        print(f"trainorch: the artifacts could not be logged to MLflow: {first_line(err)}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 0
    update_data_file(attempt_dir, {"artifacts": logged})
    for name, uri in logged.items():
        print(f"trainorch: artifact {name} logged as {uri}", flush=True)
    return 0


def _run_id(attempt_dir: str) -> str:
    if os.environ.get(TRACKING_ENV) and not os.environ.get(MLFLOW_RUN_ID_ENV):
        from .mlflow_run import wait_for_run_id

        wait_for_run_id(attempt_dir)
    return os.environ.get(MLFLOW_RUN_ID_ENV, "") if os.environ.get("MLFLOW_TRACKING_URI") else ""


def _log(run_id: str, found: dict[str, str]) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient()
    logged = {}
    for name, path in found.items():
        if os.path.isdir(path):
            client.log_artifacts(run_id, path, f"{ARTIFACTS_DIR}/{name}")
        elif os.path.basename(path) == name:
            client.log_artifact(run_id, path, ARTIFACTS_DIR)
        else:
            # MLflow names a logged file by its own name: a link gives it the artifact's.
            with tempfile.TemporaryDirectory() as folder:
                os.symlink(path, os.path.join(folder, name))
                client.log_artifact(run_id, os.path.join(folder, name), ARTIFACTS_DIR)
        logged[name] = f"runs:/{run_id}/{ARTIFACTS_DIR}/{name}"
    return logged
