"""The service's REST handlers: authenticate, parse, call JobService off the loop, write JSON.

Every route needs a token (``identity``); the caller handed to JobService comes from it
alone. No orchestration logic lives here.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import httputil, web, websocket

from ..contract.limits import MAX_LIST_LIMIT, MAX_WAIT_SECONDS
from ..contract.openapi import CHECKED_IN as OPENAPI_FILE
from ..contract.service import StopRequest
from ..orchestrator import JobNotFound, JobStateError, OrchestratorBusy
from ..orchestrator.access import Caller, Forbidden, visible_change
from ..orchestrator.quotas import QuotaExceeded
from ..spec import SpecError
from ..spec.model import validate
from ..store.models import iso
from .identity import caller_of
from .socket import PushSocket

API = "trainorch/api"
STARTED = time.time()


class CallerMixin:
    settings: dict[str, Any]
    current_user: Any

    @property
    def service(self) -> Any:
        return self.settings["trainorch_service"]

    @property
    def caller(self) -> Caller:
        admin_users, admin_groups = self.settings["trainorch_admins"]
        return caller_of(self.current_user, admin_users, admin_groups)


class BaseHandler(CallerMixin, APIHandler):
    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (possibly blocking) service call in a thread; map our errors to HTTP."""
        loop = asyncio.get_running_loop()
        return await self.answer(loop.run_in_executor(None, lambda: fn(*args, **kwargs)))

    async def answer(self, pending: Awaitable[Any]) -> Any:
        """Await a service call; our errors become HTTP answers of one sentence."""
        try:
            return await pending
        except SpecError as err:
            raise web.HTTPError(400, str(err)) from None
        except Forbidden as err:
            raise web.HTTPError(403, str(err)) from None
        except JobNotFound as err:
            raise web.HTTPError(404, str(err)) from None
        except JobStateError as err:
            raise web.HTTPError(409, str(err)) from None
        except OrchestratorBusy as err:
            raise web.HTTPError(503, str(err)) from None
        except QuotaExceeded as err:
            raise web.HTTPError(429, str(err)) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error is ``{"message": one sentence, "reason"}``: never a traceback."""
        error = (kwargs.get("exc_info") or (None, None, None))[1]
        reason = httputil.responses.get(status_code, "Error")
        if isinstance(error, web.HTTPError) and error.log_message:
            message = error.log_message % error.args if error.args else error.log_message
        elif status_code >= 500:
            message = "the trainorch service failed on this request; its log has the details"
        else:
            message = reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": reason}))

    def int_arg(
        self, name: str, default: int | None, low: int = 0, high: int = 2**62
    ) -> int | None:
        return self._number_arg(name, default, int, "a whole number", low, high)

    def seconds_arg(self, name: str, default: float) -> float:
        return self._number_arg(name, default, float, "a number of seconds", 0, MAX_WAIT_SECONDS)

    def _number_arg(
        self, name: str, default: Any, kind: Callable[[str], Any], what: str, low: Any, high: Any
    ) -> Any:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            value = kind(raw[:40])
        except ValueError:
            raise web.HTTPError(400, f"{name} must be {what}, not {raw[:40]!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise web.HTTPError(
                400, f"{name} must be {what} from {low:g} to {high:g}, not {raw[:40]!r}"
            )
        return value

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body or b"{}", parse_constant=_refuse_constant)
        except ValueError:
            raise web.HTTPError(400, "the request body is not valid JSON") from None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        try:
            body = orjson.dumps(data)  # log pages: 10,000 lines
        except TypeError:  # what only the standard library writes (keys that are not text,
            # an int over 64 bits); orjson's option for such keys halves its speed on any page
            body = json.dumps(data).encode()
        self.finish(body)


class JobsHandler(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        result = await self.run(
            self.service.list,
            self.caller,
            state=self.get_query_argument("state", None),
            user=self.get_query_argument("user", None),
            limit=self.int_arg("limit", 100, 1, MAX_LIST_LIMIT),
            offset=self.int_arg("offset", 0),
            q=self.get_query_argument("q", None),
            sort=self.get_query_argument("sort", "newest"),
        )
        self.write_json(result)

    @web.authenticated
    async def post(self) -> None:
        key = self.request.headers.get("Idempotency-Key")
        job, created = await self.run(self.service.submit, self.caller, self.json_body(), key)
        if not created:
            self.set_header("Idempotent-Replayed", "true")
        self.write_json(job, status=201 if created else 200)


class BatchHandler(BaseHandler):
    """Several jobs at once, naming each other in their dependencies: all or none."""

    @web.authenticated
    async def post(self) -> None:
        key = self.request.headers.get("Idempotency-Key")
        body = self.json_body()
        group, created = await self.run(self.service.submit_batch, self.caller, body, key)
        if not created:
            self.set_header("Idempotent-Replayed", "true")
        self.write_json(group, status=201 if created else 200)


class JobHandler(BaseHandler):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.get, self.caller, job_id))

    @web.authenticated
    async def delete(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.cancel, self.caller, job_id))

    @web.authenticated
    async def patch(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.update, self.caller, job_id, self.json_body()))


class RetryHandler(BaseHandler):
    @web.authenticated
    async def post(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.retry, self.caller, job_id))


class RerunHandler(BaseHandler):
    @web.authenticated
    async def post(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.rerun, self.caller, job_id), status=201)


class PackageHandler(BaseHandler):
    """The job's code package (zip of captured variables and input files), for export."""

    @web.authenticated
    async def get(self, job_id: str) -> None:
        blob = await self.run(self.service.package, self.caller, job_id)
        self.finish(blob or b"", set_content_type="application/zip")


class LogsHandler(BaseHandler):
    def compute_etag(self) -> None:
        return None  # a long poll's pages are never the same twice: no hash of each one

    @web.authenticated
    async def get(self, job_id: str) -> None:
        result = await self.answer(
            self.service.logs(
                self.caller,
                job_id,
                attempt=self.int_arg("attempt", None, 1, 10_000),
                after=self.int_arg("after", 0),
                wait=self.seconds_arg("wait", 0.0),
            )
        )
        self.write_json(result)


class MetricsHistoryHandler(BaseHandler):
    """Metric histories of the job's MLflow attempt runs (for the panel's charts)."""

    @web.authenticated
    async def get(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.metric_history, self.caller, job_id))


class OutputsHandler(BaseHandler):
    """The pickled ``--out`` variables of a succeeded job (for the submitting kernel)."""

    @web.authenticated
    async def get(self, job_id: str) -> None:
        blob = await self.run(self.service.outputs, self.caller, job_id)
        if blob is None:
            raise web.HTTPError(404, f"job {job_id} has no outputs")
        self.finish(blob, set_content_type="application/octet-stream")


class ClusterHandler(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        self.write_json(await self.run(self.service.cluster))


class TemplatesHandler(BaseHandler):
    @web.authenticated
    async def get(self, name: str | None = None) -> None:
        if name:
            self.write_json(await self.run(self.service.template, name))
        else:
            self.write_json(await self.run(self.service.templates))


class EventsHandler(BaseHandler):
    """Push channel as a long poll: returns as soon as there are changes after ``after``."""

    @web.authenticated
    async def get(self) -> None:
        result = await self.answer(
            self.service.events(
                self.caller,
                after=self.int_arg("after", 0),
                timeout=self.seconds_arg("timeout", 25.0),
            )
        )
        self.write_json(result)


class MeHandler(BaseHandler):
    """Who the caller is and what they may do."""

    @web.authenticated
    async def get(self) -> None:
        self.write_json(self.service.me(self.caller, self.settings["trainorch_mode"]))


class ServiceHandler(BaseHandler):
    """The service itself: ``GET`` its status, ``POST service/stop`` to stop it."""

    @web.authenticated
    async def get(self) -> None:
        cluster = await self.run(self.service.cluster)
        self.write_json(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": iso(STARTED),
                "uptime": time.time() - STARTED,
                "mode": self.settings["trainorch_mode"],
                "store": _without_password(self.service.store.url),
                "cluster": {k: cluster.get(k) for k in ("kind", "address", "dashboard")},
                "workers": len(cluster["workers"]),
                "gpus": cluster["gpus"],
                "running": cluster["running"],
                "queued": cluster["queue_depth"],
                "draining": cluster["draining"],
                "recovery": cluster["recovery"],
                "reexecutions": await self.run(self.service.store.count_reexecutions),
            }
        )


class StopHandler(BaseHandler):
    @web.authenticated
    async def post(self) -> None:
        request = await self.run(validate, StopRequest, self.json_body())
        force, drain = request.force, request.drain
        draining = await self.run(self.service.prepare_stop, self.caller, force, drain)
        stop = self.settings["trainorch_stop"]
        self.write_json({"stopping": True, "draining": draining}, status=202)
        if draining:
            asyncio.ensure_future(self._stop_when_idle(stop))
        else:
            asyncio.get_running_loop().run_in_executor(None, stop, False)

    async def _stop_when_idle(self, stop: Callable[[bool], None]) -> None:
        while await self.run(self.service.running_attempts):
            await asyncio.sleep(1.0)
        await asyncio.get_running_loop().run_in_executor(None, stop, False)


class EventsSocket(CallerMixin, PushSocket):
    """Push channel: every job change the caller may see, as JSON, from ``?after=SEQ`` on.

    Messages are the change-feed entries: ``{"seq", "kind": "job"|"logs"|"progress"|"cluster"
    |"alert", "job_id", "user", "time", ...}`` (``cluster``: an autoscaling decision, seen by
    everyone; ``alert``: a rule routed to the job's owner). A client that reconnects passes the
    last ``seq`` it saw.
    """

    async def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        try:
            after = max(0, int(self.get_query_argument("after", "0")[:20] or 0))
        except ValueError:
            after = 0
        host = await loop.run_in_executor(None, lambda: self.service.host)
        feed = host.orchestrator.feed
        caller, others = self.caller, self.service.others_jobs

        def forward(change: dict[str, Any]) -> None:
            shown = visible_change(caller, change, others)
            if shown is not None:
                loop.call_soon_threadsafe(self._send, shown)

        self._unsubscribe = feed.subscribe(forward)
        for change in feed.since(after):
            shown = visible_change(caller, change, others)
            if shown is not None:
                self._send(shown)

    def _send(self, change: dict[str, Any]) -> None:
        try:
            self.write_message(json.dumps(change))
        except websocket.WebSocketClosedError:
            self.on_close()

    def on_close(self) -> None:
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None


class OpenAPIHandler(BaseHandler):
    """The API's OpenAPI 3.1 document (the checked-in file, built from the contract)."""

    @web.authenticated
    async def get(self) -> None:
        self.finish(OPENAPI_FILE.read_bytes(), set_content_type="application/json")


class MetricsHandler(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        text = await self.run(self.service.prometheus)
        self.finish(text, set_content_type="text/plain; version=0.0.4")


JOB = r"/jobs/(?P<job_id>[^/]+)"
# (path below trainorch/api, service handler); the server extension forwards the same paths.
ROUTES: list[tuple[str, type[JupyterHandler]]] = [
    ("/jobs", JobsHandler),
    ("/jobs/batch", BatchHandler),  # before JOB, which would take "batch" for an id
    (JOB, JobHandler),
    (JOB + "/retry", RetryHandler),
    (JOB + "/rerun", RerunHandler),
    (JOB + "/package", PackageHandler),
    (JOB + "/logs", LogsHandler),
    (JOB + "/outputs", OutputsHandler),
    (JOB + "/metrics", MetricsHistoryHandler),
    ("/cluster", ClusterHandler),
    ("/templates", TemplatesHandler),
    (r"/templates/(?P<name>[^/]+)", TemplatesHandler),
    ("/events", EventsHandler),
    ("/events/ws", EventsSocket),
    ("/me", MeHandler),
    ("/service", ServiceHandler),
    ("/service/stop", StopHandler),
    ("/openapi.json", OpenAPIHandler),
]


def service_handlers(base_url: str) -> list[tuple[str, type[JupyterHandler]]]:
    result = [(url_path_join(base_url, API + path), handler) for path, handler in ROUTES]
    result.append((url_path_join(base_url, "trainorch/metrics"), MetricsHandler))
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python reads them, JSON has none


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL we can parse: say nothing of it
        return "(unparsable URL)"
