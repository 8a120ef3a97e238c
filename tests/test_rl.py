"""The reinforcement-learning example for real: gymnasium's CartPole trained by REINFORCE
in torch, as a job of the template ``examples/rl/cartpole-reinforce.yaml`` submitted by the
CLI to a running service, and as the notebook ``examples/rl/cartpole.ipynb`` in a real
kernel. Each episode is a progress point: the job's bar, and one MLflow step per episode
with the reward curves the panel charts draw."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import running_service
from nbclient import NotebookClient
from test_panel_browser import _open_job_tab, lab, page  # noqa: F401

pytest.importorskip("gymnasium")
pytest.importorskip("torch")

RL = Path(__file__).resolve().parent.parent / "examples" / "rl"
EPISODE_METRICS = {"reward", "reward_mean_100", "episode_length", "loss"}


def _mlflow(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def test_the_template_trains_cartpole_with_one_point_per_episode(tmp_path):
    from jupyter_trainorch.client.job import Job
    from jupyter_trainorch.client.transport import HTTPTransport

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with running_service(tmp_path, TRAINORCH_MLFLOW=uri) as server:
        env = {**server.env, "TRAINORCH_URL": server.url, "TRAINORCH_TOKEN": server.token}
        done = subprocess.run(
            [sys.executable, "-m", "jupyter_trainorch.cli", "submit", str(RL / "cartpole-reinforce.yaml"),
             "--set", "episodes=40", "--set", "seed=1", "--wait", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        final = json.loads(done.stdout)
        assert final["state"] == "succeeded"
        assert final["progress"]["step"] == 40 and final["progress"]["total"] == 40
        assert final["progress"]["message"].startswith("episode 40: reward ")
        assert "episode   25  reward" in done.stderr  # the job's log, followed to the end
        assert "'episodes': 40" in done.stderr

        job = Job(final["id"], HTTPTransport(server.url, server.token))
        curve = job.metrics()  # REST → the attempt's MLflow run
        assert EPISODE_METRICS <= set(curve.columns)
        assert curve["step"].tolist() == list(range(1, 41))
        assert curve["episode_length"].tolist() == curve["reward"].tolist()  # +1 per step
        assert (curve["reward"] >= 8).all()  # no CartPole episode ends sooner

        run_id = final["attempts"][-1]["mlflow_run_id"]
        client = _mlflow(uri)
        assert client.get_run(run_id).data.params["episodes"] == "40"
        assert [a.path for a in client.list_artifacts(run_id, "artifacts")] == ["artifacts/policy"]
        assert (
            client.get_experiment(client.get_run(run_id).info.experiment_id).name == "rl-cartpole"
        )


def test_reinforce_learns_cartpole():
    """The algorithm itself, in this process: the reward rises well above a random
    policy's (about 22) within 200 episodes."""
    sys.path.insert(0, str(RL))
    try:
        from cartpole_reinforce import train
    finally:
        sys.path.remove(str(RL))
    summary = train(episodes=200, seed=0, out=os.devnull)
    assert summary["episodes"] == 200
    assert summary["best_mean_reward"] > 100, summary


def test_the_notebook_trains_in_a_job_and_reads_back_the_reward_curve(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")
    shutil.copy(RL / "cartpole_reinforce.py", tmp_path)
    notebook = nbformat.read(RL / "cartpole.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    texts = ["".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                     for o in cell.outputs) for cell in code]  # fmt: skip
    assert "succeeded" in texts[2]
    assert "'episodes': 300" in texts[2] and "'best_mean_reward'" in texts[2]
    assert any("image/png" in o.get("data", {}) for o in code[3].outputs)  # the curve's plot
    first, last = map(
        float, re.search(r"first 50 episodes ([\d.]+), last 50 ([\d.]+)", texts[3]).groups()
    )
    assert last > 4 * first, texts[3]
    assert (tmp_path / "policy.pt").is_file()


@pytest.mark.browser
def test_the_panel_shows_each_episode_and_the_reward_curves(lab, page):  # noqa: F811
    from jupyter_trainorch.client.file_request import template_file_request

    body = template_file_request(RL / "cartpole-reinforce.yaml", params={"episodes": 30},
                                 name="cartpole-panel")  # fmt: skip
    job_id = lab.api("jobs", "POST", body)["id"]
    deadline = time.monotonic() + 120
    while lab.api(f"jobs/{job_id}")["state"] != "succeeded":
        assert time.monotonic() < deadline, lab.api(f"jobs/{job_id}")
        time.sleep(0.5)
    _, detail = _open_job_tab(lab, page, job_id)
    message = detail.locator(".trainorch-progress-message")
    message.wait_for(timeout=30_000)
    assert re.fullmatch(r"episode 30: reward \d+, mean [\d.]+", message.inner_text()), (
        message.inner_text()
    )
    for metric in ("reward", "reward_mean_100", "episode_length"):
        chart = detail.locator(f".trainorch-chart[data-metric='{metric}']")
        chart.locator(".u-legend [data-attempt='1'][data-points='30']").wait_for(timeout=60_000)
