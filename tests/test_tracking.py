"""MLflow tracking against a real SQLite store and a real ``mlflow server`` on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    free_port,
    service_env,
    start_host,
    stop_process_group,
    submit,
    wait_final,
    wait_until,
)

from jupyter_trainorch.spec import RetryPolicy

FLAKY_TRAINING = """
import pathlib, mlflow, jupyter_trainorch
for step in range(1, 4):
    jupyter_trainorch.progress(step, 3, loss=1.0 / step)
mlflow.log_metric("accuracy", 0.25 * attempt_marker_count())
mlflow.log_param("shuffle", shuffle)  # the same text the orchestrator wrote to the run
marker = pathlib.Path(marker_path)
if not marker.exists():
    marker.write_text("failed once")
    raise RuntimeError("the first attempt fails")
print("trained")
__import__("time").sleep(1.2)  # long enough for system metrics samples
"""


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _git_repo(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for args in (
        ["init", "-q"],
        ["config", "user.email", "t@example.com"],
        ["config", "user.name", "t"],
    ):
        subprocess.run(["git", "-C", str(folder), *args], check=True)
    (folder / "train.py").write_text("print('v1')\n")
    subprocess.run(["git", "-C", str(folder), "add", "."], check=True)
    subprocess.run(["git", "-C", str(folder), "commit", "-qm", "first"], check=True)
    (folder / "train.py").write_text("print('v2')\n")  # uncommitted
    return folder


TRACKED_SECRET = "tracked-secret-1234"


def _run_flaky(host, tmp_path: Path, workdir: Path | None = None) -> object:
    source = (
        "def attempt_marker_count():\n    return 1 + pathlib.Path(marker_path).exists()\n"
        + FLAKY_TRAINING
    )
    source = "import pathlib\nprint('key', __import__('os').environ['API_KEY'])\n" + source
    job_id = submit(host, name="tracked", source=source, user="ada", experiment="trainorch-tests",
                    secret_env={"API_KEY": TRACKED_SECRET},
                    params={"marker_path": str(tmp_path / "marker"), "lr": 0.1,
                            "shuffle": True},
                    retry=RetryPolicy(max_retries=1, backoff=0.1),
                    workdir=str(workdir) if workdir else None)  # fmt: skip
    return wait_final(host, job_id, timeout=120)


def _children(client, job) -> list:
    runs = client.search_runs(
        [job.mlflow["experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{job.mlflow['run_id']}'",
        order_by=["attributes.start_time ASC"],
    )
    return list(runs)


def test_a_job_is_a_run_with_a_nested_run_per_attempt(tmp_path):
    data = tmp_path / "data"
    repo = _git_repo(tmp_path / "repo")
    host = start_host(data, system_metrics_interval=0.3)
    try:
        job = _run_flaky(host, tmp_path, workdir=repo)
        assert job.state == "succeeded" and len(job.attempts) == 2
        uri = f"sqlite:///{data / 'mlflow.db'}"
        client = _client(uri)
        parent = wait_until(lambda: (r := client.get_run(job.mlflow["run_id"])).info.status == "FINISHED" and r,
                            timeout=30, what="the job's run to finish")  # fmt: skip
        from jupyter_trainorch.orchestrator.access import Caller
        from jupyter_trainorch.orchestrator.jobservice import JobService

        histories = JobService(host.config).metric_history(
            Caller(job.user), job.id
        )  # what GET jobs/{id}/metrics serves
    finally:
        host.stop()
    assert [a["n"] for a in histories["attempts"]] == [1, 2]
    assert [p[:2] for p in histories["attempts"][1]["metrics"]["loss"]] == [
        [1, 1.0],
        [2, 0.5],
        [3, 1 / 3],
    ]
    assert client.get_experiment(job.mlflow["experiment_id"]).name == "trainorch-tests"
    params = {"lr": "0.1", "marker_path": str(tmp_path / "marker"), "shuffle": "True"}
    assert parent.data.params == params
    # The last attempt's final metrics, so MLflow's compare relates lr to loss.
    assert parent.data.metrics == {"loss": pytest.approx(1 / 3), "accuracy": 0.5}
    (parent_loss,) = client.get_metric_history(parent.info.run_id, "loss")
    assert parent_loss.step == 3
    tags = parent.data.tags
    assert tags["mlflow.user"] == "ada" and tags["mlflow.runName"] == "tracked"
    assert tags["trainorch.job_id"] == job.id and tags["trainorch.priority"] == "normal"
    assert tags["trainorch.template.name"] == "python-cell"
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.source.git.dirty"] == "true"
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id, "trainorch")}
    assert parent_files >= {
        "trainorch/spec.json",
        "trainorch/source.py",
        "trainorch/uncommitted.diff",
    }
    diff = client.download_artifacts(
        parent.info.run_id, "trainorch/uncommitted.diff", str(tmp_path)
    )
    assert "+print('v2')" in Path(diff).read_text()

    first, second = _children(client, job)
    assert (first.info.status, second.info.status) == ("FAILED", "FINISHED")
    assert (
        first.data.tags["trainorch.attempt"] == "1" and second.data.tags["trainorch.attempt"] == "2"
    )
    assert first.data.metrics["accuracy"] == 0.25 and second.data.metrics["accuracy"] == 0.5
    job_tags = {k: v for k, v in tags.items() if k.startswith("trainorch.")}
    for child in (first, second):
        assert child.data.params == params
        assert child.data.tags.items() >= job_tags.items()
        assert child.data.tags["mlflow.user"] == "ada"
    memory = client.get_metric_history(second.info.run_id, "system/memory_usage_megabytes")
    assert len(memory) >= 2 and all(m.value > 1 for m in memory)
    assert "system/cpu_utilization_percent" in second.data.metrics
    losses = client.get_metric_history(second.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3] and losses[-1].value == pytest.approx(1 / 3)
    log_path = client.download_artifacts(
        first.info.run_id, "trainorch/log.txt", str(tmp_path / "a1")
    )
    assert "RuntimeError: the first attempt fails" in Path(log_path).read_text()
    # The secret reached the job, and MLflow holds only its name.
    assert "key ***" in Path(log_path).read_text()
    spec_path = client.download_artifacts(parent.info.run_id, "trainorch/spec.json", str(tmp_path))
    spec_text = Path(spec_path).read_text()
    assert json.loads(spec_text)["secret_env"] == {"API_KEY": "***"}
    assert TRACKED_SECRET not in spec_text + Path(log_path).read_text()


def test_a_job_without_an_experiment_keeps_its_artifacts_in_the_data_folder(tmp_path, monkeypatch):
    # MLflow's "Default" experiment stores artifacts in ./mlruns of the folder the
    # store was created from: here the user's folder, the service's cwd.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    data = tmp_path / "data"
    host = start_host(data)
    try:
        source = "import mlflow\nmlflow.log_text('hello', 'note.txt')\nprint('logged')"
        job = wait_final(host, submit(host, name="no-experiment", source=source), timeout=120)
        assert job.state == "succeeded", [line.text for line in host.store.read_logs(job.id)]
        client = _client(f"sqlite:///{data / 'mlflow.db'}")
        wait_until(lambda: client.get_run(job.mlflow["run_id"]).info.status == "FINISHED",
                   timeout=30, what="the job's run to finish")  # fmt: skip
    finally:
        host.stop()
    experiment = client.get_experiment(job.mlflow["experiment_id"])
    assert experiment.name == "trainorch"
    (attempt,) = _children(client, job)
    for run_id in (job.mlflow["run_id"], attempt.info.run_id):
        artifacts = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(data.resolve()) and artifacts.is_dir()
    assert (artifacts / "note.txt").read_text() == "hello"
    assert (artifacts / "trainorch" / "log.txt").is_file()
    assert list(cwd.iterdir()) == []


def test_an_unreachable_tracking_server_does_not_fail_the_job(tmp_path):
    closed = free_port()  # nothing listens there
    host = start_host(tmp_path / "data", mlflow=f"http://127.0.0.1:{closed}")
    try:
        job_id = submit(host, name="untracked", source="print('still runs')")
        job = wait_final(host, job_id, timeout=120)
        assert job.state == "succeeded"
        job = wait_until(lambda: (j := host.store.get_job(job_id)).mlflow.get("warning") and j, timeout=60,
                         what="the tracking warning")  # fmt: skip
        # The attempt's run is the first one made (the job's follows it).
        assert job.mlflow["warning"].startswith(
            "MLflow tracking failed (creating the attempt's run)"
        )
        # While paused, later jobs start at once instead of waiting on MLflow.
        started = time.monotonic()
        second = wait_final(
            host, submit(host, name="untracked-2", source="print('again')"), timeout=60
        )
        assert second.state == "succeeded" and time.monotonic() - started < 30
    finally:
        host.stop()


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "mlflow-server.log"
                ).read_text()
                time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)
        log.close()


def test_tracking_to_a_real_mlflow_server(tmp_path, mlflow_server):
    host = start_host(tmp_path / "data", mlflow=mlflow_server, mlflow_ui_url=mlflow_server)
    try:
        job = _run_flaky(host, tmp_path)
        assert job.state == "succeeded"
        client = _client(mlflow_server)
        wait_until(lambda: client.get_run(job.mlflow["run_id"]).info.status == "FINISHED", timeout=30,
                   what="the job's run to finish")  # fmt: skip
    finally:
        host.stop()
    assert (
        job.mlflow["url"]
        == f"{mlflow_server}/#/experiments/{job.mlflow['experiment_id']}/runs/{job.mlflow['run_id']}"
    )
    first, second = _children(client, job)
    assert (first.info.status, second.info.status) == ("FAILED", "FINISHED")
    assert second.data.metrics["loss"] == pytest.approx(1 / 3)
    assert {a.path for a in client.list_artifacts(second.info.run_id, "trainorch")} == {
        "trainorch/log.txt"
    }


LOG_A_MODEL = """
import mlflow, mlflow.pyfunc

class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return [2 * x for x in model_input]

mlflow.log_metric("val_loss", 0.12)
mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=[])
print("logged")
"""


def test_a_succeeded_job_registers_its_model_with_an_alias(tmp_path, monkeypatch):
    data = tmp_path / "data"
    host = start_host(data, workers=1)
    try:
        job_id = submit(
            host, name="register", source=LOG_A_MODEL, register_model="doubler@champion"
        )
        job = wait_final(host, job_id, timeout=180)
        assert job.state == "succeeded", [line.text for line in host.store.read_logs(job_id)]
        job = wait_until(lambda: (j := host.store.get_job(job_id)).mlflow.get("model") and j, timeout=60,
                         what=f"the registered model version: {host.store.get_job(job_id).mlflow}")  # fmt: skip
    finally:
        host.stop()
    assert job.mlflow["model"] == {"name": "doubler", "version": "1", "alias": "champion"}
    from jupyter_trainorch.client.job import model_text

    assert (
        model_text(job.to_dict()) == ", model doubler v1 @champion"
    )  # what Job and JobWidget show
    assert job.mlflow["metrics"]["val_loss"] == pytest.approx(0.12)
    client = _client(f"sqlite:///{data / 'mlflow.db'}")
    version = client.get_model_version_by_alias("doubler", "champion")
    assert str(version.version) == "1"
    import mlflow.pyfunc

    # set_tracking_uri exports MLFLOW_TRACKING_URI; monkeypatch puts it back afterwards.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{data / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/doubler@champion")
    assert model.predict([1, 2]) == [2, 4]


AUTOLOGGED = """
import mlflow
from sklearn.linear_model import LinearRegression

mlflow.sklearn.autolog(log_models=False)
LinearRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0.0, 2.0, 4.0, 6.0])
"""


def test_autologging_in_the_cell_lands_in_the_attempt_run(tmp_path):
    pytest.importorskip("sklearn")
    data = tmp_path / "data"
    host = start_host(data, workers=1)
    try:
        job = wait_final(host, submit(host, name="autolog", source=AUTOLOGGED), timeout=180)
        assert job.state == "succeeded", [line.text for line in host.store.read_logs(job.id)]
        run_id = wait_until(
            lambda: host.store.get_job(job.id).attempts[0].mlflow_run_id, what="attempt run id"
        )
    finally:
        host.stop()
    run = _client(f"sqlite:///{data / 'mlflow.db'}").get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == job.mlflow["run_id"]
    assert run.data.params["fit_intercept"] == "True"
    assert run.data.metrics["training_score"] == pytest.approx(1.0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_mlflow_ui_answers_and_leaves_no_process_behind(tmp_path, sig):
    import psutil

    from jupyter_trainorch.processes import group_alive
    from jupyter_trainorch.processes import stop_process_group as stop_group

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    out = tmp_path / "mlflow-ui.log"
    with open(out, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_trainorch.cli", "mlflow-ui", "--port", str(port)],
            cwd=cwd, env=service_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server_group = None
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: f"MLflow UI at {url}" in out.read_text() or proc.poll() is not None,
                   timeout=120, what="the MLflow UI's URL")  # fmt: skip
        assert proc.poll() is None, out.read_text()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        (server,) = psutil.Process(proc.pid).children()
        started = [proc.pid, server.pid, *(p.pid for p in server.children(recursive=True))]
        server_group = os.getpgid(server.pid)
        assert server_group != os.getpgid(proc.pid)  # its own group, stopped as one
        # One server worker, not MLflow's default of four, and no job runners.
        assert len(server.children(recursive=True)) == 1, server.children(recursive=True)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, out.read_text()
        wait_until(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status()
                                   != psutil.STATUS_ZOMBIE for pid in started),
                   timeout=10, what=f"the processes {started} to end")  # fmt: skip
        assert not group_alive(server_group)
        assert list(cwd.iterdir()) == []
    finally:
        # A failed test leaves nothing behind either: what ignored SIGTERM gets SIGKILL.
        for group in (proc.pid, server_group):
            if group is not None:
                stop_group(group, grace=5)
        proc.wait(timeout=10)
