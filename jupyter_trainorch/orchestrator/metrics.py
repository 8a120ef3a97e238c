"""The service's Prometheus metrics (``GET /trainorch/metrics``), read when scraped.

A prometheus_client collector: the figures come from the store (jobs, attempts, GPU time,
queue waits) and from the running orchestrator (queue, workers, GPUs) at each scrape, so
they survive restarts and need no bookkeeping on the scheduling path. The names are what
``examples/grafana/trainorch.json`` charts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..spec.units import PRIORITY_CLASSES
from ..store import PREEMPTED

if TYPE_CHECKING:
    from .host import OrchestratorHost

# Queue waits from seconds to a working day.
WAIT_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600)
# From a warm worker's fork (tenths of a second) to a cold image pull (minutes).
DISPATCH_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
_CLASS_OF = {value: name for name, value in PRIORITY_CLASSES.items()}


def priority_label(priority: int) -> str:
    return _CLASS_OF.get(priority, str(priority))


class TrainorchCollector(Collector):
    def __init__(self, host: OrchestratorHost) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        store = self.host.store
        jobs = GaugeMetricFamily(
            "trainorch_jobs", "Jobs in the store by state, priority class and user.",
            labels=["state", "priority", "user"],
        )  # fmt: skip
        for state, priority, user, count in store.job_counts():
            jobs.add_metric([state, priority_label(priority), user], count)
        yield jobs

        attempts = CounterMetricFamily(
            "trainorch_attempts", "Attempts that ended or run, by state and by cause of a "
            "failure (job or infrastructure).", labels=["state", "cause"],
        )  # fmt: skip
        retries = preemptions = 0
        totals: dict[tuple[str, str], int] = {}
        for state, infrastructure, first, count in store.attempt_counts():
            cause = "infrastructure" if infrastructure else "job"
            totals[(state, cause)] = totals.get((state, cause), 0) + count
            retries += 0 if first else count
            preemptions += count if state == PREEMPTED else 0
        for (state, cause), count in sorted(totals.items()):
            attempts.add_metric([state, cause], count)
        yield attempts
        yield CounterMetricFamily(
            "trainorch_retries",
            "Attempts after a job's first (retries, resumptions).",
            value=retries,
        )
        yield CounterMetricFamily(
            "trainorch_preemptions", "Attempts stopped for a job of a higher priority.",
            value=preemptions,
        )  # fmt: skip
        yield CounterMetricFamily(
            "trainorch_reexecutions",
            "Attempts whose code had started and ran again after a lost worker or a stopped service.",
            value=store.count_reexecutions(),
        )

        gpu_seconds = CounterMetricFamily(
            "trainorch_gpu_seconds", "GPU-seconds held by each user's attempts.", labels=["user"]
        )
        now = time.time()
        used: dict[str, float] = {}
        for user, gpus, start, end in store.gpu_holdings(since=0.0):
            used[user] = used.get(user, 0.0) + gpus * max(0.0, (end or now) - start)
        for user, seconds in sorted(used.items()):
            gpu_seconds.add_metric([user], seconds)
        yield gpu_seconds

        waits = store.queue_waits()
        counts = [sum(1 for wait in waits if wait <= bound) for bound in WAIT_BUCKETS]
        yield HistogramMetricFamily(
            "trainorch_queue_wait_seconds",
            "Seconds from submission to the first start, of the newest 10,000 jobs that started.",
            buckets=[(str(b), c) for b, c in zip(WAIT_BUCKETS, counts, strict=True)]
            + [("+Inf", len(waits))],
            sum_value=sum(waits),
        )

        latencies = store.dispatch_latencies()
        counts = [sum(1 for t in latencies if t <= bound) for bound in DISPATCH_BUCKETS]
        yield HistogramMetricFamily(
            "trainorch_dispatch_latency_seconds",
            "Seconds from dispatch to the job's process running, of the newest 10,000 attempts.",
            buckets=[(str(b), c) for b, c in zip(DISPATCH_BUCKETS, counts, strict=True)]
            + [("+Inf", len(latencies))],
            sum_value=sum(latencies),
        )

        if not self.host.running:
            return
        cluster = self.host.call_sync(lambda o: o.cluster_status())
        depths = self.host.call_sync(lambda o: o.queue_depths())
        queued = GaugeMetricFamily(
            "trainorch_queue_depth", "Jobs waiting for resources, by priority class.",
            labels=["priority"],
        )  # fmt: skip
        for priority, count in sorted(depths.items(), reverse=True):
            queued.add_metric([priority_label(priority)], count)
        yield queued
        for name, help_text, value in (
            ("trainorch_running_attempts", "Attempts running now.", cluster["running"]),
            ("trainorch_workers", "Dask workers connected.", len(cluster["workers"])),
            ("trainorch_gpus", "GPUs on all workers.", cluster["gpus"]["total"]),
            ("trainorch_gpus_busy", "GPUs held by running jobs.", cluster["gpus"]["busy"]),
            ("trainorch_waiting_on_dependencies", "Jobs pending on dependencies.",
             cluster["waiting_on_dependencies"]),
            ("trainorch_gpus_idle", "GPUs no running job holds.", cluster["gpus"]["idle"]),
        ):  # fmt: skip
            yield GaugeMetricFamily(name, help_text, value=value)
        yield CounterMetricFamily(
            "trainorch_idle_gpu_seconds",
            "GPU-seconds left idle while jobs wanting GPUs waited, since the service started.",
            value=cluster["idle_gpu_minutes"] * 60.0,
        )
        if cluster["autoscaling"] is not None:
            yield GaugeMetricFamily(
                "trainorch_autoscale_target", "Workers autoscaling asks the cluster for.",
                value=cluster["autoscaling"]["target"],
            )  # fmt: skip
        yield from _usage_metrics(cluster["workers"])


def _usage_metrics(workers: list[dict]) -> Iterator[Metric]:
    """What each worker's host and GPUs use, as last read."""
    cpu = GaugeMetricFamily(
        "trainorch_host_cpu_percent", "CPU in use on each worker's host.", labels=["worker"]
    )
    utilisation = GaugeMetricFamily(
        "trainorch_gpu_utilisation_percent", "GPU busy percent (NVML).", labels=["worker", "gpu"]
    )
    memory = GaugeMetricFamily(
        "trainorch_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=["worker", "gpu"]
    )
    for worker in workers:
        usage = worker.get("usage")
        if not usage:
            continue
        cpu.add_metric([worker["address"]], usage["cpu"])
        for gpu in usage["gpus"]:
            utilisation.add_metric([worker["address"], gpu["id"]], gpu["utilisation"])
            memory.add_metric([worker["address"], gpu["id"]], gpu["memory_used"])
    yield from (cpu, utilisation, memory)


def render_metrics(host: OrchestratorHost) -> str:
    """The Prometheus text exposition of the service's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TrainorchCollector(host))
    return generate_latest(registry).decode()
