"""What each worker's host is using now: CPU and memory, and the worker's GPUs (NVML).

``read_usage`` runs on a worker (``Client.run``); NVML is read only for the GPU ids the
worker advertises (its physical indices), so a worker on a shared host reports its own
GPUs. Without NVML (no GPU, or ``nvidia-ml-py`` missing) the GPU list is empty.
"""

from __future__ import annotations

import time
from typing import Any

from .gpus import visible_gpu_ids


def _gpu_usage(gpu_ids: list[str]) -> list[dict[str, Any]]:
    if not gpu_ids:
        return []
    try:
        import pynvml  # nvidia-ml-py: present where GPUs are

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML here: CPU and memory only
        return []
    readings = []
    for gpu_id in gpu_ids:
        try:
            handle = (
                pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
                if gpu_id.isdigit()
                else pynvml.nvmlDeviceGetHandleByUUID(gpu_id)
            )
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception:  # noqa: BLE001 - an emulated slot or a vanished device
            continue
        readings.append(
            {
                "id": gpu_id,
                "utilisation": float(rates.gpu),
                "memory_used": int(memory.used),
                "memory_total": int(memory.total),
            }
        )
    return readings


def read_usage(dask_worker: Any = None) -> dict[str, Any]:
    """Run on a worker: its host's CPU percent (all cores, since the last reading) and
    memory in use, which include the job processes the worker started, and its GPUs."""
    import psutil

    gpu_ids = visible_gpu_ids(dask_worker)
    return {
        "cpu": float(psutil.cpu_percent(interval=None)),
        "memory_used": int(psutil.virtual_memory().used),
        "gpus": _gpu_usage(gpu_ids),
        "time": time.time(),
    }
