"""Durable state: jobs, attempts, logs and the orchestrator lease."""

from .models import (
    ACTIVE_STATES,
    ALL_STATES,
    CANCELLED,
    FAILED,
    PENDING,
    PREEMPTED,
    QUEUED,
    RETRYING,
    RUNNING,
    STARTING,
    SUCCEEDED,
    TERMINAL_STATES,
    AttemptRecord,
    DuplicateSubmission,
    JobRecord,
    Lease,
    LogLine,
)
from .sql import JobStore

__all__ = [
    "ACTIVE_STATES",
    "ALL_STATES",
    "CANCELLED",
    "FAILED",
    "PENDING",
    "PREEMPTED",
    "QUEUED",
    "RETRYING",
    "RUNNING",
    "STARTING",
    "SUCCEEDED",
    "TERMINAL_STATES",
    "AttemptRecord",
    "DuplicateSubmission",
    "JobRecord",
    "JobStore",
    "Lease",
    "LogLine",
]
