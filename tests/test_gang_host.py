"""A job with more GPUs than one worker has takes them from several workers of one host
(dask-cuda runs one worker per GPU): the policy, and a real local cluster whose workers
advertise one GPU slot each."""

from __future__ import annotations

from conftest import log_text, submit, wait_final, wait_until

from jupyter_trainorch import policy
from jupyter_trainorch.policy import QueuedJob, WorkerView
from jupyter_trainorch.spec import Resources


def worker(address: str, ids: tuple[str, ...], free: tuple[str, ...] | None = None) -> WorkerView:
    free = ids if free is None else free
    return WorkerView(address, ids, free, 4.0, 4.0, 0, 0)


def one_gpu_workers(host: str, count: int, busy: int = 0) -> list[WorkerView]:
    return [
        worker(f"tcp://{host}:{4000 + i}", (str(i),), () if i < busy else None)
        for i in range(count)
    ]


def test_a_job_takes_gpus_of_several_workers_of_one_host() -> None:
    workers = one_gpu_workers("10.0.0.1", 8)
    (placement,) = policy.plan([QueuedJob("big", 100, 1, gpus=2)], workers)
    assert len(placement.gpu_ids) == 2 and len(placement.borrowed) == 1
    lender, lent = placement.borrowed[0]
    assert lender != placement.worker and lent == placement.gpu_ids[1:]


def test_the_smallest_host_with_enough_free_gpus_is_chosen() -> None:
    workers = one_gpu_workers("a", 4, busy=1) + one_gpu_workers("b", 4, busy=2)
    (placement,) = policy.plan([QueuedJob("big", 100, 1, gpus=2)], workers)
    assert policy.host_of(placement.worker) == "b"  # 2 free there, 3 on host a


def test_gpus_are_never_pooled_across_hosts_and_the_job_holds_a_host() -> None:
    workers = one_gpu_workers("a", 2, busy=1) + one_gpu_workers("b", 2, busy=1)
    reasons: dict[str, str] = {}
    queue = [QueuedJob("big", 200, 1, gpus=2), QueuedJob("small", 100, 2, gpus=1)]
    (small,) = policy.plan(queue, workers, reasons)
    assert reasons["big"].startswith("needs 2 GPUs and 1 CPU on one host, which no host")
    held = reasons["big"].split("its workers ")[1].split(" are held")[0]
    # The host held for the big job is not given to the smaller job behind it.
    assert small.job_id == "small" and policy.host_of(small.worker) != policy.host_of(held)
    error = policy.fit_error(3, 1.0, 0, workers)
    assert error == (
        "the job asks for 3 GPUs and 1 CPU but the largest host has 2 GPUs (a; the largest "
        "worker has 1); a job's GPUs "
        "must be on one host (use nodes for several)"
    )
    assert policy.fit_error(2, 1.0, 0, workers) is None


SHOW = "import os, time\nprint('devices', os.environ['CUDA_VISIBLE_DEVICES'])\ntime.sleep(float(seconds))"


def test_a_two_gpu_job_runs_on_one_gpu_workers_and_its_gpus_stay_held(host_factory) -> None:
    host = host_factory(workers=3, gpus_per_worker=1, slots_per_worker=2)
    wait_until(lambda: len(host.orchestrator.backend.workers) == 3, 60, "three workers")
    big = submit(host, name="big", source=SHOW, params={"seconds": 6}, resources=Resources(gpus=2))
    wait_until(lambda: host.store.get_job(big).state == "running", 60, "the two-GPU job")
    cluster = host.call_sync(lambda o: o.cluster_status())
    assert cluster["gpus"] == {"total": 3, "busy": 2, "idle": 1}
    small = [submit(host, name=f"small{i}", source=SHOW, params={"seconds": 1},
                    resources=Resources(gpus=1)) for i in range(2)]  # fmt: skip
    first = wait_final(host, small[0], 60)
    assert first.state == "succeeded"
    big_job = wait_final(host, big, 60)
    second = wait_final(host, small[1], 60)
    assert big_job.state == second.state == "succeeded"

    (line,) = [t for t in log_text(host, big) if t.startswith("devices")]
    devices = line.split()[1].split(",")
    assert len(devices) == 2 and sorted(devices) == sorted(big_job.attempts[0].gpu_ids)
    # While the big job ran, the small ones only ever had the third GPU.
    for job in (first, second):
        (gpu,) = job.attempts[0].gpu_ids
        assert gpu not in devices or job.attempts[0].started >= big_job.attempts[0].ended
