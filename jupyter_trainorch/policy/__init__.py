"""The scheduling policy: pure functions of the queue, the workers and a clock passed in.

``placement``: which queued job starts now, where, and why the others wait.
``forecast``: when each waiting job is expected to start, replaying ``placement``.
"""

from .placement import (
    Placement,
    QueuedJob,
    WorkerView,
    fit_error,
    plan,
    queue_key,
    wait_reasons,
)

__all__ = ["Placement", "QueuedJob", "WorkerView", "fit_error", "plan", "queue_key", "wait_reasons"]
