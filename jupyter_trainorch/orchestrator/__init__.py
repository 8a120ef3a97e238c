"""The orchestrator service: queue, placement, attempts, retries, recovery."""

from .config import OrchestratorConfig
from .errors import JobNotFound, JobStateError, OrchestratorBusy
from .host import OrchestratorHost
from .service import Orchestrator

__all__ = [
    "JobNotFound",
    "JobStateError",
    "Orchestrator",
    "OrchestratorBusy",
    "OrchestratorConfig",
    "OrchestratorHost",
]
