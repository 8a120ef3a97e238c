"""``TrainorchJobTrigger``: waits in Airflow's triggerer until a trainorch job ends.

It long-polls the service's change feed (``GET events``), which answers as soon as
anything changes, and reads the job (``GET jobs/{id}``) when the job itself changed, or
at least every ``poll_seconds``: no worker slot and no thread is held while a job runs
for hours. A busy feed is read at most once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from ..client.transport import TrainOrchError
from ..contract.states import TERMINAL_STATES
from .compat import BaseTrigger, TriggerEvent
from .hooks import DEFAULT_CONNECTION, TrainorchHook

# How long the trigger keeps trying while the service cannot be reached (restarting): the
# job goes on meanwhile, and a task that gave up would leave it running unwatched.
RECONNECT_FOR = 600.0
_MAX_LONG_POLL = 60.0  # what the service allows
_PAST_THE_END = 2**62  # the largest cursor the service takes


class TrainorchService:
    """The few REST calls a trigger makes, over one async HTTP client."""

    def __init__(self, url: str, token: str, reconnect_for: float = RECONNECT_FOR) -> None:
        import httpx

        self.url = url
        self.reconnect_for = reconnect_for
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/") + "/trainorch/api",
            headers={"Authorization": f"token {token}"},
            timeout=30.0,
        )

    async def __aenter__(self) -> TrainorchService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def call(
        self, method: str, path: str, params: dict[str, Any] | None = None, wait: float = 0.0
    ) -> Any:
        """One call, retried while the service cannot be reached; a 4xx is a
        ``TrainOrchError`` of the service's sentence."""
        import httpx

        deadline = time.monotonic() + self.reconnect_for
        delay = 0.25
        while True:
            try:
                response = await self._client.request(
                    method, path, params=params, timeout=30.0 + wait
                )
            except httpx.TransportError as err:
                reason = str(err) or type(err).__name__
            else:
                restarting = response.status_code in (502, 504) or (
                    response.status_code == 503 and "Retry-After" in response.headers
                )
                if not restarting:
                    if response.is_error:
                        raise TrainOrchError(_message(response), status=response.status_code)
                    return response.json()
                reason = f"{response.status_code} {response.reason_phrase}"
            if time.monotonic() + delay > deadline:
                raise TrainOrchError(
                    f"cannot reach the trainorch server at {self.url} ({reason})", 503
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/jobs/{quote(job_id, safe='')}")

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self.call("DELETE", f"/jobs/{quote(job_id, safe='')}")

    async def wait_for_change(self, job_id: str, after: int, timeout: float) -> int:
        """Long-poll the change feed until ``job_id`` changes or ``timeout`` seconds pass;
        return the new cursor."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return after
            asked = time.monotonic()
            wait = min(remaining, _MAX_LONG_POLL)
            answer = await self.call(
                "GET", "/events", {"after": after, "timeout": round(wait, 3)}, wait
            )
            if answer.get("reset"):  # the service restarted: its numbering began again
                return int(answer["last"])
            after = int(answer["last"])
            if any(c.get("kind") == "job" and c.get("job_id") == job_id for c in answer["changes"]):
                return after
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - asked)))


def _message(response: Any) -> str:
    try:
        body = response.json()
        message = body.get("message") or body.get("reason")
    except (ValueError, AttributeError):
        message = None
    return (
        message or f"the trainorch server answered {response.status_code} {response.reason_phrase}"
    )


class TrainorchJobTrigger(BaseTrigger):
    """Fires once: ``{"status": "ended", "job_id", "state"}`` when the job has ended,
    ``{"status": "timeout", ...}`` at ``deadline`` (seconds since the epoch), or
    ``{"status": "error", "job_id", "message"}`` when the service refuses to answer."""

    def __init__(
        self,
        job_id: str,
        trainorch_conn_id: str = DEFAULT_CONNECTION,
        deadline: float | None = None,
        poll_seconds: float = 30.0,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.trainorch_conn_id = trainorch_conn_id
        self.deadline = deadline
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "jupyter_trainorch.airflow.triggers.TrainorchJobTrigger",
            {
                "job_id": self.job_id,
                "trainorch_conn_id": self.trainorch_conn_id,
                "deadline": self.deadline,
                "poll_seconds": self.poll_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await self._wait()
        except TrainOrchError as err:
            event = {"status": "error", "job_id": self.job_id, "message": str(err)}
        yield TriggerEvent(event)

    async def _wait(self) -> dict[str, Any]:
        url, token = await TrainorchHook(self.trainorch_conn_id).address()
        async with TrainorchService(url, token) as service:
            # The cursor first, so a change between reading the job and polling is not missed.
            # A cursor past the feed's end is answered with the current one and no changes
            # (``reset``), where after=0 would bring back the whole feed.
            newest = await service.call("GET", "/events", {"after": _PAST_THE_END, "timeout": 0})
            after = int(newest["last"])
            while True:
                job = await service.job(self.job_id)
                if job["state"] in TERMINAL_STATES:
                    return {"status": "ended", "job_id": self.job_id, "state": job["state"]}
                wait = self.poll_seconds
                if self.deadline is not None:
                    wait = min(wait, self.deadline - time.time())
                    if wait <= 0:
                        return {"status": "timeout", "job_id": self.job_id, "state": job["state"]}
                after = await service.wait_for_change(self.job_id, after, wait)

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user marked the deferred task failed or cleared it."""
        url, token = await TrainorchHook(self.trainorch_conn_id).address()
        async with TrainorchService(url, token, reconnect_for=10.0) as service:
            await service.cancel(self.job_id)
        self.log.info("cancelled trainorch job %s", self.job_id)
