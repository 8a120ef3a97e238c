"""The kernel's local modules and package versions, laid out in an attempt's folder.

The supervisor unpacks them before it starts the job's process: the modules into
``MODULES_DIR`` (first on the job's import path, and on ``PYTHONPATH`` for what the job
starts), the kernel's versions into ``KERNEL_VERSIONS_FILE`` for the child to compare.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..package import KERNEL_VERSIONS, extract_files, read_meta, read_modules
from .protocol import KERNEL_VERSIONS_FILE, MODULES_DIR, VERSIONS_FILE, DistributionVersions


def unpack_local_code(package: bytes, attempt_dir: Path) -> None:
    modules = read_modules(package)
    if modules:
        extract_files(modules, attempt_dir / MODULES_DIR)
    versions = read_meta(package).get(KERNEL_VERSIONS)
    if versions:
        (attempt_dir / KERNEL_VERSIONS_FILE).write_text(versions)


def with_modules_path(env: dict[str, str], attempt_dir: Path) -> dict[str, str]:
    """``env`` with the attempt's modules first on ``PYTHONPATH``, when it has any: a
    process the job starts imports the kernel's modules as the job does."""
    modules = attempt_dir / MODULES_DIR
    if not modules.is_dir():
        return env
    rest = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(modules), rest]))}


def recorded_versions(attempt_dir: Path) -> dict[str, DistributionVersions] | None:
    """What the child found when it compared versions; None when there was nothing to compare."""
    try:
        return json.loads((attempt_dir / VERSIONS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def recorded(attempt_dir: Path) -> dict[str, Any]:
    """What the child recorded for the attempt's outcome: ``versions``, and ``data`` and
    ``artifacts`` when it had any."""
    from .data_inputs import recorded_data

    return {"versions": recorded_versions(attempt_dir), **recorded_data(str(attempt_dir))}
