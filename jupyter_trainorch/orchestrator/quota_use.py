"""What users and groups use of their quotas: the check a submit passes, and the view
``GET me`` and ``trainorch quota`` show."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..contract.states import WAITING_STATES
from ..store import JobStore
from .access import Caller
from .quotas import QuotaExceeded, Quotas


class QuotaUse:
    def __init__(
        self,
        quotas: Quotas,
        store: Callable[[], JobStore],
        held: Callable[[], tuple[dict[str, int], dict[str, int]]],
    ) -> None:
        self.quotas = quotas
        self.store = store
        self.held = held  # GPUs held now, by user and by quota group

    def check_submit(self, caller: Caller, key: str | None, count: int = 1) -> None:
        """Refuse (``QuotaExceeded``, one sentence) a submit of ``count`` jobs past the
        queue quota of the caller or one of their groups."""
        user = caller.name
        over = []
        limit = self.quotas.of(user).queued
        if limit and self._waiting(user) + count > limit:
            over.append((user, limit))
        groups = [
            g for g in self.quotas.quota_groups(caller.groups) if self.quotas.groups[g].queued
        ]
        if groups:
            waiting = self.store().count_in_groups(WAITING_STATES, groups)
            over += [
                (f"group {g}", self.quotas.groups[g].queued)
                for g in groups
                if waiting[g] + count > self.quotas.groups[g].queued
            ]
        if not over:
            return
        # A replayed submit returns the job it made, which was counted already.
        if key is None or self.store().find_by_idempotency_key(user, key) is None:
            who, limit = over[0]
            more = f" and {count} more would pass the {limit}" if count > 1 else f" {limit}"
            raise QuotaExceeded(
                f"{who} has{more} jobs waiting, the most the queue quota allows; "
                "submit again once some have started"
            )

    def _waiting(self, user: str) -> int:
        return self.store().count_jobs(states=WAITING_STATES, user=user)

    def view(self, caller: Caller) -> dict[str, Any]:
        """The caller's limits (None: no limit) and what they use of them now; the same for
        each of the caller's groups that has a quota."""
        quota = self.quotas.of(caller.name)
        held, group_held = self.held()
        groups = self.quotas.quota_groups(caller.groups)
        waiting = self.store().count_in_groups(WAITING_STATES, groups)
        return {
            "gpus": quota.gpus or None,
            "queued": quota.queued or None,
            "gpus_held": held.get(caller.name, 0),
            "waiting": self._waiting(caller.name),
            "groups": [
                {
                    "name": group,
                    "gpus": self.quotas.groups[group].gpus or None,
                    "queued": self.quotas.groups[group].queued or None,
                    "gpus_held": group_held.get(group, 0),
                    "waiting": waiting[group],
                }
                for group in groups
            ],
        }
