"""The Airflow operator and ``trainorch export --format airflow``, run by real Airflow.

Airflow lives in a virtual environment of its own (``tests/airflow_venv.py``; ``.ci/run``
makes it), with this package's source on its ``PYTHONPATH``. The checks it runs there are
in ``tests/airflow_checks.py``: Airflow's own ``DagBag`` parses the exported DAG file,
``dag.test()`` runs it (tasks for real, deferred tasks' triggers in line) against a real
``trainorch serve`` started here, and the operator's kill and timeout paths are called
with a stand-in task instance. Without the venv these tests skip, saying why (they fail
instead under ``TRAINORCH_REQUIRE_AIRFLOW=1``, as in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow_venv import AIRFLOW_VERSION, AirflowUnavailable, ensure_airflow_python
from conftest import running_service

from jupyter_trainorch import Pipeline, Step
from jupyter_trainorch.cli import main
from jupyter_trainorch.client.airflow_dag import task_ids, trigger_rule
from jupyter_trainorch.client.transport import HTTPTransport

REPO = Path(__file__).resolve().parent.parent
CHECKS = Path(__file__).resolve().parent / "airflow_checks.py"
RESULT = "airflow-check-result:"  # how airflow_checks.py marks its answer
pytestmark = pytest.mark.timeout(900)  # the first run may make the venv

PREP = "data = [i * factor for i in range(5)]"
TRAIN = """
from jupyter_trainorch import upstream
data = upstream("prep").result()["data"]
model = {"sum": sum(data), "lr": lr}
print("trained", model)
"""


# -- without Airflow -------------------------------------------------------------------------


def test_importing_the_package_never_imports_airflow() -> None:
    code = (
        "import sys, jupyter_trainorch, jupyter_trainorch.cli, jupyter_trainorch.client.airflow_dag\n"
        "assert 'airflow' not in sys.modules, 'airflow was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr


def test_the_operator_package_says_it_needs_airflow() -> None:
    code = "import jupyter_trainorch.airflow"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    if "No module named" not in done.stderr and done.returncode == 0:
        pytest.skip("Airflow is installed in the test environment itself")
    assert "jupyter_trainorch.airflow needs Apache Airflow" in done.stderr


def test_conditions_become_trigger_rules() -> None:
    assert trigger_rule([]) is None
    assert trigger_rule(["ok", "ok"]) is None  # Airflow's default: all_success
    assert trigger_rule(["any"]) == "all_done"
    assert trigger_rule(["notok"]) == "one_failed"
    assert trigger_rule(["notok", "notok"]) == "all_failed"
    assert trigger_rule(["ok", "notok"]) == "all_done"  # the operator checks each one
    jobs = [{"id": "a1", "name": "train"}, {"id": "b2", "name": "train"}, {"id": "c3", "name": "é"}]
    assert task_ids(jobs) == {"a1": "train", "b2": "train_b2", "c3": "job"}


# -- with Airflow ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    try:
        return ensure_airflow_python()
    except AirflowUnavailable as err:
        if os.environ.get("TRAINORCH_REQUIRE_AIRFLOW"):
            raise
        pytest.skip(f"no virtual environment with Apache Airflow {AIRFLOW_VERSION}: {err}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("airflow-service")
    # With MLflow (on SQLite), so that tasks have runs to push.
    with running_service(root, TRAINORCH_MLFLOW=f"sqlite:///{root}/mlflow.db") as server:
        yield server


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, airflow_python: Path, service) -> Path:
    """An Airflow home with its metadata database (SQLite) made."""
    home = tmp_path_factory.mktemp("airflow-home")
    airflow = airflow_python.parent / "airflow"
    done = subprocess.run([str(airflow), "db", "migrate"], env=_airflow_env(home, home, service),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, service) -> dict:
    """A pipeline run by trainorch, then exported by the CLI as a DAG."""
    transport = HTTPTransport(service.url, service.token)
    jobs = Pipeline(
        [
            Step("prep", PREP, out="data", variables={"factor": 3}),
            Step("train", TRAIN, after="prep", out="model", params={"lr": 0.1}, variables={}),
            Step("report", command="echo report done", after_any="train"),
            Step("alert", command="echo training failed", after_notok="train"),
            Step("summary", command="echo summary", after="prep", after_notok="train"),
        ]
    ).submit(transport)
    assert jobs.wait(120)["train"] == "succeeded"
    dags = tmp_path_factory.mktemp("dags")
    os.environ.update(TRAINORCH_URL=service.url, TRAINORCH_TOKEN=service.token)
    try:
        assert main(["export", jobs["train"].id, "--format", "airflow", "--dir", str(dags),
                     "--dag-id", "nightly_train"]) == 0  # fmt: skip
    finally:
        for name in ("TRAINORCH_URL", "TRAINORCH_TOKEN"):
            os.environ.pop(name, None)
    # A script in a job folder that Airflow would try as a DAG file, were it not ignored.
    (dags / "nightly_train" / "prep" / "decoy.py").write_text("raise RuntimeError('airflow DAG')")
    return {"dags": dags, "jobs": {name: job.id for name, job in jobs.items()}}


def test_exported_dag_parses_with_airflows_dagbag(
    airflow_python: Path, airflow_home: Path, exported: dict, service
) -> None:
    found = _check(airflow_python, airflow_home, exported["dags"], service, "dagbag",
                   str(exported["dags"]))  # fmt: skip
    assert found["import_errors"] == {}
    tasks = found["dags"]["nightly_train"]
    assert {name: task["upstream"] for name, task in tasks.items()} == {
        "prep": [], "train": ["prep"], "report": ["train"], "alert": ["train"],
        "summary": ["prep", "train"],
    }  # fmt: skip
    assert {name: task["trigger_rule"] for name, task in tasks.items()} == {
        "prep": "all_success", "train": "all_success", "report": "all_done",
        "alert": "one_failed", "summary": "all_done",
    }  # fmt: skip
    assert tasks["summary"]["upstream_jobs"] == {"prep": "ok", "train": "notok"}
    assert {task["operator"] for task in tasks.values()} == {"TrainorchSubmitOperator"}
    assert all(task["deferrable"] for task in tasks.values())
    folder = exported["dags"] / "nightly_train"
    assert tasks["prep"]["variables_file"] == str(folder / "prep" / "variables.zip")
    assert tasks["train"]["template_file"] == str(folder / "train" / "train.yaml")
    assert tasks["train"]["variables_file"] is None


def test_exported_dag_runs_its_jobs_on_the_service(
    airflow_python: Path, airflow_home: Path, exported: dict, service
) -> None:
    outcome = _check(airflow_python, airflow_home, exported["dags"], service, "run",
                     str(exported["dags"]), "nightly_train")  # fmt: skip
    assert outcome["tasks"] == {
        "prep": "success", "train": "success", "report": "success",
        # train succeeded: "alert" waits for a failure (one_failed), "summary" for both.
        "alert": "skipped", "summary": "skipped",
    }, outcome  # fmt: skip
    xcom = outcome["xcom"]
    # The captured variable (factor=3) reached prep; train read prep's values through
    # upstream(), because the task made prep's new job its dependency.
    assert xcom["prep"]["outputs"] == {"data": [0, 3, 6, 9, 12]}
    assert xcom["train"]["outputs"] == {"model": {"sum": 30, "lr": 0.1}}
    transport = HTTPTransport(service.url, service.token)
    train = transport.get(xcom["train"]["job_id"])
    assert train["state"] == xcom["train"]["state"] == "succeeded"
    assert xcom["train"]["return_value"] == train["id"] != exported["jobs"]["train"]
    assert train["dependencies"] == [{"job_id": xcom["prep"]["job_id"], "when": "ok"}]
    assert train["group"].startswith("airflow:nightly_train/")
    assert xcom["train"]["mlflow_run_id"] == train["mlflow"]["run_id"] is not None
    assert xcom["train"]["mlflow_experiment_id"] == train["mlflow"]["experiment_id"] is not None
    report = transport.get(xcom["report"]["job_id"])
    assert report["dependencies"] == [{"job_id": train["id"], "when": "any"}]


def test_a_failing_job_fails_its_task_with_the_jobs_sentence(
    airflow_python: Path, airflow_home: Path, service, tmp_path: Path
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "failing.py").write_text(FAILING_DAG)
    outcome, output = _check(airflow_python, airflow_home, dags, service, "run", str(dags),
                             "failing", with_output=True)  # fmt: skip
    assert outcome["tasks"] == {"fail": "failed", "after_failure": "success"}, outcome
    transport = HTTPTransport(service.url, service.token)
    failed = transport.get(outcome["xcom"]["fail"]["job_id"])
    assert failed["state"] == outcome["xcom"]["fail"]["state"] == "failed"
    sentence = f"trainorch job {failed['id']} (fail) failed: {failed['error']}"
    assert failed["error"] and sentence in output
    assert "about to fail" in output  # a worker that waits prints the job's log as it comes
    after = transport.get(outcome["xcom"]["after_failure"]["job_id"])
    assert after["dependencies"] == [{"job_id": failed["id"], "when": "notok"}]
    assert (after["template"]["name"], after["priority_class"]) == ("command", "high")


FAILING_DAG = """
import datetime
from airflow.sdk import DAG
from jupyter_trainorch.airflow import TrainorchSubmitOperator

with DAG("failing", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
    fail = TrainorchSubmitOperator(
        task_id="fail", job_name="fail", command="echo about to fail; exit 3", deferrable=False
    )
    after_failure = TrainorchSubmitOperator(
        task_id="after_failure", template="command", job_params={"cmd": "echo cleaning up"},
        overrides={"priority": "high"}, upstream_jobs={"fail": "notok"},
        trigger_rule="one_failed", deferrable=True,
    )
    fail >> after_failure
"""


def test_killing_or_timing_out_the_task_cancels_the_job(
    airflow_python: Path, airflow_home: Path, service, tmp_path: Path
) -> None:
    outcome = _check(airflow_python, airflow_home, tmp_path, service, "direct")
    killed = outcome["on_kill"]
    assert killed["job_state"] == "cancelled"
    assert (
        killed["task_error"]
        == f"AirflowException: trainorch job {killed['xcom']['job_id']} (command) cancelled"
    )
    timed_out = outcome["timeout"]
    assert timed_out["event"]["status"] == "timeout" and timed_out["job_state"] == "cancelled"
    assert timed_out["task_error"].startswith("AirflowTaskTimeout: trainorch job ")
    assert timed_out["serialized"][0] == "jupyter_trainorch.airflow.triggers.TrainorchJobTrigger"
    assert outcome["trigger_on_kill"]["job_state"] == "cancelled"


def test_provider_info_passes_airflows_schema(
    airflow_python: Path, airflow_home: Path, service, tmp_path: Path
) -> None:
    outcome = _check(airflow_python, airflow_home, tmp_path, service, "provider")
    assert outcome["airflow"] == AIRFLOW_VERSION
    assert outcome["info"]["connection-types"][0]["connection-type"] == "trainorch"


def test_export_refuses_a_bad_dag_id_in_one_sentence(service, exported: dict, capsys) -> None:
    os.environ.update(TRAINORCH_URL=service.url, TRAINORCH_TOKEN=service.token)
    try:
        code = main(
            ["export", exported["jobs"]["train"], "--format", "airflow", "--dag-id", "no spaces"]
        )
    finally:
        for name in ("TRAINORCH_URL", "TRAINORCH_TOKEN"):
            os.environ.pop(name, None)
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "trainorch: --dag-id must be 1 to 250 letters, digits, '_', '.' or '-', not 'no spaces'"
    )


def test_export_of_a_job_outside_a_group_takes_the_jobs_it_waits_on(
    service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = HTTPTransport(service.url, service.token)
    submit = {"template": "command", "overrides": {"secret_env": {"API_KEY": "s3cret"}}}
    first = transport.submit({**submit, "name": "first", "params": {"cmd": "echo first"}})
    transport.submit({**submit, "name": "unrelated", "params": {"cmd": "echo other"}})
    second = transport.submit({**submit, "name": "second", "params": {"cmd": "echo second"},
                               "dependencies": [{"job": first["id"], "when": "any"}]})  # fmt: skip
    monkeypatch.setenv("TRAINORCH_URL", service.url)
    monkeypatch.setenv("TRAINORCH_TOKEN", service.token)
    assert main(["export", second["id"], "--format", "airflow", "--dir", str(tmp_path)]) == 0
    source = (tmp_path / "trainorch_second.py").read_text()
    compile(source, "trainorch_second.py", "exec")
    assert sorted(p.name for p in (tmp_path / "trainorch_second").iterdir()) == [
        ".airflowignore", "first", "second",
    ]  # fmt: skip
    assert 'upstream_jobs={"first": "any"},\n        trigger_rule="all_done",' in source
    assert 'tasks["first"] >> tasks["second"]' in source
    # Secret values never reach the files: the DAG takes them from Airflow Variables.
    assert '"secret_env": {"API_KEY": "{{ var.value.API_KEY }}"}' in source
    assert "s3cret" not in source + (tmp_path / "trainorch_second/first/first.yaml").read_text()


# -- plumbing --------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def _airflow_env(home: Path, dags: Path, service) -> dict[str, str]:
    """The Airflow venv's environment: its own settings, this package's source, the
    connection to the test's service."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "TRAINORCH_", "PYTHON", "VIRTUAL_ENV"))}  # fmt: skip
    connection = {"conn_type": "trainorch", "host": service.url, "password": service.token}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_TRAINORCH_DEFAULT=json.dumps(connection),
        TRAINORCH_URL=service.url,
        TRAINORCH_TOKEN=service.token,
        PYTHONPATH=str(REPO),
    )
    return env


def _check(
    python: Path, home: Path, dags: Path, service, *args: str, with_output: bool = False
) -> dict | tuple[dict, str]:
    done = subprocess.run(
        [str(python), str(CHECKS), *args], env=_airflow_env(home, dags, service),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    marked = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    assert marked, output[-6000:]
    outcome = json.loads(marked[-1][len(RESULT) :])
    return (outcome, output) if with_output else outcome
