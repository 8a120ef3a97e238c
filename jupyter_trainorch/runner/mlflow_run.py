"""The attempt's MLflow run id in the job's process, when none was reserved ahead.

Usually the orchestrator dispatches an attempt with a run made in advance: its id is in
the environment (``MLFLOW_RUN_ID``) from the first line and nothing here runs. Under a
burst of starts none may be left; then the run is made while the process starts and its
id arrives in the attempt's folder (``RUN_ID_FILE``) a moment later. A cell only needs it
once it uses MLflow, so it does not wait at its start: a thread puts the id in the
environment as soon as it arrives, and importing ``mlflow`` before that waits for it
(bounded). A command waits before it starts, since its processes read the environment
only then. Imported by the job's process when it needs it: nothing but ``names``.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from .names import MLFLOW_RUN_ID_ENV, RUN_ID_FILE

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

# How long ``import mlflow`` (or a command) waits for the run before going on untracked.
WAIT = 30.0
# How long the id is watched for: a run made late still gets what the job logs after.
WATCH = 600.0
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


def wait_for_run_id(attempt_dir: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not _arrived(attempt_dir):
        if time.monotonic() > deadline:
            print(NOT_TRACKED, file=sys.stderr)
            return
        time.sleep(0.005)


class _WaitBeforeMlflow:
    """A meta path finder that finds nothing: the first import of ``mlflow`` waits until
    the run id has arrived. It stays in place (removing a finder while an import walks
    ``sys.meta_path`` would skip the next one) and does nothing once the id is there."""

    def __init__(self, arrived: threading.Event) -> None:
        self.arrived = arrived
        self.warned = False

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name.partition(".")[0] == "mlflow" and not self.arrived.is_set():
            if not self.arrived.wait(WAIT) and not self.warned:
                self.warned = True
                print(NOT_TRACKED, file=sys.stderr, flush=True)
        return None


def await_run_id(attempt_dir: str, kind: str) -> None:
    """Have the run id in the environment by the time the job's code needs it."""
    if kind == "command":
        wait_for_run_id(attempt_dir)
        return
    arrived = threading.Event()

    def watch() -> None:
        started = time.monotonic()
        while not _arrived(attempt_dir):
            waited = time.monotonic() - started
            if waited > WATCH:
                return
            time.sleep(0.005 if waited < 1 else 0.05)
        arrived.set()

    sys.meta_path.insert(0, _WaitBeforeMlflow(arrived))  # type: ignore[arg-type]
    threading.Thread(target=watch, name="trainorch-mlflow-run-id", daemon=True).start()
