"""What ``tests/test_airflow.py`` runs inside the Airflow virtual environment (never
collected by pytest: it imports Airflow). Each check prints its answer as one JSON document
on a line that starts with ``RESULT``. The trainorch service and the Airflow connection to
it come from the environment (``AIRFLOW_CONN_TRAINORCH_DEFAULT``, ``TRAINORCH_URL``, ``TRAINORCH_TOKEN``).

    python airflow_checks.py dagbag DAGS_FOLDER
    python airflow_checks.py run DAGS_FOLDER DAG_ID
    python airflow_checks.py direct
    python airflow_checks.py provider
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

RESULT = "airflow-check-result:"


def _dag_bag(folder: str) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag
    # Examples stay out through AIRFLOW__CORE__LOAD_EXAMPLES=False (Airflow 3 has no
    # include_examples).
    return DagBag(dag_folder=folder)


def dagbag(folder: str) -> dict[str, Any]:
    """What Airflow's own parser makes of the folder: import errors, DAGs, their tasks."""
    bag = _dag_bag(folder)
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            task_id: {
                "operator": type(task).__name__,
                "upstream": sorted(task.upstream_task_ids),
                "trigger_rule": str(getattr(task.trigger_rule, "value", task.trigger_rule)),
                "upstream_jobs": getattr(task, "upstream_jobs", None),
                "template_file": getattr(task, "template_file", None),
                "variables_file": getattr(task, "variables_file", None),
                "deferrable": getattr(task, "deferrable", None),
            }
            for task_id, task in dag.task_dict.items()
        }
    errors = {path: str(error)[-2000:] for path, error in bag.import_errors.items()}
    return {"import_errors": errors, "dags": dags}


def run(folder: str, dag_id: str) -> dict[str, Any]:
    """One run of the DAG by ``dag.test()`` (tasks run for real, deferred tasks' triggers
    in line); the states and XComs of its tasks."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = _dag_bag(folder).dags[dag_id]
    dag_run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    xcoms: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == dag_run.run_id)
        ).all()
        for row in rows:
            # As the task stored it through Airflow's execution API (JSON, read back by
            # SQLAlchemy); XComModel.deserialize_value would decode a text such as "1" again.
            xcoms.setdefault(row.task_id, {})[row.key] = row.value
    return {"state": str(dag_run.state), "tasks": states, "xcom": xcoms}


class StandInTaskInstance:
    """The parts of a task instance the operator uses, for calling it outside a DAG run."""

    def __init__(self, task_id: str) -> None:
        self.dag_id, self.task_id, self.run_id = "direct", task_id, f"manual__{time.time()}"
        self.try_number, self.map_index = 1, -1
        self.start_date = datetime.now(timezone.utc)
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return None


def _transport() -> Any:
    import os

    from jupyter_trainorch.client.transport import HTTPTransport

    return HTTPTransport(os.environ["TRAINORCH_URL"], os.environ["TRAINORCH_TOKEN"])


def _wait_running(ti: StandInTaskInstance, timeout: float = 60) -> str:
    transport = _transport()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job_id = ti.pushed.get("job_id")
        if job_id and transport.get(job_id)["state"] == "running":
            return job_id
        time.sleep(0.2)
    raise AssertionError(f"the job did not start running: {ti.pushed}")


def _final(job_id: str, timeout: float = 60) -> str:
    return _transport().wait(job_id, timeout)["state"]


def direct() -> dict[str, Any]:
    """The operator's methods with a stand-in context: on_kill on a worker, the trigger's
    timeout event and execute_complete, the trigger's on_kill (Airflow 3.3+)."""
    from jupyter_trainorch.airflow import TrainorchJobTrigger, TrainorchSubmitOperator

    result: dict[str, Any] = {}
    # A worker waits; the task is killed (Airflow calls on_kill on SIGTERM and timeouts).
    waiting = TrainorchSubmitOperator(task_id="killed", command="sleep 300", deferrable=False)
    ti = StandInTaskInstance("killed")
    raised: list[BaseException] = []

    def execute() -> None:
        try:
            waiting.execute({"ti": ti})
        except BaseException as err:  # noqa: BLE001 - the test reads it
            raised.append(err)

    thread = threading.Thread(target=execute)
    thread.start()
    job_id = _wait_running(ti)
    waiting.on_kill()
    thread.join(60)
    result["on_kill"] = {
        "job_state": _final(job_id),
        "task_error": f"{type(raised[0]).__name__}: {raised[0]}" if raised else None,
        "xcom": ti.pushed,
    }

    # A deferred task whose execution_timeout runs out: the trigger says so, the task
    # cancels its job and fails with a timeout.
    deferred = TrainorchSubmitOperator(
        task_id="timed_out", command="sleep 300", deferrable=True,
        execution_timeout=timedelta(seconds=4),
    )  # fmt: skip
    ti = StandInTaskInstance("timed_out")
    trigger = _deferred_trigger(deferred, ti)
    job_id = _wait_running(ti)
    event = asyncio.run(_first_event(trigger))
    try:
        deferred.execute_complete({"ti": ti}, event.payload)
        error = None
    except BaseException as err:  # noqa: BLE001 - AirflowTaskTimeout is one in Airflow 3
        error = f"{type(err).__name__}: {err}"
    result["timeout"] = {
        "trigger": type(trigger).__name__,
        "serialized": trigger.serialize(),
        "event": event.payload,
        "task_error": error,
        "job_state": _final(job_id),
    }

    # The triggerer's on_kill: a user marked the deferred task failed.
    ti = StandInTaskInstance("marked_failed")
    marked = TrainorchSubmitOperator(task_id="marked_failed", command="sleep 300", deferrable=True)
    _deferred_trigger(marked, ti)
    job_id = _wait_running(ti)
    asyncio.run(TrainorchJobTrigger(job_id).on_kill())
    result["trigger_on_kill"] = {"job_state": _final(job_id)}
    return result


def _deferred_trigger(operator: Any, ti: StandInTaskInstance) -> Any:
    """The trigger a deferrable task hands to the triggerer (``TaskDeferred``, a
    ``BaseException`` in Airflow 3)."""
    try:
        operator.execute({"ti": ti})
    except BaseException as err:  # noqa: BLE001
        if not hasattr(err, "trigger"):
            raise
        return err.trigger
    raise AssertionError("the task did not defer")


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("the trigger ended without an event")


def provider() -> dict[str, Any]:
    """``get_provider_info()`` against the schema Airflow checks providers with."""
    import importlib.resources

    import jsonschema

    from jupyter_trainorch.airflow import get_provider_info

    schema = json.loads(
        importlib.resources.files("airflow").joinpath("provider_info.schema.json").read_text()
    )
    info = get_provider_info()
    jsonschema.validate(info, schema)
    import airflow

    return {"info": info, "airflow": airflow.__version__}


if __name__ == "__main__":
    checks = {"dagbag": dagbag, "run": run, "direct": direct, "provider": provider}
    outcome = checks[sys.argv[1]](*sys.argv[2:])
    print(RESULT, json.dumps(outcome, default=str), flush=True)
