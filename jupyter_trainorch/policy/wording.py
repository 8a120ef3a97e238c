"""The words of the policy's sentences: counts, CPUs, sizes and demands."""

from __future__ import annotations

_MIB = 2**20
_GIB = 2**30

# A job's demand: GPUs, CPUs, bytes of memory (0 = no claim).
Shape = tuple[int, float, int]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def cpu_text(cpus: float) -> str:
    return f"{cpus:g} CPU" if cpus == 1 else f"{cpus:g} CPUs"


def bytes_text(size: int) -> str:
    if size < _GIB // 10:
        return f"{size / _MIB:.1f} MiB"
    return f"{size / _GIB:.1f} GiB"


def demand_text(shape: Shape) -> str:
    gpus, cpus, memory = shape
    wanted = [plural(gpus, "GPU")] if gpus else []
    wanted.append(cpu_text(cpus))
    if memory:
        wanted.append(f"{bytes_text(memory)} of memory")
    return wanted[0] if len(wanted) == 1 else ", ".join(wanted[:-1]) + " and " + wanted[-1]


def names_text(ids: list[str], shown: int = 3) -> str:
    return ", ".join(ids[:shown]) + (" …" if len(ids) > shown else "")
