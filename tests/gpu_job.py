"""A job that needs one GPU and says which it got, for the cluster backend tests."""

from __future__ import annotations

from conftest import log_text, submit, wait_final

from jupyter_trainorch.orchestrator import OrchestratorHost
from jupyter_trainorch.spec import Resources

GPU_JOB = "import os\nprint('gpus', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\n"


def run_gpu_job(host: OrchestratorHost) -> str:
    """Run the job to its end on ``host``; its id, once it succeeded."""
    job_id = submit(host, name="on-gpu", source=GPU_JOB, resources=Resources(gpus=1))
    job = wait_final(host, job_id, timeout=90)
    assert job.state == "succeeded", log_text(host, job_id)
    return job_id
