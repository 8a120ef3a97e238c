"""Secret environment values (``secret_env``) reach the job's process and nothing else."""

from __future__ import annotations

from typing import Any

SECRET_MASK = "***"


def public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The stored spec as anyone may read it: secret names stay, their values do not."""
    secrets = spec.get("secret_env") or {}
    return {**spec, "secret_env": {name: SECRET_MASK for name in secrets}}
