"""GPU quotas during one decision: what each user and quota group holds against its cap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .model import QueuedJob


class GpuHoldings:
    """GPUs held per user and per quota group (``QueuedJob.groups``), counted up as a
    decision places jobs; a job whose GPUs would pass a cap must wait."""

    def __init__(
        self,
        user_caps: Mapping[str, int] | None,
        user_held: Mapping[str, int] | None,
        group_caps: Mapping[str, int] | None,
        group_held: Mapping[str, int] | None,
    ) -> None:
        self.user_caps = user_caps or {}
        self.group_caps = group_caps or {}
        self.user_held = dict(user_held or {})
        self.group_held = dict(group_held or {})

    @property
    def capped(self) -> bool:
        return bool(self.user_caps or self.group_caps)

    def breach(self, job: QueuedJob, gpus: int) -> tuple[str, int, int] | None:
        """``(who, cap, held)`` of the first quota ``gpus`` more would pass, else None."""
        if not gpus:
            return None
        if job.user in self.user_caps:
            cap, held = self.user_caps[job.user], self.user_held.get(job.user, 0)
            if held + gpus > cap:
                return job.user, cap, held
        for group in job.groups:
            if group in self.group_caps:
                cap, held = self.group_caps[group], self.group_held.get(group, 0)
                if held + gpus > cap:
                    return f"group {group}", cap, held
        return None

    def add(self, job: QueuedJob, gpus: int) -> None:
        self.user_held[job.user] = self.user_held.get(job.user, 0) + gpus
        for group in job.groups:
            self.group_held[group] = self.group_held.get(group, 0) + gpus


def within_quota(
    waiting: Sequence[QueuedJob],
    user_caps: Mapping[str, int] | None = None,
    user_held: Mapping[str, int] | None = None,
    group_caps: Mapping[str, int] | None = None,
    group_held: Mapping[str, int] | None = None,
) -> list[QueuedJob]:
    """The waiting jobs, in order, that more GPUs would let start: not those a quota
    holds back (counting the ones ahead of them)."""
    holdings = GpuHoldings(user_caps, user_held, group_caps, group_held)
    if not holdings.capped:
        return list(waiting)
    chosen = []
    for job in waiting:
        gpus = job.gpus * max(1, job.nodes)
        if holdings.breach(job, gpus) is None:
            holdings.add(job, gpus)
            chosen.append(job)
    return chosen
