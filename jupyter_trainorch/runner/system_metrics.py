"""Samples of the job's process tree (CPU, memory) and of its GPUs (NVML, when present)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def _gpu_reader(gpu_ids: list[str]) -> Callable[[], dict[str, float]] | None:
    if not gpu_ids:
        return None
    try:
        import pynvml  # from nvidia-ml-py; only on GPU machines

        pynvml.nvmlInit()
        handles = [
            (gid, pynvml.nvmlDeviceGetHandleByIndex(int(gid))) for gid in gpu_ids if gid.isdigit()
        ]
    except Exception:  # noqa: BLE001 - no NVML: CPU metrics only
        return None

    def read() -> dict[str, float]:
        values: dict[str, float] = {}
        for gid, handle in handles:
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            values[f"system/gpu_{gid}_utilization_percent"] = float(rates.gpu)
            values[f"system/gpu_{gid}_memory_usage_megabytes"] = memory.used / 2**20
        return values

    return read


class SystemSampler:
    """Every ``interval`` seconds, hand ``{"system/...": value}`` to ``emit(metrics, step)``."""

    def __init__(
        self,
        pid: int,
        gpu_ids: list[str],
        interval: float,
        emit: Callable[[dict[str, Any], int], None],
    ) -> None:
        self.pid, self.interval, self.emit = pid, interval, emit
        self.gpu_ids = gpu_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="trainorch-system-metrics", daemon=True
        )

    def start(self) -> SystemSampler:
        if self.interval > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import psutil

        root: psutil.Process | None = None
        read_gpus = None
        step = 0
        known: dict[int, psutil.Process] = {}
        while not self._stop.wait(self.interval):
            if root is None:
                # At the first sample, not at the start: a job that ends sooner (most of a
                # burst of short jobs) costs its worker no NVML set-up or process lookup.
                read_gpus = _gpu_reader(self.gpu_ids)
                try:
                    root = psutil.Process(self.pid)
                except psutil.NoSuchProcess:
                    return
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            cpu = rss = 0.0
            read = 0
            for proc in tree:
                # cpu_percent needs the same Process object across samples.
                proc = known.setdefault(proc.pid, proc)
                try:
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    read += 1
                except psutil.Error:
                    continue
            if not read or not rss:
                continue  # the job is exiting: no sample rather than a false zero
            metrics: dict[str, Any] = {
                "system/cpu_utilization_percent": cpu,
                "system/memory_usage_megabytes": rss / 2**20,
                "system/processes": float(len(tree)),
            }
            if read_gpus is not None:
                try:
                    metrics.update(read_gpus())
                except Exception:  # noqa: BLE001 - a GPU reading failed once: skip it
                    pass
            step += 1
            self.emit(metrics, step)


MEMORY_CHECK_SECONDS = 0.5


def tree_memory(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    used = 0
    for process in processes:
        try:
            used += process.memory_info().rss
        except psutil.Error:
            pass
    return used


def size_text(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"
