"""What of a service's environment may reach the processes it starts for jobs."""

from __future__ import annotations

import os
from collections.abc import Mapping

# The service's and the Jupyter server's own settings and credentials: a job that saw them
# could drive the API (or the hub) as the service, or as whoever started it.
_SERVICE_ONLY_PREFIXES = ("TRAINORCH_", "JUPYTERHUB_", "JPY_")
_SERVICE_ONLY = frozenset({"JUPYTER_TOKEN", "JUPYTER_SERVER_TOKEN"})


def without_service_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) minus what belongs to the service."""
    source = os.environ if environ is None else environ
    return {
        name: value
        for name, value in source.items()
        if not name.startswith(_SERVICE_ONLY_PREFIXES) and name not in _SERVICE_ONLY
    }


# Of a worker: "off" starts every job as a fresh interpreter, never forked by a zygote.
ZYGOTE_SWITCH = "TRAINORCH_ZYGOTE"
# Settings of the workers themselves, which a local cluster's workers take from the service.
WORKER_SETTINGS = (ZYGOTE_SWITCH,)


def worker_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The workers' own settings among ``environ`` (default: this process's)."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in WORKER_SETTINGS if name in source}
