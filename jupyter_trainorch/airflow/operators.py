"""``TrainorchSubmitOperator``: submit a trainorch job from an Airflow task and wait for it.

What it pushes to XCom: ``job_id`` (as soon as the job exists), then ``state``,
``mlflow_run_id`` and ``mlflow_experiment_id`` (also when the job failed, for tasks that
run after a failure), and for a succeeded job ``outputs`` (its ``--out`` values that are
JSON; the others are named in the task log) and the job id as the return value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ..client.job import Job
from ..client.transport import HTTPTransport, TrainOrchError
from ..contract.states import TERMINAL_STATES
from ..spec.errors import SpecError
from .compat import (
    AirflowException,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseOperator,
    default_deferrable,
)
from .hooks import DEFAULT_CONNECTION, TrainorchHook
from .job_outcome import LogStream, failure_sentence, idempotency_key, json_outputs, log_tail
from .triggers import TrainorchJobTrigger

Context = Mapping[str, Any]
CONDITIONS = {"ok": "succeeds", "any": "ends", "notok": "fails or is cancelled"}
_CONDITION_HOLDS = {
    "ok": {"succeeded"},
    "any": set(TERMINAL_STATES),
    "notok": {"failed", "cancelled"},
}


class TrainorchSubmitOperator(BaseOperator):
    """Submit one trainorch job and wait until it ends; the task fails when the job does.

    What to run, one of:

    - ``template``: a template the service knows (``torch``, ``command``, yours), with
      ``job_params`` (its ``--set`` values) and ``overrides`` (``gpus``, ``cpus``,
      ``memory``, ``priority``, ``retries``, ``timeout``, ``env``, ``secret_env``,
      ``experiment``, ``register_model``);
    - ``command``: a shell command (the ``command`` template), with ``overrides``;
    - ``template_file``: a template file on this machine, rendered here and sent with its
      input files (``variables_file``: a python template's captured variables).

    ``upstream_jobs`` (upstream task id → ``ok``, ``any`` or ``notok``): the jobs those
    tasks submitted become this job's dependencies, so it reads their values with
    ``jupyter_trainorch.upstream(name)``; a condition that does not hold skips the task.
    ``deferrable``: wait in the triggerer (no worker slot held) rather than on a worker
    (where the job's log is printed as it comes); Airflow's ``default_deferrable`` unless
    given. ``execution_timeout`` cancels the job, as does killing the task. A deferred
    task prints the last ``log_lines`` lines of the job's log when it resumes.
    """

    template_fields: Sequence[str] = (
        "template", "template_file", "variables_file", "command", "job_params", "overrides",
        "job_name",
    )  # fmt: skip
    template_fields_renderers = {"job_params": "json", "overrides": "json", "command": "bash"}
    ui_color = "#dfe9f7"

    def __init__(
        self,
        *,
        template: str | None = None,
        template_file: str | None = None,
        variables_file: str | None = None,
        command: str | None = None,
        job_params: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        job_name: str | None = None,
        upstream_jobs: Mapping[str, str] | None = None,
        trainorch_conn_id: str = DEFAULT_CONNECTION,
        deferrable: bool | None = None,
        log_lines: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = [name for name, value in
                 (("template", template), ("template_file", template_file), ("command", command))
                 if value is not None]  # fmt: skip
        if len(given) != 1:
            raise ValueError(
                f"TrainorchSubmitOperator {self.task_id!r}: give one of template, template_file "
                f"or command, not {' and '.join(given) or 'none'}"
            )
        if variables_file is not None and template_file is None:
            raise ValueError(
                f"TrainorchSubmitOperator {self.task_id!r}: variables_file goes with template_file"
            )
        for task_id, when in (upstream_jobs or {}).items():
            if when not in CONDITIONS:
                raise ValueError(
                    f"TrainorchSubmitOperator {self.task_id!r}: upstream_jobs[{task_id!r}] must "
                    f"be one of {', '.join(CONDITIONS)}, not {when!r}"
                )
        self.template, self.template_file, self.command = template, template_file, command
        self.variables_file = variables_file
        self.job_params = dict(job_params or {})
        self.overrides = dict(overrides or {})
        self.job_name = job_name
        self.upstream_jobs = dict(upstream_jobs or {})
        self.trainorch_conn_id = trainorch_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.log_lines = log_lines
        self.job_id: str | None = None

    # -- running ---------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        ti = context["ti"]
        transport = self._transport()
        try:
            body = self.submit_request(ti, transport)
            job = transport.submit(body, idempotency_key=idempotency_key(ti))
        except (SpecError, TrainOrchError) as err:
            raise AirflowException(str(err)) from None
        self.job_id = job["id"]
        ti.xcom_push(key="job_id", value=job["id"])
        self.log.info("submitted trainorch job %s (%s): %s", job["id"], job["name"], job["state"])
        if self.deferrable:
            self.defer(
                trigger=TrainorchJobTrigger(job["id"], self.trainorch_conn_id, self._deadline(ti)),
                method_name="execute_complete",
            )
        try:
            Job(job["id"], transport).follow(out=LogStream(self.log))
            return self._finish(ti, transport, transport.get(job["id"]))
        except TrainOrchError as err:
            raise AirflowException(str(err)) from None

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> str:
        """Where a deferred task resumes once the trigger fired."""
        ti = context["ti"]
        self.job_id = job_id = str(event["job_id"])
        transport = self._transport()
        try:
            if event["status"] == "timeout":
                transport.cancel(job_id)
                raise AirflowTaskTimeout(
                    f"trainorch job {job_id} was cancelled: it ran past the task's "
                    f"execution_timeout ({self.execution_timeout})"
                )
            if event["status"] != "ended":
                raise AirflowException(event.get("message") or f"lost trainorch job {job_id}")
            log_tail(transport, job_id, self.log, self.log_lines)
            return self._finish(ti, transport, transport.get(job_id))
        except TrainOrchError as err:
            raise AirflowException(str(err)) from None

    def on_kill(self) -> None:
        """The task was killed or timed out on a worker: cancel its job."""
        if self.job_id is None:
            return
        try:
            hook = TrainorchHook(self.trainorch_conn_id)
            hook.get_conn(timeout=10.0, reconnect_for=10.0).cancel(self.job_id)
            self.log.info("cancelled trainorch job %s", self.job_id)
        except (TrainOrchError, AirflowException) as err:
            self.log.warning("could not cancel trainorch job %s: %s", self.job_id, err)

    # -- the request -----------------------------------------------------------------------

    def submit_request(self, ti: Any, transport: HTTPTransport) -> dict[str, Any]:
        """The ``POST jobs`` body; its jobs are grouped by DAG run (``group``)."""
        dependencies = self.upstream_dependencies(ti, transport)
        group = f"airflow:{ti.dag_id}/{ti.run_id}"[:200]
        if self.template_file is not None:
            from ..client.file_request import template_file_request

            body = template_file_request(
                self.template_file, params=self.job_params, overrides=self.overrides,
                name=self.job_name, dependencies=dependencies, variables_file=self.variables_file,
            )  # fmt: skip
            body["spec"]["group"] = group
            return body
        params = dict(self.job_params)
        if self.command is not None:
            params["cmd"] = self.command
        body = {
            "template": self.template or "command",
            "params": params,
            "overrides": self.overrides,
            "dependencies": dependencies,
            "group": group,
        }
        if self.job_name:
            body["name"] = self.job_name
        return body

    def upstream_dependencies(self, ti: Any, transport: HTTPTransport) -> list[dict[str, str]]:
        """``[{job, when}]`` of the jobs of ``upstream_jobs``; skips the task when a job ended
        the other way (trigger rules cannot say "after A succeeded and B failed")."""
        dependencies = []
        for task_id, when in self.upstream_jobs.items():
            job_id = ti.xcom_pull(task_ids=task_id, key="job_id")
            if not job_id:
                if when == "ok":
                    raise AirflowSkipException(
                        f"task {task_id} submitted no trainorch job, and this job runs only "
                        "after that job succeeds"
                    )
                continue  # that task ended before its job existed: nothing to wait on
            state = transport.get(job_id)["state"]
            if state in TERMINAL_STATES and state not in _CONDITION_HOLDS[when]:
                raise AirflowSkipException(
                    f"trainorch job {job_id} of task {task_id} {state}, and this job runs only "
                    f"if it {CONDITIONS[when]}"
                )
            dependencies.append({"job": job_id, "when": when})
        return dependencies

    # -- the outcome -----------------------------------------------------------------------

    def _finish(self, ti: Any, transport: HTTPTransport, job: Mapping[str, Any]) -> str:
        mlflow = job.get("mlflow") or {}
        ti.xcom_push(key="state", value=job["state"])
        ti.xcom_push(key="mlflow_run_id", value=mlflow.get("run_id"))
        ti.xcom_push(key="mlflow_experiment_id", value=mlflow.get("experiment_id"))
        if job["state"] != "succeeded":
            raise AirflowException(failure_sentence(job))
        outputs = json_outputs(transport, job, self.log) if job.get("has_outputs") else {}
        ti.xcom_push(key="outputs", value=outputs)
        return str(job["id"])

    # -- plumbing --------------------------------------------------------------------------

    def _transport(self) -> HTTPTransport:
        return TrainorchHook(self.trainorch_conn_id).get_conn()

    def _deadline(self, ti: Any) -> float | None:
        """When ``execution_timeout`` runs out (Airflow 2 times a deferred task out then)."""
        if self.execution_timeout is None:
            return None
        started = getattr(ti, "start_date", None) or datetime.now(timezone.utc)
        return started.timestamp() + self.execution_timeout.total_seconds()
