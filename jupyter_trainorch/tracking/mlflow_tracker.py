"""MLflow tracking: one run per job, one nested run per attempt.

Every call is made from the tracker's own thread (MLflow's SQLite store is slow and
must never stall scheduling) and never raises: a tracking failure becomes a warning
on the job, and the job runs on. Metrics are logged synchronously in batches:
MLflow's asynchronous logging drops points against a SQLite server.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .git import git_info

log = logging.getLogger(__name__)

STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
PARENT_TAG = "mlflow.parentRunId"


def _ms(seconds: float | None = None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1000)


def _step(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:6000]  # MLflow's limit on a param value


class MlflowTracker:
    """Talks to one MLflow tracking server (or SQLite file) for the orchestrator."""

    def __init__(
        self, tracking_uri: str, artifact_root: Path | None = None, ui_url: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.ui_url = ui_url.rstrip("/") if ui_url else None
        self._client: Any = None
        self._experiments: dict[str, str] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient  # about a second to import: only on first use

            # Schema creation of a new SQLite store is routine, not news for a notebook.
            for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
                logging.getLogger(name).setLevel(logging.WARNING)

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def url(self, experiment_id: str, run_id: str) -> str | None:
        if not self.ui_url:
            return None
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def _experiment(self, name: str) -> str:
        if name in self._experiments:
            return self._experiments[name]
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = None
            if self.artifact_root is not None:
                # Without this, a SQLite-backed store writes artifacts under the cwd.
                location = (self.artifact_root / name).resolve().as_uri()
            try:
                experiment_id = self.client.create_experiment(name, artifact_location=location)
            except Exception:  # noqa: BLE001 - another process created it meanwhile
                experiment_id = self.client.get_experiment_by_name(name).experiment_id
        self._experiments[name] = experiment_id
        return experiment_id

    # -- the job's run ---------------------------------------------------------------
    def start_job(self, job: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """Create the job's run with its params and tags (what attempts' runs wait for)."""
        experiment = str(spec.get("experiment") or "Default")
        experiment_id = self._experiment(experiment)
        template = spec.get("template") or {}
        tags = {
            "mlflow.user": job.get("user") or "",
            "mlflow.runName": job["name"],
            "mlflow.source.name": f"jupyter-trainorch:{template.get('name', '')}",
            "mlflow.source.type": "JOB",
            "trainorch.job_id": job["id"],
            "trainorch.template.name": str(template.get("name", "")),
            "trainorch.template.version": str(template.get("version", "")),
            "trainorch.template.hash": str(template.get("hash", "")),
            "trainorch.priority": str(job.get("priority_class", "")),
            "trainorch.gpus": str((spec.get("resources") or {}).get("gpus", 0)),
            "trainorch.code_hash": str(job.get("code_hash") or ""),
        }
        if spec.get("group"):
            tags["trainorch.group"] = str(spec["group"])
        if job.get("rerun_of"):
            tags["trainorch.rerun_of"] = str(job["rerun_of"])
        run = self.client.create_run(
            experiment_id, start_time=_ms(), tags=tags, run_name=job["name"]
        )
        run_id = run.info.run_id
        from mlflow.entities import Param

        params = [
            Param(str(k), _param_text(v)) for k, v in sorted((spec.get("params") or {}).items())
        ]
        if params:
            self.client.log_batch(run_id, params=params, synchronous=True)
        return {
            "experiment_id": experiment_id,
            "run_id": run_id,
            "url": self.url(experiment_id, run_id),
        }

    def describe_job(
        self, run_id: str, spec: dict[str, Any], meta: dict[str, str] | None = None
    ) -> None:
        """The slower part: git tags and the spec, source and ``meta`` texts (variable
        manifest, the submitting environment's packages) as artifacts."""
        from mlflow.entities import RunTag

        from ..spec.secrets import public_spec

        git = git_info(spec.get("workdir"))
        tags = [RunTag(k, str(v)) for k, v in git.items() if k != "diff"]
        if tags:
            self.client.log_batch(run_id, tags=tags, synchronous=True)
        self.client.log_dict(run_id, public_spec(spec), "trainorch/spec.json")
        if spec.get("source"):
            self.client.log_text(run_id, spec["source"], "trainorch/source.py")
        if spec.get("command"):
            self.client.log_text(run_id, spec["command"] + "\n", "trainorch/command.sh")
        if git.get("diff"):
            self.client.log_text(run_id, git["diff"], "trainorch/uncommitted.diff")
        for name, text in (meta or {}).items():
            self.client.log_text(run_id, text, f"trainorch/{name}")

    def end_job(self, run_id: str, state: str) -> None:
        self.client.set_terminated(run_id, status=STATUS.get(state, "FAILED"), end_time=_ms())

    # -- attempts --------------------------------------------------------------------
    def start_attempt(
        self,
        experiment_id: str,
        parent_run_id: str,
        job: dict[str, Any],
        n: int,
        worker: str,
        gpu_ids: list[str],
    ) -> str:
        tags = {
            PARENT_TAG: parent_run_id,
            "mlflow.user": job.get("user") or "",
            "mlflow.runName": f"{job['name']} attempt {n}",
            "trainorch.job_id": job["id"],
            "trainorch.attempt": str(n),
            "trainorch.worker": worker,
            "trainorch.gpu_ids": ",".join(gpu_ids),
        }
        run = self.client.create_run(
            experiment_id, start_time=_ms(), tags=tags, run_name=f"{job['name']} attempt {n}"
        )
        return run.info.run_id

    def log_metrics(self, run_id: str, points: list[dict[str, Any]]) -> None:
        """``[{"step", "time", "metrics": {key: value}}]`` as one batch (MLflow takes 1,000 a call)."""
        from mlflow.entities import Metric

        batch = [
            Metric(str(key), float(value), _ms(point.get("time")), _step(point.get("step")))
            for point in points
            for key, value in (point.get("metrics") or {}).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[start : start + 1000], synchronous=True)

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """The last value of every metric of a run (system metrics left out)."""
        metrics = self.client.get_run(run_id).data.metrics
        return {k: v for k, v in metrics.items() if not k.startswith("system/")}

    def register_model(self, target: str, experiment_id: str, run_id: str) -> dict[str, Any]:
        """Register the model ``run_id`` logged as ``NAME`` (and point ``@alias`` at it).

        Only the explicit client is used: ``mlflow.set_tracking_uri`` would also export
        ``MLFLOW_TRACKING_URI`` into this process and everything it starts.
        """
        from mlflow.exceptions import MlflowException

        name, _, alias = target.partition("@")
        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                err
            ):
                raise
        logged = self.client.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        if logged:
            model = logged[-1]
            version = self.client.create_model_version(
                name, source=model.artifact_location, run_id=run_id, model_id=model.model_id
            )
        else:  # a model saved as the run's "model" artifact
            source = self.client.get_run(run_id).info.artifact_uri.rstrip("/") + "/model"
            version = self.client.create_model_version(name, source=source, run_id=run_id)
        if alias:
            self.client.set_registered_model_alias(name, alias, version.version)
        return {"name": name, "version": str(version.version), "alias": alias or None}

    def end_attempt(self, run_id: str, state: str, log_text: str) -> None:
        if log_text:
            self.client.log_text(run_id, log_text, "trainorch/log.txt")
        self.client.set_terminated(run_id, status=STATUS.get(state, "FAILED"), end_time=_ms())
