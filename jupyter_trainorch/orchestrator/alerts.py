"""Alerts: rules an admin sets (``TRAINORCH_ALERTS``) send job events to people.

A rule names what it fires on — job states (``failed``, ``retrying``, ``preempted``,
``succeeded``, …), ``queue_wait`` (a job waiting longer than ``minutes``), ``log`` (a line
matching the regex ``match``, e.g. ``CUDA out of memory``) or ``admins`` (notices for the
admins: a job whose retry rule says ``notify_admins`` failed that way, a worker was left out
of placement after failing job after job) — and where it goes:
``webhook:URL`` (Slack-compatible JSON ``{"text": …}``), ``email:ADDRESS`` (through
``TRAINORCH_SMTP_URL``) or ``owner`` (a notification in the job owner's JupyterLab, through the
change feed). Each alert is sent once per rule and job, at most ``RATE_PER_MINUTE`` per channel
a minute, from a thread of its own: a slow or broken channel is logged, never blocks the
scheduling loop and never stops the service.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

RATE_PER_MINUTE = 30
MAX_RULES = 50
MAX_REMEMBERED = 100_000  # alerts sent, kept so that each goes once
EVENTS = ("queue_wait", "log", "admins")  # besides job states


class AlertConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    on: frozenset[str]
    to: str
    minutes: float = 0.0
    match: re.Pattern[str] | None = None


@dataclass
class Alert:
    channel: str
    subject: str
    text: str
    job_id: str
    user: str
    data: dict[str, Any] = field(default_factory=dict)


def parse_rules(text: str) -> list[Rule]:
    """``[{"on": ["failed"], "to": "webhook:https://…"}, …]``; raises AlertConfigError
    saying which rule is wrong and how."""
    from ..contract.states import ALL_STATES

    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError:
        raise AlertConfigError("a JSON list of rules such as [{\"on\": [\"failed\"], "
                               "\"to\": \"webhook:https://…\"}]") from None  # fmt: skip
    if not isinstance(data, list) or len(data) > MAX_RULES:
        raise AlertConfigError(f"a JSON list of at most {MAX_RULES} rules")
    rules = []
    for n, item in enumerate(data):
        where = f"rule {n + 1}"
        if not isinstance(item, dict) or not set(item) <= {"on", "to", "minutes", "match"}:
            raise AlertConfigError(f"{where}: an object with on, to and optionally minutes, match")
        on = item.get("on")
        events = [on] if isinstance(on, str) else on
        if not events or not all(
            isinstance(e, str) and e in (*ALL_STATES, *EVENTS) for e in events
        ):
            raise AlertConfigError(
                f"{where}: on must name job states or {', '.join(EVENTS)}, not {on!r}"
            )
        to = item.get("to")
        if not isinstance(to, str) or not _channel_ok(to):
            raise AlertConfigError(
                f"{where}: to must be webhook:http(s)://…, email:ADDRESS or owner, not {to!r}"
            )
        minutes = item.get("minutes", 0)
        if "queue_wait" in events and (
            isinstance(minutes, bool) or not isinstance(minutes, (int, float))
            or not 0 < minutes <= 7 * 24 * 60
        ):  # fmt: skip
            raise AlertConfigError(f"{where}: queue_wait needs minutes from 0 to 10080")
        pattern = None
        if "log" in events:
            try:
                pattern = re.compile(str(item.get("match") or ""))
            except re.error as err:
                raise AlertConfigError(
                    f"{where}: match is not a regular expression ({err})"
                ) from None
            if not pattern.pattern:
                raise AlertConfigError(f"{where}: log needs a match regex")
        rules.append(Rule(frozenset(events), to, float(minutes or 0), pattern))
    return rules


def _channel_ok(to: str) -> bool:
    if to == "owner":
        return True
    kind, _, target = to.partition(":")
    if kind == "webhook":
        parts = urlsplit(target)
        return parts.scheme in ("http", "https") and bool(parts.netloc)
    return kind == "email" and re.fullmatch(r"[^@\s]+@[^@\s]+", target) is not None


class Alerts:
    """Matches events to rules and sends the alerts from a thread of its own."""

    def __init__(
        self,
        rules: list[Rule],
        smtp_url: str,
        notify_owner: Callable[[Alert], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.smtp_url = smtp_url
        self.notify_owner = notify_owner
        self.clock = clock
        # (rule, job, event): once each; the oldest forgotten past MAX_REMEMBERED.
        self.sent: dict[tuple[int, str, str], None] = {}
        self._recent: dict[str, deque[float]] = {}
        self._outbox: queue.Queue[Alert | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(
            target=self._send_loop, name="trainorch-alerts", daemon=True
        )
        self._thread.start()
        self.log_rules = [(n, r) for n, r in enumerate(rules) if "log" in r.on]
        self.wait_rules = [(n, r) for n, r in enumerate(rules) if "queue_wait" in r.on]

    # -- events --------------------------------------------------------------------
    def job_changed(self, change: dict[str, Any]) -> None:
        state = change.get("state")
        if change.get("kind") != "job" or not state:
            return
        for n, rule in enumerate(self.rules):
            if state in rule.on:
                self._fire(n, rule, change["job_id"], change.get("user", ""), state,
                           f"job {change['job_id']} {state}", {"state": state})  # fmt: skip

    def lines(self, job_id: str, user: str, lines: list[Any]) -> None:
        for n, rule in self.log_rules:
            assert rule.match is not None
            for line in lines:
                if rule.match.search(str(line[2])):
                    self._fire(n, rule, job_id, user, "log",
                               f"job {job_id} printed: {str(line[2])[:300]}", {"line": line[2]})  # fmt: skip
                    break

    def waiting(self, jobs: list[tuple[str, str, float]]) -> None:
        """``(job id, user, submitted)`` of the queued jobs: those past a rule's wait fire."""
        now = self.clock()
        for n, rule in self.wait_rules:
            for job_id, user, submitted in jobs:
                waited = now - submitted
                if waited >= rule.minutes * 60:
                    self._fire(n, rule, job_id, user, "queue_wait",
                               f"job {job_id} has waited {waited / 60:.0f} minutes to start",
                               {"waited_seconds": round(waited)})  # fmt: skip

    def admins(self, key: str, user: str, text: str, data: dict[str, Any]) -> None:
        """A notice for the admins (a job's retry rule asked for it, a worker was left
        out): sent through the rules on ``admins``, once per ``key``."""
        for n, rule in enumerate(self.rules):
            if "admins" in rule.on:
                self._fire(n, rule, key, user, "admins", text, data)

    def _fire(self, n: int, rule: Rule, job_id: str, user: str, event: str, text: str,
              data: dict[str, Any]) -> None:  # fmt: skip
        key = (n, job_id, event)
        if key in self.sent:
            return
        self.sent[key] = None
        if len(self.sent) > MAX_REMEMBERED:
            del self.sent[next(iter(self.sent))]
        alert = Alert(rule.to, f"trainorch: {text}", text, job_id, user, {"event": event, **data})
        if rule.to == "owner":
            self.notify_owner(alert)
            return
        try:
            self._outbox.put_nowait(alert)
        except queue.Full:
            log.warning("alert dropped (too many waiting to be sent): %s", text)

    # -- sending --------------------------------------------------------------------
    def close(self) -> None:
        self._outbox.put(None)
        self._thread.join(timeout=5)

    def _send_loop(self) -> None:
        while (alert := self._outbox.get()) is not None:
            if not self._allowed(alert.channel):
                log.warning("alert to %s dropped: over %d a minute", alert.channel, RATE_PER_MINUTE)
                continue
            try:
                self._send(alert)
            except Exception as err:  # noqa: BLE001 - a broken channel must not stop alerts
                log.warning("alert to %s failed: %s", alert.channel, err)

    def _allowed(self, channel: str) -> bool:
        now = time.monotonic()
        recent = self._recent.setdefault(channel, deque())
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= RATE_PER_MINUTE:
            return False
        recent.append(now)
        return True

    def _send(self, alert: Alert) -> None:
        kind, _, target = alert.channel.partition(":")
        if kind == "webhook":
            self._post(target, alert)
        elif kind == "email":
            self._mail(target, alert)

    def _post(self, url: str, alert: Alert) -> None:
        import urllib.request

        body = json.dumps({"text": alert.text, "job_id": alert.job_id, "user": alert.user,
                           **alert.data}).encode()  # fmt: skip
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - admin's URL
            answer.read()

    def _mail(self, address: str, alert: Alert) -> None:
        import smtplib
        import socket
        from email.message import EmailMessage

        if not self.smtp_url:
            raise RuntimeError("TRAINORCH_SMTP_URL is not set")
        parts = urlsplit(self.smtp_url)
        message = EmailMessage()
        message["Subject"] = alert.subject
        message["From"] = f"trainorch@{socket.getfqdn()}"
        message["To"] = address
        message.set_content(f"{alert.text}\n\njob {alert.job_id} of {alert.user or 'unknown'}\n")
        with smtplib.SMTP(parts.hostname or "localhost", parts.port or 25, timeout=10) as smtp:
            if parts.scheme == "smtp+starttls":
                smtp.starttls()
            if parts.username:
                smtp.login(parts.username, parts.password or "")
            smtp.send_message(message)
