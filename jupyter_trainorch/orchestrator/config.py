"""Orchestrator settings: defaults, then ``TRAINORCH_*`` environment variables.

The jupyter_server extension mirrors these as ``c.TrainOrch.*`` traitlets and
passes its values in; scripts and kernels without a server use ``from_env``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..spec.errors import SpecError


def default_data_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "trainorch"


def db_url(value: str | None, data_dir: Path) -> str:
    """``TRAINORCH_DB`` may be an SQLAlchemy URL or a path to an SQLite file."""
    if not value:
        return f"sqlite:///{data_dir / 'trainorch.db'}"
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise SpecError(f"{name} must not be negative")
    return value


@dataclass(frozen=True)
class OrchestratorConfig:
    cluster: str = "local"  # "local", "local-cuda" or a tcp:// scheduler address
    workers: int = 2  # local cluster: worker processes
    gpus_per_worker: int = 0  # local cluster: GPU slots each worker advertises
    slots_per_worker: int = 4  # local cluster: concurrent jobs (CPU slots) per worker
    data_dir: Path = field(default_factory=default_data_dir)
    db: str = ""  # SQLAlchemy URL; empty = SQLite in data_dir
    grace_period: float = 5.0  # seconds between SIGTERM and SIGKILL
    max_infrastructure_retries: int = 3  # lost workers / restarts, on top of max_retries
    lease_ttl: float = 15.0
    mlflow: str = ""  # tracking URI; empty: MLFLOW_TRACKING_URI or SQLite in data_dir; "off": none
    mlflow_ui_url: str = ""  # where run links point, e.g. http://127.0.0.1:5000
    system_metrics_interval: float = 10.0  # seconds between CPU/memory/GPU samples; 0: none
    audit_interval: float = 15.0  # seconds between checks of attempts no event accounted for
    cluster_idle_timeout: float = 600.0  # a local cluster nobody uses ends after this; 0: never
    max_log_bytes: int = 100_000_000  # output kept per attempt; 0: no cap

    @property
    def db_url(self) -> str:
        return db_url(self.db, self.data_dir)

    def to_env(self) -> dict[str, str]:
        """These settings as ``TRAINORCH_*`` variables (for the service started on its behalf)."""
        env = {
            "TRAINORCH_CLUSTER": self.cluster,
            "TRAINORCH_WORKERS": str(self.workers),
            "TRAINORCH_GPUS_PER_WORKER": str(self.gpus_per_worker),
            "TRAINORCH_SLOTS_PER_WORKER": str(self.slots_per_worker),
            "TRAINORCH_DATA_DIR": str(self.data_dir),
            "TRAINORCH_SYSTEM_METRICS_INTERVAL": str(self.system_metrics_interval),
            "TRAINORCH_CLUSTER_IDLE_TIMEOUT": str(self.cluster_idle_timeout),
        }
        optional = {"TRAINORCH_DB": self.db, "TRAINORCH_MLFLOW": self.mlflow,
                    "TRAINORCH_MLFLOW_UI_URL": self.mlflow_ui_url}  # fmt: skip
        env.update({name: value for name, value in optional.items() if value})
        return env

    @classmethod
    def from_env(cls, **overrides: object) -> OrchestratorConfig:
        base = cls()
        data_dir = (
            Path(os.environ["TRAINORCH_DATA_DIR"])
            if os.environ.get("TRAINORCH_DATA_DIR")
            else base.data_dir
        )
        config = replace(
            base,
            cluster=os.environ.get("TRAINORCH_CLUSTER", base.cluster) or "local",
            workers=_int_env("TRAINORCH_WORKERS", base.workers),
            gpus_per_worker=_int_env("TRAINORCH_GPUS_PER_WORKER", base.gpus_per_worker),
            slots_per_worker=_int_env("TRAINORCH_SLOTS_PER_WORKER", base.slots_per_worker),
            max_log_bytes=_int_env("TRAINORCH_MAX_LOG_BYTES", base.max_log_bytes),
            data_dir=data_dir,
            db=os.environ.get("TRAINORCH_DB", ""),
            mlflow=os.environ.get("TRAINORCH_MLFLOW", ""),
            mlflow_ui_url=os.environ.get("TRAINORCH_MLFLOW_UI_URL", ""),
            system_metrics_interval=float(
                os.environ.get("TRAINORCH_SYSTEM_METRICS_INTERVAL") or 10.0
            ),
            cluster_idle_timeout=float(
                os.environ.get("TRAINORCH_CLUSTER_IDLE_TIMEOUT") or base.cluster_idle_timeout
            ),
        )
        return replace(config, **overrides)  # type: ignore[arg-type]
