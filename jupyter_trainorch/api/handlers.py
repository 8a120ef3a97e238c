"""REST handlers: parse the request, call JobService off the event loop, write JSON.

Every route is authenticated by jupyter_server (token, password or JupyterHub).
No orchestration logic lives here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web, websocket

from ..orchestrator import JobNotFound, JobStateError, OrchestratorBusy
from ..spec import SpecError

API = "trainorch/api"


class BaseHandler(APIHandler):
    @property
    def service(self) -> Any:
        return self.settings["trainorch_service"]

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (possibly blocking) service call in a thread; map our errors to HTTP."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))
        except SpecError as err:
            raise web.HTTPError(400, str(err)) from None
        except JobNotFound as err:
            raise web.HTTPError(404, str(err)) from None
        except JobStateError as err:
            raise web.HTTPError(409, str(err)) from None
        except OrchestratorBusy as err:
            raise web.HTTPError(503, str(err)) from None

    def int_arg(self, name: str, default: int | None) -> int | None:
        return self._number_arg(name, default, int, "a whole number")

    def float_arg(self, name: str, default: float) -> float:
        return self._number_arg(name, default, float, "a number")

    def _number_arg(self, name: str, default: Any, kind: Callable[[str], Any], what: str) -> Any:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            return kind(raw)
        except ValueError:
            raise web.HTTPError(400, f"{name} must be {what}, not {raw!r}") from None

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the request body is not valid JSON") from None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class JobsHandler(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        result = await self.run(
            self.service.list,
            state=self.get_query_argument("state", None),
            user=self.get_query_argument("user", None),
            limit=self.int_arg("limit", 100),
            offset=self.int_arg("offset", 0),
        )
        self.write_json(result)

    @web.authenticated
    async def post(self) -> None:
        self.write_json(await self.run(self.service.submit, self.json_body()), status=201)


class JobHandler(BaseHandler):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.get, job_id))

    @web.authenticated
    async def delete(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.cancel, job_id))

    @web.authenticated
    async def patch(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.update, job_id, self.json_body()))


class RetryHandler(BaseHandler):
    @web.authenticated
    async def post(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.retry, job_id))


class RerunHandler(BaseHandler):
    @web.authenticated
    async def post(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.rerun, job_id), status=201)


class PackageHandler(BaseHandler):
    """The job's code package (zip of captured variables and input files), for export."""

    @web.authenticated
    async def get(self, job_id: str) -> None:
        blob = await self.run(self.service.package, job_id)
        self.set_header("Content-Type", "application/zip")
        self.finish(blob or b"")


class LogsHandler(BaseHandler):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        result = await self.run(
            self.service.logs,
            job_id,
            attempt=self.int_arg("attempt", None),
            after=self.int_arg("after", 0),
            wait=self.float_arg("wait", 0.0),
        )
        self.write_json(result)


class MetricsHistoryHandler(BaseHandler):
    """Metric histories of the job's MLflow attempt runs (for the panel's charts)."""

    @web.authenticated
    async def get(self, job_id: str) -> None:
        self.write_json(await self.run(self.service.metric_history, job_id))


class OutputsHandler(BaseHandler):
    """The pickled ``--out`` variables of a succeeded job (for the submitting kernel)."""

    @web.authenticated
    async def get(self, job_id: str) -> None:
        blob = await self.run(self.service.outputs, job_id)
        if blob is None:
            raise web.HTTPError(404, f"job {job_id} has no outputs")
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(blob)


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
        result = await self.run(
            self.service.events,
            after=self.int_arg("after", 0),
            timeout=self.float_arg("timeout", 25.0),
        )
        self.write_json(result)


class EventsSocket(JupyterHandler, websocket.WebSocketHandler):
    """Push channel: every job change as a JSON message, from ``?after=SEQ`` on.

    Messages are the change-feed entries: ``{"seq", "kind": "job"|"logs"|"progress",
    "job_id", "time", ...}``. A client that reconnects passes the last ``seq`` it saw.
    """

    @property
    def service(self) -> Any:
        return self.settings["trainorch_service"]

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    async def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        try:
            after = int(self.get_query_argument("after", "0") or 0)
        except ValueError:
            after = 0
        host = await loop.run_in_executor(None, lambda: self.service.host)
        feed = host.orchestrator.feed

        def forward(change: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(self._send, change)

        self._unsubscribe = feed.subscribe(forward)
        for change in feed.since(after):
            self._send(change)

    def _send(self, change: dict[str, Any]) -> None:
        try:
            self.write_message(json.dumps(change))
        except websocket.WebSocketClosedError:
            self.on_close()

    def on_message(self, message: Any) -> None:
        pass  # the channel is one-way

    def on_close(self) -> None:
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
            self._unsubscribe = None


class MetricsHandler(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        text = await self.run(self.service.prometheus)
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.finish(text)


def handlers(base_url: str) -> list[tuple[str, type[JupyterHandler]]]:
    job = r"/jobs/(?P<job_id>[A-Za-z0-9_-]+)"
    routes: list[tuple[str, type[JupyterHandler]]] = [
        ("/jobs", JobsHandler),
        (job, JobHandler),
        (job + "/retry", RetryHandler),
        (job + "/rerun", RerunHandler),
        (job + "/package", PackageHandler),
        (job + "/logs", LogsHandler),
        (job + "/outputs", OutputsHandler),
        (job + "/metrics", MetricsHistoryHandler),
        ("/cluster", ClusterHandler),
        ("/templates", TemplatesHandler),
        (r"/templates/(?P<name>[A-Za-z0-9_.-]+)", TemplatesHandler),
        ("/events", EventsHandler),
        ("/events/ws", EventsSocket),
    ]
    result = [(url_path_join(base_url, API + path), handler) for path, handler in routes]
    result.append((url_path_join(base_url, "trainorch/metrics"), MetricsHandler))
    return result
