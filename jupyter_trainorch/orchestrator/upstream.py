"""What a job is told about the jobs it waited on: their ``--out`` values and where their
files are, handed to each attempt with its request (``runner.protocol.UpstreamJob``), and
its data inputs, with the artifacts of those jobs it reads (``job:``) as MLflow URIs.

Only the owner's own data travels: ids, names, states, the pickled ``--out`` values,
the working and checkpoint folders and the MLflow run; never ``env`` or ``secret_env``.
The values are bounded in all (``MAX_UPSTREAM_BYTES``); an upstream past the bound is
still named, with a note why its values are missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..contract.limits import MAX_UPSTREAM_BYTES
from ..runner.protocol import AttemptRequest, UpstreamJob
from ..store import JobRecord, JobStore
from .attempts import AttemptTracker, Running
from .data_inputs import attempt_data


def upstream_jobs(
    store: JobStore,
    job: JobRecord,
    checkpoint_folder: Callable[[str], Path],
    budget: int = MAX_UPSTREAM_BYTES,
) -> list[UpstreamJob]:
    """The dependencies of ``job`` as its attempts see them (``checkpoint_folder``: a
    job's checkpoint folder by id)."""
    found = store.get_jobs(list(job.depends_on))
    upstream: list[UpstreamJob] = []
    for dep_id, when in job.conditions.items():
        if dep_id not in found:
            continue
        dep = found[dep_id][0]
        outputs = store.get_outputs(dep_id) if dep.has_outputs else None
        note = None
        if outputs is not None and len(outputs) > budget:
            size = f"{len(outputs) / 2**20:.1f} MiB" if len(outputs) >= 2**20 else "too large"
            note = f"its --out values are {size}, over what is passed to a job"
            outputs = None
        budget -= len(outputs or b"")
        upstream.append(
            {
                "job_id": dep.id,
                "name": dep.name,
                "state": dep.state,
                "when": when,
                "error": dep.error,
                "output_names": list(dep.spec.get("outputs", [])),
                "outputs": outputs,
                "outputs_note": note,
                "workdir": dep.spec.get("workdir"),
                "checkpoint_dir": str(checkpoint_folder(dep.id)),
                "mlflow_run_id": dep.mlflow.get("run_id"),
                "mlflow_experiment_id": dep.mlflow.get("experiment_id"),
            }
        )
    return upstream


class UpstreamAttempts(AttemptTracker):
    """Attempts of jobs with dependencies carry what those left behind."""

    def _request(self, job: JobRecord, run: Running, package: bytes | None) -> AttemptRequest:
        request = super()._request(job, run, package)
        if job.depends_on:
            request["upstream"] = upstream_jobs(self.store, job, self.config.checkpoint_folder)
        if job.spec.get("data"):
            request.update(attempt_data(self.store, job))  # type: ignore[typeddict-item]
        return request
