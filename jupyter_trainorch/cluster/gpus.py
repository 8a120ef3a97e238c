"""Which GPUs a worker may give its jobs: the physical ids, in order.

dask-cuda workers (and ``dask cuda worker``) set ``CUDA_VISIBLE_DEVICES`` with their own
GPU first; a worker advertising ``GPU=n`` owns the first n of those. Where the variable is
unset, the ids come from NVML (the devices that exist), never from counting up from 0 on
faith; emulated GPU slots (no NVML) are numbered.
"""

from __future__ import annotations

import os
from typing import Any


def nvml_gpu_ids() -> list[str] | None:
    """The indices of the GPUs NVML sees on this host, or None without NVML."""
    try:
        import pynvml  # nvidia-ml-py: present where GPUs are

        pynvml.nvmlInit()
        return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # noqa: BLE001 - no driver or no library
        return None


def visible_gpu_ids(dask_worker: Any = None) -> list[str]:
    """Run on a worker: the GPU ids its processes may use, in order."""
    from distributed import get_worker

    worker = dask_worker or get_worker()
    count = int(worker.state.total_resources.get("GPU", 0))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if len(ids) < count:
        found = nvml_gpu_ids()
        ids = found if found and len(found) >= count else [str(i) for i in range(count)]
    return ids[:count]
