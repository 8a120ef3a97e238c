"""Multi-node jobs on a real local Dask cluster: ranks meet through torch.distributed (gloo),
a failing rank makes the whole gang run again, cancel stops every rank."""

from __future__ import annotations

import pytest
from conftest import log_text, pid_alive, submit, wait_final, wait_until

from jupyter_trainorch.spec import Resources, RetryPolicy, SpecError

pytest.importorskip("torch")

ALL_REDUCE = """
import os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"rank {rank} of {dist.get_world_size()} sum {value.item():g} "
      f"local {os.environ['LOCAL_RANK']}/{os.environ['LOCAL_WORLD_SIZE']} "
      f"node {os.environ['NODE_RANK']} gpus {os.environ['CUDA_VISIBLE_DEVICES']!r}", flush=True)
dist.destroy_process_group()
"""

# Attempt 1: rank 1 fails while rank 0 waits for it in a collective; attempt 2 succeeds.
FLAKY_RANK = """
import os, sys
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
print("pid", os.getpid(), flush=True)
if os.environ["TRAINORCH_ATTEMPT"] == "1" and rank == 1:
    sys.exit(3)
value = torch.tensor([float(rank + 1)])
if os.environ["TRAINORCH_ATTEMPT"] == "1":
    import time
    time.sleep(120)  # rank 0 would wait here for rank 1, which is gone
dist.all_reduce(value)
print("sum", int(value.item()), flush=True)
# Without it gloo's threads may still run at exit, and the process aborts.
dist.destroy_process_group()
"""

SLEEPER = """
import os, time
print("pid", os.getpid(), flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def two_workers(host_factory):
    return host_factory(workers=2, gpus_per_worker=1, grace_period=1.0)


def _pids(host, job_id, count):
    def found():
        pids = [int(t.split()[-1]) for t in log_text(host, job_id) if " pid " in f" {t}"]
        return pids if len(pids) >= count else None

    return wait_until(found, timeout=60, what=f"{count} ranks to print their pid")


def test_two_ranks_all_reduce_over_gloo(two_workers):
    job_id = submit(
        two_workers, name="ddp", source=ALL_REDUCE, resources=Resources(gpus=1, nodes=2)
    )
    job = wait_final(two_workers, job_id, timeout=120)
    lines = log_text(two_workers, job_id)
    assert job.state == "succeeded", lines
    # Both workers are on this host: one node, two local ranks, each with its worker's GPU.
    gpus = [a.gpu_ids for a in job.attempts]
    assert f"rank 0 of 2 sum 3 local 0/2 node 0 gpus '{gpus[0][0]}'" in lines
    views = two_workers.call_sync(lambda o: o.scheduler.views())
    (other,) = {g for v in views for g in v.gpu_ids} - set(gpus[0])
    assert f"[rank 1] rank 1 of 2 sum 3 local 1/2 node 0 gpus '{other}'" in lines
    seqs = [line.seq for line in two_workers.store.read_logs(job_id)]
    assert len(seqs) == len(set(seqs)) == len(lines) >= 2, lines
    assert len(job.attempts) == 1 and job.attempts[0].worker.startswith("tcp://")
    views = two_workers.call_sync(lambda o: o.scheduler.views())
    assert all(v.free_gpu_ids == v.gpu_ids for v in views)


def test_a_failing_rank_stops_the_other_and_the_whole_gang_runs_again(two_workers):
    job_id = submit(two_workers, name="flaky-ddp", source=FLAKY_RANK,
                    resources=Resources(gpus=1, nodes=2),
                    retry=RetryPolicy(max_retries=1, backoff=0.1))  # fmt: skip
    job = wait_final(two_workers, job_id, timeout=150)
    assert job.state == "succeeded", log_text(two_workers, job_id)
    first, second = job.attempts
    assert first.state == "failed" and first.exit_code == 3
    assert first.error.startswith("rank 1 on tcp://") and first.error.endswith("exited with code 3")
    assert second.state == "succeeded"
    attempt_two = [line.text for line in two_workers.store.read_logs(job_id, attempt=2)]
    assert "sum 3" in attempt_two and "[rank 1] sum 3" in attempt_two
    # Rank 0 of the first attempt was stopped, not left waiting for its peer.
    first_pids = [int(t.split()[-1]) for t in (
        line.text for line in two_workers.store.read_logs(job_id, attempt=1)) if "pid" in t]  # fmt: skip
    assert len(first_pids) == 2 and not any(pid_alive(pid) for pid in first_pids)


def test_cancel_stops_every_rank(two_workers):
    job_id = submit(two_workers, name="gang-sleeper", source=SLEEPER,
                    resources=Resources(gpus=1, nodes=2))  # fmt: skip
    pids = _pids(two_workers, job_id, 2)
    assert all(pid_alive(pid) for pid in pids)
    two_workers.call(lambda o: o.cancel(job_id))
    job = wait_final(two_workers, job_id, timeout=30)
    assert job.state == "cancelled"
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), timeout=10, what=f"pid {pid} to exit")
    views = two_workers.call_sync(lambda o: o.scheduler.views())
    assert all(v.free_gpu_ids == v.gpu_ids for v in views)


def test_a_gang_larger_than_the_cluster_is_refused_with_one_sentence(two_workers):
    with pytest.raises(SpecError) as err:
        submit(two_workers, name="too-many", source="pass", resources=Resources(gpus=1, nodes=3))
    assert "only 2 of the cluster's 2 workers could hold one node" in str(err.value)
