"""On a machine with NVIDIA GPUs: dask-cuda workers, one real GPU per job."""

from __future__ import annotations

import pytest
from conftest import log_text, start_host, submit, wait_final

from jupyter_trainorch.spec import Resources

pytestmark = pytest.mark.gpu

PROBE = """
import os, subprocess
print("visible", os.environ["CUDA_VISIBLE_DEVICES"])
listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
print("devices", len(listing.strip().splitlines()))
"""


def test_jobs_on_real_gpus_each_see_only_their_own(tmp_path):
    pytest.importorskip("dask_cuda")
    host = start_host(tmp_path / "data", cluster="local-cuda", workers=1, gpus_per_worker=0)
    try:
        workers = host.call_sync(lambda o: o.cluster_status())["workers"]
        assert workers and all(len(w["gpus"]) == 1 for w in workers)
        ids = [
            submit(host, name=f"probe{i}", source=PROBE, resources=Resources(gpus=1))
            for i in range(len(workers))
        ]
        for job_id in ids:
            job = wait_final(host, job_id, timeout=120)
            assert job.state == "succeeded", log_text(host, job_id)
            lines = log_text(host, job_id)
            assert f"visible {job.attempts[-1].gpu_ids[0]}" in lines
            assert "devices 1" in lines
    finally:
        host.stop()
