"""What the benches share: nearest-rank percentiles, a free port, and a ``trainorch serve``
of their own (one local worker, tracking off) that ends with them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The nearest-rank percentile the simulator reports with, so benches and `trainorch simulate`
# count alike.
from jupyter_trainorch.policy.simulate import percentile  # noqa: E402

__all__ = ["free_port", "percentile", "trainorch_service", "wait_for_stamp"]


def wait_for_stamp(path: Path, timeout: float = 120.0) -> float:
    """The time a job wrote into ``path`` when its first line ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return float(path.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.002)
    raise TimeoutError(f"no first line within {timeout:g} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Service:
    url: str
    token: str
    data_dir: Path

    @property
    def cluster(self) -> dict:
        """``cluster.json``: the local cluster's scheduler address and pid."""
        return json.loads((self.data_dir / "cluster.json").read_text())


@contextlib.contextmanager
def trainorch_service(timeout: float = 120.0) -> Iterator[Service]:
    """A ``trainorch serve`` in a temporary data folder, stopped with its cluster after."""
    root = Path(tempfile.mkdtemp(prefix="trainorch-bench-"))
    port, token = free_port(), secrets.token_hex(8)
    env = {**os.environ, "TRAINORCH_DATA_DIR": str(root), "TRAINORCH_WORKERS": "1",
           "TRAINORCH_MLFLOW": "off", "JUPYTER_CONFIG_DIR": str(root / "config")}  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_trainorch.cli", "serve", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not (root / "cluster.json").exists() or not (root / "service.json").exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("trainorch serve did not start")
            time.sleep(0.2)
        yield Service(f"http://127.0.0.1:{port}/", token, root)
    finally:
        subprocess.run([sys.executable, "-m", "jupyter_trainorch.cli", "service", "stop",
                        "--force"], env=env, capture_output=True, timeout=60)  # fmt: skip
        server.wait(timeout=60)
        cluster = root / "cluster.json"
        if cluster.exists():
            os.kill(json.loads(cluster.read_text())["pid"], signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
