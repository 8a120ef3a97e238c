"""Job states (DESIGN.md): the one list, which the OpenAPI ``JobState`` enum and the
panel's generated types come from.

``pending`` (waiting on dependencies) → ``queued`` → ``starting`` → ``running`` →
``succeeded`` | ``failed`` | ``cancelled``; ``retrying`` (backoff) and ``preempted`` go
back to ``queued``.
"""

from __future__ import annotations

PENDING = "pending"
QUEUED = "queued"
STARTING = "starting"
RUNNING = "running"
RETRYING = "retrying"
PREEMPTED = "preempted"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

ALL_STATES = (PENDING, QUEUED, STARTING, RUNNING, RETRYING, PREEMPTED, SUCCEEDED, FAILED, CANCELLED)
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
# Holding a worker: an attempt is starting or running.
ACTIVE_STATES = frozenset({STARTING, RUNNING})
# Not yet holding a worker, and not ended.
WAITING_STATES = frozenset({PENDING, QUEUED, RETRYING, PREEMPTED})
