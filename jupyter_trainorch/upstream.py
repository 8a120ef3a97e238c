"""``upstream()``: what the jobs this job waited on left behind, read from inside the job.

``jupyter_trainorch.upstream("train").result()`` is the dict of the ``--out`` values of
the dependency named (or with the id) ``train``; ``.path`` is the folder it ran in,
``.checkpoint_dir`` its checkpoints, ``.mlflow_run_id`` its run. The orchestrator hands
these to the attempt; the supervisor writes them to ``TRAINORCH_UPSTREAM_DIR``.
Cheap to import (cloudpickle only when values are read).
"""

from __future__ import annotations

import json
import os

from .runner.names import OUTPUTS_FILE, UPSTREAM_DIR_ENV, UPSTREAM_INDEX

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: job processes import this
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


class UpstreamError(LookupError):
    """One sentence: no such dependency, or it has no values to give."""


class Upstream:
    """A job this one waited on, as it was when this job started."""

    def __init__(self, entry: dict[str, Any], folder: Path) -> None:
        from pathlib import Path  # imported by every job's process, which seldom calls this

        self.job_id: str = entry["job_id"]
        self.name: str = entry["name"]
        self.state: str = entry["state"]
        self.when: str = entry.get("when", "ok")
        self.error: str | None = entry.get("error")
        self.output_names: list[str] = list(entry.get("output_names") or [])
        workdir = entry.get("workdir")
        self.path: Path | None = Path(workdir) if workdir else None
        self.checkpoint_dir = Path(entry["checkpoint_dir"])
        self.mlflow_run_id: str | None = entry.get("mlflow_run_id")
        self._note: str | None = entry.get("outputs_note")
        self._outputs = folder / self.job_id / OUTPUTS_FILE

    def result(self) -> dict[str, Any]:
        """Its ``--out`` values by name (an empty dict when it gave none)."""
        if self._outputs.exists():
            import cloudpickle

            return dict(cloudpickle.loads(self._outputs.read_bytes()))
        if self._note:
            raise UpstreamError(f"job {self.job_id} ({self.name}): {self._note}")
        if self.state != "succeeded" and self.output_names:
            detail = f": {self.error}" if self.error and self.error != self.state else ""
            raise UpstreamError(
                f"job {self.job_id} ({self.name}) {self.state}{detail}, so it has no --out values"
            )
        return {}

    def __repr__(self) -> str:
        return f"<Upstream {self.job_id} {self.name} {self.state}>"


def upstreams() -> list[Upstream]:
    """Every job this one waited on, in the order of its dependencies."""
    folder = os.environ.get(UPSTREAM_DIR_ENV)
    if not folder:
        raise UpstreamError(
            "upstream() works inside a job that waits on other jobs (--after or depends_on), "
            "and this process is not one"
        )
    from pathlib import Path

    entries = json.loads((Path(folder) / UPSTREAM_INDEX).read_text())
    return [Upstream(entry, Path(folder)) for entry in entries]


def upstream(ref: str | None = None) -> Upstream:
    """The job this one waited on with the name or id ``ref`` (None: its only one)."""
    found = upstreams()
    if ref is None:
        if len(found) != 1:
            names = ", ".join(u.name for u in found)
            raise UpstreamError(f"this job waited on {len(found)} jobs ({names}); name one")
        return found[0]
    matches = [u for u in found if ref in (u.job_id, u.name)]
    if not matches:
        names = ", ".join(f"{u.name} ({u.job_id})" for u in found) or "none"
        raise UpstreamError(f"this job did not wait on a job {ref!r}; it waited on {names}")
    if len(matches) > 1:
        ids = ", ".join(u.job_id for u in matches)
        raise UpstreamError(f"this job waited on several jobs named {ref!r} ({ids}); use an id")
    return matches[0]
