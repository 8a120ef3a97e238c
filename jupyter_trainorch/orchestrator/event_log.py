"""Job events and job log lines as ECS JSON lines (``TRAINORCH_EVENT_LOG``), for the ELK
stack: Filebeat reads the file (``examples/elk/filebeat.yml``) into Elasticsearch.

Every job change of the change feed is one ``trainorch.events`` record (``event.action``: the
new state); every line a job prints is one ``trainorch.job`` record. Each carries the job id,
attempt, user and worker, so Kibana can follow one job or one user across attempts.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from .feed import Change

_LOGGER = "jupyter_trainorch.events"


class EventLog:
    def __init__(self, target: str) -> None:
        import ecs_logging  # only when the event log is on

        self.logger = logging.getLogger(f"{_LOGGER}.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # not into the service's own log
        handler: logging.Handler = (
            logging.StreamHandler(sys.stderr) if target == "-" else logging.FileHandler(target)
        )
        handler.setFormatter(
            ecs_logging.StdlibFormatter(exclude_fields=["log.origin", "process", "process.thread"])
        )
        self.handler = handler
        self.logger.addHandler(handler)

    def change(self, change: Change) -> None:
        """A change of the feed: job state changes and scaling decisions become events
        (progress and log counts are left to the lines themselves)."""
        if change.get("kind") == "cluster":
            extra = {"event.dataset": "trainorch.events", "event.action": "scale"}
            self.logger.info("autoscaling: %s", change.get("message", ""), extra=extra)
            return
        if change.get("kind") != "job" or not change.get("state"):
            return
        state = change["state"]
        extra: dict[str, Any] = {
            "event.dataset": "trainorch.events",
            "event.action": state,
            "trainorch.job_id": change["job_id"],
        }
        if change.get("user"):
            extra["user.name"] = change["user"]
        level = logging.WARNING if state in ("failed", "preempted", "retrying") else logging.INFO
        self.logger.log(level, "job %s %s", change["job_id"], state, extra=extra)

    def lines(self, job_id: str, attempt: int, user: str, worker: str, lines: list[Any]) -> None:
        """Lines a job printed: ``(seq, stream, text, time)``."""
        for line in lines:
            extra = {
                "event.dataset": "trainorch.job",
                "trainorch.job_id": job_id,
                "trainorch.attempt": attempt,
                "trainorch.seq": line[0],
                "trainorch.stream": line[1],
                "host.name": worker,
            }
            if user:
                extra["user.name"] = user
            self.logger.info("%s", line[2], extra=extra)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
