"""The background refresh shared by the live widgets: one daemon thread on the change feed.

The kernel's main thread is never used for waiting: the thread long-polls
``transport.events`` and calls back into the widget, which sets traits; ipywidgets
sends those trait changes over the comm from whichever thread sets them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..client.transport import TrainOrchError

Change = dict[str, Any]


class Follower:
    """Calls ``refresh()`` when ``wants(changes)`` says a change matters, and at least every
    ``interval`` seconds (a restarted server renumbers its feed, so changes alone can be
    missed). It stops when ``refresh`` returns False, on ``stop()``, or when the
    orchestrator answers 404 (the job is gone)."""

    def __init__(
        self,
        transport: Any,
        *,
        wants: Callable[[list[Change]], bool],
        refresh: Callable[[], bool],
        report: Callable[[str], None],
        interval: float = 5.0,
        poll_timeout: float = 10.0,
        min_gap: float = 0.25,
        name: str = "trainorch-widget",
    ) -> None:
        self.transport = transport
        self.wants = wants
        self.refresh = refresh
        self.report = report
        self.interval = interval
        self.poll_timeout = poll_timeout
        self.min_gap = min_gap
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Follower:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        cursor: int | None = None
        last_refresh = float("-inf")
        failures = 0
        while not self._stop.is_set():
            try:
                if cursor is None:
                    # Start the cursor at "now": the refresh that follows reads everything older.
                    cursor = int(self.transport.events().get("last") or 0)
                    changes: list[Change] = []
                    due = True
                else:
                    since = time.monotonic() - last_refresh
                    wait = max(0.0, min(self.poll_timeout, self.interval - since))
                    reply = self.transport.events(after=cursor, timeout=wait)
                    changes = list(reply.get("changes") or [])
                    cursor = int(reply.get("last", cursor) or 0)
                    due = time.monotonic() - last_refresh >= self.interval
                if self._stop.is_set():
                    return
                if not due and not self.wants(changes):
                    continue
                keep = self.refresh()
                last_refresh = time.monotonic()
                if failures:
                    failures = 0
                    self.report("")
                if not keep:
                    return
            except TrainOrchError as err:
                self.report(str(err))
                if err.status == 404:
                    return
                failures += 1
                self._stop.wait(min(30.0, 2.0**failures))
                continue
            except Exception as err:  # noqa: BLE001 - a dead thread would freeze the view without a word
                self.report(f"{type(err).__name__}: {err}")
                failures += 1
                self._stop.wait(min(30.0, 2.0**failures))
                continue
            # Coalesce bursts (a chatty job logs every 250 ms) into one refresh per gap.
            self._stop.wait(self.min_gap)


def first_line(err: BaseException) -> str:
    """The one sentence of a user-facing error, never a traceback."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def number(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def progress_text(progress: dict[str, Any]) -> str:
    """``2/3 (67%) loading · loss=0.5``: step/total, message and up to four metrics."""
    step, total = progress.get("step"), progress.get("total")
    fraction = progress.get("fraction")
    parts = []
    if step is not None and total:
        parts.append(f"{number(step)}/{number(total)}")
    elif step is not None:
        parts.append(f"step {number(step)}")
    if fraction is not None:
        parts.append(f"({fraction:.0%})" if parts else f"{fraction:.0%}")
    if progress.get("message"):
        parts.append(str(progress["message"]))
    metrics = progress.get("metrics") or {}
    if metrics:
        shown = [f"{key}={number(value)}" for key, value in list(metrics.items())[:4]]
        parts.append("· " + " ".join(shown))
    return " ".join(parts)


def summary(job_id: str, job: dict[str, Any]) -> str:
    """The text form of a job, as ``Job._repr_pretty_`` prints it."""
    if not job.get("state"):
        return f"Job {job_id}"
    attempts = job.get("attempts") or []
    return (
        f"Job {job_id} '{job.get('name', '')}': {job['state']}, priority {job.get('priority_class', '')}, "
        f"{len(attempts)} attempt(s), {job.get('max_retries', 0)} retries allowed"
    )
