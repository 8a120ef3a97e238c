"""Jobs that run inside a container image (a spec's or template's ``image``).

On its worker such a job's process is the container engine's client, ``podman run`` or
``docker run``, which starts ``runner.child`` in the image as a fresh interpreter would
(never forked by the zygote: the image has its own Python). The attempt's folder, the job's
working folder and its checkpoint folder are mounted at the same paths, so everything the
supervisor and the child share stays where both expect it; this package is mounted
read-only and put on ``PYTHONPATH``, so the image needs only a compatible Python (3.10 or
later; cloudpickle too for a cell that captured variables). The job's environment,
secrets included, goes in an ``--env-file`` readable by the worker's user only, never on
the command line. The allocated GPUs are passed through: podman by CDI names
(``--device nvidia.com/gpu=ID``), docker by ``--gpus``.

The client leads the job's process group: SIGTERM reaches the container through the
engine's signal proxy and ``--init``, ``--rm`` removes it, and ``<engine> kill`` stops one
that outlived its grace. The engine must answer where the workers are; for a local
cluster that is the orchestrator's own machine, which ``image_refusal`` checks at submit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .launch import FRESH_START, FreshProcess, worker_environment
from .names import PROGRESS_FD_ENV
from .zygote_client import widen_pipe

ENGINES = ("podman", "docker")
ENGINE_SETTINGS = ("auto", *ENGINES, "off")
ENV_FILE = "container.env"
PROBE_SECONDS = 60.0
_PROBE_TIMEOUT = 20.0
_probes: dict[str, tuple[float, str | None]] = {}
_probes_lock = threading.Lock()


class ContainerUnavailable(RuntimeError):
    """No engine can start the job's image on this worker; ``str`` is one sentence."""


class ContainerProcess(FreshProcess):
    """The engine's client running the job's container."""

    engine: str = ""
    container: str = ""

    def kill_container(self) -> None:
        """Stop the container even where the client died without passing the signal on
        (a SIGKILLed docker client leaves its container running)."""
        try:
            subprocess.run(
                [self.engine, "kill", self.container],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=_PROBE_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            pass  # the engine is gone; so is its container, or nothing here can stop it


def find_engine(setting: str) -> str | None:
    """The engine executable ``setting`` chooses on PATH (``auto``: podman, then docker)."""
    if setting == "off":
        return None
    for name in ENGINES if setting == "auto" else (setting,):
        path = shutil.which(name)
        if path:
            return path
    return None


def engine_problem(setting: str) -> str | None:
    """Why no container engine answers here (None: one does), in a few words. An answer
    is kept for ``PROBE_SECONDS``: ``<engine> info`` may take a second."""
    if setting == "off":
        return "TRAINORCH_CONTAINER_ENGINE is off"
    engine = find_engine(setting)
    if engine is None:
        wanted = " nor ".join(ENGINES) if setting == "auto" else setting
        return f"{'neither ' if setting == 'auto' else ''}{wanted} is on PATH"
    now = time.monotonic()
    with _probes_lock:
        cached = _probes.get(engine)
        if cached is not None and now - cached[0] < PROBE_SECONDS:
            return cached[1]
    problem = _probe(engine)
    with _probes_lock:
        _probes[engine] = (now, problem)
    return problem


def _probe(engine: str) -> str | None:
    name = os.path.basename(engine)
    try:
        done = subprocess.run(
            [engine, "info"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{name}: info did not answer in {_PROBE_TIMEOUT:g} s"
    except OSError as err:
        return f"{name}: {err.strerror or err}"
    if done.returncode == 0:
        return None
    said = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    reason = said[0][:200] if said else f"info exited with status {done.returncode}"
    return f"{name}: {reason[:1].lower()}{reason[1:]}"


def image_refusal(image: str, setting: str) -> str | None:
    """The sentence that refuses a job with ``image`` at submit, or None when it can run."""
    problem = engine_problem(setting)
    if problem is None:
        return None
    return (
        f"image {image!r} needs podman or docker with a running engine on the workers; "
        f"none answers here ({problem})"
    )


def container_env(env: Mapping[str, str], request: Mapping[str, Any], attempt_dir: Path) -> dict[str, str]:  # fmt: skip
    """The variables the job gets inside the image: what the job, the tracking and the
    supervisor set, not the worker's own (its PATH or HOME mean nothing in the image)."""
    base = worker_environment()
    named = {*(request.get("env") or {}), *(request.get("secret_env") or {})}
    inside = {k: v for k, v in env.items() if k in named or base.get(k) != v}
    # The progress pipe is a descriptor of this host; the engine does not pass it in.
    inside.pop(PROGRESS_FD_ENV, None)
    gpus = list(request.get("gpu_ids") or [])
    # The engine shows the container its GPUs only, numbered from 0.
    inside["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(gpus)))
    inside["PYTHONUNBUFFERED"] = "1"
    # Of the host's import path only what is mounted: the job's modules, then this package.
    mounted = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p.startswith(str(attempt_dir))]  # fmt: skip
    inside["PYTHONPATH"] = os.pathsep.join([*mounted, str(package_dir().parent)])
    return inside


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """``NAME=value`` lines, readable by this user only (they hold the job's secrets)."""
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise ContainerUnavailable(
                f"variable {name} holds a line break, which a container's --env-file "
                "cannot carry; give it without one (e.g. base64-encoded)"
            )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(f"{name}={value}\n" for name, value in env.items())
    os.chmod(path, 0o600)  # a file left by an earlier try of the same attempt


def package_dir() -> Path:
    """This package's folder, which the image gets read-only."""
    return Path(__file__).resolve().parent.parent


def command_line(
    engine: str, request: Mapping[str, Any], attempt_dir: Path, cwd: str, env_file: Path
) -> list[str]:
    """``<engine> run …`` for the attempt whose files are in ``attempt_dir``."""
    folder = str(attempt_dir)
    argv = [engine, "run", "--rm", "--init", "--name", attempt_dir.name, "--network", "host"]
    shared = [folder]
    for extra in (request.get("workdir"), request.get("checkpoint_dir")):
        if extra and os.path.isdir(extra) and not _inside(extra, shared):
            shared.append(str(extra))
    for path in shared:
        argv += ["-v", f"{path}:{path}"]
    argv += ["-v", f"{package_dir()}:{package_dir()}:ro"]
    argv += ["-w", cwd, "--env-file", str(env_file)]
    if os.path.basename(engine) == "docker":
        # Rootful docker runs as root otherwise: the job's files must stay the worker's user's.
        argv += ["--user", f"{os.getuid()}:{os.getgid()}"]
    gpus = [str(g) for g in request.get("gpu_ids") or []]
    if gpus and os.path.basename(engine) == "docker":
        argv += ["--gpus", f'"device={",".join(gpus)}"']
    elif gpus:
        for gpu in gpus:
            argv += ["--device", f"nvidia.com/gpu={gpu}"]
    return [*argv, str(request["image"]), "python", "-c", FRESH_START, folder]


def _inside(path: str, folders: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, os.path.realpath(f)]) == os.path.realpath(f) for f in folders)  # fmt: skip


def start_container(
    attempt_dir: Path, env: dict[str, str], cwd: str, request: Mapping[str, Any]
) -> ContainerProcess:
    """Start the attempt's job in its image: the engine's client leads a process group of
    its own, its stdout and stderr on one pipe (``.stdout``)."""
    setting = str(request.get("container_engine") or "auto")
    engine = find_engine(setting)
    if engine is None:
        raise ContainerUnavailable(
            f"image {request['image']!r} needs podman or docker on the worker "
            f"({engine_problem(setting)})"
        )
    env_file = attempt_dir / ENV_FILE
    write_env_file(env_file, container_env(env, request, attempt_dir))
    process = ContainerProcess(
        command_line(engine, request, attempt_dir, cwd, env_file),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # The client's own settings (DOCKER_HOST, XDG_RUNTIME_DIR), not the job's secrets.
        env=worker_environment(),
        cwd=cwd,
        start_new_session=True,
    )
    process.engine, process.container = engine, attempt_dir.name
    widen_pipe(process.stdout.fileno())  # type: ignore[union-attr]
    return process
