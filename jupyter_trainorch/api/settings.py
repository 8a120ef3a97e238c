"""``c.TrainOrch.*``: the settings the service and the server extension share.

An unset traitlet falls back to its ``TRAINORCH_*`` variable (``OrchestratorConfig.from_env``).
"""

from __future__ import annotations

from pathlib import Path

from traitlets import Enum, Integer, List, Unicode
from traitlets.config import Configurable

from ..orchestrator import OrchestratorConfig


class TrainOrch(Configurable):
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
        None,
        allow_none=True,
        help="SQLAlchemy URL or SQLite path of the job store (TRAINORCH_DB); PostgreSQL "
        "(postgresql+psycopg://…) for a shared service.",
    ).tag(config=True)
    data_dir = Unicode(
        None,
        allow_none=True,
        help="Folder for the default store, checkpoints and the service's runtime file (TRAINORCH_DATA_DIR).",
    ).tag(config=True)
    mlflow = Unicode(
        None,
        allow_none=True,
        help="MLflow tracking URI, or 'off' (TRAINORCH_MLFLOW; default: MLFLOW_TRACKING_URI, "
        "else SQLite in data_dir).",
    ).tag(config=True)
    service_url = Unicode(
        "",
        help="Server extension: the URL of a shared trainorch service to forward to (as set by "
        "JupyterHub for single-user servers, TRAINORCH_SERVICE_URL); empty: find or start the "
        "user's own service.",
    ).tag(config=True)
    admin_users = List(
        Unicode(), help="Service: users who may act on every job and stop the service."
    ).tag(config=True)
    admin_groups = List(
        Unicode(), help="Service (JupyterHub): members of these hub groups are admins too."
    ).tag(config=True)
    others_jobs = Enum(
        ["queue", "hidden"],
        default_value="queue",
        help="Service: what users see of other users' jobs: 'queue' (name, user, state, "
        "priority, resources, position) or 'hidden'.",
    ).tag(config=True)

    def to_config(self) -> OrchestratorConfig:
        names = (
            "cluster",
            "workers",
            "gpus_per_worker",
            "slots_per_worker",
            "db",
            "data_dir",
            "mlflow",
        )
        chosen = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if "data_dir" in chosen:
            chosen["data_dir"] = Path(chosen["data_dir"])
        return OrchestratorConfig.from_env(**chosen)
