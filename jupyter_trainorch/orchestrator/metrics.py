"""Prometheus text exposition of queue, job and cluster figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import ALL_STATES

if TYPE_CHECKING:
    from .host import OrchestratorHost


def render_metrics(host: OrchestratorHost) -> str:
    lines = [
        "# HELP trainorch_jobs Jobs in the store by state.",
        "# TYPE trainorch_jobs gauge",
    ]
    for state in ALL_STATES:
        lines.append(f'trainorch_jobs{{state="{state}"}} {host.store.count_jobs(states=[state])}')
    cluster = host.call_sync(lambda o: o.cluster_status())
    figures = {
        "trainorch_queue_depth": ("Jobs waiting for resources.", cluster["queue_depth"]),
        "trainorch_running_attempts": ("Attempts running now.", cluster["running"]),
        "trainorch_workers": ("Dask workers connected.", len(cluster["workers"])),
        "trainorch_gpus_total": ("GPUs on all workers.", cluster["gpus"]["total"]),
        "trainorch_gpus_busy": ("GPUs held by running jobs.", cluster["gpus"]["busy"]),
        "trainorch_reexecutions": (
            "Attempts whose code had started and ran again after a lost worker or a stopped service.",
            host.store.count_reexecutions(),
        ),
    }
    for name, (help_text, value) in figures.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    return "\n".join(lines) + "\n"
