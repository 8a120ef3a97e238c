"""The orchestrator service: queue, placement, attempts, retries, recovery."""

from .config import OrchestratorConfig
from .host import OrchestratorHost
from .service import JobNotFound, JobStateError, Orchestrator, OrchestratorBusy

__all__ = [
    "JobNotFound",
    "JobStateError",
    "Orchestrator",
    "OrchestratorBusy",
    "OrchestratorConfig",
    "OrchestratorHost",
]
