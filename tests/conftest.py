"""Shared fixtures: real orchestrators on real local Dask clusters, in temp folders."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_trainorch.orchestrator import OrchestratorConfig, OrchestratorHost
from jupyter_trainorch.processes import pid_alive, stop_process
from jupyter_trainorch.spec import JobSpec

FINAL = ("succeeded", "failed", "cancelled")
__all__ = ["pid_alive", "stop_process"]  # for the test modules


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
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test may reach a developer's own server or store; services a test started
    (in its own data folder) end with it."""
    for name in ("TRAINORCH_URL", "TRAINORCH_TOKEN", "TRAINORCH_CLUSTER", "TRAINORCH_DB",
                 "TRAINORCH_SERVICE_URL", "MLFLOW_TRACKING_URI"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "trainorch-data"
    monkeypatch.setenv("TRAINORCH_DATA_DIR", str(data_dir))
    # A local cluster left behind by a failed test ends by itself soon.
    monkeypatch.setenv("TRAINORCH_CLUSTER_IDLE_TIMEOUT", "120")
    yield
    stop_services_under(tmp_path)


def stop_services_under(root: Path) -> None:
    """End every trainorch service and local cluster whose data folder is below ``root``
    (started by this test), services first: a service that stops leaves its cluster."""
    for name in ("service.pid", "service.json", "cluster.json"):
        for state in sorted(root.glob(f"**/{name}")):
            try:
                text = state.read_text()
                pid = int(text) if name.endswith(".pid") else int(json.loads(text)["pid"])
            except (OSError, ValueError, KeyError):
                continue
            stop_process(pid)



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
        TRAINORCH_CLUSTER_IDLE_TIMEOUT="120",
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
    """The ``dask`` CLI of this interpreter (also from an unactivated virtual environment)."""
    return [sys.executable, "-m", "distributed.cli.dask_" + name]
