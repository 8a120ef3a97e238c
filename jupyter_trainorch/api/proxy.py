"""The server extension's side: forward the trainorch API to the service.

The panel and kernels talk only to their own Jupyter server; these handlers pass each
authenticated request on to the service with a credential that says who the caller is:
the user's own service token (single user), or the server's JupyterHub token (a shared
hub service, which asks the hub whose token it is). No job logic lives here.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import httpclient, web, websocket

from ..service import ServiceInfo, ServiceUnavailable, ensure_service
from .socket import PushSocket

FORWARDED_HEADERS = ("Content-Type", "Idempotency-Key")
# Long polls (logs?wait=, events?timeout=) hold a request up to 30 s on the service.
REQUEST_TIMEOUT = 90.0


class ServiceLink:
    """Where requests go: the user's own service (found, or started when absent) or the
    shared service JupyterHub configured."""

    def __init__(
        self,
        data_dir: Path,
        settings: Mapping[str, str],
        service_url: str = "",
        hub_token: str = "",
    ) -> None:
        """``settings``: the ``TRAINORCH_*`` variables of a service started for this user."""
        self.data_dir = data_dir
        self.settings = settings
        self.shared = bool(service_url)
        self._info = ServiceInfo(url=service_url, token=hub_token, pid=0) if self.shared else None
        self._lock = threading.Lock()

    def current(self) -> ServiceInfo:
        """Blocking: may start the service (seconds)."""
        with self._lock:
            if self._info is None:
                self._info = ensure_service(self.data_dir, self.settings)
            return self._info

    async def get(self) -> ServiceInfo:
        return await asyncio.get_running_loop().run_in_executor(None, self.current)

    def lost(self, info: ServiceInfo) -> None:
        """``info`` stopped answering: find (or start) the service again next time."""
        with self._lock:
            if not self.shared and self._info is info:
                self._info = None


def _client_token(body: bytes) -> object:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None  # the service says what is wrong with it
    return data.get("client_token") if isinstance(data, dict) else None


def _connection_error(err: Exception) -> bool:
    if isinstance(err, httpclient.HTTPClientError):
        return err.code == 599  # tornado's code for "no HTTP answer at all"
    return isinstance(err, (OSError, websocket.StreamClosedError))


class ForwardHandler(APIHandler):
    _client: httpclient.AsyncHTTPClient | None = None

    @classmethod
    def client(cls) -> httpclient.AsyncHTTPClient:
        if cls._client is None:
            # Many long polls may be open at once; each needs a connection of its own.
            cls._client = httpclient.AsyncHTTPClient(force_instance=True, max_clients=256)
        return cls._client

    @property
    def link(self) -> ServiceLink:
        return self.settings["trainorch_link"]

    @web.authenticated
    async def get(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    async def post(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    async def patch(self, path: str) -> None:
        await self.forward(path)

    @web.authenticated
    async def delete(self, path: str) -> None:
        await self.forward(path)

    async def forward(self, path: str) -> None:
        method = self.request.method or "GET"
        headers = {
            name: self.request.headers[name]
            for name in FORWARDED_HEADERS
            if name in self.request.headers
        }
        submit = path in ("api/jobs", "api/jobs/batch")
        if method == "POST" and submit and "Idempotency-Key" not in headers:
            # A retry below must never submit twice: give the request a key if it has none.
            if not _client_token(self.request.body):
                headers["Idempotency-Key"] = uuid.uuid4().hex
        # Submits carry a key by now; other POSTs (retry, rerun, stop) are not repeatable.
        retry_safe = method != "POST" or submit
        body = self.request.body if method in ("POST", "PATCH") else None
        for attempt in (1, 2):
            info = await self._service()
            url = url_path_join(info.url, "trainorch", path)
            if self.request.query:
                url += "?" + self.request.query
            request = httpclient.HTTPRequest(
                url, method=method, body=body, request_timeout=REQUEST_TIMEOUT,
                headers={**headers, "Authorization": f"token {info.token}"},
                allow_nonstandard_methods=True,
            )  # fmt: skip
            try:
                response = await self.client().fetch(request, raise_error=False)
            except Exception as err:  # noqa: BLE001 - sorted below
                if not _connection_error(err):
                    raise
                self.link.lost(info)
                if attempt == 1 and (retry_safe or isinstance(err, ConnectionRefusedError)):
                    continue
                # Retry-After: the service is away, not broken; clients try again.
                self._unavailable(f"the trainorch service at {info.url} did not answer ({err})")
                return
            break
        self.set_status(response.code, response.reason)
        if "Idempotent-Replayed" in response.headers:
            self.set_header("Idempotent-Replayed", response.headers["Idempotent-Replayed"])
        content_type = response.headers.get("Content-Type", "application/json")
        self.finish(response.body or b"", set_content_type=content_type)

    async def _service(self) -> ServiceInfo:
        try:
            return await self.link.get()
        except ServiceUnavailable as err:
            raise web.HTTPError(503, str(err)) from None

    def _unavailable(self, message: str) -> None:
        self.set_status(503)
        self.set_header("Retry-After", "1")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": None}))


class DashboardHandler(ForwardHandler):
    """``trainorch/dashboard``: the Dask dashboard, through this server when it can be.

    The scheduler's own address (``http://127.0.0.1:8787/status``) only works in a browser
    on the same machine. When the dashboard listens on this machine, the link goes through
    jupyter-server-proxy (``<base_url>proxy/<port>/status``), so it works behind a hub or a
    tunnel too; otherwise to the address the scheduler gives.
    """

    @web.authenticated
    async def get(self) -> None:  # type: ignore[override]
        info = await self._service()
        request = httpclient.HTTPRequest(
            url_path_join(info.url, "trainorch/api/cluster"),
            headers={"Authorization": f"token {info.token}"}, request_timeout=30,
        )  # fmt: skip
        try:
            response = await self.client().fetch(request)
            address = json.loads(response.body).get("dashboard")
        except Exception as err:  # noqa: BLE001 - said in one sentence below
            raise web.HTTPError(
                502, f"the trainorch service did not say where the dashboard is ({err})"
            ) from None
        if not address:
            raise web.HTTPError(404, "the cluster has no dashboard (install bokeh where it runs)")
        parsed = urllib.parse.urlsplit(address)
        path = parsed.path.lstrip("/") or "status"
        proxied = parsed.port and "jupyter_server_proxy" in _enabled_extensions(self)
        if proxied and parsed.hostname in _LOOPBACK:
            self.redirect(url_path_join(self.base_url, f"proxy/{parsed.port}", path))
        elif proxied and parsed.hostname and self._may_proxy(parsed.hostname):
            # A scheduler on another host, which the admin let jupyter-server-proxy reach
            # (c.ServerProxy.host_allowlist): through this server too.
            where = f"proxy/{parsed.hostname}:{parsed.port}"
            self.redirect(url_path_join(self.base_url, where, path))
        else:
            self.redirect(address)

    def _may_proxy(self, host: str) -> bool:
        from jupyter_server_proxy.config import ServerProxy

        allowed = ServerProxy(config=self.settings["serverapp"].config).host_allowlist
        return bool(allowed(self, host)) if callable(allowed) else host in allowed


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class MlflowLinkHandler(APIHandler):
    """``trainorch/mlflow?experiment=E&run=R``: a run in the MLflow UI, wherever that is.

    The UI named by ``TRAINORCH_MLFLOW_UI_URL``, else the tracking server itself, else (a
    local SQLite store) the UI this server starts on first use at ``<base_url>mlflow/``
    through jupyter-server-proxy, so the link needs no configuration and no open port.
    """

    @web.authenticated
    async def get(self) -> None:
        from ..tracking import ui

        experiment = self.get_query_argument("experiment", "")
        run = self.get_query_argument("run", "") or None
        if not ui.EXPERIMENT_ID.fullmatch(experiment):
            raise web.HTTPError(400, "experiment must be an MLflow experiment id (digits)")
        if run is not None and not ui.RUN_ID.fullmatch(run):
            raise web.HTTPError(400, "run must be an MLflow run id (32 hex digits)")
        fragment = ui.run_fragment(experiment, run)
        target: MlflowTarget = self.settings["trainorch_mlflow"]
        if target.ui_url:
            self.redirect(f"{target.ui_url.rstrip('/')}/{fragment}")
        elif target.store_uri is None:
            raise web.HTTPError(404, "tracking is off (TRAINORCH_MLFLOW=off)")
        elif not ui.local_store(target.store_uri):
            self.redirect(f"{target.store_uri.rstrip('/')}/{fragment}")
        elif "jupyter_server_proxy" in _enabled_extensions(self):
            self.redirect(url_path_join(self.base_url, ui.PROXY_NAME, "/") + fragment)
        else:
            raise web.HTTPError(
                404, "the MLflow UI needs jupyter-server-proxy here; or run: trainorch mlflow-ui"
            )


class MlflowTarget:
    """Where MLflow links of this server lead: a configured UI, or the tracking store."""

    def __init__(self, ui_url: str, store_uri: str | None) -> None:
        self.ui_url = ui_url
        self.store_uri = store_uri


def _enabled_extensions(handler: JupyterHandler) -> set[str]:
    enabled = handler.settings["serverapp"].extension_manager.extensions
    return {name for name, ext in enabled.items() if ext.enabled}


class EventsSocketProxy(PushSocket):
    """The push channel, relayed from the service's own websocket."""

    upstream: Any = None

    async def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        link: ServiceLink = self.settings["trainorch_link"]
        try:
            info = await link.get()
            base = url_path_join(info.url, "trainorch/api/events/ws")
            query = urllib.parse.urlencode({"after": self.get_query_argument("after", "0")})
            url = base.replace("http", "ws", 1) + "?" + query
            self.upstream = await websocket.websocket_connect(
                httpclient.HTTPRequest(url, headers={"Authorization": f"token {info.token}"})
            )
        except Exception as err:  # noqa: BLE001 - the panel falls back to polling and reconnects
            if "info" in locals():
                link.lost(info)
            self.log.warning("trainorch: cannot reach the service's event channel: %s", err)
            self.close(1011, "the trainorch service is not reachable")
            return
        asyncio.ensure_future(self._relay())

    async def _relay(self) -> None:
        while True:
            message = await self.upstream.read_message()
            if message is None:
                break
            try:
                await self.write_message(message)
            except websocket.WebSocketClosedError:
                break
        self.close()

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None


def front_handlers(base_url: str) -> list[tuple[str, type[JupyterHandler]]]:
    return [
        (url_path_join(base_url, "trainorch/api/events/ws"), EventsSocketProxy),
        (url_path_join(base_url, "trainorch/dashboard"), DashboardHandler),
        (url_path_join(base_url, "trainorch/mlflow"), MlflowLinkHandler),
        (url_path_join(base_url, r"trainorch/(?P<path>api/.*|metrics)"), ForwardHandler),
    ]
