"""jupyter-trainorch: turn notebook cells into prioritised, retried GPU training jobs.

Importing the package is cheap: Dask, pandas and the server parts load on first use.
"""

from __future__ import annotations

from .progress import progress
from .upstream import upstream, upstreams

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: job processes import this
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["Pipeline", "Step", "__version__", "load_ipython_extension", "progress", "upstream",
           "upstreams"]  # fmt: skip


def __getattr__(name: str) -> Any:
    # The pipeline API pulls in the client; job processes that only read upstreams must not.
    if name in ("Pipeline", "Step"):
        from .client import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_trainorch``: register ``%%train``, ``%jobs`` and ``%job``."""
    from .client.distributions import warm_environment
    from .client.magics import register

    register(ipython)
    warm_environment()


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .api.extension import TrainOrchApp

    return [{"module": "jupyter_trainorch", "app": TrainOrchApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built labextension lies (for ``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "jupyter-trainorch"}]
