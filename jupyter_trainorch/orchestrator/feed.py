"""The change feed: every job change, numbered, for push channels and waiters."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..store.models import iso

Change = dict[str, Any]


class ChangeFeed:
    """Thread-safe: the orchestrator publishes, REST handlers and clients wait."""

    def __init__(self, keep: int = 10_000) -> None:
        self._changes: deque[Change] = deque(maxlen=keep)
        self._seq = itertools.count(1)
        self._cond = threading.Condition()
        self._subscribers: list[Callable[[Change], None]] = []

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._changes[-1]["seq"] if self._changes else 0

    def publish(self, kind: str, job_id: str, **data: Any) -> Change:
        with self._cond:
            change = {
                "seq": next(self._seq),
                "kind": kind,
                "job_id": job_id,
                "time": iso(time.time()),
                **data,
            }
            self._changes.append(change)
            self._cond.notify_all()
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(change)
        return change

    def since(self, after: int) -> list[Change]:
        with self._cond:
            return [c for c in self._changes if c["seq"] > after]

    def wait(self, after: int, timeout: float) -> list[Change]:
        """Block up to ``timeout`` seconds for changes newer than ``after``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                fresh = [c for c in self._changes if c["seq"] > after]
                remaining = deadline - time.monotonic()
                if fresh or remaining <= 0:
                    return fresh
                self._cond.wait(remaining)

    async def changed(self, after: int, timeout: float) -> None:
        """Return once there is a change newer than ``after``, or after ``timeout`` seconds;
        awaited on an event loop, so a long poll holds no thread."""
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        unsubscribe = self.subscribe(lambda _change: loop.call_soon_threadsafe(arrived.set))
        try:
            if self.last_seq <= after:
                await asyncio.wait_for(arrived.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            unsubscribe()

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """``callback`` runs on the publishing thread; it must only hand the change on."""
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe
