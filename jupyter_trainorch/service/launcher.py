"""Find the user's running service, or start it detached.

The server extension, the magics and the CLI all come here when no shared service is
configured. Starting is serialised by a lock file, so two of them racing (a notebook
and a terminal) start one service, not two.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..environ import without_service_settings
from .runtime import ServiceInfo, read_runtime, runtime_path

START_TIMEOUT = 120.0
LOG_FILE = "service.log"


class ServiceUnavailable(Exception):
    """The service could not be found or started; ``str(err)`` is one sentence."""


def request(
    info: ServiceInfo, method: str, path: str, body: object = None, timeout: float = 10.0
) -> object:
    """One authenticated call to the service's REST API; raise HTTPError/URLError as urllib does."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        info.url.rstrip("/") + "/trainorch/api/" + path, data=data, method=method
    )
    req.add_header("Authorization", f"token {info.token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _answers(info: ServiceInfo) -> bool:
    try:
        request(info, "GET", "me", timeout=5.0)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False
    return True


def find_service(data_dir: Path) -> ServiceInfo | None:
    """The service of this data folder if it is running and answers."""
    info = read_runtime(data_dir)
    if info is None or not info.alive() or not _answers(info):
        return None
    return info


@contextmanager
def _start_lock(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "service.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_service(
    data_dir: Path, settings: Mapping[str, str], timeout: float = START_TIMEOUT
) -> ServiceInfo:
    """The running service of ``data_dir``; started detached with ``settings`` (its
    ``TRAINORCH_*`` variables) when there is none."""
    data_dir = Path(data_dir)
    found = find_service(data_dir)
    if found is not None:
        return found
    with _start_lock(data_dir):
        found = find_service(data_dir)
        if found is not None:
            return found
        return _start(data_dir, settings, timeout)


def _start(data_dir: Path, settings: Mapping[str, str], timeout: float) -> ServiceInfo:
    import subprocess

    command = [sys.executable, "-m", "jupyter_trainorch.cli", "serve", "--port=0",
               "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0"]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    env = {**without_service_settings(), **settings, "TRAINORCH_DATA_DIR": str(data_dir)}
    log_path = data_dir / LOG_FILE
    runtime_path(data_dir).unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=data_dir, start_new_session=True,
        )  # fmt: skip
    # Known before it is ready, so whoever cleans up after it can find it.
    (data_dir / "service.pid").write_text(str(proc.pid))
    # Reaped here when it ends, so it never lingers as a zombie of this process.
    threading.Thread(target=proc.wait, name="trainorch-service-reaper", daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_runtime(data_dir)
        if info is not None and info.pid == proc.pid and _answers(info):
            return info
        if proc.poll() is not None:
            raise ServiceUnavailable(
                f"the trainorch service did not start (exit code {proc.returncode}): "
                f"{_last_error(log_path)} (see {log_path})"
            )
        time.sleep(0.1)
    proc.terminate()
    raise ServiceUnavailable(
        f"the trainorch service did not start within {timeout:g}s (see {log_path})"
    )


def _last_error(log_path: Path) -> str:
    lines = [
        line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()
    ]
    return lines[-1][:300] if lines else "it wrote nothing"
