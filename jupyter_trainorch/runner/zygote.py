"""The zygote: a warm Python process per worker that forks job processes on request.

A fresh interpreter per attempt costs tens of milliseconds before the job's first line
(the interpreter, ``site``, our child module's imports). The zygote pays that once: it
imports what ``runner.child`` needs, then only forks. The worker side is ``runner.launch``,
which starts it as ``python -m jupyter_trainorch.runner.zygote FD``, FD being its end of a
``SOCK_SEQPACKET`` socket pair with the worker:

- the worker sends ``spawn`` with three descriptors: a stream socket of the attempt's own,
  the write ends of the job's output pipe and of its progress pipe;
- the zygote forks. The parent answers ``{"pid": N}`` on the attempt's socket, watches the
  child through a pidfd and, once it has reaped it, sends ``{"exit": code}`` (with
  ``Popen.returncode``'s meaning) and closes its copy of the socket;
- the child leads a process group of its own, closes every descriptor of the zygote, then
  reads the job's argv, environment and working directory from the attempt's socket. Only
  the child ever receives them: no job's secrets pass through the zygote, so no later job
  can find them in memory it inherits. It then leaves the zygote's loop and runs
  ``runner.child.main`` as a fresh process would. It ends as the interpreter's shutdown
  would for what the job made (its threads joined, ``atexit`` handlers run, its garbage
  collected, so files it left open are flushed, standard streams flushed), then leaves with
  ``os._exit``: the full shutdown also tears down the heap inherited from the zygote, which
  writes to every inherited page and so copies each; that alone cost a trivial job about
  20 ms of CPU, more than a fresh interpreter's start. Objects still referenced from a
  module at exit are not finalized, which Python does not promise either.

The zygote freezes its objects (``gc.freeze``) before it forks: the job's garbage collections
then leave the inherited objects alone and copy none of their pages.

When the worker's end closes (the worker exited or was killed) the zygote kills its
children's groups and exits, as a child started directly dies with its worker.

Single-threaded and without CUDA: only the standard library and the modules a job's process
loads before its first line are imported here, and no thread is started, so a fork copies a
consistent process; a job's CUDA_VISIBLE_DEVICES is applied in the child, like the rest of its
environment.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from typing import NoReturn

# What a job's process loads before (or soon after) its first line, loaded once here.
import cloudpickle  # noqa: F401 - a notebook cell's captured variables

import jupyter_trainorch.checkpoint  # noqa: F401
import jupyter_trainorch.package  # noqa: F401 - reads the captured variables
import jupyter_trainorch.runner.mlflow_run  # noqa: F401 - a job started without its run id
import jupyter_trainorch.runner.versions  # noqa: F401 - compares the kernel's versions
from jupyter_trainorch.runner import child
from jupyter_trainorch.runner.names import PROGRESS_FD_ENV, ZYGOTE_UNSUPPORTED

READY = b"ready"
SPAWN = b"spawn"
SPAWN_FDS = 3  # the attempt's socket, the output pipe, the progress pipe


def _import_path_without_own_entries() -> list[str]:
    """``sys.path`` less this process's own entries (its script folder and its PYTHONPATH),
    which each job replaces with its own, as a fresh interpreter in its environment would."""
    own = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    return [p for p in sys.path[1:] if p not in own]


BASE_IMPORT_PATH = _import_path_without_own_entries()


class ForkedJob:
    """What the child takes out of the zygote's loop: its socket and the pipes' write ends."""

    def __init__(
        self, channel: socket.socket, output_fd: int, progress_fd: int, zygote: int
    ) -> None:
        self.channel, self.output_fd, self.progress_fd = channel, output_fd, progress_fd
        self.zygote = zygote


class _Child:
    """A forked job process, as the zygote watches it until it has reaped it."""

    def __init__(self, pid: int, pidfd: int, channel: socket.socket) -> None:
        self.pid, self.pidfd, self.channel = pid, pidfd, channel

    def close(self) -> None:
        os.close(self.pidfd)
        self.channel.close()


def _tell(channel: socket.socket, message: dict[str, int]) -> None:
    try:
        channel.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass  # its supervisor is gone; the child ends with its group all the same


def serve(control: socket.socket) -> ForkedJob | None:
    """Fork jobs until the worker's end closes. Returns None in the zygote at the end, and
    a ``ForkedJob`` in each child, which runs it once the loop's frames are gone."""
    zygote = os.getpid()
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    children: dict[int, _Child] = {}
    control.sendall(READY)
    while True:
        for key, _ in selector.select():
            if key.data is not None:
                _reap(selector, children, key.data)
                continue
            message, fds, _flags, _ = socket.recv_fds(control, 64, SPAWN_FDS)
            if not message:  # the worker is gone: so are its jobs
                for running in children.values():
                    _kill_group(running.pid)
                return None
            if message != SPAWN or len(fds) != SPAWN_FDS or threading.active_count() != 1:
                # Not a request this zygote can serve safely: the worker sees no pid, falls back.
                for fd in fds:
                    os.close(fd)
                continue
            channel = socket.socket(fileno=fds[0])
            try:
                pid = os.fork()
            except OSError:  # out of processes or memory: the worker sees no pid and falls back
                channel.close()
                os.close(fds[1])
                os.close(fds[2])
                continue
            if pid == 0:
                os.setpgid(0, 0)
                selector.close()
                control.close()
                for running in children.values():
                    running.close()
                return ForkedJob(channel, fds[1], fds[2], zygote)
            os.close(fds[1])
            os.close(fds[2])
            try:
                os.setpgid(pid, pid)  # also here, so that the group exists when the pid is told
            except OSError:
                pass  # the child did it first, or has already ended
            child_record = _Child(pid, os.pidfd_open(pid), channel)
            children[child_record.pidfd] = child_record
            selector.register(child_record.pidfd, selectors.EVENT_READ, child_record)
            _tell(channel, {"pid": pid})


def _reap(selector: selectors.BaseSelector, children: dict[int, _Child], ended: _Child) -> None:
    _, status = os.waitpid(ended.pid, 0)
    _tell(ended.channel, {"exit": os.waitstatus_to_exitcode(status)})
    selector.unregister(ended.pidfd)
    del children[ended.pidfd]
    ended.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _receive_spec(channel: socket.socket) -> dict:
    received = b""
    while not received.endswith(b"\n"):
        chunk = channel.recv(1 << 16)
        if not chunk:
            raise SystemExit(0)  # the supervisor gave up on this start: run nothing
        received += chunk
    return json.loads(received)


def become_job(job: ForkedJob) -> list[str]:
    """In the forked child: take on the job's descriptors, environment, working directory
    and import path; return the argv for ``runner.child.main``."""
    spec = _receive_spec(job.channel)
    job.channel.close()  # the job's code must not be able to speak for the zygote
    os.dup2(job.output_fd, 1)
    os.dup2(job.output_fd, 2)  # one pipe keeps stdout and stderr lines in order
    os.close(job.output_fd)
    os.set_inheritable(job.progress_fd, True)  # a command job's shell writes to it too
    env = {**spec["env"], PROGRESS_FD_ENV: str(job.progress_fd)}
    os.environ.clear()
    os.environ.update(env)
    os.chdir(spec["cwd"])
    time.tzset()
    own = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [*own, *BASE_IMPORT_PATH]
    importlib.invalidate_caches()
    sys.argv = [child.__file__, *spec["argv"]]
    return sys.argv


def main(argv: list[str]) -> int:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError) as err:
        print(f"trainorch zygote: no pidfds here ({err}); jobs start fresh", file=sys.stderr)
        return ZYGOTE_UNSUPPORTED
    gc.freeze()
    job = serve(socket.socket(fileno=int(argv[1])))
    if job is None:
        return 0
    child_argv = become_job(job)
    try:
        code = child.main(child_argv, parent=job.zygote)
    except SystemExit as stop:  # raised outside the job's code: a signal while it ended
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    end_forked_job(code)


def end_forked_job(code: int) -> NoReturn:
    """Leave the forked job process as described above: what the job made is finalized,
    the heap inherited from the zygote is not touched."""
    # What the interpreter's shutdown calls first: it stops thread pools (their workers
    # are not daemons and wait for work) and joins every non-daemon thread.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    atexit._clear()  # the handlers hold the job's globals: let them go with the rest
    gc.collect()  # the job's own cycles only: the inherited objects are frozen
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # replaced by the job, or its reader is gone
    os._exit(code & 0xFF)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
