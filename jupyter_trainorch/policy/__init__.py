"""The scheduling policy: pure functions of the queue, the workers and a clock passed in.

``decide``: one decision (placements with backfill, preemptions, reasons), built from
``placement`` (which queued job starts now, where, and why the others wait) and
``preemption`` (which running jobs an urgent one may stop).
``fairshare``: the order of the queue inside a class. ``forecast``: when each waiting job
is expected to start, replaying ``placement``. ``simulate``: a trace on a virtual clock.
"""

from .decide import Decision, decide
from .model import host_of
from .placement import (
    Placement,
    QueuedJob,
    RunningJob,
    WorkerView,
    fit_error,
    plan,
    queue_key,
    wait_reasons,
)
from .preemption import Preemption, PreemptionRules

__all__ = [
    "Decision",
    "Placement",
    "Preemption",
    "PreemptionRules",
    "QueuedJob",
    "RunningJob",
    "WorkerView",
    "decide",
    "fit_error",
    "host_of",
    "plan",
    "queue_key",
    "wait_reasons",
]
