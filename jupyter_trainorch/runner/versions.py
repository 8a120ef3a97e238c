"""The kernel's and this worker's versions of the distributions a job's cell imports.

Run by the job's own process before the cell, with the import path the cell will have
(the job's ``PYTHONPATH`` included), so that the versions compared are the ones the cell
imports. Standard library only, like the rest of the child's start-up.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from .protocol import KERNEL_VERSIONS_FILE, VERSIONS_FILE, DistributionVersions


def compare_versions(kernel: dict[str, str]) -> dict[str, DistributionVersions]:
    """Each distribution's version in the kernel beside the one installed here."""
    compared: dict[str, DistributionVersions] = {}
    for distribution, version in sorted(kernel.items()):
        try:
            here: str | None = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            here = None
        compared[distribution] = {"kernel": str(version), "worker": here}
    return compared


def mismatch_warnings(compared: dict[str, DistributionVersions]) -> list[str]:
    """One line per distribution whose version here is not the kernel's."""
    lines = []
    for distribution, versions in compared.items():
        if versions["worker"] == versions["kernel"]:
            continue
        here = versions["worker"] or "not installed"
        lines.append(
            f"warning: {distribution} is {here} here but {versions['kernel']} in the kernel"
        )
    return lines


def check_versions(attempt_dir: Path) -> list[str]:
    """Compare the kernel's versions the package brought with this process's, record
    both in ``VERSIONS_FILE`` and return the warnings (none without a record)."""
    try:
        kernel = json.loads((attempt_dir / KERNEL_VERSIONS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return []
    if not isinstance(kernel, dict):
        return []
    compared = compare_versions({str(k): str(v) for k, v in kernel.items()})
    (attempt_dir / VERSIONS_FILE).write_text(json.dumps(compared, sort_keys=True))
    return mismatch_warnings(compared)
