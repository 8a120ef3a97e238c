"""``c.TrainOrch.cluster_options``: what the gateway, kubernetes and slurm backends are told.

One JSON object, e.g. ``{"workers": 2, "gpus_per_worker": 1, "cores": 8, "memory": "64 GiB"}``,
read and checked here without importing any Dask library (settings are checked when a
kernel loads the magics). Every value is bounded, and every text that ends up in a job
script, a command line or a manifest is limited to the characters that can safely be there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..spec.errors import SpecError
from ..spec.units import parse_memory

MAX_WORKERS = 10_000
MAX_GPUS_PER_WORKER = 64
MAX_CORES = 4096
MAX_TEXT = 1000
MAX_ENTRIES = 200

# The backends that read cluster options, by their TRAINORCH_CLUSTER name.
MANAGED_BACKENDS = ("gateway", "kubernetes", "slurm")
_COMMON = frozenset({"workers", "gpus_per_worker", "cores", "memory", "environment"})
BACKEND_KEYS: dict[str, frozenset[str]] = {
    "gateway": _COMMON
    | {"address", "proxy_address", "auth", "cluster_name", "image", "gateway_options"},
    "kubernetes": _COMMON | {"image", "namespace", "name"},
    "slurm": _COMMON
    | {"queue", "account", "walltime", "interface", "python", "prologue", "job_directives"},
}
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "gateway": ("address",),
    # The stock Dask image cannot run our supervisor task: the image must have trainorch.
    "kubernetes": ("image",),
    "slurm": (),
}
EXAMPLE = '{"workers": 2, "gpus_per_worker": 1}'


class ClusterOptionsError(SpecError):
    """A wrong cluster option; ``str(err)`` names the key and what it must be."""


@dataclass(frozen=True)
class ClusterOptions:
    """What each key means is in docs/backends.md; None: the backend's own default."""

    workers: int | None = None
    gpus_per_worker: int = 0
    cores: int | None = None
    memory: int | None = None  # bytes
    environment: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    # gateway
    address: str | None = None
    proxy_address: str | None = None
    auth: str | None = None
    cluster_name: str | None = None
    gateway_options: dict[str, Any] = field(default_factory=dict)
    # kubernetes
    namespace: str | None = None
    name: str | None = None
    # slurm
    queue: str | None = None
    account: str | None = None
    walltime: str | None = None
    interface: str | None = None
    python: str | None = None
    prologue: tuple[str, ...] = ()
    job_directives: tuple[str, ...] = ()


def _whole(low: int, high: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ClusterOptionsError(f"{key} must be a whole number from {low} to {high}")
        return value

    return check


def _text(pattern: str, example: str) -> Callable[[str, Any], str]:
    compiled = re.compile(pattern)

    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > MAX_TEXT or not compiled.fullmatch(value):
            raise ClusterOptionsError(f"{key} must be text such as {example}")
        return value

    return check


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ClusterOptionsError(f"{key} must be one of {', '.join(choices)}")
        return value

    return check


def _size(key: str, value: Any) -> int:
    try:
        size = parse_memory(value, key)
    except SpecError as err:
        raise ClusterOptionsError(str(err)) from None
    if size <= 0:
        raise ClusterOptionsError(f"{key} must be a size above 0 such as 64 GiB")
    return size


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _environment(key: str, value: Any) -> dict[str, str]:
    if (
        not isinstance(value, dict)
        or len(value) > MAX_ENTRIES
        or not all(_VARIABLE.fullmatch(name) for name in value)
        or not all(isinstance(text, str) and len(text) <= MAX_TEXT for text in value.values())
    ):
        raise ClusterOptionsError(f'{key} must be an object of variables such as {{"HOME": "/x"}}')
    return dict(value)


def _scalars(key: str, value: Any) -> dict[str, Any]:
    """Options a dask-gateway deployment defines for itself (its server checks them)."""
    if not isinstance(value, dict) or len(value) > MAX_ENTRIES:
        raise ClusterOptionsError(f'{key} must be an object such as {{"profile": "gpu"}}')
    for name, item in value.items():
        finite = not isinstance(item, float) or math.isfinite(item)
        if not isinstance(item, (str, int, float, bool)) or not finite:
            raise ClusterOptionsError(f"{key} {name!r} must be text, a number or true/false")
    return dict(value)


def _lines(key: str, value: Any) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_ENTRIES
        or not all(isinstance(line, str) and "\n" not in line for line in value)
    ):
        raise ClusterOptionsError(f'{key} must be a list of one-line texts such as ["..."]')
    return tuple(value)


# Names that go into #SBATCH lines, command lines and Kubernetes object names.
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.,@+-]*"
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "workers": _whole(0, MAX_WORKERS),
    "gpus_per_worker": _whole(0, MAX_GPUS_PER_WORKER),
    "cores": _whole(1, MAX_CORES),
    "memory": _size,
    "environment": _environment,
    "image": _text(r"[A-Za-z0-9][A-Za-z0-9_./:@-]*", '"registry.example/trainorch:1.0"'),
    "address": _text(r"https?://\S+", '"http://gateway.example:8000"'),
    "proxy_address": _text(r"(gateway://|tls://)?[A-Za-z0-9_.-]+:\d+", '"gateway.example:8786"'),
    "auth": _choice("basic", "jupyterhub", "kerberos"),
    "cluster_name": _text(_NAME, '"a1b2c3"'),
    "gateway_options": _scalars,
    "namespace": _text(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", '"ml-jobs"'),
    "name": _text(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", '"trainorch"'),
    "queue": _text(_NAME, '"gpu"'),
    "account": _text(_NAME, '"ml-team"'),
    "walltime": _text(r"(\d+-)?\d{1,4}(:\d{2}){0,2}", '"04:00:00" or "1-00:00:00"'),
    "interface": _text(r"[A-Za-z0-9_.-]+", '"ib0"'),
    "python": _text(r"/\S+", '"/opt/envs/train/bin/python"'),
    "prologue": _lines,
    "job_directives": _lines,
}
ALL_KEYS = frozenset(_CHECKS)


def parse_cluster_options(text: str, backend: str | None = None) -> ClusterOptions:
    """The options in ``text`` (empty: none); with ``backend``, only its keys and with those
    it needs. Raises ClusterOptionsError naming the first wrong key."""
    data = _json_object(text)
    allowed = BACKEND_KEYS.get(backend, ALL_KEYS) if backend else ALL_KEYS
    values = {}
    for key, value in data.items():
        if key not in allowed:
            raise ClusterOptionsError(_unknown(key, backend))
        values[key] = _CHECKS[key](key, value)
    for key in REQUIRED_KEYS.get(backend or "", ()):
        if key not in values:
            raise ClusterOptionsError(f"the {backend} cluster needs {key}")
    return ClusterOptions(**values)


def _json_object(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        # NaN and Infinity are not JSON; Python's parser would let them through.
        data = json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ClusterOptionsError("it must be a JSON object")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _unknown(key: str, backend: str | None) -> str:
    if backend in BACKEND_KEYS:
        takes = ", ".join(sorted(BACKEND_KEYS[backend]))
        return f"{key!r} is not an option of the {backend} cluster, which takes {takes}"
    return f"{key!r} is not a cluster option"
