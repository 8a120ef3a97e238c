"""Starting and stopping the job's process of an attempt, on its worker.

The job's process is forked by the worker's zygote (``runner.zygote``) when it is ready:
a few milliseconds instead of a fresh interpreter's tens. A fresh interpreter runs the job
instead while the zygote starts or after it died, when it does not answer, when the zygote
is turned off (``TRAINORCH_ZYGOTE=off`` in the worker's environment), and for a job whose
environment changes what an interpreter reads only when it starts (``PYTHON*`` settings,
the dynamic linker's ``LD_*``, the locale): a forked process cannot take those on.
A job with an ``image`` runs in that container (``runner.containers``), never forked.
Either way the job's process leads a process group of its own, which is how it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..environ import ZYGOTE_SWITCH, without_service_settings
from .zygote_client import ForkedProcess, ZygoteUnavailable, ready_zygote, widen_pipe

# How a fresh interpreter runs the job: ``-c`` spares the ``runpy`` that ``-m`` loads. The
# '' that ``-c`` puts first on the import path goes: ``child.main`` puts the job's working
# folder there instead, as ``-m`` did.
FRESH_START = (
    "import sys; del sys.path[0]; "
    "from jupyter_trainorch.runner.child import main; sys.exit(main(sys.argv))"
)
# Read by an interpreter (or the C library) when its process starts, never after; the zygote
# applies PYTHONPATH to the import path itself, and every job gets PYTHONUNBUFFERED=1.
_READ_AT_START_PREFIXES = ("PYTHON", "LD_", "LC_", "MALLOC_", "GLIBC_")
_READ_AT_START = frozenset({"LANG", "LANGUAGE"})
_APPLIED_AFTER_FORK = frozenset({"PYTHONPATH", "PYTHONUNBUFFERED"})


class FreshProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A job process started as a new interpreter; its exit status is always known."""

    lost: str | None = None


JobProcess = FreshProcess | ForkedProcess


def worker_environment() -> dict[str, str]:
    """What every job's environment starts from: the worker's, less the service's own
    settings, with the worker's interpreter first on PATH."""
    env = without_service_settings()
    # `python` in a command job is the worker's own interpreter (its virtual environment,
    # activated or not), as it is for the job's Python cells.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_time_difference(env: dict[str, str], zygote_env: dict[str, str]) -> str | None:
    """The first variable read only at process start that ``env`` sets otherwise than the
    zygote's environment did; None when a process forked from the zygote fits ``env``."""
    for name in sorted(set(env) | set(zygote_env)):
        read_at_start = name.startswith(_READ_AT_START_PREFIXES) or name in _READ_AT_START
        if (
            read_at_start
            and name not in _APPLIED_AFTER_FORK
            and env.get(name) != zygote_env.get(name)
        ):
            return name
    return None


def zygote_allowed() -> bool:
    """Whether this worker may fork jobs from a zygote: not turned off, and pidfds exist."""
    switched_off = os.environ.get(ZYGOTE_SWITCH, "").lower() in ("off", "0", "false", "no")
    return not switched_off and hasattr(os, "pidfd_open")


def start_job_process(
    attempt_dir: Path, env: dict[str, str], cwd: str, progress_fd: int,
    request: Mapping[str, Any] | None = None,
) -> JobProcess:  # fmt: skip
    """Start ``runner.child`` for the attempt in ``attempt_dir`` in a process group of its
    own, stdout and stderr on one pipe (``.stdout``), ``progress_fd`` passed to it; in the
    container image the attempt's ``request`` names, if any."""
    if request is not None and request.get("image"):
        from .containers import start_container  # only jobs with an image load it

        return start_container(attempt_dir, env, cwd, request)
    if zygote_allowed():
        zygote = ready_zygote(worker_environment(), attempt_dir.parent / "zygote.log")
        if zygote is not None and start_time_difference(env, zygote.env) is None:
            try:
                return zygote.spawn([str(attempt_dir)], env, cwd, progress_fd)
            except ZygoteUnavailable:
                pass  # it is replaced at a later attempt; this one starts fresh
    process = FreshProcess(
        [sys.executable, "-c", FRESH_START, str(attempt_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        # One pipe keeps stdout and stderr lines in the order the job wrote them.
        stderr=subprocess.STDOUT,
        pass_fds=(progress_fd,),
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    widen_pipe(process.stdout.fileno())  # type: ignore[union-attr]
    return process


def stop_group(proc: JobProcess, grace: float) -> None:
    """SIGTERM to the job's process group, SIGKILL after ``grace`` seconds; returns once
    the job's process has ended."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    if hasattr(proc, "kill_container"):
        proc.kill_container()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
