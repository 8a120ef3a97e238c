"""The orchestrator service: queue, placement, attempts, retries, recovery."""

import importlib
from typing import Any

from .config import OrchestratorConfig
from .errors import JobNotFound, JobStateError, OrchestratorBusy

# The service's own parts (store, Dask) load when used: reading the settings, as kernels
# and the CLI do, stays light.
_LAZY = {"OrchestratorHost": "host", "Orchestrator": "service"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "JobNotFound",
    "JobStateError",
    "Orchestrator",
    "OrchestratorBusy",
    "OrchestratorConfig",
    "OrchestratorHost",
]
