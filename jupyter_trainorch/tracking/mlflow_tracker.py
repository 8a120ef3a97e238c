"""MLflow tracking: one run per job, one nested run per attempt.

Every call is made from the tracker's own thread (MLflow's SQLite store is slow and
must never stall scheduling) and never raises: a tracking failure becomes a warning
on the job, and the job runs on. Metrics are logged synchronously in batches:
MLflow's asynchronous logging drops points against a SQLite server.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .git import git_info
from .ui import local_store

log = logging.getLogger(__name__)

STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
PARENT_TAG = "mlflow.parentRunId"
# Jobs without an experiment go here, not to MLflow's "Default": that one was made with
# the store and keeps its artifacts in ``./mlruns`` of whichever folder created the store.
DEFAULT_EXPERIMENT = "trainorch"


def _ms(seconds: float | None = None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1000)


def _step(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _param_text(value: Any) -> str:
    # str() as mlflow.log_param does: the job's code logging the same param into its
    # attempt's run must write the same text, since MLflow refuses to change a param.
    return str(value)[:6000]  # MLflow's limit on a param value


def _params(job: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(str(k), _param_text(v)) for k, v in sorted((job.get("params") or {}).items())]


def _job_tags(job: dict[str, Any]) -> dict[str, str]:
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
    if job.get("group"):
        tags["trainorch.group"] = str(job["group"])
    if job.get("rerun_of"):
        tags["trainorch.rerun_of"] = str(job["rerun_of"])
    return tags


class MlflowTracker:
    """Talks to one MLflow tracking server (or SQLite file) for the orchestrator."""

    def __init__(
        self, tracking_uri: str, artifact_root: Path | None = None, ui_url: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        # A tracking server keeps artifacts where it is configured to; a path of this
        # machine would be wrong there (and unreachable from other hosts).
        remote = not local_store(tracking_uri)
        self.artifact_root = None if remote else artifact_root
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
        experiment = str(spec.get("experiment") or "")
        # Older kernels name MLflow's "Default" when a notebook has no name.
        experiment_id = self._experiment(
            experiment if experiment not in ("", "Default") else DEFAULT_EXPERIMENT
        )
        template = spec.get("template") or {}
        tags = {
            **_job_tags(job),
            "mlflow.runName": job["name"],
            "mlflow.source.name": f"jupyter-trainorch:{template.get('name', '')}",
            "mlflow.source.type": "JOB",
        }
        run = self.client.create_run(
            experiment_id, start_time=_ms(), tags=tags, run_name=job["name"]
        )
        run_id = run.info.run_id
        params = _params(job)
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
            **_job_tags(job),
            PARENT_TAG: parent_run_id,
            "mlflow.runName": f"{job['name']} attempt {n}",
            "trainorch.attempt": str(n),
            "trainorch.worker": worker,
            "trainorch.gpu_ids": ",".join(gpu_ids),
        }
        run = self.client.create_run(
            experiment_id, start_time=_ms(), tags=tags, run_name=f"{job['name']} attempt {n}"
        )
        params = _params(job)
        if params:
            # Before the job's process can log into the run (it waits for this id).
            self.client.log_batch(run.info.run_id, params=params, synchronous=True)
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

    def copy_final_metrics(self, from_run: str, to_run: str) -> None:
        """The latest point of each metric of ``from_run`` (system metrics left out), with
        its step and time, logged to ``to_run`` in batches."""
        from mlflow.entities import Metric

        data = self.client.get_run(from_run).data.to_proto()
        batch = [
            Metric(m.key, m.value, m.timestamp, m.step)
            for m in data.metrics
            if not m.key.startswith("system/")
        ]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(to_run, metrics=batch[start : start + 1000], synchronous=True)

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

    def log_versions(self, run_id: str, versions: dict[str, Any]) -> None:
        """The kernel's and the worker's versions of what the cell imports (an artifact),
        and those that differ as a tag, so that runs can be searched by it."""
        self.client.log_dict(run_id, versions, "trainorch/versions.json")
        differ = [
            f"{name} {found.get('worker') or 'missing'} (kernel {found.get('kernel')})"
            for name, found in sorted(versions.items())
            if found.get("worker") != found.get("kernel")
        ]
        if differ:
            # MLflow refuses a long tag value; the artifact holds them all.
            text = ", ".join(differ)
            text = text if len(text) <= 1000 else text[:999] + "…"
            self.client.set_tag(run_id, "trainorch.version_mismatch", text)

    def end_attempt(self, run_id: str, state: str, log_text: str) -> None:
        if log_text:
            self.client.log_text(run_id, log_text, "trainorch/log.txt")
        self.client.set_terminated(run_id, status=STATUS.get(state, "FAILED"), end_time=_ms())
