"""Who may see and do what with a job.

A job's logs, code package, outputs and metrics belong to its owner and to admins; so do
its actions (cancel, retry, priority). Everyone else sees other users' jobs only as a
queue view (enough to understand why their own job waits), or not at all when an admin
hides them. The caller always comes from authentication, never from the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..store import CANCELLED, FAILED, PENDING, QUEUED, RETRYING, TERMINAL_STATES

# What a non-owner sees of a job in the queue.
QUEUE_VIEW_FIELDS = (
    "id", "name", "user", "state", "priority", "priority_class", "resources",
    "created", "started", "ended", "terminal", "queue_position", "estimated_start",
    "estimated_end",
)  # fmt: skip
OTHERS_JOBS = ("queue", "hidden")


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False
    groups: tuple[str, ...] = ()  # from the hub (none for a single user)

    def owns(self, job_user: str) -> bool:
        return self.admin or self.name == job_user


class Forbidden(PermissionError):
    """The caller may not do this to the job (HTTP 403)."""


def require_owner(caller: Caller, job_id: str, owner: str, what: str) -> None:
    if not caller.owns(owner):
        raise Forbidden(f"job {job_id} belongs to {owner}; only its owner and admins may {what}")


def actions(caller: Caller, job: dict[str, Any]) -> list[str]:
    """What the caller may do with the job now (the panel shows just these buttons)."""
    if not caller.owns(job["user"]):
        return []
    state = job["state"]
    allowed = ["read", "rerun"]
    if state not in TERMINAL_STATES:
        allowed.append("cancel")
    if state in (FAILED, CANCELLED):
        allowed.append("retry")
    if state in (QUEUED, PENDING, RETRYING):
        allowed.append("set_priority")
    return allowed


def view(caller: Caller, job: dict[str, Any], others_jobs: str) -> dict[str, Any] | None:
    """The job as this caller may see it: whole, as a queue row, or not at all (None)."""
    if caller.owns(job["user"]):
        return {**job, "actions": actions(caller, job)}
    if others_jobs == "hidden":
        return None
    row = {key: job[key] for key in QUEUE_VIEW_FIELDS if key in job}
    return {**row, "actions": [], "restricted": True}


def visible_change(
    caller: Caller, change: dict[str, Any], others_jobs: str
) -> dict[str, Any] | None:
    """A change-feed entry as this caller may see it (others' progress and logs stay private)."""
    user = change.get("user")
    if user is None or caller.owns(user):
        return change
    if others_jobs == "hidden" or change.get("kind") != "job":
        return None
    keep = ("seq", "kind", "job_id", "time", "user", "state", "priority")
    return {key: change[key] for key in keep if key in change}
