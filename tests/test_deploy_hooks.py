"""Deployment hooks: real jobs log and register a model with MLflow on SQLite, and the
configured hooks reach a real local HTTP receiver and run a real command; broken and slow
hooks are logged and change nothing else."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import start_host, submit, wait_final, wait_until
from test_alerts import Receiver
from test_tracking import LOG_A_MODEL

from jupyter_trainorch.client.job import submit as submit_request
from jupyter_trainorch.orchestrator.deploy_hooks import (
    MAX_WAITING,
    DeployHookConfigError,
    DeployHooks,
    parse_deploy_hooks,
)
from jupyter_trainorch.settings import SettingError, TrainOrch

# Writes the environment it was given to the file named by its argument.
DEPLOY_SCRIPT = '#!/bin/sh\nenv > "$1.partial" && mv "$1.partial" "$1"\necho "deployed $TRAINORCH_MODEL_URI"\n'  # fmt: skip


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _environment(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_registering_a_model_calls_the_webhook_and_the_command_once_each(
    tmp_path, receiver, caplog, monkeypatch
):
    script = tmp_path / "deploy.sh"
    script.write_text(DEPLOY_SCRIPT)
    script.chmod(0o755)
    seen = tmp_path / "deployed.env"
    hooks = [
        # A slow hook first: it is cut off, and the ones after it still run.
        {"on": "registered", "to": "command:sleep 60", "timeout": 1},
        {"on": "registered", "model": "doub*", "to": f"webhook:{receiver.url}"},
        {"on": "alias:champion", "to": f"command:{script} {seen}"},
        {"on": "registered", "model": "other*", "to": f"webhook:{receiver.url}"},
        {"on": "registered", "to": "webhook:http://127.0.0.1:9/nothing-listens"},
        {"on": "alias:champ*", "to": f"command:{tmp_path / 'missing.sh'}"},
    ]
    caplog.set_level(logging.INFO, logger="jupyter_trainorch.orchestrator.deploy_hooks")
    monkeypatch.setenv("TRAINORCH_TOKEN", "the-service-token")  # never the hook's to see
    data = tmp_path / "data"
    host = start_host(data, workers=1, deploy_hooks=json.dumps(hooks))
    try:
        first = submit(host, name="register", source=LOG_A_MODEL, register_model="doubler@champion")  # fmt: skip
        job = wait_final(host, first, timeout=180)
        assert job.state == "succeeded", [line.text for line in host.store.read_logs(first)]
        job = wait_until(lambda: (j := host.store.get_job(first)).mlflow.get("model") and j,
                         timeout=60, what="the registered model")  # fmt: skip
        wait_until(lambda: receiver.bodies and seen.exists(), timeout=30, what="both hooks")
        run_id = job.attempts[-1].mlflow_run_id
        assert receiver.bodies == [{
            "event": "registered", "model": "doubler", "version": "1", "alias": "champion",
            "model_uri": "models:/doubler/1", "run_id": run_id,
            "experiment_id": job.mlflow["experiment_id"], "job_id": first, "user": "",
        }]  # fmt: skip
        env = _environment(seen)
        assert {k: v for k, v in env.items() if k.startswith("TRAINORCH_")} == {
            "TRAINORCH_HOOK_EVENT": "alias",
            "TRAINORCH_MODEL_NAME": "doubler",
            "TRAINORCH_MODEL_VERSION": "1",
            "TRAINORCH_MODEL_ALIAS": "champion",
            "TRAINORCH_MODEL_URI": "models:/doubler/1",
            "TRAINORCH_RUN_ID": run_id,
            "TRAINORCH_EXPERIMENT_ID": job.mlflow["experiment_id"],
            "TRAINORCH_JOB_ID": first,
            "TRAINORCH_USER": "",
        }  # fmt: skip (and none of the service's settings or its token)
        assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{data / 'mlflow.db'}"

        # The same registration announced again fires nothing again.
        host.orchestrator.feed.publish("job", first, mlflow=["model"])
        # A second version, without an alias: the registered hooks fire, the alias one not.
        seen.unlink()
        second = submit(host, name="again", source=LOG_A_MODEL, register_model="doubler")
        assert wait_final(host, second, timeout=180).state == "succeeded"
        wait_until(lambda: len(receiver.bodies) == 2, timeout=60, what="the second webhook")
        assert receiver.bodies[1]["version"] == "2" and receiver.bodies[1]["alias"] is None
        assert receiver.bodies[1]["job_id"] == second
        wait_until(lambda: any("nothing-listens) for model doubler v2 failed" in r.getMessage()
                               for r in caplog.records), what="the last hook of version 2")  # fmt: skip
    finally:
        host.stop()
    assert len(receiver.bodies) == 2 and not seen.exists()

    # The model the hook was told about is the one a deployment would load.
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    assert mlflow.pyfunc.load_model(env["TRAINORCH_MODEL_URI"]).predict([1, 2]) == [2, 4]

    logged = [r.getMessage() for r in caplog.records]
    assert "deploy hook 3 (command:" in next(m for m in logged if "deployed models:/doubler/1" in m)  # fmt: skip
    for version in ("1", "2"):
        assert f"deploy hook 1 (command:sleep 60) for model doubler v{version} failed: timed out after 1s and was killed" in logged  # fmt: skip
        assert any(m.startswith(f"deploy hook 5 (webhook:http://127.0.0.1:9/nothing-listens) for model doubler v{version} failed: ") for m in logged)  # fmt: skip
    assert any(m.startswith("deploy hook 6 (command:") and "v1 failed: " in m for m in logged)
    assert not any("deploy hook 4" in m for m in logged)


def test_a_hook_commands_output_is_in_the_service_log(tmp_path, monkeypatch):
    """Through ``trainorch serve`` (started for this test's data folder, as a user's is)."""
    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_DEPLOY_HOOKS",
                       '[{"on": "registered", "to": "command:echo deployed $TRAINORCH_MODEL_URI"}]')  # fmt: skip
    job = submit_request(
        {"template": "python-cell", "name": "register", "source": LOG_A_MODEL,
         "overrides": {"register_model": "doubler"}}
    )  # fmt: skip
    assert job.wait(180) == "succeeded", job.logs()
    service_log = Path(os.environ["TRAINORCH_DATA_DIR"]) / "service.log"
    # Split as a shell would, run without one: the variable is not expanded.
    line = wait_until(
        lambda: [t for t in service_log.read_text().splitlines() if "deployed $TRAINORCH" in t],
        timeout=60, what="the hook's output in the service log",
    )  # fmt: skip
    assert line[0].endswith("deploy hook 1 (command:echo deployed $TRAINORCH_MODEL_URI) for "
                            "model doubler v1: deployed $TRAINORCH_MODEL_URI")  # fmt: skip


class StuckStore:
    """A store whose every read waits until released: the hook thread is stuck in it."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def get_job(self, job_id: str) -> None:
        self.release.wait(30)


def test_a_registration_never_waits_for_the_hooks(caplog):
    """The feed's subscriber only queues: with the hook thread stuck and its queue full,
    announcing a registration still returns at once, and what did not fit is logged."""
    store = StuckStore()
    hooks = DeployHooks(parse_deploy_hooks('[{"on": "registered", "to": "command:true"}]'),
                        store, tracking_uri=None)  # type: ignore[arg-type]  # fmt: skip
    started = time.monotonic()
    for n in range(MAX_WAITING + 100):
        hooks.job_changed({"kind": "job", "job_id": f"j{n}", "mlflow": ["model"]})
    assert time.monotonic() - started < 1.0
    dropped = [r for r in caplog.records if r.getMessage().endswith("dropped: too many waiting")]
    assert 99 <= len(dropped) <= 100  # the thread may have taken one before it got stuck
    store.release.set()
    hooks.close()


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ('{"on": "registered"}', "a JSON list of at most 20 hooks"),
        ('[{"on": "deployed", "to": "command:x"}]', "hook 1: on must be 'registered' or 'alias:NAME', not 'deployed'"),
        ('[{"on": "registered", "to": "command:x"}, {"on": "alias:", "to": "command:x"}]', "hook 2: on must be 'registered' or 'alias:NAME', not 'alias:'"),
        ('[{"on": "registered", "to": "slack"}]', "hook 1: to must be webhook:http(s)://… or command:PROGRAM [ARGS], not 'slack'"),
        ('[{"on": "registered", "to": "command:\\"unclosed"}]', "hook 1: to must be webhook:http(s)://… or command:PROGRAM [ARGS], not 'command:\"unclosed'"),
        ('[{"on": "registered", "to": "webhook:ftp://x"}]', "hook 1: to must be webhook:http(s)://… or command:PROGRAM [ARGS], not 'webhook:ftp://x'"),
        ('[{"on": "registered", "to": "command:x", "timeout": 0}]', "hook 1: timeout must be seconds from 0 to 3600"),
        ('[{"on": "registered", "to": "command:x", "model": ""}]', "hook 1: model must be a model name or a glob such as resnet*"),
        ('[{"on": "registered", "to": "command:x", "when": "now"}]', "hook 1: an object with on, to and optionally model, timeout"),
    ],
)  # fmt: skip
def test_a_wrong_hook_is_one_sentence_naming_it(text, sentence):
    with pytest.raises(DeployHookConfigError) as raised:
        parse_deploy_hooks(text)
    assert str(raised.value) == sentence


def test_the_setting_refuses_a_wrong_hook_naming_the_variable(monkeypatch):
    monkeypatch.setenv("TRAINORCH_DEPLOY_HOOKS", '[{"on": "registered", "to": "slack"}]')
    with pytest.raises(SettingError) as raised:
        TrainOrch().to_config()
    assert str(raised.value) == (
        'TRAINORCH_DEPLOY_HOOKS must be a JSON list of hooks such as [{"on": "registered", '
        '"to": "webhook:https://…"}] (hook 1: to must be webhook:http(s)://… or '
        'command:PROGRAM [ARGS], not \'slack\'), not \'[{"on": "registered", "to": "slack"}]\''
    )
