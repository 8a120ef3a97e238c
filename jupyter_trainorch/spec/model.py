"""The job specification: what to run, with which resources, how to retry.

Plain dataclasses with no I/O, shared by every other component. ``to_dict`` /
``from_dict`` give the JSON form stored in the job store and sent over REST.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import SpecError

PRIORITY_CLASSES: dict[str, int] = {"low": 0, "normal": 100, "high": 200, "urgent": 300}
JOB_KINDS = ("python", "command")

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def default_user() -> str:
    """The submitting user: the JupyterHub user when there is one, else the OS user."""
    import getpass
    import os

    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def parse_priority(value: Any, field_name: str = "priority") -> int:
    """``low|normal|high|urgent`` or an integer (larger runs first)."""
    if isinstance(value, bool):
        raise SpecError(f"{field_name} must be one of low, normal, high, urgent or an integer")
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in PRIORITY_CLASSES:
        return PRIORITY_CLASSES[text]
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    raise SpecError(
        f"{field_name} must be one of low, normal, high, urgent or an integer, not {value!r}"
    )


def priority_name(priority: int) -> str:
    """The class name for a class value, else the number as text."""
    for name, number in PRIORITY_CLASSES.items():
        if number == priority:
            return name
    return str(priority)


def parse_memory(value: Any, field_name: str = "memory") -> int:
    """Bytes from ``16GiB``, ``512MB``, ``2G`` or a plain number of bytes."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise SpecError(f"{field_name} must be a size such as 16GiB or 512MB")
    if isinstance(value, (int, float)):
        if value < 0:
            raise SpecError(f"{field_name} must not be negative")
        return int(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _MEMORY_UNITS:
        raise SpecError(f"{field_name} must be a size such as 16GiB or 512MB, not {value!r}")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()])


def parse_duration(value: Any, field_name: str = "timeout") -> float | None:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``; ``None``/0 means no limit."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise SpecError(f"{field_name} must be a duration such as 90s, 15m or 2h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise SpecError(f"{field_name} must not be negative")
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _DURATION_UNITS:
        raise SpecError(f"{field_name} must be a duration such as 90s, 15m or 2h, not {value!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    return seconds or None


def _non_negative_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpecError(f"{field_name} must be a whole number")
    try:
        number = int(value)
    except ValueError:
        raise SpecError(f"{field_name} must be a whole number, not {value!r}") from None
    if number != float(value) or number < 0:
        raise SpecError(f"{field_name} must be a whole number of at least 0, not {value!r}")
    return number


@dataclass(frozen=True)
class Resources:
    gpus: int = 0
    cpus: float = 1.0
    memory: int = 0  # bytes; 0 means unspecified

    @classmethod
    def parse(cls, data: dict[str, Any] | None, prefix: str = "resources") -> Resources:
        data = dict(data or {})
        unknown = set(data) - {"gpus", "cpus", "memory"}
        if unknown:
            raise SpecError(
                f"{prefix}.{sorted(unknown)[0]} is not a known resource (gpus, cpus, memory)"
            )
        gpus = _non_negative_int(data.get("gpus", 0), f"{prefix}.gpus")
        try:
            cpus = float(data.get("cpus", 1))
        except (TypeError, ValueError):
            raise SpecError(f"{prefix}.cpus must be a number, not {data.get('cpus')!r}") from None
        if cpus < 0:
            raise SpecError(f"{prefix}.cpus must not be negative")
        memory = parse_memory(data.get("memory", 0), f"{prefix}.memory")
        return cls(gpus=gpus, cpus=cpus, memory=memory)

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "cpus": self.cpus, "memory": self.memory}


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 0
    backoff: float = 2.0  # seconds before the first retry
    factor: float = 2.0
    max_backoff: float = 300.0

    @classmethod
    def parse(cls, data: Any, prefix: str = "retries") -> RetryPolicy:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            return cls(max_retries=_non_negative_int(data, prefix))
        unknown = set(data) - {"max", "backoff", "factor", "max_backoff"}
        if unknown:
            raise SpecError(
                f"{prefix}.{sorted(unknown)[0]} is not a known field (max, backoff, factor, max_backoff)"
            )
        base = cls()
        try:
            factor = float(data.get("factor", base.factor))
        except (TypeError, ValueError):
            raise SpecError(
                f"{prefix}.factor must be a number, not {data.get('factor')!r}"
            ) from None
        return cls(
            max_retries=_non_negative_int(data.get("max", base.max_retries), f"{prefix}.max"),
            backoff=parse_duration(data.get("backoff", base.backoff), f"{prefix}.backoff") or 0.0,
            factor=factor,
            max_backoff=parse_duration(
                data.get("max_backoff", base.max_backoff), f"{prefix}.max_backoff"
            )
            or 0.0,
        )

    def delay(self, failed_attempts: int) -> float:
        """Backoff before the next attempt, after ``failed_attempts`` (>= 1) failures."""
        return min(self.max_backoff, self.backoff * self.factor ** max(0, failed_attempts - 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "max": self.max_retries,
            "backoff": self.backoff,
            "factor": self.factor,
            "max_backoff": self.max_backoff,
        }


@dataclass(frozen=True)
class TemplateRef:
    name: str = "python-cell"
    version: int = 1
    hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class JobSpec:
    """A fully rendered job: everything the orchestrator and runner need."""

    name: str
    kind: str = "python"  # "python": run ``source``; "command": run ``command`` in a shell
    source: str = ""
    command: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    priority: int = PRIORITY_CLASSES["normal"]
    env: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    workdir: str | None = None
    experiment: str = ""  # MLflow experiment; empty: the orchestrator's default
    group: str = ""  # jobs of one sweep share it
    register_model: str = ""  # "NAME" or "NAME@alias": register the model the job logs
    template: TemplateRef = field(default_factory=TemplateRef)
    user: str = ""

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise SpecError(f"kind must be one of {', '.join(JOB_KINDS)}, not {self.kind!r}")
        if self.kind == "command" and not self.command.strip():
            raise SpecError("command must be set for a job of kind command")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "command": self.command,
            "params": dict(self.params),
            "resources": self.resources.to_dict(),
            "retries": self.retry.to_dict(),
            "timeout": self.timeout,
            "priority": self.priority,
            "env": dict(self.env),
            "depends_on": list(self.depends_on),
            "outputs": list(self.outputs),
            "workdir": self.workdir,
            "experiment": self.experiment,
            "group": self.group,
            "register_model": self.register_model,
            "template": self.template.to_dict(),
            "user": self.user,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Inverse of ``to_dict``; also the validation of a spec sent over REST."""
        if not isinstance(data, dict):
            raise SpecError("the job spec must be a JSON object")
        known = {
            "name", "kind", "source", "command", "params", "resources", "retries", "timeout",
            "priority", "env", "depends_on", "outputs", "workdir", "experiment", "group", "register_model", "template", "user",
        }  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"{sorted(unknown)[0]} is not a known job field")
        name = str(data.get("name") or "").strip()
        if not name:
            raise SpecError("name must be a non-empty string")
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise SpecError("params must be a mapping of names to values")
        env = data.get("env") or {}
        if not isinstance(env, dict):
            raise SpecError("env must be a mapping of variable names to strings")
        template = data.get("template") or {}
        return cls(
            name=name,
            kind=str(data.get("kind", "python")),
            source=str(data.get("source") or ""),
            command=str(data.get("command") or ""),
            params=dict(params),
            resources=Resources.parse(data.get("resources")),
            retry=RetryPolicy.parse(data.get("retries")),
            timeout=parse_duration(data.get("timeout")),
            priority=parse_priority(data.get("priority", "normal")),
            env={str(k): str(v) for k, v in env.items()},
            depends_on=[str(d) for d in (data.get("depends_on") or [])],
            outputs=[str(o) for o in (data.get("outputs") or [])],
            workdir=data.get("workdir") or None,
            experiment=str(data.get("experiment") or ""),
            group=str(data.get("group") or ""),
            register_model=str(data.get("register_model") or ""),
            template=TemplateRef(
                name=str(template.get("name", "python-cell")),
                version=int(template.get("version", 1)),
                hash=str(template.get("hash", "")),
            ),
            user=str(data.get("user") or ""),
        )
