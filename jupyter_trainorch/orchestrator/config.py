"""The settings an orchestrator runs with, fixed when it starts.

They are defined, documented and checked once, as the ``c.TrainOrch.*`` traits with their
``TRAINORCH_*`` variables (``jupyter_trainorch.settings``); ``TrainOrch.to_config()`` makes
this frozen copy, so a setting read once cannot change under a running orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cluster import ClusterBackend
    from ..policy import PreemptionRules
    from ..policy.scaling import Pool
    from ..store import JobStore
    from ..tracking import MlflowTracker


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


@dataclass(frozen=True)
class OrchestratorConfig:
    """What each field means is the help of the ``TrainOrch`` trait of the same name."""

    cluster: str
    workers: int
    gpus_per_worker: int
    slots_per_worker: int
    data_dir: Path
    db: str
    grace_period: float
    max_infrastructure_retries: int
    lease_ttl: float
    mlflow: str
    mlflow_ui_url: str
    system_metrics_interval: float
    audit_interval: float
    cluster_idle_timeout: float
    autoscale_maximum: int
    autoscale_minimum: int
    autoscale_grace: float
    worker_failure_limit: int
    worker_cooldown: float
    container_engine: str
    cluster_options: str
    fair_share_half_life: float
    gpu_quota: int
    queue_quota: int
    user_quotas: str
    group_quotas: str
    event_log: str
    alerts: str
    smtp_url: str
    deploy_hooks: str
    preemption_priority: str
    preemption_min_runtime: float
    checkpoint_root: str
    max_log_bytes: int
    cluster_backend_class: type[ClusterBackend] | None
    store_class: type[JobStore]
    tracker_class: type[MlflowTracker]

    @property
    def db_url(self) -> str:
        return db_url(self.db, self.data_dir)

    def checkpoint_folder(self, job_id: str) -> Path:
        """A job's ``TRAINORCH_CHECKPOINT_DIR``."""
        root = Path(self.checkpoint_root).expanduser() if self.checkpoint_root else None
        return (root or self.data_dir / "checkpoints") / job_id

    def scaling_pool(self) -> Pool | None:
        """The pool autoscaling sizes, in the local cluster's worker shape (a remote
        cluster's own shape replaces it once its workers are seen), or None when off."""
        from ..policy.scaling import Pool

        if not self.autoscale_maximum:
            return None
        return Pool(
            gpus=self.gpus_per_worker,
            cpus=float(self.slots_per_worker),
            minimum=self.autoscale_minimum,
            maximum=self.autoscale_maximum,
            grace=self.autoscale_grace,
        )

    def preemption_rules(self) -> PreemptionRules | None:
        """The rules urgent jobs preempt by, or None when preemption is off."""
        from ..policy import PreemptionRules
        from ..spec.units import parse_priority

        if self.preemption_priority.strip().lower() == "never":
            return None
        return PreemptionRules(
            parse_priority(self.preemption_priority, "preemption_priority"),
            self.preemption_min_runtime,
        )
