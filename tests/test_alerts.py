"""Alerts on a real local Dask cluster, to a real local HTTP receiver and SMTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import free_port, submit, wait_final, wait_until

from jupyter_trainorch.orchestrator.alerts import AlertConfigError, parse_rules
from jupyter_trainorch.settings import SettingError, TrainOrch


class Receiver:
    """An HTTP server on loopback that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Keep(Message):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list = []

        def handle_message(self, message) -> None:
            self.messages.append(message)

    handler = Keep()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, f"smtp://127.0.0.1:{port}"
    controller.stop()


def test_failures_log_lines_and_long_waits_reach_webhook_mail_and_owner(
    host_factory, receiver, smtp
):
    mailbox, smtp_url = smtp
    rules = [
        {"on": ["failed"], "to": f"webhook:{receiver.url}"},
        {"on": "failed", "to": "email:oncall@example.com"},
        {"on": "log", "match": "CUDA out of memory", "to": f"webhook:{receiver.url}"},
        {"on": "queue_wait", "minutes": 0.01, "to": "owner"},
        # A broken channel is logged and changes nothing for the others.
        {"on": "failed", "to": "webhook:http://127.0.0.1:9/nothing-listens"},
    ]
    host = host_factory(workers=1, gpus_per_worker=1, alerts=json.dumps(rules),
                        smtp_url=smtp_url, audit_interval=0.5)  # fmt: skip
    hold = "import time\ntime.sleep(3)"
    holder = submit(host, name="holder", source=hold, resources={"gpus": 1})
    waiter = submit(host, name="waiter", source="pass", resources={"gpus": 1})
    source = (
        "print('RuntimeError: CUDA out of memory. Tried to allocate 2 GiB')\nraise SystemExit(1)"
    )
    broken = submit(host, name="oom", source=source)
    assert wait_final(host, broken).state == "failed"
    wait_until(lambda: len(receiver.bodies) >= 2, what="two webhook posts")
    wait_until(lambda: mailbox.messages, what="the mail")
    texts = sorted(body["text"] for body in receiver.bodies)
    assert texts == [f"job {broken} failed", f"job {broken} printed: RuntimeError: CUDA out of "
                     "memory. Tried to allocate 2 GiB"]  # fmt: skip
    assert all(body["job_id"] == broken for body in receiver.bodies)
    (mail,) = mailbox.messages
    assert (
        mail["To"] == "oncall@example.com" and mail["Subject"] == f"trainorch: job {broken} failed"
    )
    # The waiting job's owner is told in JupyterLab, once.
    alerts = wait_until(
        lambda: [c for c in host.orchestrator.feed.since(0) if c["kind"] == "alert"],
        what="the owner's alert",
    )
    assert {c["job_id"] for c in alerts} >= {waiter}
    assert all(c["event"] == "queue_wait" for c in alerts)
    assert wait_final(host, waiter).state == "succeeded"
    assert wait_final(host, holder).state == "succeeded"
    time.sleep(0.5)
    assert len(receiver.bodies) == 2, "an alert was sent twice"


def test_wrong_rules_are_one_sentence_naming_the_rule():
    with pytest.raises(AlertConfigError, match="rule 1: to must be webhook"):
        parse_rules('[{"on": "failed", "to": "slack"}]')
    with pytest.raises(AlertConfigError, match="rule 2: queue_wait needs minutes"):
        parse_rules('[{"on": "failed", "to": "owner"}, {"on": "queue_wait", "to": "owner"}]')
    with pytest.raises(AlertConfigError, match="rule 1: on must name job states"):
        parse_rules('[{"on": "exploded", "to": "owner"}]')
    with pytest.raises(SettingError, match=r"c.TrainOrch.alerts must be .*rule 1: log needs"):
        TrainOrch(alerts='[{"on": "log", "to": "owner"}]')
