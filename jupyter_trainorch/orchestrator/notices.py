"""Where the service's events go besides the store: the ECS event log (ELK), alerts to
people (webhooks, email, the owner's JupyterLab, the admins) and deployment hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..store import QUEUED, JobRecord, JobStore
from ..tracking import tracking_uri
from .alerts import Alert, Alerts, parse_rules
from .attempts import Running, tail
from .config import OrchestratorConfig
from .deploy_hooks import DeployHooks, parse_deploy_hooks
from .event_log import EventLog
from .feed import ChangeFeed

log = logging.getLogger(__name__)


class Notices:
    def __init__(
        self, store: JobStore, feed: ChangeFeed, config: OrchestratorConfig,
        clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.store = store
        self.feed = feed
        self.clock = clock
        self.event_log = EventLog(config.event_log) if config.event_log else None
        if self.event_log is not None:
            feed.subscribe(self.event_log.change)
        rules = parse_rules(config.alerts)
        self.alerts = Alerts(rules, config.smtp_url, self._notify_owner) if rules else None
        if self.alerts is not None:
            feed.subscribe(self.alerts.job_changed)
        hooks = parse_deploy_hooks(config.deploy_hooks)
        uri = tracking_uri(config.mlflow, config.data_dir)
        if hooks and uri is None:
            log.warning("TRAINORCH_DEPLOY_HOOKS is set but tracking is off: no model is "
                        "registered, so no hook will fire")  # fmt: skip
        self.deploy_hooks = DeployHooks(hooks, store, uri) if hooks else None
        if self.deploy_hooks is not None:
            feed.subscribe(self.deploy_hooks.job_changed)

    @property
    def want_lines(self) -> bool:
        return self.event_log is not None or self.alerts is not None

    def close(self) -> None:
        if self.event_log is not None:
            self.event_log.close()
        if self.alerts is not None:
            self.alerts.close()
        if self.deploy_hooks is not None:
            self.deploy_hooks.close()

    def lines_stored(self, run: Running, lines: list[Any]) -> None:
        if self.event_log is not None:
            self.event_log.lines(run.job_id, run.n, run.user, run.worker, lines)
        if self.alerts is not None:
            self.alerts.lines(run.job_id, run.user, lines)

    def _notify_owner(self, alert: Alert) -> None:
        """An ``owner`` alert: a notification in the owner's JupyterLab (the change feed
        shows it to the owner and admins only)."""
        self.feed.publish("alert", alert.job_id, user=alert.user, message=alert.text,
                          event=alert.data.get("event"))  # fmt: skip

    def worker_excluded(self, worker: str, text: str) -> None:
        log.warning("%s", text)
        self.feed.publish("cluster", "", worker=worker, message=text)
        if self.alerts is not None:
            self.alerts.admins(f"worker {worker} {self.clock():.0f}", "", text, {"worker": worker})

    def job_failed_for_admins(
        self, job: JobRecord, worker: str, cause: str, error: str | None
    ) -> None:
        """A job's retry rule asks to tell admins of this kind of failure (``admins`` alert
        rules say how; the service log always has it)."""
        text = f"job {job.id} ({job.name}) of {job.user or 'unknown'} failed on {worker}: {cause}"
        log.warning("%s: %s", text, tail(error, 300))
        if self.alerts is not None:
            self.alerts.admins(job.id, job.user, text, {"worker": worker, "cause": cause})

    def check_waits(self) -> None:
        if self.alerts is None or not self.alerts.wait_rules:
            return
        waiting = self.store.list_jobs(states=[QUEUED], order="oldest", limit=1000)
        self.alerts.waiting([(job.id, job.user, job.created) for job in waiting])
