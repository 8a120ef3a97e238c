"""The attempt's MLflow run id in the job's process, when none was reserved ahead.

Usually the orchestrator dispatches an attempt with a run made in advance: its id is in
the environment (``MLFLOW_RUN_ID``) from the first line and nothing here runs. Under a
burst of starts none may be left; then the run is made after the process started and its
id arrives in the attempt's folder (``RUN_ID_FILE``) later. A cell only needs it once it
uses MLflow, so it does not wait at its start: the child's watcher thread puts the id in
the environment once it arrives (``RunIdWatch``), and importing ``mlflow`` before that
waits for it (bounded). A command waits before it starts, since its processes read the
environment only then. Whenever the process starts waiting it says so on the progress
pipe, and the orchestrator has its run made next. Imports nothing but ``names``: the
zygote loads it ahead, a fresh job's process only when it needs it.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from .names import MLFLOW_RUN_ID_ENV, PROGRESS_FD_ENV, RUN_ID_FILE, WANTS_RUN_ID

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

# How long ``import mlflow`` (or a command) waits for the run before going on untracked.
WAIT = 30.0
# How long the id is watched for: a run made late still gets what the job logs after.
WATCH = 600.0
# The watch's first look, and its longest pause between looks.
FIRST_LOOK, LONGEST_LOOK = 0.25, 1.0
NOT_TRACKED = "trainorch: no MLflow run arrived; this attempt is not tracked"


def _arrived(attempt_dir: str) -> bool:
    """Whether the id is there; puts it in the environment if so ("" means untracked)."""
    try:
        with open(os.path.join(attempt_dir, RUN_ID_FILE), encoding="utf-8") as handle:
            run_id = handle.read().strip()
    except FileNotFoundError:
        return False
    if run_id:
        # MLflow deletes MLFLOW_RUN_ID once it has read it; ours stays.
        os.environ["MLFLOW_RUN_ID"] = os.environ[MLFLOW_RUN_ID_ENV] = run_id
    return True


def _ask_for_run_id() -> None:
    """Tell the orchestrator (through the supervisor) that this process waits for its run."""
    fd = os.environ.get(PROGRESS_FD_ENV)
    if fd:
        try:
            os.write(int(fd), b'{"%s": true}\n' % WANTS_RUN_ID.encode())
        except (OSError, ValueError):  # no pipe: the run still comes, in turn
            pass


def wait_for_run_id(attempt_dir: str, timeout: float = WAIT) -> None:
    if not _arrived(attempt_dir):
        _ask_for_run_id()
    deadline = time.monotonic() + timeout
    while not _arrived(attempt_dir):
        if time.monotonic() > deadline:
            print(NOT_TRACKED, file=sys.stderr, flush=True)
            return
        time.sleep(0.005)


class _WaitBeforeMlflow:
    """A meta path finder that finds nothing: the first import of ``mlflow`` waits until
    the run id has arrived (once: later imports go on). It stays in place (removing a
    finder while an import walks ``sys.meta_path`` would skip the next one)."""

    def __init__(self, attempt_dir: str, arrived: threading.Event) -> None:
        self.attempt_dir = attempt_dir
        self.arrived = arrived
        self.waited = False

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name.partition(".")[0] == "mlflow" and not self.waited and not self.arrived.is_set():
            self.waited = True
            wait_for_run_id(self.attempt_dir)
        return None


class RunIdWatch:
    """Looks for the run id for the child's watcher thread (``child._watch``): first after
    a quarter second, then less and less often. Under a burst of starts, when runs are
    made late, most jobs end before their first look, which would cost a forked job half
    a millisecond of CPU (``import mlflow`` looks for itself, every few milliseconds,
    while it waits). Called, it looks if a look is due, and says in how many seconds the
    next one is (None: no more)."""

    def __init__(self, attempt_dir: str, arrived: threading.Event) -> None:
        self.attempt_dir = attempt_dir
        self.arrived = arrived
        self.due = time.monotonic() + FIRST_LOOK
        self.pause = 2 * FIRST_LOOK
        self.deadline = self.due + WATCH

    def __call__(self) -> float | None:
        now = time.monotonic()
        if now >= self.due:
            if self.arrived.is_set() or _arrived(self.attempt_dir):
                self.arrived.set()
                return None
            if now > self.deadline:
                return None
            self.due, self.pause = now + self.pause, min(2 * self.pause, LONGEST_LOOK)
        return self.due - now


def watch_for_run_id(attempt_dir: str) -> RunIdWatch:
    """A cell's process: ``import mlflow`` waits for the run id, and the returned watch
    puts it in the environment once it arrives."""
    arrived = threading.Event()
    sys.meta_path.insert(0, _WaitBeforeMlflow(attempt_dir, arrived))  # type: ignore[arg-type]
    return RunIdWatch(attempt_dir, arrived)
