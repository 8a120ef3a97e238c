"""Finding, starting and stopping the user's own trainorch service (standard library only)."""

from .launcher import ServiceUnavailable, ensure_service, find_service
from .runtime import ServiceInfo, read_runtime

__all__ = [
    "ServiceInfo",
    "ServiceUnavailable",
    "ensure_service",
    "find_service",
    "read_runtime",
]
