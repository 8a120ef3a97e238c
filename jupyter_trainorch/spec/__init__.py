"""Job specifications and templates (no Dask, no store, no network)."""

from .errors import SpecError
from .model import (
    PRIORITY_CLASSES,
    JobSpec,
    Resources,
    RetryPolicy,
    TemplateRef,
    default_user,
    parse_duration,
    parse_memory,
    parse_priority,
    priority_name,
)
from .render import parse_set_values, render_spec
from .templates import SCHEMA_VERSION, Template, TemplateRegistry, default_search_paths

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
    "priority_name",
    "render_spec",
]
