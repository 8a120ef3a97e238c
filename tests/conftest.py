"""Shared fixtures: real orchestrators on real local Dask clusters, in temp folders."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_trainorch.cluster.managed import CLUSTER_DASK_ENVIRONMENT
from jupyter_trainorch.orchestrator import OrchestratorHost
from jupyter_trainorch.processes import pid_alive, stop_process
from jupyter_trainorch.settings import TrainOrch
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
        skips["browser"] = pytest.mark.skip(
            reason=f"{CHROMIUM} is missing (apt-get install chromium)"
        )
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
    return OrchestratorHost(TrainOrch(data_dir=str(data_dir), **settings).to_config()).start()


@pytest.fixture(scope="module")
def host_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., OrchestratorHost]]:
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


def wait_until(
    predicate: Callable[[], object], timeout: float = 30, what: str = "condition"
) -> object:
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
        if not k.startswith(("TRAINORCH_", "JUPYTERHUB_"))
        and k not in ("JUPYTER_CONFIG_DIR", "MLFLOW_TRACKING_URI")
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


@pytest.fixture
def external_cluster(tmp_path):
    """``dask scheduler`` + ``dask worker --resources GPU=2`` as separate processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # As the README tells users of their own workers.
    env = dict(os.environ, **CLUSTER_DASK_ENVIRONMENT)
    logs = open(tmp_path / "cluster.log", "w")  # noqa: SIM115
    scheduler = subprocess.Popen(
        [*dask_executable("scheduler"), "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=logs, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*dask_executable("worker"), address, "--resources", "GPU=2", "--nthreads", "4",
         "--no-dashboard", "--host", "127.0.0.1", "--name", "gpu-box"],
        stdout=logs, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        yield address
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()


def get_json(url: str, token: str, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(url)
    request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _answers(url: str, token: str) -> bool:
    try:
        get_json(url + "trainorch/api/me", token, timeout=2)
    except (OSError, ValueError):
        return False
    return True


class Process:
    """A server started with its own session, on a fixed port, that can be restarted."""

    def __init__(
        self, command: list[str], env: dict[str, str], log: Path, url: str, token: str
    ) -> None:
        self.command, self.env, self.log, self.url, self.token = command, env, log, url, token
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _answers(self.url, self.token):
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{self.command[2:4]} did not answer"
            time.sleep(0.2)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)


def service_process(root: Path, cluster: str = "local") -> Process:
    """``trainorch serve`` on a fixed port with a known token (start it with ``.start()``)."""
    port, token = free_port(), secrets.token_hex(8)
    command = [sys.executable, "-m", "jupyter_trainorch.cli", "serve", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={token}", "--allow-root"]  # fmt: skip
    env = {**service_env(root), "TRAINORCH_CLUSTER": cluster, "TRAINORCH_MLFLOW": "off"}
    return Process(command, env, root / "service.log", f"http://127.0.0.1:{port}/", token)


@contextlib.contextmanager
def running_service(root: Path, **env: str) -> Iterator[Process]:
    """``trainorch serve`` in ``root`` with these extra environment variables, started;
    stopped with the cluster it started."""
    server = service_process(root)
    server.env.update(env)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        stop_services_under(root)
