"""``progress()``: report training progress from job code.

Cheap to import (standard library only): it runs inside every job's child process.
Outside a job it does nothing, so the same code runs unchanged in the kernel.
"""

from __future__ import annotations

import json
import os
import threading

from .runner.names import PROGRESS_FD_ENV

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: job processes import this
if TYPE_CHECKING:
    from typing import Any


_lock = threading.Lock()


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return float(value)  # numpy / torch scalars
    except (TypeError, ValueError):
        return str(value)


def progress(
    step: float, total: float | None = None, message: str | None = None, **metrics: Any
) -> None:
    """Report that ``step`` of ``total`` is done, with optional metrics (``loss=0.3``)."""
    fd = os.environ.get(PROGRESS_FD_ENV)
    if not fd:
        return
    record = {
        "step": _json_safe(step),
        "total": _json_safe(total),
        "message": None if message is None else str(message),
        "metrics": {str(k): _json_safe(v) for k, v in metrics.items()},
    }
    data = (json.dumps(record) + "\n").encode()
    with _lock:
        try:
            os.write(int(fd), data)
        except OSError:
            pass  # the supervisor is gone; the job is being stopped anyway
