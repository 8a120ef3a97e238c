"""Runs an Orchestrator on its own event loop in a background thread.

``trainorch serve`` hosts it this way (its REST handlers call in from jupyter_server's
loop and from worker threads); so do the component tests and benchmarks, which drive an
orchestrator directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..cluster import make_backend
from ..store import JobStore
from .config import OrchestratorConfig
from .service import Orchestrator

T = TypeVar("T")
log = logging.getLogger(__name__)


class OrchestratorHost:
    def __init__(
        self, config: OrchestratorConfig, url: str | None = None, store: JobStore | None = None
    ) -> None:
        self.config = config
        self.url = url
        self.store = store or config.store_class(config.db_url)
        self._owns_store = store is None
        self.orchestrator: Orchestrator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 180.0) -> OrchestratorHost:
        """Start the loop, the cluster and the orchestrator; raise what stopped them."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="trainorch-orchestrator", daemon=True
        )
        self._thread.start()
        started.result(timeout=timeout)
        return self

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def boot() -> None:
            backend = make_backend(self.config)
            orchestrator = Orchestrator(self.store, backend, self.config)
            try:
                await orchestrator.start(self.url)
            except BaseException:
                await backend.close(stop_cluster=False)
                raise
            self.orchestrator = orchestrator

        try:
            loop.run_until_complete(boot())
        except BaseException as err:  # noqa: BLE001 - handed to the starting thread
            started.set_exception(err)
            loop.close()
            return
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def submit_coroutine(
        self, make: Callable[[Orchestrator], Awaitable[T]]
    ) -> concurrent.futures.Future[T]:
        if self._loop is None or self.orchestrator is None:
            raise RuntimeError("the orchestrator is not running")
        orchestrator = self.orchestrator

        async def run() -> T:
            return await make(orchestrator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def call(self, make: Callable[[Orchestrator], Awaitable[T]], timeout: float | None = 60) -> T:
        """Run ``make(orchestrator)`` on the orchestrator loop; block for its result."""
        return self.submit_coroutine(make).result(timeout)

    async def acall(self, make: Callable[[Orchestrator], Awaitable[T]]) -> T:
        """The same, awaited from another event loop (jupyter_server's)."""
        return await asyncio.wrap_future(self.submit_coroutine(make))

    def call_sync(self, fn: Callable[[Orchestrator], Any], timeout: float | None = 30) -> Any:
        """Run a plain function on the loop thread (reads of in-memory state)."""

        async def wrapped(orchestrator: Orchestrator) -> Any:
            return fn(orchestrator)

        return self.call(wrapped, timeout)

    def stop(self, timeout: float = 60, detach: bool = False) -> None:
        """Stop the orchestrator: with ``detach``, running attempts and the local cluster
        keep going (a later orchestrator adopts them); else they are stopped too."""
        if self._loop is None or not self.running:
            return
        if self.orchestrator is not None:
            try:
                self.call(lambda o: o.detach() if detach else o.stop(), timeout=timeout)
            except Exception as err:  # noqa: BLE001
                log.warning("orchestrator did not stop cleanly: %s", err)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._owns_store:
            self.store.close()
