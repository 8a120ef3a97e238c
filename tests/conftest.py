"""Shared fixtures: real orchestrators on real local Dask clusters, in temp folders."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_trainorch.orchestrator import OrchestratorConfig, OrchestratorHost
from jupyter_trainorch.spec import JobSpec

FINAL = ("succeeded", "failed", "cancelled")


CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from jupyter_trainorch.cluster import gpus_present

    skips = {}
    if not gpus_present():
        skips["gpu"] = pytest.mark.skip(reason="no NVIDIA GPU visible")
    if not os.path.exists(CHROMIUM) and not os.environ.get("TRAINORCH_REQUIRE_BROWSER"):
        skips["browser"] = pytest.mark.skip(reason=f"{CHROMIUM} is missing (apt-get install chromium)")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may reach a developer's own server or store."""
    for name in ("TRAINORCH_URL", "TRAINORCH_TOKEN", "TRAINORCH_CLUSTER", "TRAINORCH_DB", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINORCH_DATA_DIR", str(tmp_path / "trainorch-data"))


def start_host(data_dir: Path, **config: object) -> OrchestratorHost:
    settings = {"workers": 1, "gpus_per_worker": 1, "slots_per_worker": 4, "grace_period": 2.0}
    settings.update(config)
    return OrchestratorHost(OrchestratorConfig(data_dir=data_dir, **settings)).start()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def host_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., OrchestratorHost]]:
    """Start orchestrators for a module; all are stopped at its end."""
    hosts: list[OrchestratorHost] = []

    def make(**config: object) -> OrchestratorHost:
        host = start_host(tmp_path_factory.mktemp("orch"), **config)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()


def submit(host: OrchestratorHost, **fields: object) -> str:
    spec = JobSpec(**fields)  # type: ignore[arg-type]
    return host.call(lambda o: o.submit(spec)).id


def wait_final(host: OrchestratorHost, job_id: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = host.store.get_job(job_id)
        if job is not None and job.state in FINAL:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {host.store.get_job(job_id)}")


def wait_until(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def log_text(host: OrchestratorHost, job_id: str) -> list[str]:
    return [line.text for line in host.store.read_logs(job_id)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it holds nothing.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def service_env(root: Path) -> dict[str, str]:
    """This interpreter's environment for a server subprocess, with only the test's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRAINORCH_", "JUPYTERHUB_")) and k not in ("JUPYTER_CONFIG_DIR", "MLFLOW_TRACKING_URI")
    }
    env.update(
        TRAINORCH_DATA_DIR=str(root / "data"),
        TRAINORCH_WORKERS="1",
        TRAINORCH_GPUS_PER_WORKER="1",
        # Templates and settings in the developer's own Jupyter config must not leak in.
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
        PYTHONUNBUFFERED="1",
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM to a service started with ``start_new_session=True``, then SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def dask_executable(name: str) -> list[str]:
    """The ``dask`` CLI of this interpreter."""
    found = shutil.which("dask")
    return [found, name] if found else ["python", "-m", "distributed.cli.dask_" + name]
