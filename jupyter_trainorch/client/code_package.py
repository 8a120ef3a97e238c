"""A cell's code package as the kernel sends it: captured variables, the kernel's local
modules the cell needs, and what the worker compares its environment with."""

from __future__ import annotations

import json
from typing import Any

from ..package import KERNEL_VERSIONS, build_package, submission_meta
from .capture import capture_variables
from .distributions import kernel_versions, provided_modules
from .local_modules import imported_names, local_modules


def package_cell(
    source: str, namespace: dict[str, Any], exclude: set[str] | frozenset[str] = frozenset()
) -> bytes:
    """The package of a cell run with ``namespace``'s variables (``exclude``: its params)."""
    referenced: set[str] = set()
    variables = capture_variables(source, namespace, exclude=exclude, modules_seen=referenced)
    used = imported_names(source) | referenced
    meta = submission_meta(variables, namespace)
    versions = kernel_versions(used)
    if versions:
        meta[KERNEL_VERSIONS] = json.dumps(versions, indent=2, sort_keys=True) + "\n"
    return build_package(variables, meta=meta, modules=local_modules(used, provided_modules()))
