"""Autoscaling on the queue: the pure sizing policy, the scheduler plugin, and a real local
cluster growing to the demand and shrinking back after the grace period."""

from __future__ import annotations

import time

import pytest
from conftest import submit, wait_final, wait_until

from jupyter_trainorch.policy import QueuedJob, WorkerView
from jupyter_trainorch.policy.scaling import Pool, scale
from jupyter_trainorch.spec import Resources

POOL = Pool(gpus=1, cpus=4.0, minimum=1, maximum=4, grace=60.0)


def worker(address: str, gpus: int = 1, busy: int = 0, cpus: float = 4.0) -> WorkerView:
    ids = tuple(str(i) for i in range(gpus))
    return WorkerView(address, ids, ids[busy:], cpus, cpus - busy, 0, 0)


def job(name: str, gpus: int = 1, nodes: int = 1, **fields: object) -> QueuedJob:
    return QueuedJob(name, 100, len(name), gpus=gpus, nodes=nodes, **fields)  # type: ignore[arg-type]


def test_waiting_jobs_add_the_workers_they_need_up_to_the_maximum() -> None:
    waiting = [job("a"), job("b"), job("c")]
    decision = scale(POOL, waiting, [worker("w0", busy=1)], {}, now=0.0)
    assert decision.target == 4 and decision.close == ()
    assert "3 jobs wait for capacity (1 GPU and 1 CPU each)" in decision.reason

    # Free room on the current workers is used first.
    decision = scale(POOL, waiting, [worker("w0"), worker("w1")], {}, now=0.0)
    assert decision.target == 3

    capped = scale(POOL, [job(str(i)) for i in range(9)], [worker("w0", busy=1)], {}, 0.0)
    assert capped.target == 4 and "(the maximum)" in capped.reason


def test_a_gang_needs_one_worker_per_node_and_oversized_jobs_add_nothing() -> None:
    decision = scale(POOL, [job("ddp", nodes=3)], [worker("w0", busy=1)], {}, 0.0)
    assert decision.target == 4
    # No pool worker could ever hold 2 GPUs: more workers would not help.
    decision = scale(POOL, [job("big", gpus=2)], [worker("w0", busy=1)], {}, 0.0)
    assert decision.target == 1 and not decision.reason


def test_idle_workers_go_only_after_the_grace_period_and_never_below_the_minimum() -> None:
    workers = [worker("w0"), worker("w1"), worker("w2", busy=1)]
    idle_since = {"w0": 0.0, "w1": 30.0}
    early = scale(POOL, [], workers, idle_since, now=50.0)
    assert early.target == 3 and early.close == ()

    later = scale(POOL, [], workers, idle_since, now=61.0)
    assert later.close == ("w0",) and later.target == 2
    assert "closing 1 worker idle for over 60 s (w0)" in later.reason

    all_idle = scale(POOL, [], [worker("w0"), worker("w1")], idle_since, now=1000.0)
    assert all_idle.close == ("w0",) and all_idle.target == 1


def test_a_busy_worker_is_never_offered_even_if_marked_idle() -> None:
    decision = scale(POOL, [], [worker("w0", busy=1), worker("w1")], {"w0": 0.0}, now=1000.0)
    assert decision.close == ()


def test_a_waiting_job_keeps_the_idle_worker_it_fits_on() -> None:
    decision = scale(POOL, [job("a")], [worker("w0"), worker("w1")], {"w0": 0, "w1": 0}, 1000.0)
    assert decision.close == ("w1",)


def test_below_the_minimum_the_pool_grows_to_it() -> None:
    decision = scale(Pool(gpus=1, minimum=2, maximum=4), [], [], {}, 0.0)
    assert decision.target == 2 and decision.reason


def test_the_plugin_answers_managers_with_our_demand_and_only_idle_workers() -> None:
    import asyncio

    from distributed import Client, LocalCluster

    from jupyter_trainorch.cluster.demand import QueueDemand

    async def main() -> None:
        async with LocalCluster(
            n_workers=2, processes=False, asynchronous=True, dashboard_address=":0"
        ) as cluster:
            async with Client(cluster, asynchronous=True) as client:
                await client.register_plugin(QueueDemand())
                # Until the orchestrator speaks, the workers there are are kept.
                assert await client.scheduler.adaptive_target() == 2
                addresses = sorted(cluster.scheduler.workers)
                await client.scheduler.trainorch_demand(target=5, closable=[])
                assert await client.scheduler.adaptive_target() == 5
                assert cluster.scheduler.adaptive_target() == 5  # the HTTP API's way
                await client.scheduler.trainorch_demand(target=1, closable=addresses[:1])
                chosen = await client.scheduler.workers_to_close(target=1, attribute="name")
                assert chosen == [cluster.scheduler.workers[addresses[0]].name]
                # A worker that runs a task is not offered, whatever the orchestrator said.
                future = client.submit(time.sleep, 2, workers=[addresses[0]], pure=False)
                await asyncio.sleep(0.3)
                assert await client.scheduler.workers_to_close(target=1) == []
                await future

    asyncio.run(main())


def test_the_newest_demand_reaches_the_scheduler_when_an_older_post_is_slow() -> None:
    """Decisions follow each other faster than a post to a remote scheduler returns: the
    scheduler must end with the newest, never an older one that arrived late."""
    import asyncio

    from distributed import Client, LocalCluster

    from jupyter_trainorch.cluster.demand import QueueDemand
    from jupyter_trainorch.orchestrator.autoscale import Autoscaler
    from jupyter_trainorch.orchestrator.feed import ChangeFeed

    async def main() -> None:
        async with LocalCluster(
            n_workers=0, processes=False, asynchronous=True, dashboard_address=":0"
        ) as cluster:
            async with Client(cluster, asynchronous=True) as client:
                await client.register_plugin(QueueDemand())
                delays = iter([0.5, 0.0, 0.0])

                class SlowFirstPost:
                    workers: dict = {}

                    async def post_demand(self, target: int, close: tuple[str, ...]) -> None:
                        await asyncio.sleep(next(delays))
                        await client.scheduler.trainorch_demand(target=target, closable=close)

                tasks: list[asyncio.Task] = []

                def spawn(coro):
                    tasks.append(asyncio.ensure_future(coro))
                    return tasks[-1]

                pool = Pool(gpus=1, cpus=1, maximum=4, grace=60)
                autoscaler = Autoscaler(
                    pool, SlowFirstPost(), ChangeFeed(), time.monotonic, spawn, lambda: None
                )
                autoscaler.round([job("a", gpus=1)], [])
                await asyncio.sleep(0.05)
                autoscaler.round([job("a", gpus=1), job("b", gpus=1)], [])
                while not all(task.done() for task in tasks):
                    await asyncio.gather(*tasks)
                assert await client.scheduler.adaptive_target() == 2
                assert [e["target"] for e in autoscaler.events] == [1, 2]
                autoscaler.close()

    asyncio.run(main())


SLEEPER = "import time\ntime.sleep(float(seconds))\nprint('slept', seconds)"


@pytest.mark.timeout(180)
def test_a_local_cluster_grows_to_the_queue_and_shrinks_back_after_grace(host_factory) -> None:
    host = host_factory(
        workers=1, gpus_per_worker=1, slots_per_worker=1,
        autoscale_minimum=1, autoscale_maximum=3, autoscale_grace=2.0,
    )  # fmt: skip
    wait_until(lambda: len(host.orchestrator.backend.workers) == 1, 60, "the first worker")
    one_gpu = Resources(gpus=1)
    quick = [submit(host, name=f"quick{i}", source=SLEEPER, params={"seconds": 6},
                    resources=one_gpu) for i in range(2)]  # fmt: skip
    long = submit(host, name="long", source=SLEEPER, params={"seconds": 14}, resources=one_gpu)

    def running_at_once() -> bool:
        states = [host.store.get_job(j).state for j in (*quick, long)]
        return states.count("running") == 3

    wait_until(running_at_once, 60, "three jobs running on three workers at once")
    assert len(host.orchestrator.backend.workers) == 3
    cluster = host.call_sync(lambda o: o.cluster_status())
    grew = [e for e in cluster["autoscaling"]["events"] if e["target"] == 3]
    assert grew and "2 jobs wait for capacity" in grew[0]["message"], cluster["autoscaling"]
    changes = host.orchestrator.feed.since(0)
    assert any(c["kind"] == "cluster" and c["target"] == 3 for c in changes)

    for job_id in quick:
        assert wait_final(host, job_id, 60).state == "succeeded"
    # The quick jobs' workers go after the grace period; the long job's worker stays.
    wait_until(lambda: len(host.orchestrator.backend.workers) == 1, 30, "idle workers closed")
    assert host.store.get_job(long).state == "running"
    assert wait_final(host, long, 60).state == "succeeded"
    (left,) = host.orchestrator.backend.workers
    assert host.store.get_job(long).attempts[-1].worker == left
    time.sleep(3)  # past the grace period again: the minimum stays
    assert len(host.orchestrator.backend.workers) == 1
    messages = [
        e["message"] for e in host.call_sync(lambda o: o.cluster_status())["autoscaling"]["events"]
    ]
    assert any(
        m.startswith("closing 2 workers") or m.startswith("closing 1 worker") for m in messages
    )
