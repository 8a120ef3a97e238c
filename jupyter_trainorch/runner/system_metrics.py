"""Samples of the job's process tree (CPU, memory) and of its GPUs (NVML, when present)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
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


class _Ticker:
    """One thread per process that takes every sampler's samples when they are due: a
    thread per attempt cost its worker a thread start and stop (and the GIL, twice) for
    each of a burst of short jobs, most of which end before their first sample."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, SystemSampler]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, sampler: SystemSampler, at: float) -> None:
        with self._changed:
            heapq.heappush(self._due, (at, next(self._order), sampler))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="trainorch-system-metrics", daemon=True
                )
                self._thread.start()
            elif self._due[0][2] is sampler:  # due before what the thread waits for
                self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, sampler = heapq.heappop(self._due)
            if sampler.stopped:
                continue
            try:
                going = sampler.sample()
            except Exception:  # noqa: BLE001 - one job's sample must not end the others'
                going = False
            if going and not sampler.stopped:
                self.add(sampler, time.monotonic() + sampler.interval)


_ticker = _Ticker()


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
        self.stopped = False
        self._root: Any = None
        self._read_gpus: Callable[[], dict[str, float]] | None = None
        self._known: dict[int, Any] = {}
        self._step = 0

    def start(self) -> SystemSampler:
        if self.interval > 0:
            _ticker.add(self, time.monotonic() + self.interval)
        return self

    def stop(self) -> None:
        self.stopped = True

    def sample(self) -> bool:
        """Take one sample; False once the process is gone."""
        import psutil

        if self._root is None:
            # At the first sample, not at the start: a job that ends sooner (most of a
            # burst of short jobs) costs its worker no NVML set-up or process lookup.
            self._read_gpus = _gpu_reader(self.gpu_ids)
            try:
                self._root = psutil.Process(self.pid)
            except psutil.NoSuchProcess:
                return False
        try:
            tree = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        cpu = rss = 0.0
        read = 0
        for proc in tree:
            # cpu_percent needs the same Process object across samples.
            proc = self._known.setdefault(proc.pid, proc)
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
                read += 1
            except psutil.Error:
                continue
        if not read or not rss:
            return True  # the job is exiting: no sample rather than a false zero
        metrics: dict[str, Any] = {
            "system/cpu_utilization_percent": cpu,
            "system/memory_usage_megabytes": rss / 2**20,
            "system/processes": float(len(tree)),
        }
        if self._read_gpus is not None:
            try:
                metrics.update(self._read_gpus())
            except Exception:  # noqa: BLE001 - a GPU reading failed once: skip it
                pass
        self._step += 1
        self.emit(metrics, self._step)
        return True


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
