"""Expected start times: the placement policy replayed on a clock (pure, no I/O)."""

from __future__ import annotations

from test_policy import gpu_worker, ordered

from jupyter_trainorch.policy import QueuedJob, plan
from jupyter_trainorch.policy.forecast import MAX_STEPS, Holding, estimate_starts

NOW = 1000.0


def job(job_id, seq, gpus=1, priority=100, cpus=1.0):
    return QueuedJob(id=job_id, priority=priority, seq=seq, gpus=gpus, cpus=cpus)


def test_queued_jobs_start_as_running_ones_end_in_dispatch_order():
    workers = [gpu_worker("tcp://a", 1, busy=("0",)), gpu_worker("tcp://b", 1, busy=("0",))]
    running = [Holding("tcp://a", ("0",), ends=NOW + 10), Holding("tcp://b", ("0",), ends=NOW + 30)]
    queue = ordered(job("x", 1), job("y", 2), job("z", 3))
    starts = estimate_starts(queue, workers, running, {"x": 5, "y": 5, "z": 5}, NOW)
    # a frees at 10 (x), x ends at 15 (y), y at 20 (z); b's end at 30 comes too late to matter.
    assert starts == {"x": NOW + 10, "y": NOW + 15, "z": NOW + 20}


def test_a_job_that_fits_now_starts_now_as_plan_says():
    workers = [gpu_worker("tcp://a", 2, busy=("0",))]
    queue = ordered(job("fits", 1), job("later", 2))
    assert [p.job_id for p in plan(queue, workers)] == ["fits"]
    starts = estimate_starts(queue, workers, [Holding("tcp://a", ("0",), ends=NOW + 7)], {}, NOW)
    assert starts == {"fits": NOW, "later": NOW + 7}


def test_an_unknown_run_time_gives_no_estimate_to_the_jobs_behind_it():
    workers = [gpu_worker("tcp://a", 1, busy=("0",))]
    queue = ordered(job("first", 1), job("second", 2))
    # The running job's end is unknown: nothing behind it can be dated.
    assert estimate_starts(queue, workers, [Holding("tcp://a", ("0",))], {"first": 5}, NOW) == {}
    # Its end is known but the first queued job's run time is not: only the first is dated.
    running = [Holding("tcp://a", ("0",), ends=NOW + 3)]
    assert estimate_starts(queue, workers, running, {}, NOW) == {"first": NOW + 3}


def test_priority_decides_who_takes_the_freed_gpu():
    workers = [gpu_worker("tcp://a", 1, busy=("0",))]
    queue = ordered(job("normal", 1), job("urgent", 2, priority=300))
    running = [Holding("tcp://a", ("0",), ends=NOW + 4)]
    starts = estimate_starts(queue, workers, running, {"normal": 10, "urgent": 10}, NOW)
    assert starts == {"urgent": NOW + 4, "normal": NOW + 14}


def test_a_multi_gpu_job_waits_for_both_gpus_of_one_worker():
    workers = [gpu_worker("tcp://a", 2, busy=("0", "1"))]
    running = [Holding("tcp://a", ("0",), ends=NOW + 5), Holding("tcp://a", ("1",), ends=NOW + 9)]
    starts = estimate_starts(ordered(job("big", 1, gpus=2)), workers, running, {}, NOW)
    assert starts == {"big": NOW + 9}


def test_only_wanted_jobs_are_returned_and_the_replay_is_bounded():
    workers = [gpu_worker("tcp://a", 1, busy=("0",))]
    queue = ordered(*(job(f"j{n}", n) for n in range(MAX_STEPS + 50)))
    runtimes = {item.id: 1.0 for item in queue}
    running = [Holding("tcp://a", ("0",), ends=NOW + 1)]
    starts = estimate_starts(queue, workers, running, runtimes, NOW, frozenset({"j2"}))
    assert starts == {"j2": NOW + 3}
    # Far down a long queue the replay stops: the last jobs get no estimate rather than a cost.
    everything = estimate_starts(queue, workers, running, runtimes, NOW)
    assert everything["j0"] == NOW + 1 and f"j{MAX_STEPS + 49}" not in everything
