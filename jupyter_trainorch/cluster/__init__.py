"""Dask cluster backends and the live view of workers and GPUs."""

from .backends import (
    ClusterBackend,
    LocalBackend,
    LocalCUDABackend,
    WorkerInfo,
    gpus_present,
    make_backend,
)

__all__ = [
    "ClusterBackend",
    "LocalBackend",
    "LocalCUDABackend",
    "WorkerInfo",
    "gpus_present",
    "make_backend",
]
