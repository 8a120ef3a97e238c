"""Job specifications and templates (no Dask, no store, no network)."""

import importlib
from typing import Any

from .errors import SpecError
from .units import (
    PRIORITY_CLASSES,
    default_user,
    parse_duration,
    parse_memory,
    parse_priority,
    priority_name,
)

# The models (pydantic), YAML and Jinja load only when used: %load_ext stays fast.
_LAZY = {
    "JobSpec": "model",
    "Resources": "model",
    "RetryPolicy": "model",
    "TemplateRef": "model",
    "parse_set_values": "render",
    "parse_secret_pairs": "render",
    "render_spec": "render",
    "SCHEMA_VERSION": "templates",
    "Template": "templates",
    "TemplateRegistry": "templates",
    "default_search_paths": "templates",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRIORITY_CLASSES",
    "JobSpec",
    "Resources",
    "RetryPolicy",
    "SCHEMA_VERSION",
    "SpecError",
    "Template",
    "TemplateRef",
    "default_user",
    "TemplateRegistry",
    "default_search_paths",
    "parse_duration",
    "parse_memory",
    "parse_priority",
    "parse_set_values",
    "parse_secret_pairs",
    "priority_name",
    "render_spec",
]
