"""Checkpoints from job code: ``save(state)``, ``load()``, ``should_stop()``.

Every job gets ``TRAINORCH_CHECKPOINT_DIR``, a folder of its own that outlives its attempts:
a job that was preempted, timed out or failed and runs again finds there what it saved.
``save`` writes atomically (a crash mid-write leaves the previous checkpoint) and tells the
orchestrator, which preempts the jobs that would lose the least work. ``should_stop()``
turns SIGTERM (preemption, cancel, timeout) from an immediate exit into a request the
training loop answers by saving and returning within the grace period::

    from jupyter_trainorch import checkpoint

    state = checkpoint.load(default={"epoch": 0})
    for epoch in range(state["epoch"], 100):
        train_one_epoch()
        state["epoch"] = epoch + 1
        checkpoint.save(state)
        if checkpoint.should_stop():
            break

Outside a job the same code runs in the kernel, saving to a temporary folder of the process.
Standard library only: it is imported inside every job's process.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .runner.protocol import CHECKPOINT_DIR_ENV, PROGRESS_FD_ENV

__all__ = ["directory", "load", "save", "should_stop"]

DEFAULT_NAME = "checkpoint.pkl"

_stop = threading.Event()
_listening = False
_local: Path | None = None
_lock = threading.Lock()


def directory() -> Path:
    """The job's checkpoint folder (created if missing)."""
    global _local
    configured = os.environ.get(CHECKPOINT_DIR_ENV)
    if configured:
        path = Path(configured)
    else:
        if _local is None:
            _local = Path(tempfile.mkdtemp(prefix="trainorch-checkpoint-"))
        path = _local
    path.mkdir(parents=True, exist_ok=True)
    return path


def _checked_name(name: str) -> str:
    if not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"checkpoint name must be a plain file name, not {name!r}")
    return name


def save(state: Any, name: str = DEFAULT_NAME) -> Path:
    """Pickle ``state`` into the checkpoint folder, replacing the last one at once."""
    path = directory() / _checked_name(name)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".saving-")
    try:
        with os.fdopen(handle, "wb") as file:
            pickle.dump(state, file, protocol=pickle.HIGHEST_PROTOCOL)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _report(time.time())
    return path


def load(default: Any = None, name: str = DEFAULT_NAME) -> Any:
    """What the last ``save`` stored, or ``default`` when nothing was saved yet."""
    path = directory() / _checked_name(name)
    try:
        with path.open("rb") as file:
            return pickle.load(file)
    except FileNotFoundError:
        return default


def should_stop() -> bool:
    """True once the job was asked to stop (SIGTERM: preempted, cancelled or timed out).

    The first call makes SIGTERM a request instead of an exit; from then on the job must
    poll this and return in time, or it is killed when the grace period ends.
    """
    global _listening
    if not _listening and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda _signum, _frame: _stop.set())
        _listening = True
    return _stop.is_set()


def _report(saved_at: float) -> None:
    """Tell the supervisor (through the progress pipe) that a checkpoint was saved."""
    fd = os.environ.get(PROGRESS_FD_ENV)
    if not fd:
        return
    with _lock:
        try:
            os.write(int(fd), (json.dumps({"checkpoint": saved_at}) + "\n").encode())
        except OSError:
            pass  # the supervisor is gone; the job is being stopped anyway
