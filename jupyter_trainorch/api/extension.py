"""The jupyter_server extension JupyterLab loads: an authenticated front for the service.

It runs no orchestrator: it finds the user's trainorch service (``trainorch serve``) or
starts it detached, or uses the shared service JupyterHub points it at
(``TRAINORCH_SERVICE_URL``), and forwards the REST API and the push channel to it
(``proxy``). Jobs therefore keep running when this server restarts or is culled.

Kernels and terminals started by this server inherit ``TRAINORCH_URL`` and
``TRAINORCH_TOKEN`` (this server's own), so ``%%train`` and the ``trainorch`` CLI reach
the service through it with no configuration.
"""

from __future__ import annotations

import asyncio
import os
import threading

from jupyter_server.extension.application import ExtensionApp

from ..service import ServiceUnavailable
from ..settings import SettingError, TrainOrch
from ..tracking.hooks import tracking_uri
from .proxy import MlflowTarget, ServiceLink, front_handlers


class TrainOrchApp(ExtensionApp):
    name = "jupyter_trainorch"
    description = "Run notebook cells as prioritised, retried training jobs on a Dask cluster."
    classes = [TrainOrch]

    link: ServiceLink | None = None
    _connecting: threading.Thread | None = None

    def initialize_settings(self) -> None:
        try:
            settings = TrainOrch(parent=self)
            config = settings.to_config()  # every setting checked now, not on use
        except SettingError as err:
            # JupyterLab itself goes on: only the trainorch API is missing, and the log says why.
            self.log.error("trainorch: a setting is wrong, so trainorch is off: %s", err)
            return
        self.link = ServiceLink(
            config.data_dir, settings.to_env(), settings.service_url,
            hub_token=os.environ.get("JUPYTERHUB_API_TOKEN", ""),
        )  # fmt: skip
        self.settings["trainorch_link"] = self.link
        self.settings["trainorch_mlflow"] = MlflowTarget(
            config.mlflow_ui_url, tracking_uri(config.mlflow, config.data_dir)
        )
        # The port is final only once the server listens: finish when the loop runs.
        assert self.serverapp is not None
        self.serverapp.io_loop.add_callback(self._on_server_started)

    def initialize_handlers(self) -> None:
        if self.link is not None:
            self.handlers.extend(front_handlers("/"))

    def _on_server_started(self) -> None:
        assert self.serverapp is not None and self.link is not None
        os.environ["TRAINORCH_URL"] = self.serverapp.connection_url
        token = getattr(self.serverapp.identity_provider, "token", "") or ""
        if token:
            os.environ["TRAINORCH_TOKEN"] = token
        if not self.link.shared:
            # Started now, not at the first request: jobs left queued resume at once.
            self._connecting = threading.Thread(
                target=self._connect, name="trainorch-connect", daemon=True
            )
            self._connecting.start()

    def _connect(self) -> None:
        assert self.link is not None
        try:
            info = self.link.current()
        except ServiceUnavailable as err:
            self.log.error("trainorch: %s", err)
            return
        self.log.info("trainorch: using the service at %s (pid %s)", info.url, info.pid)

    async def stop_extension(self) -> None:
        # A service being started is left running (it outlives this server by design), but
        # only once it is fully started and recorded in its runtime file.
        if self._connecting is not None and self._connecting.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self._connecting.join, 120)
