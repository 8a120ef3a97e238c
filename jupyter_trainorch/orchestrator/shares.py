"""Fair share for the scheduling loop: the queue in the order the policy dispatches it.

Each user's recent GPU use comes from the store's attempts (running ones included) and is
read again at most every ``REFRESH_S``: use changes over minutes, and a scheduling round
must not wait on a query.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..policy import QueuedJob
from ..policy.fairshare import decayed_usage, fair_order
from ..store import JobStore

REFRESH_S = 30.0
# Use older than this many half-lives weighs under 0.1 %: not worth reading.
HORIZON_HALF_LIVES = 10


class FairShare:
    def __init__(
        self, store: JobStore, half_life: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.half_life = half_life  # seconds; 0 turns fair share off
        self.clock = clock
        self._read = -REFRESH_S
        self._usage: dict[str, float] = {}

    def order(self, queue: Sequence[QueuedJob]) -> Sequence[QueuedJob]:
        """``queue`` (in queue_key order) as fair share dispatches it."""
        if self.half_life <= 0 or len({job.user for job in queue}) < 2:
            return queue
        return fair_order(queue, self.usage())

    def usage(self) -> dict[str, float]:
        """Each user's decayed GPU-seconds."""
        now = self.clock()
        if now - self._read >= REFRESH_S:
            since = now - HORIZON_HALF_LIVES * self.half_life
            holdings = self.store.gpu_holdings(since)
            self._usage = decayed_usage(holdings, now, self.half_life)
            self._read = now
        return self._usage
