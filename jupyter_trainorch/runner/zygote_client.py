"""The worker's side of its zygote (``runner.zygote``): start it, ask it for job processes.

One zygote per worker process, started by the first supervisor that wants one and kept in
this module for the tasks that follow. The worker holds one end of a socket pair whose other
end is the zygote's lifeline: when the worker exits, however it ends, the zygote and its jobs
end too; a closing worker also stops it through a worker plugin. A zygote that died is
started again by a later attempt (not more often than ``RESTART_INTERVAL``); until it is
ready, attempts start a fresh interpreter (``runner.launch``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..processes import group_alive
from .names import ZYGOTE_UNSUPPORTED

log = logging.getLogger(__name__)

# Seconds a zygote may take to answer a spawn with the child's pid; past this it is taken
# for hung, killed (its jobs with it) and replaced.
SPAWN_TIMEOUT = 10.0
RESTART_INTERVAL = 5.0  # a zygote that keeps dying costs one start per interval
PLUGIN_NAME = "trainorch-zygote"


class ZygoteUnavailable(RuntimeError):
    """The zygote could not start this job's process; start a fresh interpreter instead."""


class ForkedProcess:
    """A job process forked by the zygote, with as much of ``subprocess.Popen`` as the
    supervisor uses. Its exit status comes from the zygote, which alone can reap it."""

    def __init__(self, pid: int, channel: socket.socket, output_fd: int) -> None:
        self.pid = pid
        self.stdout = os.fdopen(output_fd, "rb", buffering=0)
        self.returncode: int | None = None
        self.lost: str | None = None  # why its exit status will never be known
        self._channel = channel
        self._received = b""

    def poll(self) -> int | None:
        if self.returncode is None:
            self._receive(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            self._receive(left)
        return self.returncode

    def _receive(self, timeout: float | None) -> None:
        if not select.select([self._channel], [], [], timeout)[0]:
            return
        chunk = self._channel.recv(4096)
        if not chunk:
            self._zygote_died()
            return
        self._received += chunk
        while b"\n" in self._received:
            line, self._received = self._received.split(b"\n", 1)
            message = json.loads(line)
            if "exit" in message:
                self.returncode = int(message["exit"])
                self._channel.close()

    def _zygote_died(self) -> None:
        # Its child sees its parent go and kills its own group; this makes sure of it, so
        # that nothing of the job outlives the attempt that is reported lost.
        self.lost = "its process was lost: the worker's zygote, its parent, ended"
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        deadline = time.monotonic() + 5.0
        while group_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.returncode = -signal.SIGKILL
        self._channel.close()


class Zygote:
    """A running zygote, as its worker knows it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter_trainorch.runner.zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=env,
                cwd="/",
                # No signal sent to the worker's group (a terminal's Ctrl-C) reaches it.
                start_new_session=True,
            )
        theirs.close()
        self._send_lock = threading.Lock()
        self.ready = False

    def healthy(self) -> bool:
        """Started, answered that it is ready, and still running."""
        if self.process.poll() is not None:
            return False
        if not self.ready:
            try:
                self.ready = self._control.recv(16, socket.MSG_DONTWAIT) == b"ready"
            except BlockingIOError:
                return False
        return self.ready

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: str, progress_fd: int
    ) -> ForkedProcess:
        """Fork a job process running ``runner.child.main`` with ``argv``, ``env`` and
        ``cwd``; its stdout and stderr go to a new pipe, ``progress_fd`` is given to it."""
        output_read, output_write = os.pipe()
        widen_pipe(output_read)
        channel, theirs = socket.socketpair()
        try:
            with self._send_lock:
                socket.send_fds(
                    self._control, [b"spawn"], [theirs.fileno(), output_write, progress_fd]
                )
            pid = self._await_pid(channel)
        except (OSError, ZygoteUnavailable, ValueError) as err:
            os.close(output_read)
            channel.close()  # a child forked all the same reads no spec and exits
            raise ZygoteUnavailable(str(err)) from None
        finally:
            theirs.close()
            os.close(output_write)
        # Only now does the child learn what to run: a start the zygote did not confirm runs
        # nothing. The child holds its end until it has read this, so a broken pipe here
        # means it is gone already, and the job can start fresh instead.
        try:
            channel.sendall(json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode() + b"\n")
        except OSError as err:
            os.close(output_read)
            channel.close()
            raise ZygoteUnavailable(f"the forked process ended before its start: {err}") from None
        return ForkedProcess(pid, channel, output_read)

    def _await_pid(self, channel: socket.socket) -> int:
        received = b""
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while b"\n" not in received:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([channel], [], [], left)[0]:
                self.stop(hung=True)
                raise ZygoteUnavailable(f"the zygote did not answer in {SPAWN_TIMEOUT:g}s")
            chunk = channel.recv(4096)
            if not chunk:
                raise ZygoteUnavailable("the zygote closed the attempt's socket")
            received += chunk
        return int(json.loads(received.split(b"\n", 1)[0])["pid"])

    def stop(self, hung: bool = False) -> None:
        """End it: closing its lifeline makes it kill its jobs' groups and exit; one that
        does not answer is killed (its jobs then end by themselves, their parent gone)."""
        self._control.close()
        if hung:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_zygote: Zygote | None = None
_last_start = float("-inf")
_unsupported = False  # a zygote found it cannot work on this host: never start another
_lock = threading.Lock()


def ready_zygote(env: dict[str, str], log_path: Path) -> Zygote | None:
    """This worker's zygote if it can fork now; else None, after starting one if none runs
    (so that the attempts that follow find it ready)."""
    global _zygote, _last_start, _unsupported
    with _lock:
        if _zygote is not None:
            if _zygote.healthy():
                return _zygote
            if _zygote.process.poll() is None:
                return None  # still importing
            code = _zygote.process.returncode
            _zygote.stop()
            _zygote = None
            if code == ZYGOTE_UNSUPPORTED:
                _unsupported = True
            else:
                log.warning("the zygote ended (code %s); attempts start fresh interpreters "
                            "until a new one is ready", code)  # fmt: skip
        if _unsupported or time.monotonic() - _last_start < RESTART_INTERVAL:
            return None
        _last_start = time.monotonic()
        _zygote = Zygote(env, log_path)
        _stop_with_worker()
        return None


def zygote_pid() -> int | None:
    """The pid of this worker's zygote while it is ready to fork (diagnostics, tests)."""
    with _lock:
        return _zygote.process.pid if _zygote is not None and _zygote.healthy() else None


def stop_zygote() -> None:
    """Stop this worker's zygote, if it has one (its jobs end with it)."""
    global _zygote
    with _lock:
        if _zygote is not None:
            _zygote.stop()
            _zygote = None


def _stop_with_worker() -> None:
    """A worker that closes while its process lives on (workers in a test's process, a
    worker restarted in place) stops its zygote too; an exiting process's closes anyway."""
    try:
        from distributed import WorkerPlugin, get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return

    class StopZygote(WorkerPlugin):  # type: ignore[misc]
        def teardown(self, worker: Any) -> None:
            stop_zygote()

    if PLUGIN_NAME not in worker.plugins:
        worker.loop.add_callback(worker.plugin_add, plugin=StopZygote(), name=PLUGIN_NAME)


# Linux lets an unprivileged process grow a pipe to /proc/sys/fs/pipe-max-size (1 MiB by
# default); the default 64 KiB stops a job printing fast whenever its reader falls behind.
JOB_PIPE_BYTES = 1 << 20


def widen_pipe(fd: int) -> None:
    """Give a job's output pipe room for bursts (best effort: the default size works)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, JOB_PIPE_BYTES)
    except (OSError, AttributeError):
        pass
