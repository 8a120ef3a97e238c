"""The ``trainorch`` command, run as a subprocess against a real ``trainorch serve``."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import (
    free_port,
    pid_alive,
    service_env,
    stop_process_group,
    stop_services_under,
    wait_until,
)

from jupyter_trainorch.cli import main
from jupyter_trainorch.store import JobStore

CALL_TIMEOUT = 120
SERVER_START = 60.0


def trainorch(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = CALL_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_trainorch.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``trainorch: ...`` sentence a failed command writes to stderr."""
    assert "Traceback" not in result.stderr, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("trainorch: ")]
    assert len(ours) == 1, result.stderr
    return ours[0]


class Server:
    def __init__(self, root: Path, url: str, token: str, env: dict[str, str]) -> None:
        self.root, self.url, self.token = root, url, token
        self.env = {**env, "TRAINORCH_URL": url, "TRAINORCH_TOKEN": token}
        self.work = root / "work"
        self.work.mkdir()

    def run(self, *args: str, timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return trainorch(*args, env=self.env, cwd=self.work, timeout=timeout)

    def ok(self, *args: str, timeout: float = CALL_TIMEOUT) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return result.stdout

    def job(self, job_id: str) -> dict:
        return json.loads(self.ok("status", job_id, "--json"))

    def wait_for(self, job_id: str, states: tuple[str, ...], timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            # A final state other than the one awaited will not change: fail fast.
            done = job["state"] in ("succeeded", "failed", "cancelled")
            if job["state"] in states or done or time.monotonic() > deadline:
                return job
            time.sleep(0.3)


def _answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url + "api/status")
    request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve")
    (root / "notebooks").mkdir()
    port, token = free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}/"
    env = service_env(root)
    log_path = root / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_trainorch.cli",
                "serve",
                "--port",
                str(port),
                "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root / 'notebooks'}",
                "--no-browser",
                "--allow-root",
            ],  # fmt: skip
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so the Dask workers it spawned go with it at the end.
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START
        while not _answers(url, token):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"trainorch serve did not answer:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(root, url, token, env)
    finally:
        stop_process_group(proc, grace=30)
        stop_services_under(root)


# -- against the server -----------------------------------------------------------------------


def test_submit_file_with_set_then_logs_and_status(server):
    (server.work / "job.yaml").write_text(
        textwrap.dedent(
            """\
            version: 1
            command: python -c "print('lr={{ lr }}')"
            """
        )
    )
    job_id = server.ok("submit", "job.yaml", "--set", "lr=0.1").strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", job_id)

    assert "lr=0.1" in server.ok("logs", job_id, "--follow").splitlines()
    job = server.job(job_id)
    assert job["state"] == "succeeded"
    assert job["params"] == {"lr": 0.1}
    assert job["template"]["name"] == "job"

    # Without --follow: everything logged so far, then exit.
    assert "lr=0.1" in server.ok("logs", job_id).splitlines()
    summary = server.ok("status", job_id)
    assert job_id in summary and "succeeded" in summary and "exit 0" in summary


def test_rerun_and_export_reproduce_a_job(server):
    (server.work / "calc.yaml").write_text(
        'version: 1\ncommand: python -c "print({{ a }} * {{ b }})"\n'
    )
    first = server.ok(
        "submit", "calc.yaml", "--set", "a=6", "--set", "b=7", "--name", "calc"
    ).strip()
    assert "42" in server.ok("logs", first, "--follow").splitlines()

    again = server.ok("rerun", first).strip()
    assert again != first
    assert "42" in server.ok("logs", again, "--follow").splitlines()
    original, rerun = server.job(first), server.job(again)
    assert rerun["rerun_of"] == first and rerun["code_hash"] == original["code_hash"]

    written = server.ok("export", first, "--dir", "exported").split()
    assert any(path.endswith("calc.yaml") for path in written)
    result = server.run("submit", "exported/calc.yaml", "--wait")
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout.splitlines()


def test_a_template_ships_its_input_files_and_runs_among_them(server):
    project = server.work / "project"
    (project / "data").mkdir(parents=True)
    (project / "train.py").write_text("print(open('data/rows.csv').read().strip(), flush=True)\n")
    (project / "data" / "rows.csv").write_text("a,b\n1,2\n")
    (project / "job.yaml").write_text(
        "version: 1\ncommand: python train.py\ninputs: [train.py, data/*.csv]\n"
    )
    # Submitted from another folder: the job still finds train.py and data/ beside it.
    result = server.run("submit", "project/job.yaml", "--wait")
    assert result.returncode == 0, result.stderr
    assert "a,b" in result.stdout.splitlines() and "1,2" in result.stdout.splitlines()


def test_submit_template_wait_prints_logs_and_exit_code(server):
    result = server.run("submit", "--template", "command", "--set", "cmd=echo hi", "--wait")
    assert result.returncode == 0, result.stderr
    assert "hi" in result.stdout.splitlines()

    failed = server.run("submit", "--template", "command", "--set", "cmd=exit 3", "--wait")
    assert failed.returncode == 1
    assert "failed" in one_error(failed)


def test_submit_json_and_wait_json_keep_stdout_parseable(server):
    job = json.loads(server.ok("submit", "--template", "command", "--set", "cmd=echo j", "--json"))
    assert job["state"] in ("queued", "starting", "running", "succeeded")
    assert job["resources"]["gpus"] == 0

    result = server.run(
        "submit", "-t", "command", "--set", "cmd=echo logged", "--wait", "--json", "--name", "named"
    )
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)
    assert (final["state"], final["name"]) == ("succeeded", "named")
    assert "logged" in result.stderr.splitlines()


def test_list_shows_submitted_jobs(server):
    job_id = server.ok("submit", "--template", "command", "--set", "cmd=echo listed").strip()
    listing = json.loads(server.ok("list", "--json"))
    assert job_id in [job["id"] for job in listing["jobs"]]
    assert listing["total"] >= len(listing["jobs"]) >= 1

    table = server.ok("list").splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "USER", "STATE"]
    assert any(line.startswith(job_id) for line in table[1:])

    server.wait_for(job_id, ("succeeded",))
    only = json.loads(server.ok("list", "--state", "succeeded", "--json"))
    assert {job["state"] for job in only["jobs"]} == {"succeeded"}


def test_cancel_running_job_then_retry(server):
    job_id = server.ok("submit", "--template", "command", "--set", "cmd=sleep 60").strip()
    assert server.wait_for(job_id, ("running",))["state"] == "running"

    assert server.ok("cancel", job_id).strip() == f"job {job_id}: cancelled"
    assert server.job(job_id)["state"] == "cancelled"

    out = server.ok("retry", job_id).strip()
    assert re.fullmatch(rf"job {job_id}: (queued|starting|running)", out), out
    assert server.ok("cancel", job_id).strip() == f"job {job_id}: cancelled"


def test_cancel_finished_job_is_one_sentence(server):
    job_id = server.ok("submit", "--template", "command", "--set", "cmd=echo done").strip()
    assert server.wait_for(job_id, ("succeeded",))["state"] == "succeeded"
    result = server.run("cancel", job_id)
    assert result.returncode == 2
    message = one_error(result)
    assert job_id in message and "succeeded" in message


def test_after_runs_the_job_once_its_dependency_succeeded(server):
    first = server.ok("submit", "-t", "command", "--set", "cmd=echo first").strip()
    result = server.run(
        "submit", "-t", "command", "--set", "cmd=echo second", "--after", first, "--wait", "--json"
    )
    assert result.returncode == 0, result.stderr
    second = json.loads(result.stdout)
    assert (second["state"], second["depends_on"]) == ("succeeded", [first])
    assert server.job(first)["state"] == "succeeded"

    result = server.run("submit", "-t", "command", "--set", "cmd=echo x", "--after", "nope")
    assert result.returncode == 2
    assert "'nope'" in one_error(result)


def test_after_any_and_after_notok_follow_how_the_dependency_ended(server):
    broken = server.ok("submit", "-t", "command", "--set", "cmd=exit 3").strip()
    result = server.run("submit", "-t", "command", "--set", "cmd=echo cleanup", "--after-any",
                        broken, "--after-notok", broken, "--wait", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    cleanup = json.loads(result.stdout)
    assert cleanup["state"] == "succeeded" and cleanup["depends_on"] == [broken]
    # Named twice, the job keeps the last condition it was given.
    assert cleanup["dependencies"] == [{"job_id": broken, "when": "notok"}]
    assert f"after:      {broken} (notok)" in server.ok("status", cleanup["id"])
    result = server.run("submit", "-t", "command", "--set", "cmd=echo x", "--after-notok",
                        cleanup["id"])  # fmt: skip
    assert result.returncode == 2
    assert one_error(result).endswith("has already succeeded, so this job would never run")


def test_too_many_gpus_is_one_sentence(server):
    result = server.run("submit", "--template", "command", "--set", "cmd=echo x", "--gpus", "16")
    assert result.returncode == 2
    assert "16 GPUs" in one_error(result)


def test_unknown_job_is_one_sentence(server):
    result = server.run("status", "nonexistent")
    assert result.returncode == 2
    assert one_error(result) == "trainorch: there is no job 'nonexistent'"


def test_bad_set_value_and_missing_param_are_one_sentence(server):
    result = server.run("submit", "--template", "command", "--set", "no-equals")
    assert result.returncode == 2
    assert "key=value" in one_error(result)

    result = server.run("submit", "--template", "command")
    assert result.returncode == 2
    assert "cmd" in one_error(result)


# -- without a server -------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return service_env(tmp_path)


def test_the_cli_starts_the_service_and_stops_it(env, tmp_path):
    """No server anywhere: the first command starts the user's service detached; it
    outlives the command; stopping it with a running job asks for --force."""
    result = trainorch(
        "submit", "--template", "command", "--set", "cmd=echo local", "--wait",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "local" in result.stdout.splitlines()
    status = json.loads(trainorch("service", "status", "--json", env=env).stdout)
    assert status["mode"] == "single-user" and status["workers"] == 1 and pid_alive(status["pid"])
    text = trainorch("service", "status", env=env).stdout
    assert f"pid {status['pid']}" in text and "0 running" in text
    sleeper = trainorch(
        "submit", "--template", "command", "--set", "cmd=sleep 60", env=env, cwd=tmp_path
    )
    job_id = sleeper.stdout.strip()
    deadline = time.monotonic() + 60
    while json.loads(trainorch("status", job_id, "--json", env=env).stdout)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    refused = trainorch("service", "stop", env=env)
    assert refused.returncode == 2
    assert one_error(refused) == (
        "trainorch: 1 job(s) are running; stop with force (they are stopped and run again at the "
        "next start) or drain (no new job starts; the service stops when they end)"
    )
    stopped = trainorch("service", "stop", "--force", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped the trainorch service (pid {status['pid']})" in stopped.stdout
    assert not pid_alive(status["pid"])
    gone = trainorch("service", "status", env=env)
    assert gone.returncode == 2 and "no trainorch service is running" in gone.stdout
    # The stopped job waits for the next start (it is queued again, not lost).
    store = JobStore(f"sqlite:///{tmp_path / 'data' / 'trainorch.db'}")
    job = store.get_job(job_id)
    store.close()
    assert job.state == "queued" and job.attempts[-1].infrastructure


def test_a_draining_service_starts_nothing_new_and_stops_when_its_jobs_end(env, tmp_path):
    first = trainorch("submit", "--template", "command", "--set", "cmd=sleep 4; echo drained",
                      "--gpus", "1", env=env, cwd=tmp_path).stdout.strip()  # fmt: skip
    second = trainorch("submit", "--template", "command", "--set", "cmd=echo later", "--gpus", "1",
                       env=env, cwd=tmp_path).stdout.strip()  # fmt: skip
    pid = json.loads(trainorch("service", "status", "--json", env=env).stdout)["pid"]
    deadline = time.monotonic() + 60
    while json.loads(trainorch("status", first, "--json", env=env).stdout)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    result = trainorch("service", "stop", "--drain", env=env)
    assert result.stdout.strip() == "draining: the service stops once its 1 running job(s) end"
    wait_until(lambda: not pid_alive(pid), timeout=60, what="the drained service to stop")
    store = JobStore(f"sqlite:///{tmp_path / 'data' / 'trainorch.db'}")
    states = (store.get_job(first).state, store.get_job(second).state)
    store.close()
    assert states == ("succeeded", "queued")


def test_a_service_with_a_wrong_setting_stops_and_says_which(env, tmp_path):
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "jupyter_server_config.py").write_text('c.TrainOrch.others_jobs = "everyone"\n')
    result = trainorch("list", env=env, cwd=tmp_path)
    assert result.returncode == 2
    message = one_error(result)
    assert message.startswith("trainorch: the trainorch service did not start (exit code 2)")
    assert "c.TrainOrch.others_jobs must be one of 'queue', 'hidden', not 'everyone'" in message


@pytest.mark.parametrize(
    ("setting", "sentence"),
    [
        ({"TRAINORCH_WORKERS": "x"}, "TRAINORCH_WORKERS must be a whole number of at least 1, not 'x'"),
        (["--TrainOrch.grace_period=nan"], "c.TrainOrch.grace_period must be a number of seconds of at least 0, not nan"),
    ],
)  # fmt: skip
def test_serve_with_a_wrong_setting_exits_2_with_the_sentence(setting, sentence, env, tmp_path):
    variables = setting if isinstance(setting, dict) else {}
    arguments = setting if isinstance(setting, list) else []
    result = trainorch(
        "serve", "--port=0", "--ServerApp.ip=127.0.0.1", "--allow-root", *arguments,
        env={**env, **variables}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.rstrip().endswith(f"trainorch: a setting is wrong: {sentence}")


def test_a_command_with_a_wrong_variable_says_which(env, tmp_path):
    result = trainorch("list", env={**env, "TRAINORCH_GRACE_PERIOD": "nan"}, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error(result) == (
        "trainorch: TRAINORCH_GRACE_PERIOD must be a number of seconds of at least 0, not 'nan'"
    )
    assert not (tmp_path / "data" / "service.pid").exists()  # refused before starting anything


def test_templates_list_and_show(env):
    result = trainorch("templates", "list", env=env)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert {"python-cell", "command", "torch"} <= set(names)

    shown = trainorch("templates", "show", "command", env=env)
    assert shown.returncode == 0, shown.stderr
    template = yaml.safe_load(shown.stdout)
    assert (template["name"], template["kind"]) == ("command", "command")

    missing = trainorch("templates", "show", "nope", env=env)
    assert missing.returncode == 2
    assert "unknown template 'nope'" in one_error(missing)


def test_templates_list_reports_broken_user_templates(env, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "broken.yaml").write_text("version: 1\nkind: shell\n")
    result = trainorch("templates", "list", env={**env, "TRAINORCH_TEMPLATE_PATH": str(folder)})
    assert result.returncode == 0, result.stderr
    assert "broken.yaml" in one_error(result)


def test_templates_validate(env, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\ncommand: echo {{ x }}\nparams:\n  x: 1\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncommand: echo hi\nresources:\n  gpus: many\n")

    result = trainorch("templates", "validate", str(good), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{good}: ok"

    result = trainorch("templates", "validate", str(good), str(bad), env=env)
    assert result.returncode == 1
    assert f"{good}: ok" in result.stdout
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith(str(bad)) and re.search(r"line \d+", errors[0]), errors


def test_usage_errors_exit_2(env, tmp_path):
    result = trainorch("list", "--bogus", env=env)
    assert result.returncode == 2 and "usage: trainorch" in result.stderr

    result = trainorch("submit", env=env)
    assert result.returncode == 2
    assert "--template" in one_error(result)

    (tmp_path / "job.yaml").write_text("version: 1\ncommand: echo\n")
    result = trainorch("submit", "job.yaml", "--template", "command", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "not both" in one_error(result)


def test_main_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\ncommand: echo hi\n")
    assert main(["templates", "validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: ok"
