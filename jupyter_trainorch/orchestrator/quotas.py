"""Quotas an admin sets: GPUs held at once and jobs waiting at once, per user and per group.

``c.TrainOrch.gpu_quota`` and ``queue_quota`` are everyone's (0: no limit);
``c.TrainOrch.user_quotas`` (JSON: ``{"alice": {"gpus": 16, "queued": 1000}}``) overrides
them per user. ``c.TrainOrch.group_quotas`` (the same JSON, by group) limits what all members
of a group hold or have waiting together; a job counts against every quota group its owner
was in when it was submitted (``JobSpec.quota_groups``, from authentication). GPU quotas are
kept by the placement policy (a job waits, saying why); queue quotas refuse a submit, in one
sentence.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import OrchestratorConfig

MAX_QUOTA = 1_000_000


@dataclass(frozen=True)
class Quota:
    gpus: int = 0  # GPUs one user's running jobs may hold at once; 0 = no limit
    queued: int = 0  # jobs one user may have waiting at once; 0 = no limit


class QuotaExceeded(RuntimeError):
    """A submit past the user's queue quota."""


def parse_user_quotas(text: str) -> dict[str, dict[str, int]]:
    """``{"alice": {"gpus": 16, "queued": 1000}}`` (or by group); raises ValueError naming
    what is wrong."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError('a JSON object such as {"alice": {"gpus": 16, "queued": 1000}}') from None
    if not isinstance(data, dict):
        raise ValueError('a JSON object such as {"alice": {"gpus": 16, "queued": 1000}}')
    quotas = {}
    for user, limits in data.items():
        if not isinstance(limits, dict) or not set(limits) <= {"gpus", "queued"}:
            raise ValueError(f'for {user!r} an object with "gpus" and/or "queued"')
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUOTA:
                raise ValueError(f"for {user!r} a {name} limit from 0 to {MAX_QUOTA}")
        quotas[str(user)] = limits
    return quotas


class Quotas:
    def __init__(self, gpus: int, queued: int, per_user: str, per_group: str = "") -> None:
        self.default = Quota(gpus, queued)
        # A user's own entry replaces only the limits it names.
        self.users = {
            user: Quota(**{"gpus": gpus, "queued": queued, **limits})
            for user, limits in parse_user_quotas(per_user).items()
        }
        self.groups = {
            group: Quota(**limits) for group, limits in parse_user_quotas(per_group).items()
        }

    @classmethod
    def from_config(cls, config: OrchestratorConfig) -> Quotas:
        return cls(config.gpu_quota, config.queue_quota, config.user_quotas, config.group_quotas)

    def of(self, user: str) -> Quota:
        return self.users.get(user, self.default)

    def quota_groups(self, groups: Iterable[str]) -> list[str]:
        """Those of a user's ``groups`` that have a quota (what a job of theirs counts on)."""
        return sorted(group for group in set(groups) if group in self.groups)

    def gpu_caps(self, users: set[str]) -> dict[str, int]:
        """The GPU limit of each of ``users`` that has one."""
        return {user: cap for user in users if (cap := self.of(user).gpus)}

    def group_gpu_caps(self) -> dict[str, int]:
        """The GPU limit of each group that has one."""
        return {group: quota.gpus for group, quota in self.groups.items() if quota.gpus}
