"""How the user-facing surface reaches the trainorch service: over its REST API.

``connect()`` picks, in order: ``TRAINORCH_URL`` (set for kernels and terminals by the
Jupyter server, which forwards to the service), ``TRAINORCH_SERVICE_URL`` (a shared
JupyterHub service, with the hub token), else the user's own service, found through its
runtime file or started detached. No orchestrator ever runs inside a kernel or script.

Calls that fail to connect (the service or the Jupyter server restarting) are retried
for a while; submits carry an ``Idempotency-Key``, so a retry never makes a second job.
Every failure the user can act on is a ``TrainOrchError`` with one sentence.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ..orchestrator import OrchestratorConfig

# How long calls keep retrying while the server or the service is away (restarting).
RECONNECT_FOR = 90.0


class TrainOrchError(Exception):
    """A user-facing failure: ``str(err)`` is one sentence; ``status`` mirrors HTTP."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class HTTPTransport:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 60.0,
        rediscover: Callable[[], tuple[str, str | None]] | None = None,
        reconnect_for: float = RECONNECT_FOR,
    ) -> None:
        self._set_address(url, token)
        self.timeout = timeout
        # Finds the service again (its port changes when it restarts).
        self._rediscover = rediscover
        self.reconnect_for = reconnect_for

    def _set_address(self, url: str, token: str | None) -> None:
        self.base = url.rstrip("/") + "/trainorch/api"
        self.root = url.rstrip("/")
        self.token = token

    def __repr__(self) -> str:
        return f"HTTPTransport({self.root})"

    def _request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
        raw: bool = False, timeout: float | None = None, headers: dict[str, str] | None = None,
    ) -> Any:  # fmt: skip
        """One call, retried while the other side cannot be reached (or says it is
        restarting); raised as one sentence after ``reconnect_for`` seconds."""
        deadline = time.monotonic() + self.reconnect_for
        delay = 0.25
        while True:
            try:
                return self._request_once(method, path, body, query, raw, timeout, headers)
            except _Unreachable as err:
                if time.monotonic() + delay > deadline:
                    raise TrainOrchError(
                        f"cannot reach the trainorch server at {self.root} ({err.reason})",
                        status=503,
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            if self._rediscover is not None:
                try:
                    self._set_address(*self._rediscover())
                except TrainOrchError:
                    pass  # not back yet: keep trying until the deadline

    def _request_once(
        self, method: str, path: str, body: Any, query: dict[str, Any] | None, raw: bool,
        timeout: float | None, headers: dict[str, str] | None,
    ) -> Any:  # fmt: skip
        url = self.base + path
        if query:
            clean = {k: v for k, v in query.items() if v is not None}
            if clean:
                url += "?" + urllib.parse.urlencode(clean)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            # A gateway without its service, or a front whose service is restarting.
            if err.code in (502, 504) or (err.code == 503 and err.headers.get("Retry-After")):
                raise _Unreachable(f"{err.code} {err.reason}") from None
            raise TrainOrchError(_error_message(err), status=err.code) from None
        except (
            urllib.error.URLError,
            ConnectionError,
            TimeoutError,
            http.client.HTTPException,
        ) as err:
            raise _Unreachable(str(getattr(err, "reason", err))) from None
        if raw:
            return payload
        try:
            return orjson.loads(payload or b"null")
        except orjson.JSONDecodeError:  # NaN, which only the standard library reads
            return json.loads(payload)

    def me(self) -> dict[str, Any]:
        return self._request("GET", "/me")

    def answers(self) -> bool:
        """One try, no retries: does the service answer now?"""
        try:
            self._request_once("GET", "/me", None, None, False, 5.0, None)
        except (_Unreachable, TrainOrchError):
            return False
        return True

    def service_status(self) -> dict[str, Any]:
        return self._request("GET", "/service")

    def stop_service(self, force: bool = False, drain: bool = False) -> dict[str, Any]:
        # Not retried: after a stop, "unreachable" is the expected answer.
        return self._request_once("POST", "/service/stop", {"force": force, "drain": drain},
                                  None, False, None, None)  # fmt: skip

    def submit(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit once: every retry of this call carries the same key."""
        key = idempotency_key or uuid.uuid4().hex
        return self._request("POST", "/jobs", body, headers={"Idempotency-Key": key})

    def submit_batch(
        self, bodies: list[dict[str, Any]], idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Submit jobs that name each other, all or none; every retry carries the same key."""
        key = idempotency_key or uuid.uuid4().hex
        answer = self._request("POST", "/jobs/batch", {"jobs": bodies},
                               headers={"Idempotency-Key": key})  # fmt: skip
        return answer["jobs"]

    def list(
        self, state: str | None = None, user: str | None = None, limit: int = 100,
        offset: int = 0, q: str | None = None, sort: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        query = {
            "state": state,
            "user": user,
            "limit": limit,
            "offset": offset,
            "q": q,
            "sort": sort,
        }
        return self._request("GET", "/jobs", query=query)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{_quote(job_id)}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/jobs/{_quote(job_id)}")

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{_quote(job_id)}/retry", {})

    def rerun(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{_quote(job_id)}/rerun", {})

    def package(self, job_id: str) -> bytes | None:
        return self._request("GET", f"/jobs/{_quote(job_id)}/package", raw=True) or None

    def logs(
        self, job_id: str, attempt: int | None = None, after: int = 0, wait: float = 0.0
    ) -> dict[str, Any]:
        return self._request(
            "GET", f"/jobs/{_quote(job_id)}/logs", query={"attempt": attempt, "after": after, "wait": wait or None},
            timeout=self.timeout + wait,
        )  # fmt: skip

    def metrics(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{_quote(job_id)}/metrics")

    def outputs(self, job_id: str) -> bytes | None:
        try:
            return self._request("GET", f"/jobs/{_quote(job_id)}/outputs", raw=True)
        except TrainOrchError as err:
            if err.status == 404 and "no outputs" in str(err):
                return None
            raise

    def events(self, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        return self._request(
            "GET",
            "/events",
            query={"after": after, "timeout": timeout},
            timeout=self.timeout + timeout,
        )

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        after = self.events()["last"]
        while True:
            job = self.get(job_id)
            if job["terminal"]:
                return job
            remaining = 20.0 if deadline is None else min(20.0, deadline - time.monotonic())
            if remaining <= 0:
                return job
            after = self.events(after=after, timeout=remaining)["last"]

    def cluster(self) -> dict[str, Any]:
        return self._request("GET", "/cluster")

    def templates(self) -> dict[str, Any]:
        return self._request("GET", "/templates")

    def template(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/templates/{_quote(name)}")


def _quote(value: str) -> str:
    return urllib.parse.quote(str(value), safe="")


def _error_message(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read() or b"{}")
        message = body.get("message") or body.get("reason")
    except ValueError:
        message = None
    if err.code == 403:
        return message or "the trainorch server refused the request: check TRAINORCH_TOKEN"
    return message or f"the trainorch server answered {err.code} {err.reason}"


class _Unreachable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_lock = threading.Lock()
_own: dict[str, HTTPTransport] = {}  # by data folder: one service each


def connect() -> HTTPTransport:
    url = os.environ.get("TRAINORCH_URL")
    if url:
        token = os.environ.get("TRAINORCH_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
        return HTTPTransport(url, token)
    shared = os.environ.get("TRAINORCH_SERVICE_URL")
    if shared:
        return HTTPTransport(shared, os.environ.get("JUPYTERHUB_API_TOKEN"))
    folder = str(_own_settings()[0].data_dir)
    with _lock:
        if folder not in _own:
            _own[folder] = HTTPTransport(*_own_service(), rediscover=_own_service)
        return _own[folder]


def _own_settings() -> tuple[OrchestratorConfig, dict[str, str]]:
    """The settings of the user's own service, from this process's ``TRAINORCH_*`` variables
    (and the variables that pass them on to a service started for it)."""
    from ..settings import SettingError, TrainOrch

    try:
        settings = TrainOrch()
        return settings.to_config(), settings.to_env()
    except SettingError as err:
        raise TrainOrchError(str(err)) from None


def _own_service() -> tuple[str, str | None]:
    """The user's own service: found through its runtime file, or started detached (this
    takes a few seconds, once)."""
    from ..service import ServiceUnavailable, ensure_service

    config, env = _own_settings()
    try:
        info = ensure_service(config.data_dir, env)
    except ServiceUnavailable as err:
        raise TrainOrchError(str(err), status=503) from None
    return info.url, info.token
