"""How the user-facing surface reaches an orchestrator: over REST, or in-process.

``connect()`` picks, in order: ``TRAINORCH_URL`` (set for kernels by the Jupyter
server), the URL of the orchestrator that holds the store's lease (a terminal next
to a running JupyterLab), else an orchestrator started inside this process.
Both transports expose the same methods and raise ``TrainOrchError`` with one
sentence for anything the user can fix.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class TrainOrchError(Exception):
    """A user-facing failure: ``str(err)`` is one sentence; ``status`` mirrors HTTP."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class HTTPTransport:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.base = url.rstrip("/") + "/trainorch/api"
        self.root = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"HTTPTransport({self.root})"

    def _request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
        raw: bool = False, timeout: float | None = None,
    ) -> Any:  # fmt: skip
        url = self.base + path
        if query:
            clean = {k: v for k, v in query.items() if v is not None}
            if clean:
                url += "?" + urllib.parse.urlencode(clean)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise TrainOrchError(_error_message(err), status=err.code) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise TrainOrchError(
                f"cannot reach the trainorch server at {self.root} ({reason})", status=503
            ) from None
        return payload if raw else json.loads(payload or b"null")

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/jobs", body)

    def list(self, state: str | None = None, user: str | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return self._request("GET", "/jobs", query={"state": state, "user": user, "limit": limit, "offset": offset})

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

    def logs(self, job_id: str, attempt: int | None = None, after: int = 0, wait: float = 0.0) -> dict[str, Any]:
        return self._request(
            "GET", f"/jobs/{_quote(job_id)}/logs", query={"attempt": attempt, "after": after, "wait": wait or None},
            timeout=self.timeout + wait,
        )  # fmt: skip

    def outputs(self, job_id: str) -> bytes | None:
        try:
            return self._request("GET", f"/jobs/{_quote(job_id)}/outputs", raw=True)
        except TrainOrchError as err:
            if err.status == 404 and "no outputs" in str(err):
                return None
            raise

    def events(self, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        return self._request("GET", "/events", query={"after": after, "timeout": timeout}, timeout=self.timeout + timeout)

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        after = self.events()["last"]
        while True:
            job = self.get(job_id)
            if job["state"] in ("succeeded", "failed", "cancelled"):
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


class LocalTransport:
    """An orchestrator inside this process; the same methods as ``HTTPTransport``."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def __repr__(self) -> str:
        return f"LocalTransport({self.service.config.db_url})"

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.service, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            from ..orchestrator import JobNotFound, JobStateError, OrchestratorBusy
            from ..spec import SpecError

            try:
                return method(*args, **kwargs)
            except SpecError as err:
                raise TrainOrchError(str(err), 400) from None
            except JobNotFound as err:
                raise TrainOrchError(str(err), 404) from None
            except JobStateError as err:
                raise TrainOrchError(str(err), 409) from None
            except OrchestratorBusy as err:
                raise TrainOrchError(str(err), 503) from None

        return call


_lock = threading.Lock()
_local: LocalTransport | None = None


def _token_for(url: str) -> str | None:
    """The token of a running Jupyter server at ``url`` (from its runtime file)."""
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    wanted = url.rstrip("/")
    for info in list_running_servers():
        if info.get("url", "").rstrip("/") == wanted:
            return info.get("token") or None
    return None


def connect() -> HTTPTransport | LocalTransport:
    global _local
    url = os.environ.get("TRAINORCH_URL")
    if url:
        token = os.environ.get("TRAINORCH_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
        return HTTPTransport(url, token)
    with _lock:
        if _local is not None:
            return _local
        from ..orchestrator import OrchestratorConfig
        from ..orchestrator.jobservice import JobService
        from ..spec import SpecError
        from ..store import JobStore

        try:
            config = OrchestratorConfig.from_env()
        except SpecError as err:
            raise TrainOrchError(str(err)) from None
        store = JobStore(config.db_url)
        try:
            lease = store.current_lease()
        finally:
            store.close()
        if lease is not None and lease.url and lease.pid != os.getpid():
            return HTTPTransport(lease.url, os.environ.get("TRAINORCH_TOKEN") or _token_for(lease.url))
        _local = LocalTransport(JobService(config))
        # atexit runs last-registered first: import distributed now so that its own exit
        # hooks (which close clusters) run after ours has stopped the orchestrator cleanly.
        import distributed  # noqa: F401

        atexit.register(_stop_local)
        return _local


def _stop_local() -> None:
    global _local
    if _local is not None:
        _local.service.stop()
        _local = None
