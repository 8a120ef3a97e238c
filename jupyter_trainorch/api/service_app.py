"""``trainorch serve``: the long-lived service that owns the store and runs the orchestrator.

A headless Jupyter server that carries only the trainorch REST API (no kernels, files or
terminals: its callers are users' own Jupyter servers, the CLI and kernels). It is never
a thread of a user's Jupyter server or kernel, so jobs outlive JupyterLab.

- On a user's machine it is started detached by the server extension, the magics or the
  CLI when absent, listens on a random loopback port and writes ``service.json`` (its URL
  and token, readable by that user only) into the data folder; every caller is that user.
- ``--hub`` runs it as a JupyterHub managed service for all users (``c.JupyterHub.services``):
  it listens where the hub says, and callers are hub users identified by their tokens.

SIGTERM detaches: running jobs go on and the next start adopts them. ``trainorch service
stop`` (``POST service/stop``) stops it on purpose.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import urllib.parse
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.serverapp import ServerApp
from traitlets import Bool, TraitError, default

from ..contract.limits import MAX_REQUEST_BYTES
from ..orchestrator.jobservice import JobService
from ..processes import SERVICE_SESSION_NICE, yield_cpu_to_jobs
from ..service.runtime import ServiceInfo, remove_runtime, write_runtime
from ..settings import TrainOrch
from .handlers import service_handlers
from .identity import HubIdentityProvider, OwnerIdentityProvider

CLUSTER_CHECK_MS = 5000


class HeadlessServerApp(ServerApp):
    """Only the status and auth routes of jupyter_server besides ours."""

    default_services = ("api", "auth", "security")

    # The largest request is a submit carrying a code package (captured variables are
    # capped at 64 MiB, base64 adds a third); nothing larger is read into memory.
    @default("max_body_size")
    def _default_max_body_size(self) -> int:
        return MAX_REQUEST_BYTES

    @default("max_buffer_size")
    def _default_max_buffer_size(self) -> int:
        return MAX_REQUEST_BYTES

    # Not a notebook server: it must not be listed by `jupyter server list` or offered to
    # editors as a place to run kernels. Clients find it through service.json.
    def write_server_info_file(self) -> None:
        pass

    def remove_server_info_file(self) -> None:
        pass

    def write_browser_open_files(self) -> None:
        pass

    def remove_browser_open_files(self) -> None:
        pass


class TrainOrchServiceApp(ExtensionApp):
    name = "trainorch_service"
    description = "The trainorch service: job store, orchestrator and REST API."
    classes = [TrainOrch]
    load_other_extensions = False
    serverapp_class = HeadlessServerApp

    hub = Bool(False, help="Run as a JupyterHub managed service (HubAuth).").tag(config=True)

    service: JobService | None = None
    settings_: TrainOrch | None = None

    @classmethod
    def get_extension_package(cls) -> str:
        # This module, not the package: the package's extension point is the front that
        # JupyterLab loads, never the service.
        return __name__

    def _jupyter_server_config(self) -> dict[str, Any]:
        config = super()._jupyter_server_config()
        server = config.setdefault("ServerApp", {})
        server.update(open_browser=False, terminals_enabled=False)
        if self.hub:
            server.update(_hub_server_settings())
        else:
            server["identity_provider_class"] = OwnerIdentityProvider
        return config

    def initialize_settings(self) -> None:
        try:
            self.settings_ = TrainOrch(parent=self)
            config = self.settings_.to_config()
        except TraitError as err:  # a SettingError names the setting as the user wrote it
            # jupyter_server would go on without this extension: a service without its API.
            # Stop instead, with the sentence that names the setting (its last log line).
            self.log.critical("trainorch: a setting is wrong: %s", err)
            raise SystemExit(2) from None
        self._log_deploy_hooks_here()
        self.service = JobService(config, others_jobs=self.settings_.others_jobs)
        self.settings.update(
            trainorch_service=self.service,
            trainorch_admins=(list(self.settings_.admin_users), list(self.settings_.admin_groups)),
            trainorch_mode="hub" if self.hub else "single-user",
            trainorch_stop=self._stop_on_request,
        )
        assert self.serverapp is not None
        self.serverapp.io_loop.add_callback(self._on_server_started)

    def _log_deploy_hooks_here(self) -> None:
        """What deployment hooks did, and their commands' output, in this service's log:
        they are INFO lines, which Python's last-resort handler would drop."""
        hooks_log = logging.getLogger("jupyter_trainorch.orchestrator.deploy_hooks")
        hooks_log.setLevel(logging.INFO)
        for handler in self.log.handlers:
            if handler not in hooks_log.handlers:  # a second app in this process
                hooks_log.addHandler(handler)
        hooks_log.propagate = not self.log.handlers  # each line once

    def initialize_handlers(self) -> None:
        self.handlers.extend(service_handlers("/"))

    def _on_server_started(self) -> None:
        assert self.serverapp is not None and self.service is not None
        self.service.url = self.serverapp.connection_url
        if yield_cpu_to_jobs():
            self.log.info("trainorch: jobs come before the service for the CPU (nice %d)",
                          SERVICE_SESSION_NICE)  # fmt: skip
        threading.Thread(
            target=self._start_orchestrator, name="trainorch-start", daemon=True
        ).start()

    def _start_orchestrator(self) -> None:
        """Recover and dispatch at once (not on the first request); then tell clients where
        the service is."""
        assert self.serverapp is not None and self.service is not None
        try:
            self.service.host  # noqa: B018 - starting it is the point
        except Exception as err:  # noqa: BLE001
            self.log.error("trainorch: the orchestrator did not start: %s", err)
            self.serverapp.io_loop.add_callback(self.serverapp.stop)
            return
        if self.settings["trainorch_mode"] == "single-user":
            write_runtime(
                self.service.config.data_dir,
                ServiceInfo(
                    url=self.serverapp.connection_url,
                    token=self.serverapp.identity_provider.token,
                    pid=os.getpid(),
                ),
            )
        # What starting loaded (jupyter_server, Dask, SQLAlchemy) lives as long as the service:
        # out of the collector's sight, the full collections that a stream of log pages
        # triggers no longer walk it (they took 3/4 of a log page's CPU).
        gc.freeze()
        self.log.info("trainorch: service ready at %s", self.serverapp.connection_url)
        self.serverapp.io_loop.add_callback(self._watch_cluster)

    def _watch_cluster(self) -> None:
        from tornado.ioloop import PeriodicCallback

        PeriodicCallback(self._check_cluster, CLUSTER_CHECK_MS).start()

    def _check_cluster(self) -> None:
        """A local cluster that died cannot come back by itself: end, so that the next start
        (by the next client, or by JupyterHub) makes a new one and requeues what it ran."""
        assert self.serverapp is not None and self.service is not None
        orchestrator = self.service.orchestrator
        if orchestrator is None or not orchestrator.backend.cluster_gone():
            return
        self.log.error("trainorch: the local Dask cluster has gone; stopping this service")
        self.serverapp.io_loop.add_callback(self.serverapp.stop)

    def _stop_on_request(self, detach: bool) -> None:
        """``POST service/stop``: stop the orchestrator (and its attempts unless detached),
        then the server."""
        assert self.serverapp is not None and self.service is not None
        self.service.stop(detach=detach)
        self.serverapp.io_loop.add_callback(self.serverapp.stop)

    async def stop_extension(self) -> None:
        if self.service is None:
            return
        if self.settings.get("trainorch_mode") == "single-user":
            remove_runtime(self.service.config.data_dir, os.getpid())
        # A signal or a hub restart: jobs keep running, the next start adopts them.
        self.service.stop(detach=True)


def _hub_server_settings() -> dict[str, Any]:
    """Listen where JupyterHub expects the service, under its prefix."""
    url = urllib.parse.urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    return {
        "identity_provider_class": HubIdentityProvider,
        "ip": url.hostname or "127.0.0.1",
        "port": url.port or 80,
        "port_retries": 0,
        "base_url": os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/trainorch/"),
    }


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": __name__, "app": TrainOrchServiceApp}]


main = TrainOrchServiceApp.launch_instance
