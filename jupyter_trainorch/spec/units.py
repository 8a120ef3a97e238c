"""Readable units in specs and flags: priority classes, sizes, durations.

Light on imports on purpose: the magics and the CLI parse flags with these before any
model (pydantic) is loaded.
"""

from __future__ import annotations

import math
import re
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

# Bounds that keep every number storable (SQLite and PostgreSQL hold 64-bit integers) and
# every sum and backoff finite.
MAX_PRIORITY = 1_000_000
MAX_MEMORY = 2**50  # 1 PiB
MAX_DURATION = 366 * 86400.0


def short_repr(value: Any) -> str:
    """``repr`` cut to 40 characters, for quoting a bad value in a sentence."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def default_user() -> str:
    """The submitting user: the JupyterHub user when there is one, else the OS user."""
    import getpass
    import os

    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def parse_priority(value: Any, field_name: str = "priority") -> int:
    """``low|normal|high|urgent`` or an integer (larger runs first)."""
    if isinstance(value, bool):
        raise SpecError(f"{field_name} must be one of low, normal, high, urgent or an integer")
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in PRIORITY_CLASSES:
            return PRIORITY_CLASSES[text]
        if re.fullmatch(r"[+-]?\d{1,30}", text):
            number = int(text)
    if number is None:
        raise SpecError(
            f"{field_name} must be one of low, normal, high, urgent or an integer, "
            f"not {short_repr(value)}"
        )
    if abs(number) > MAX_PRIORITY:
        raise SpecError(f"{field_name} must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    return number


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
        number = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value)[:100])
        if not match or match.group(2).lower() not in _MEMORY_UNITS:
            raise SpecError(
                f"{field_name} must be a size such as 16GiB or 512MB, not {short_repr(value)}"
            )
        number = float(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    if not math.isfinite(number) or number < 0 or number > MAX_MEMORY:
        raise SpecError(f"{field_name} must be a size between 0 and 1 PiB, not {short_repr(value)}")
    return int(number)


def parse_duration(value: Any, field_name: str = "timeout") -> float | None:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``; ``None``/0 means no limit."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, bool):
        raise SpecError(f"{field_name} must be a duration such as 90s, 15m or 2h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value)[:100])
        if not match or match.group(2).lower() not in _DURATION_UNITS:
            raise SpecError(
                f"{field_name} must be a duration such as 90s, 15m or 2h, not {short_repr(value)}"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DURATION:
        raise SpecError(
            f"{field_name} must be a duration between 0 and 366 days, not {short_repr(value)}"
        )
    return seconds or None
