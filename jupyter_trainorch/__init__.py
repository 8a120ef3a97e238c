"""jupyter-trainorch: turn notebook cells into prioritised, retried GPU training jobs.

Importing the package is cheap: Dask, pandas and the server parts load on first use.
"""

from __future__ import annotations

from typing import Any

from .progress import progress

__version__ = "0.1.0"
__all__ = ["__version__", "load_ipython_extension", "progress"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_trainorch``: register ``%%train``, ``%jobs`` and ``%job``."""
    from .client.magics import register
    from .package import warm_environment_snapshot

    register(ipython)
    warm_environment_snapshot()


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .api.extension import TrainOrchApp

    return [{"module": "jupyter_trainorch", "app": TrainOrchApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where the built labextension lies (for ``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "jupyter-trainorch"}]
