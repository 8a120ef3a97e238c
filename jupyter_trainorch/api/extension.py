"""The jupyter_server extension: REST routes plus an orchestrator started on first use.

Kernels and terminals started by this server inherit ``TRAINORCH_URL`` and
``TRAINORCH_TOKEN``, so ``%%train`` and the ``trainorch`` CLI reach this server's
orchestrator with no configuration. ``trainorch serve`` launches the same app
standalone (a JupyterHub service shares one queue between users).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Integer, Unicode
from traitlets.config import Configurable

from ..orchestrator import OrchestratorConfig
from ..orchestrator.jobservice import JobService
from .handlers import handlers


class TrainOrch(Configurable):
    """Settings (``c.TrainOrch.*``); an unset one falls back to its ``TRAINORCH_*`` variable."""

    cluster = Unicode(
        None,
        allow_none=True,
        help="'local', 'local-cuda' or a tcp:// Dask scheduler address (TRAINORCH_CLUSTER).",
    ).tag(config=True)
    workers = Integer(
        None, allow_none=True, help="Worker processes of the local cluster (TRAINORCH_WORKERS)."
    ).tag(config=True)
    gpus_per_worker = Integer(
        None, allow_none=True,
        help="GPU slots each local worker advertises, for GPU scheduling without GPUs (TRAINORCH_GPUS_PER_WORKER).",
    ).tag(config=True)  # fmt: skip
    slots_per_worker = Integer(
        None, allow_none=True, help="Concurrent jobs per local worker (TRAINORCH_SLOTS_PER_WORKER)."
    ).tag(config=True)
    db = Unicode(
        None, allow_none=True, help="SQLAlchemy URL or SQLite path of the job store (TRAINORCH_DB)."
    ).tag(config=True)
    data_dir = Unicode(
        None,
        allow_none=True,
        help="Folder for the default store and checkpoints (TRAINORCH_DATA_DIR).",
    ).tag(config=True)
    mlflow = Unicode(
        None,
        allow_none=True,
        help="MLflow tracking URI, or 'off' (TRAINORCH_MLFLOW; default: MLFLOW_TRACKING_URI, "
        "else SQLite in data_dir).",
    ).tag(config=True)

    def to_config(self) -> OrchestratorConfig:
        chosen = {name: getattr(self, name) for name in self.trait_names(config=True)}
        chosen = {name: value for name, value in chosen.items() if value is not None}
        if "data_dir" in chosen:
            chosen["data_dir"] = Path(chosen["data_dir"])
        return OrchestratorConfig.from_env(**chosen)


class TrainOrchApp(ExtensionApp):
    name = "jupyter_trainorch"
    description = "Run notebook cells as prioritised, retried training jobs on a Dask cluster."
    classes = [TrainOrch]
    # ``trainorch serve`` is a headless service: JupyterLab and friends are not needed.
    load_other_extensions = False

    service: JobService | None = None

    def initialize_settings(self) -> None:
        settings = TrainOrch(parent=self)
        self.service = JobService(settings.to_config())
        self.settings["trainorch_service"] = self.service
        # The port is final only once the server listens: finish when the loop runs.
        assert self.serverapp is not None
        self.serverapp.io_loop.add_callback(self._on_server_started)

    def _on_server_started(self) -> None:
        self._export_to_kernels()
        self._recover_in_background()

    def _export_to_kernels(self) -> None:
        """Kernels and terminals inherit the server's environment at start."""
        assert self.serverapp is not None and self.service is not None
        self.service.url = self.serverapp.connection_url
        os.environ["TRAINORCH_URL"] = self.serverapp.connection_url
        token = getattr(self.serverapp.identity_provider, "token", "") or ""
        if token:
            os.environ["TRAINORCH_TOKEN"] = token

    def _recover_in_background(self) -> None:
        """Jobs left unfinished by an earlier run are picked up without waiting for a visit."""
        service = self.service
        assert service is not None

        def start_if_needed() -> None:
            from ..store import ALL_STATES, TERMINAL_STATES

            unfinished = service.store.count_jobs(
                states=[s for s in ALL_STATES if s not in TERMINAL_STATES]
            )
            if unfinished:
                try:
                    service.host  # noqa: B018 - starting it is the point
                except Exception as err:  # noqa: BLE001
                    self.log.error("trainorch: could not start the orchestrator: %s", err)

        threading.Thread(target=start_if_needed, name="trainorch-recover", daemon=True).start()

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers("/"))

    async def stop_extension(self) -> None:
        if self.service is not None:
            self.service.stop()


main = launch_new_instance = TrainOrchApp.launch_instance
