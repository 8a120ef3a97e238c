"""On a machine with NVIDIA GPUs: dask-cuda workers (one per GPU, ids from NVML), jobs that
see only their own GPUs, jobs spanning several GPUs of the host, NVML readings in MLflow and
the cluster view, and torch DDP over NCCL. Skipped where no GPU is visible."""

from __future__ import annotations

import pytest
from conftest import log_text, start_host, submit, wait_final, wait_until

from jupyter_trainorch.spec import Resources

pytestmark = pytest.mark.gpu

# What the job's process sees of the GPUs, through CUDA itself (nvidia-smi lists them all).
PROBE = """
import os, time
import torch
print("visible", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
print("count", torch.cuda.device_count(), flush=True)
for i in range(torch.cuda.device_count()):
    print("uuid", torch.cuda.get_device_properties(i).uuid, flush=True)
block = torch.ones(256, 2**20, device="cuda:0")  # 1 GiB held while the other job runs
time.sleep(float(seconds))
"""

BUSY = """
import time
import torch
a = torch.randn(8192, 8192, device="cuda")
end = time.time() + float(seconds)
step = 0
while time.time() < end:
    (a @ a).sum().item()
    step += 1
print("steps", step)
"""

NCCL = """
import os
import torch
import torch.distributed as dist
dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
value = torch.tensor([float(rank + 1)], device="cuda")
dist.all_reduce(value)
print(f"rank {rank} sum {value.item():g}", flush=True)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def cuda_host(tmp_path_factory):
    pytest.importorskip("dask_cuda")
    pytest.importorskip("torch")
    host = start_host(
        tmp_path_factory.mktemp("gpu"), cluster="local-cuda", workers=1, gpus_per_worker=0,
        slots_per_worker=2, system_metrics_interval=1.0,
    )  # fmt: skip
    yield host
    host.stop()


def _gpus(host) -> int:
    return len(host.call_sync(lambda o: o.cluster_status())["workers"])


def _uuids(host, job_id) -> list[str]:
    return [t.split()[1] for t in log_text(host, job_id) if t.startswith("uuid ")]


def test_two_concurrent_one_gpu_jobs_never_see_each_others_device(cuda_host):
    workers = cuda_host.call_sync(lambda o: o.cluster_status())["workers"]
    assert workers and all(len(w["gpus"]) == 1 for w in workers)
    if len(workers) < 2:
        pytest.skip("needs two GPUs")
    ids = [submit(cuda_host, name=f"probe{i}", source=PROBE, params={"seconds": 8},
                  resources=Resources(gpus=1)) for i in range(2)]  # fmt: skip
    jobs = [wait_final(cuda_host, job_id, timeout=180) for job_id in ids]
    assert all(job.state == "succeeded" for job in jobs), [log_text(cuda_host, j) for j in ids]
    first, second = (job.attempts[-1] for job in jobs)
    assert first.started < second.ended and second.started < first.ended, "ran at once"
    assert first.gpu_ids != second.gpu_ids
    for job_id in ids:
        assert "count 1" in log_text(cuda_host, job_id)
    assert _uuids(cuda_host, ids[0]) != _uuids(cuda_host, ids[1])


def test_a_two_gpu_job_sees_exactly_its_two_devices(cuda_host):
    if _gpus(cuda_host) < 2:
        pytest.skip("needs two GPUs")
    job_id = submit(cuda_host, name="pair", source=PROBE, params={"seconds": 1},
                    resources=Resources(gpus=2))  # fmt: skip
    job = wait_final(cuda_host, job_id, timeout=180)
    assert job.state == "succeeded", log_text(cuda_host, job_id)
    lines = log_text(cuda_host, job_id)
    assert "count 2" in lines and len(set(_uuids(cuda_host, job_id))) == 2
    assert f"visible {','.join(job.attempts[-1].gpu_ids)}" in lines


def test_nvml_utilisation_reaches_mlflow_and_the_cluster_view(cuda_host):
    from mlflow.tracking import MlflowClient

    job_id = submit(cuda_host, name="busy", source=BUSY, params={"seconds": 20},
                    resources=Resources(gpus=1))  # fmt: skip
    wait_until(lambda: cuda_host.store.get_job(job_id).state == "running", 120, "running")

    def busy_gpu():
        workers = cuda_host.call_sync(lambda o: o.cluster_status())["workers"]
        readings = [g for w in workers if w["usage"] for g in w["usage"]["gpus"]]
        return [g for g in readings if g["utilisation"] > 0]

    (reading, *_) = wait_until(busy_gpu, 60, "a busy GPU in the cluster view")
    assert reading["memory_used"] > 0 and reading["memory_total"] > reading["memory_used"]
    job = wait_final(cuda_host, job_id, timeout=180)
    assert job.state == "succeeded", log_text(cuda_host, job_id)
    (gpu,) = job.attempts[-1].gpu_ids
    from jupyter_trainorch.tracking.hooks import tracking_uri

    client = MlflowClient(tracking_uri(cuda_host.config.mlflow, cuda_host.config.data_dir))
    run_id = job.attempts[-1].mlflow_run_id
    history = client.get_metric_history(run_id, f"system/gpu_{gpu}_utilization_percent")
    assert history and max(m.value for m in history) > 10


def test_torch_ddp_over_nccl_on_one_host(cuda_host):
    if _gpus(cuda_host) < 2:
        pytest.skip("needs two GPUs")
    job_id = submit(cuda_host, name="nccl", source=NCCL,
                    resources=Resources(gpus=1, nodes=2))  # fmt: skip
    job = wait_final(cuda_host, job_id, timeout=240)
    assert job.state == "succeeded", log_text(cuda_host, job_id)
    lines = log_text(cuda_host, job_id)
    assert "rank 0 sum 3" in lines and "[rank 1] rank 1 sum 3" in lines
