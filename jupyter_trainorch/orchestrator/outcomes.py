"""What the end of an attempt means for its job, and ending jobs.

An attempt that succeeded ends its job; one that failed is retried after a backoff
(its own failures count against the job's retries, infrastructure failures such as a
lost worker against a separate budget) or fails the job, as the job's rule for that kind
of failure says (``RetryPolicy.on``: retry, do not, retry on another worker, tell admins). Ending a job releases the
jobs that wait on it, or ends those it leaves with nothing to wait for (``dependencies``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..spec import RetryPolicy
from ..store import (
    CANCELLED,
    FAILED,
    PREEMPTED,
    QUEUED,
    RETRYING,
    SUCCEEDED,
    JobRecord,
    JobStore,
)
from ..store.models import failure_cause
from .attempts import AttemptEnd, tail
from .config import OrchestratorConfig
from .dependencies import settle_dependents
from .errors import JobNotFound
from .feed import ChangeFeed
from .queue import JobQueue
from .tracking_bridge import TrackingBridge


class JobOutcomes:
    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        feed: ChangeFeed,
        tracking: TrackingBridge,
        config: OrchestratorConfig,
        clock: Callable[[], float],
        stopping: Callable[[], bool],
        drop_checkpoints: Callable[[JobRecord], None] = lambda job: None,
        notify_admins: Callable[[JobRecord, str, str, str | None], None] = lambda *_: None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.feed = feed
        self.tracking = tracking
        self.config = config
        self.clock = clock
        self.stopping = stopping
        self.drop_checkpoints = drop_checkpoints
        self.notify_admins = notify_admins  # (job, worker, cause, error): a rule asked for it

    def _get(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def publish(self, job: JobRecord, state: str, **data: Any) -> None:
        self.feed.publish("job", job.id, user=job.user, state=state, **data)

    def attempt_ended(self, end: AttemptEnd) -> None:
        run = end.run
        if end.succeeded:
            if end.outputs is not None:
                self.store.update_job(run.job_id, outputs=end.outputs, has_outputs=True)
            self.end_job(run.job_id, SUCCEEDED)
            return
        if run.cancel_requested and not self.stopping():
            self.end_job(run.job_id, CANCELLED, error="cancelled")
            return
        job = self._get(run.job_id)
        if self.stopping():
            # The service is being stopped: the job runs again at the next start.
            self.store.update_job(job.id, state=QUEUED, error="requeued: the service was stopped")
            return
        if run.preempted_for:
            self._resume_later(job, run.preempted_for)
            return
        cause = failure_cause(end.infrastructure, end.error)
        retry = RetryPolicy.parse(job.spec.get("retries"))
        actions = retry.actions(cause)
        if "notify_admins" in actions:
            self.notify_admins(job, run.worker, cause, end.error)
        # An out-of-memory end retries only when the job's rules ask for it.
        retryable = end.retryable or (cause == "out_of_memory" and "no_retry" not in actions)
        if "no_retry" in actions:
            self.end_job(run.job_id, FAILED, error=tail(end.error))
        elif (
            end.infrastructure
            and job.infrastructure_failures <= self.config.max_infrastructure_retries
        ):
            self._retry_later(job, delay=0.5, error=end.error)
        elif not end.infrastructure and retryable and job.user_failures <= job.max_retries:
            self._retry_later(job, delay=retry.delay(job.user_failures), error=end.error)
        else:
            self.end_job(run.job_id, FAILED, error=tail(end.error))

    def _resume_later(self, job: JobRecord, for_job: str) -> None:
        """A preempted job waits again, first in its class; the attempt is not a failure."""
        self.publish(job, PREEMPTED, preempted_for=for_job)
        self.store.update_job(job.id, state=QUEUED, not_before=None, error=None)
        job = self._get(job.id)
        self.queue.add(job)
        self.publish(job, QUEUED)

    def _retry_later(self, job: JobRecord, delay: float, error: str | None) -> None:
        not_before = self.clock() + delay
        self.store.update_job(job.id, state=RETRYING, not_before=not_before, error=tail(error))
        self.publish(job, RETRYING, delay=delay)
        self.queue.later(job.id, delay, lambda: self._requeue_now(job.id))

    def _requeue_now(self, job_id: str) -> None:
        current = self.store.get_job(job_id)
        if current is None or current.state != RETRYING:
            return
        self.store.update_job(job_id, state=QUEUED)
        self.queue.add(current)
        self.publish(current, QUEUED)

    def requeue(self, job: JobRecord) -> None:
        """Put a waiting job (queued, retrying or preempted) back in the queue, keeping
        what is left of its backoff."""
        delay = (job.not_before or 0) - self.clock()
        if job.state in (RETRYING, PREEMPTED) and delay > 0:
            self.store.update_job(job.id, state=RETRYING)
            self.queue.later(job.id, delay, lambda: self._requeue_now(job.id))
            return
        if job.state != QUEUED:
            self.store.update_job(job.id, state=QUEUED, not_before=None)
        self.queue.add(job)

    def end_job(self, job_id: str, state: str, error: str | None = None) -> None:
        fields: dict[str, Any] = {"state": state, "ended": self.clock(), "not_before": None}
        if error is not None or state == SUCCEEDED:
            fields["error"] = error
        self.store.update_job(job_id, **fields)
        job = self._get(job_id)
        self.tracking.job_ended(job, state)
        self.publish(job, state)
        if state in (SUCCEEDED, CANCELLED) and not self.queue.has_dependents(job_id):
            # Jobs that waited on it may read its checkpoints (``upstream(...).checkpoint_dir``).
            self.drop_checkpoints(job)
        settle_dependents(self, job_id, state)
