"""The git state of the folder a job was submitted from, for reproducibility tags."""

from __future__ import annotations

import subprocess
from typing import Any

MAX_DIFF_BYTES = 2 * 2**20


def run_git(folder: str, *args: str) -> str | None:
    """``git -C folder ARGS``'s output, or None when git is missing, slow or says no."""
    try:
        done = subprocess.run(
            ["git", "-C", folder, *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_info(folder: str | None) -> dict[str, Any]:
    """MLflow's git tags (commit, branch, dirty) and the uncommitted diff, if in a repository."""
    if not folder:
        return {}
    commit = run_git(folder, "rev-parse", "HEAD")
    if not commit:
        return {}
    status = run_git(folder, "status", "--porcelain") or ""
    info: dict[str, Any] = {
        "mlflow.source.git.commit": commit.strip(),
        "mlflow.source.git.dirty": "true" if status.strip() else "false",
    }
    branch = (run_git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    if branch and branch != "HEAD":
        info["mlflow.source.git.branch"] = branch
    remote = (run_git(folder, "config", "--get", "remote.origin.url") or "").strip()
    if remote:
        info["mlflow.source.git.repoURL"] = remote
    if status.strip():
        diff = run_git(folder, "diff", "HEAD") or ""
        info["diff"] = diff[:MAX_DIFF_BYTES]
    return info
