"""The orchestrator's end of the tracking process: start it, send it operations, read what
it answers, and notice when it ends.

Operations are built by a writer thread (building one may read a job's log from the store)
and written in the order they were sent; each is numbered and stays pending until the
process acknowledges it. If the process ends unexpectedly, the jobs of the operations it
had not carried out are reported (``on_lost``) and a new process is started.
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, TypedDict

log = logging.getLogger(__name__)

Build = Callable[[], dict[str, Any]]
# A process that ends this soon after it started is not started again at once.
RESTART_AFTER = 10.0
# Lines each way are written at most this often, a burst of them at once.
GATHER_EVERY = 0.02


class Setup(TypedDict):
    tracker_class: str  # "module:QualifiedName", an MlflowTracker subclass
    tracking_uri: str
    artifact_root: str | None
    ui_url: str | None
    sys_path: list[str]  # the orchestrator's, so that its tracker class imports here


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def import_class(path: str) -> Any:
    module, _, name = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


class TrackingChannel:
    def __init__(
        self,
        setup: Setup,
        on_message: Callable[[dict[str, Any]], None],
        on_lost: Callable[[list[str]], None],
        on_ended: Callable[[], None],
    ) -> None:
        """``on_lost(job ids)``: operations of these jobs will not be carried out;
        ``on_ended()``: the process ended unexpectedly (requests it had are void)."""
        self.setup = setup
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_ended = on_ended
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, str] = {}  # seq -> job id, until acknowledged
        self._outgoing: queue.Queue[tuple[int, str, Build] | None] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._started_at = 0.0
        self._last_done = time.monotonic()
        self._stopping = False
        self.ready: str | None = None  # the tracker class the process built
        self._ready = threading.Event()
        self._start_process()
        threading.Thread(target=self._write, name="trainorch-tracking-out", daemon=True).start()

    def _start_process(self) -> None:
        self._started_at = self._last_done = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_trainorch.tracking.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(self.setup) + "\n")
        process.stdin.flush()
        self._process = process
        self._reader = threading.Thread(
            target=self._read, args=(process,), name="trainorch-tracking-in", daemon=True
        )
        self._reader.start()

    def send(self, job_id: str, build: Build) -> None:
        """Queue an operation (``build()`` makes it, on the writer thread)."""
        self._outgoing.put((next(self._seq), job_id, build))

    def pending(self) -> int:
        """Operations sent and not carried out yet."""
        with self._lock:
            return len(self._pending) + self._outgoing.qsize()

    def stalled_for(self) -> float:
        """Seconds the process has had operations to carry out without finishing any
        (0 when it has none)."""
        with self._lock:
            return time.monotonic() - self._last_done if self._pending else 0.0

    def wait_ready(self, timeout: float) -> str | None:
        self._ready.wait(timeout)
        return self.ready

    def stop(self, timeout: float) -> bool:
        """Let the process carry out everything sent, then end it. False if it had to be
        killed or had ended already with operations pending."""
        self._outgoing.put(None)
        deadline = time.monotonic() + timeout
        while self._process is not None and time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        process = self._process
        if process is not None and process.poll() is None:
            log.error("the tracking process did not finish in %gs; %d operations are lost",
                      timeout, self.pending())  # fmt: skip
            process.kill()
            process.wait()
            return False
        self._reader.join(timeout)  # what it said last is handled before this returns
        return self.pending() == 0

    def _write(self) -> None:
        last_write = 0.0
        while True:
            items = [self._outgoing.get()]
            # What comes within GATHER_EVERY of the last write goes in one write: each
            # wake-up of this thread takes the GIL from the event loop.
            time.sleep(max(0.0, last_write + GATHER_EVERY - time.monotonic()))
            while True:
                try:
                    items.append(self._outgoing.get_nowait())
                except queue.Empty:
                    break
            stop = None in items
            messages = [self._build(item) for item in items if item is not None]
            sent = [message for message in messages if message is not None]
            if stop:
                self._stopping = True
                sent.append({"op": "stop"})
            if not self._write_lines(sent):
                for message in sent:
                    if "seq" in message:
                        self._lost(message["seq"])
            last_write = time.monotonic()
            if stop:
                return

    def _build(self, item: tuple[int, str, Build]) -> dict[str, Any] | None:
        seq, job_id, build = item
        try:
            message = {**build(), "seq": seq}
        except Exception:  # noqa: BLE001 - a job's data could not be read: skip it
            log.exception("could not prepare a tracking operation for job %s", job_id)
            self._on_lost([job_id] if job_id else [])
            return None
        with self._lock:
            if not self._pending:  # busy from now: a stall counts from here
                self._last_done = time.monotonic()
            self._pending[seq] = job_id
        return message

    def _write_lines(self, messages: list[dict[str, Any]]) -> bool:
        process = self._process
        if process is None or process.poll() is not None:
            return False
        try:
            assert process.stdin is not None
            process.stdin.write(
                "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in messages)
            )
            process.stdin.flush()
            if messages and messages[-1].get("op") == "stop":
                process.stdin.close()
        except (OSError, ValueError):
            return False
        return True

    def _read(self, process: subprocess.Popen[str]) -> None:
        stream: IO[str] | None = process.stdout
        assert stream is not None
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "done" in message:
                self._acknowledged(message["done"])
            elif "ready" in message:
                self.ready = message["ready"]
                self._ready.set()
            else:
                try:
                    self._on_message(message)
                except Exception:  # noqa: BLE001 - this thread must keep reading, or the
                    # process blocks writing to a full pipe and tracking stops for good
                    log.exception("could not take in what the tracking process said")
        process.wait()
        if not self._stopping:
            self._ended_unexpectedly(process.returncode)

    def _acknowledged(self, seq: int) -> None:
        with self._lock:
            self._pending.pop(seq, None)
            self._last_done = time.monotonic()

    def _lost(self, seq: int) -> None:
        with self._lock:
            job_id = self._pending.pop(seq, None)
        if job_id:
            self._on_lost([job_id])

    def _ended_unexpectedly(self, code: int | None) -> None:
        with self._lock:
            lost = sorted(set(self._pending.values()) - {""})
            self._pending.clear()
        log.error("the tracking process ended (exit code %s) with %d jobs' tracking undone",
                  code, len(lost))  # fmt: skip
        self._on_lost(lost)
        self._on_ended()
        if time.monotonic() - self._started_at >= RESTART_AFTER:
            self._start_process()
        else:
            self._process = None  # operations are reported lost from now on
