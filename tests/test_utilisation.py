"""The cluster view: GPUs busy and idle, the queue by priority, what each worker's host
uses, and the GPU time left idle while a job waited."""

from __future__ import annotations

from conftest import submit, wait_final, wait_until
from prometheus_client.parser import text_string_to_metric_families

from jupyter_trainorch.orchestrator.metrics import render_metrics
from jupyter_trainorch.spec import Resources

SLEEPER = "import time\ntime.sleep(float(seconds))"


def test_the_cluster_view_counts_idle_gpu_time_while_a_job_waits(host_factory) -> None:
    host = host_factory(workers=1, gpus_per_worker=2, slots_per_worker=4)
    first = submit(host, name="one-gpu", source=SLEEPER, params={"seconds": 4},
                   resources=Resources(gpus=1))  # fmt: skip
    wait_until(lambda: host.store.get_job(first).state == "running", 60, "the first job")
    # Two GPUs on one worker: this job waits for the first to end, one GPU stays idle.
    second = submit(host, name="two-gpus", source=SLEEPER, params={"seconds": 0},
                    resources=Resources(gpus=2), priority="high")  # fmt: skip
    cluster = host.call_sync(lambda o: o.cluster_status())
    assert cluster["gpus"] == {"total": 2, "busy": 1, "idle": 1}
    assert cluster["queue_by_priority"] == {"high": 1}
    assert wait_final(host, second, 60).state == "succeeded"

    cluster = host.call_sync(lambda o: o.cluster_status())
    # One GPU idle for as long as the two-GPU job waited.
    waited = host.store.get_job(second)
    wait = waited.started - waited.created
    idle_seconds = cluster["idle_gpu_minutes"] * 60
    assert wait > 1 and abs(idle_seconds - wait) < 1.0 + 0.2 * wait, (idle_seconds, wait)
    assert cluster["queue_by_priority"] == {}

    (worker,) = wait_until(
        lambda: [w for w in host.call_sync(lambda o: o.cluster_status())["workers"] if w["usage"]],
        15, "a usage reading",
    )  # fmt: skip
    usage = worker["usage"]
    assert 0 <= usage["cpu"] <= 100 and usage["memory_used"] > 0
    assert usage["gpus"] == []  # emulated GPU slots: NVML has nothing to say

    families = {f.name: f for f in text_string_to_metric_families(render_metrics(host))}
    assert families["trainorch_gpus_idle"].samples[0].value == 2
    idle = families["trainorch_idle_gpu_seconds"].samples[0].value
    assert idle == cluster["idle_gpu_minutes"] * 60 or idle >= 0.6
    (cpu,) = families["trainorch_host_cpu_percent"].samples
    assert cpu.labels == {"worker": worker["address"]}


def test_jobs_that_fit_leave_no_gpu_idle_while_waiting(host_factory) -> None:
    host = host_factory(workers=2, gpus_per_worker=1, slots_per_worker=2)
    jobs = [
        submit(host, name=f"j{i}", source=SLEEPER, params={"seconds": 1},
               resources=Resources(gpus=1))
        for i in range(4)
    ]  # fmt: skip
    for job_id in jobs:
        assert wait_final(host, job_id, 60).state == "succeeded"
    assert host.call_sync(lambda o: o.cluster_status())["idle_gpu_minutes"] < 0.005
