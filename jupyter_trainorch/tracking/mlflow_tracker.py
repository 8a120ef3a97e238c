"""MLflow tracking: one run per job, one nested run per attempt.

Every call is made in the tracking process (``worker``), on one of its lanes: MLflow's
SQLite store costs milliseconds of CPU a call and must never stall scheduling. What raises
here becomes a warning on the job there, and the job runs on. Metrics are logged synchronously
in batches: MLflow's asynchronous logging drops points against a SQLite server.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from .fields import (
    RESERVED_RUN_NAME,
    STATUS,
    attempt_tags,
    experiment_name,
    job_run_tags,
    ms,
    params,
    run_url,
    step,
)
from .git import git_info
from .ui import local_store

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
_tuned_files: set[str] = set()
_tuned_lock = threading.Lock()


def tune_sqlite_store(tracking_uri: str) -> None:
    """Give the connections this process opens to a SQLite tracking store the job store's
    settings (write-ahead log, a sync per checkpoint rather than per commit): MLflow's
    per-commit syncs are most of what recording a job costs, and a burst of job starts
    waits on the disk behind them. Once per file and process."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return
    path = os.path.realpath(database)
    with _tuned_lock:
        if path in _tuned_files:
            return
        _tuned_files.add(path)
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from ..store.engine import tune_sqlite_connection

    def on_connect(dbapi_connection: object, _record: object) -> None:
        # Every engine of the process is told; only MLflow's, for this file, is tuned.
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        files = dbapi_connection.execute("PRAGMA database_list").fetchall()
        if any(name == "main" and os.path.realpath(file or "") == path for _, name, file in files):
            tune_sqlite_connection(dbapi_connection)

    event.listen(Engine, "connect", on_connect)


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

            tune_sqlite_store(self.tracking_uri)
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def warm_up(self) -> None:
        """Import MLflow and open the store (a new SQLite store creates its tables: seconds),
        so that the first job's runs do not wait for either."""
        self.client.search_experiments(max_results=1)

    def url(self, experiment_id: str, run_id: str) -> str | None:
        return run_url(self.ui_url, experiment_id, run_id)

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

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, made on first use."""
        return self._experiment(name)

    # -- the job's run ---------------------------------------------------------------
    def start_job(
        self, job: dict[str, Any], spec: dict[str, Any], start_time: float | None = None
    ) -> dict[str, Any]:
        """Create the job's run with its params and tags; ``start_time``: when the job was
        submitted (its run spans its wait in the queue)."""
        experiment_id = self._experiment(experiment_name(spec))
        run = self.client.create_run(
            experiment_id, start_time=ms(start_time), tags=job_run_tags(job, spec),
            run_name=job["name"],
        )  # fmt: skip
        run_id = run.info.run_id
        job_params = params(job)
        if job_params:
            self.client.log_batch(run_id, params=job_params, synchronous=True)
        return {
            "experiment_id": experiment_id,
            "run_id": run_id,
            "url": self.url(experiment_id, run_id),
        }

    def name_job(self, run_id: str, job: dict[str, Any], spec: dict[str, Any]) -> None:
        """Make a reserved run the job's own: its name, tags and params."""
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in job_run_tags(job, spec).items()]
        self.client.log_batch(run_id, params=params(job), tags=tags, synchronous=True)

    def is_reserved(self, run_id: str) -> bool:
        """Whether ``run_id`` is still a reserved run that nobody named."""
        return bool(self.client.get_run(run_id).info.run_name == RESERVED_RUN_NAME)

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
        self.client.set_terminated(run_id, status=STATUS.get(state, "FAILED"), end_time=ms())

    # -- attempts --------------------------------------------------------------------
    def reserve_run(self, experiment_id: str) -> str:
        """A run made ahead of the attempt (or job) it will be given to: ``name_attempt``
        (``name_job``) makes it theirs. So an attempt never waits for MLflow to start."""
        run = self.client.create_run(experiment_id, start_time=ms(), run_name=RESERVED_RUN_NAME)
        return run.info.run_id

    def name_attempt(
        self,
        run_id: str,
        parent_run_id: str | None,
        job: dict[str, Any],
        n: int,
        worker: str,
        gpu_ids: list[str],
    ) -> bool:
        """Make a reserved run attempt ``n``'s: its name, tags, params and job's run.
        False when the job's code logged a param of its own first with another value
        (MLflow keeps the first value; the tags are set all the same)."""
        from mlflow.entities import RunTag
        from mlflow.exceptions import MlflowException

        tags = [
            RunTag(k, v) for k, v in attempt_tags(job, parent_run_id, n, worker, gpu_ids).items()
        ]
        job_params = params(job)
        try:
            self.client.log_batch(run_id, params=job_params, tags=tags, synchronous=True)
        except MlflowException as err:
            if "Changing param values" not in str(err):
                raise
            logged = self.client.get_run(run_id).data.params
            missing = [p for p in job_params if p.key not in logged]
            self.client.log_batch(run_id, params=missing, tags=tags, synchronous=True)
            return False
        return True

    def discard_reserved(self, run_id: str) -> bool:
        """Delete a reserved run that no attempt was given (still named as reserved)."""
        from mlflow.exceptions import MlflowException

        try:
            info = self.client.get_run(run_id).info
        except MlflowException:
            return False  # gone, or another tracking store than the one it was made in
        if info.run_name != RESERVED_RUN_NAME or info.lifecycle_stage != "active":
            return False  # named: given to an attempt or a job after all
        self.client.delete_run(run_id)
        return True

    def log_metrics(self, run_id: str, points: list[dict[str, Any]]) -> None:
        """``[{"step", "time", "metrics": {key: value}}]`` as one batch (MLflow takes 1,000 a call)."""
        from mlflow.entities import Metric

        batch = [
            Metric(str(key), float(value), ms(point.get("time")), step(point.get("step")))
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

    def log_data(self, run_id: str, job_run: str | None, data: dict[str, Any]) -> None:
        """Each data input's URI and content hash as params of the attempt's run (the
        inputs it ran with), and as tags of the job's run (its latest attempt's), named
        ``trainorch.data.<name>.uri`` / ``.sha256`` (``.version`` for a model alias)."""
        from mlflow.entities import Param, RunTag

        fields = {
            f"trainorch.data.{name}.{key}": str(record[key])[:6000]
            for name, record in sorted(data.items())
            for key in ("uri", "sha256", "version", "bytes")
            if record.get(key) is not None
        }
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in fields.items()])
        if job_run:
            self.client.log_batch(job_run, tags=[RunTag(k, v) for k, v in fields.items()])

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
        self.client.set_terminated(run_id, status=STATUS.get(state, "FAILED"), end_time=ms())
