"""What an attempt's supervisor is sent, and what the orchestrator stores of a job's
reported progress: plain dicts built from the job's record and the orchestrator's settings."""

from __future__ import annotations

from typing import Any

from ..runner.protocol import AttemptRequest
from ..store import JobRecord
from .config import OrchestratorConfig
from .tracking_bridge import TrackingBridge


def attempt_request(
    job: JobRecord,
    run: Any,  # attempts.Running
    package: bytes | None,
    config: OrchestratorConfig,
    tracking: TrackingBridge,
) -> AttemptRequest:
    """The request of the attempt ``run`` (of its rank 0, for a multi-node one)."""
    spec = job.spec
    return {
        "job_id": job.id,
        "attempt": run.n,
        "name": job.name,
        "kind": spec.get("kind", "python"),
        "source": spec.get("source", ""),
        "command": spec.get("command", ""),
        "params": spec.get("params", {}),
        "env": {**spec.get("env", {}), **tracking.env(run)},
        "secret_env": spec.get("secret_env", {}),
        "outputs": spec.get("outputs", []),
        "artifacts": spec.get("artifacts", []),
        "workdir": spec.get("workdir"),
        "timeout": spec.get("timeout"),
        "gpu_ids": list(run.gpu_ids),
        "grace": config.grace_period,
        # Samples are only worth taking when they have somewhere to go.
        "system_metrics_interval": config.system_metrics_interval if tracking.enabled else 0,
        "checkpoint_dir": str(config.checkpoint_folder(job.id)),
        "package": package,
        "max_log_bytes": config.max_log_bytes,
        "memory_limit": int(spec.get("resources", {}).get("memory") or 0),
        **({"image": spec["image"], "container_engine": config.container_engine}
           if spec.get("image") else {}),
    }  # fmt: skip


def progress_record(progress: dict[str, Any], updated: str) -> dict[str, Any]:
    """A job's progress as stored and published, from what its attempt reported."""
    step, total = progress.get("step"), progress.get("total")
    fraction = None
    if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total:
        fraction = max(0.0, min(1.0, step / total))
    return {
        "step": step,
        "total": total,
        "fraction": fraction,
        "message": progress.get("message"),
        "metrics": progress.get("metrics") or {},
        "updated": updated,
    }
