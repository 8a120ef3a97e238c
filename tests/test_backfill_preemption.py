"""Backfill and preemption: small exact scenarios on a clock passed in (no sleeps)."""

from __future__ import annotations

import random

import pytest
from test_policy import gpu_worker, ordered

from jupyter_trainorch.policy import (
    PreemptionRules,
    QueuedJob,
    RunningJob,
    decide,
    plan,
    wait_reasons,
)

LOW, NORMAL, HIGH, URGENT = 0, 100, 200, 300


def running(job_id, worker, gpus=1, priority=NORMAL, started=0.0, ends=None, checkpointed=None):
    return RunningJob(job_id, worker, priority, gpus=gpus, cpus=1.0, started=started,
                      ends=ends, checkpointed=checkpointed)  # fmt: skip


# --- backfill ----------------------------------------------------------------------


def held_cluster():
    """w1: 2 GPUs, one held by a job that ends at t=100. A 2-GPU job waits for w1."""
    workers = [gpu_worker("w1", 2, busy=("0",))]
    now_running = [running("r", "w1", ends=100.0)]
    queue = ordered(QueuedJob("big", HIGH, 1, gpus=2), QueuedJob("small", NORMAL, 2, gpus=1))
    return workers, now_running, queue


def test_a_short_job_backfills_a_held_worker_when_it_ends_before_the_held_job_starts():
    workers, now_running, queue = held_cluster()
    placed = plan(queue, workers, now=0.0, running=now_running, runtimes={"small": 60.0})
    assert [(p.job_id, p.worker, p.gpu_ids, p.backfill) for p in placed] == [
        ("small", "w1", ("1",), True)
    ]


def test_a_job_that_would_delay_the_held_job_does_not_backfill():
    workers, now_running, queue = held_cluster()
    assert plan(queue, workers, now=0.0, running=now_running, runtimes={"small": 101.0}) == []
    # Ending exactly at the held job's start delays nothing.
    assert plan(queue, workers, now=1.0, running=now_running, runtimes={"small": 99.0})


def test_without_run_times_nothing_backfills():
    workers, now_running, queue = held_cluster()
    assert plan(queue, workers, now=0.0, running=now_running) == []
    assert plan(queue, workers, now=0.0, running=now_running, runtimes={}) == []
    # A run time that is not a number of seconds is no run time.
    for bad in (float("nan"), float("inf"), -1.0):
        assert plan(queue, workers, running=now_running, runtimes={"small": bad}) == []


def test_a_running_job_of_unknown_end_makes_the_held_start_unknown():
    workers, _, queue = held_cluster()
    unknown = [running("r", "w1", ends=None)]
    assert plan(queue, workers, now=0.0, running=unknown, runtimes={"small": 1.0}) == []


def test_backfill_past_the_point_where_every_worker_is_busy_or_held():
    workers = [gpu_worker("w1", 2, busy=("0",)), gpu_worker("w2", 1, busy=("0",))]
    now_running = [running("r1", "w1", ends=100.0), running("r2", "w2", ends=None)]
    queue = ordered(
        QueuedJob("big", URGENT, 1, gpus=2),
        QueuedJob("next", HIGH, 2, gpus=1),  # too long to backfill: holds w2 (end unknown)
        QueuedJob("long", NORMAL, 3, gpus=1),
        QueuedJob("short", NORMAL, 4, gpus=1),
    )
    runtimes = {"next": 500.0, "long": 400.0, "short": 30.0}
    placed = plan(queue, workers, now=0.0, running=now_running, runtimes=runtimes)
    assert [(p.job_id, p.worker, p.backfill) for p in placed] == [("short", "w1", True)]
    reasons = wait_reasons(queue, workers)
    assert set(reasons) == {"big", "next", "long", "short"}


def test_jobs_placed_in_the_same_decision_count_towards_the_held_start():
    # w1 has 2 free GPUs of 3; "first" takes one (runs 50 s), then "big" (3 GPUs) is held
    # on w1 until both "r" (ends 100) and "first" (ends 50) are done: t=100.
    workers = [gpu_worker("w1", 3, busy=("0",))]
    now_running = [running("r", "w1", ends=100.0)]
    queue = ordered(
        QueuedJob("first", URGENT, 1, gpus=1),
        QueuedJob("big", HIGH, 2, gpus=3),
        QueuedJob("fits", NORMAL, 3, gpus=1),
        QueuedJob("too_long", NORMAL, 4, gpus=1),
    )
    runtimes = {"first": 50.0, "fits": 90.0, "too_long": 120.0}
    placed = plan(queue, workers, now=0.0, running=now_running, runtimes=runtimes)
    assert [(p.job_id, p.backfill) for p in placed] == [("first", False), ("fits", True)]


def test_a_placed_job_of_unknown_run_time_blocks_backfill_behind_it():
    workers = [gpu_worker("w1", 3, busy=("0",))]
    now_running = [running("r", "w1", ends=100.0)]
    queue = ordered(
        QueuedJob("first", URGENT, 1, gpus=1),
        QueuedJob("big", HIGH, 2, gpus=3),
        QueuedJob("fits", NORMAL, 3, gpus=1),
    )
    placed = plan(queue, workers, now=0.0, running=now_running, runtimes={"fits": 1.0})
    assert [p.job_id for p in placed] == ["first"]


@pytest.mark.parametrize("seed", range(200))
def test_random_backfill_never_delays_a_held_job(seed):
    rng = random.Random(seed)
    workers, now_running = [], []
    for w in range(rng.randint(1, 4)):
        gpus = rng.randint(1, 4)
        busy = tuple(str(g) for g in range(rng.randint(0, gpus)))
        workers.append(gpu_worker(f"w{w}", gpus, busy=busy, cpus=64.0))
        for g in busy:
            ends = rng.choice([None, rng.uniform(1, 200)])
            now_running.append(running(f"r{w}{g}", f"w{w}", ends=ends))
    queue = ordered(
        *(
            QueuedJob(f"j{n}", rng.choice([LOW, NORMAL, HIGH]), n, gpus=rng.randint(1, 4))
            for n in range(rng.randint(1, 12))
        )
    )
    runtimes = {j.id: rng.uniform(1, 200) for j in queue if rng.random() < 0.7}
    plain = plan(queue, workers)
    placed = plan(queue, workers, now=0.0, running=now_running, runtimes=runtimes)
    # Backfill only adds starts: whatever starts without it starts the same way with it.
    assert [p for p in placed if not p.backfill] == plain
    for p in placed:
        if p.backfill:
            assert p.job_id in runtimes
    ids = [(p.worker, g) for p in placed for g in p.gpu_ids]
    assert len(ids) == len(set(ids))


# --- preemption -----------------------------------------------------------------------

RULES = PreemptionRules(priority=URGENT, min_runtime=600.0)


def full_worker(address="w1", gpus=2):
    return gpu_worker(address, gpus, busy=tuple(str(g) for g in range(gpus)))


def test_an_urgent_job_preempts_the_oldest_eligible_victim_only():
    urgent = QueuedJob("u", URGENT, 9, gpus=1)
    now_running = [running("old", "w1", started=0.0), running("young", "w1", started=500.0)]
    got = decide([urgent], [full_worker()], now=1000.0, running=now_running, rules=RULES,
                 explain=["u"])  # fmt: skip
    assert [(p.job_id, p.worker, p.victims) for p in got.preemptions] == [("u", "w1", ("old",))]
    assert got.placements == []
    assert got.reasons["u"].startswith("preempting old on w1")


def test_nobody_is_preempted_before_the_minimum_run_time():
    urgent = QueuedJob("u", URGENT, 9, gpus=1)
    now_running = [running("a", "w1", started=500.0), running("b", "w1", started=500.0)]
    got = decide([urgent], [full_worker()], now=1000.0, running=now_running, rules=RULES)
    assert got.preemptions == []


def test_victims_lowest_priority_first_then_least_work_lost():
    urgent = QueuedJob("u", URGENT, 9, gpus=1)
    now_running = [
        running("normal_fresh", "w1", priority=NORMAL, started=0.0, checkpointed=990.0),
        running("low_old", "w1", priority=LOW, started=0.0),
    ]
    got = decide([urgent], [full_worker()], now=1000.0, running=now_running, rules=RULES)
    assert got.preemptions[0].victims == ("low_old",)
    now_running = [
        running("no_checkpoint", "w1", started=0.0),
        running("checkpointed", "w1", started=0.0, checkpointed=950.0),
    ]
    got = decide([urgent], [full_worker()], now=1000.0, running=now_running, rules=RULES)
    assert got.preemptions[0].victims == ("checkpointed",)


def test_equal_or_higher_priority_jobs_are_never_victims():
    urgent = QueuedJob("u", URGENT, 9, gpus=1)
    now_running = [running("a", "w1", priority=URGENT), running("b", "w1", priority=URGENT)]
    got = decide([urgent], [full_worker()], now=1e6, running=now_running, rules=RULES)
    assert got.preemptions == []


def test_only_the_preempting_class_preempts():
    high = QueuedJob("h", HIGH, 9, gpus=1)
    now_running = [running("a", "w1", priority=LOW), running("b", "w1", priority=LOW)]
    assert (
        decide([high], [full_worker()], now=1e6, running=now_running, rules=RULES).preemptions == []
    )
    assert decide([high], [full_worker()], now=1e6, running=now_running).preemptions == []
    rules = PreemptionRules(priority=HIGH, min_runtime=0.0)
    got = decide([high], [full_worker()], now=1e6, running=now_running, rules=rules)
    assert len(got.preemptions) == 1


def test_a_job_that_fits_now_starts_instead_of_preempting():
    urgent = QueuedJob("u", URGENT, 9, gpus=1)
    workers = [full_worker("w1"), gpu_worker("w2", 1)]
    now_running = [running("a", "w1"), running("b", "w1")]
    got = decide([urgent], workers, now=1e6, running=now_running, rules=RULES)
    assert [p.worker for p in got.placements] == ["w2"] and got.preemptions == []


def test_victims_being_stopped_are_not_chosen_twice():
    urgent = QueuedJob("u", URGENT, 9, gpus=1)
    now_running = [running("a", "w1"), running("b", "w1")]
    got = decide([urgent], [full_worker()], now=1e6, running=now_running, rules=RULES,
                 stopping={"a"}, explain=["u"])  # fmt: skip
    assert got.preemptions == []
    assert "once the jobs stopped for it have ended" in got.reasons["u"]
    # A second urgent job gets its own victim.
    second = QueuedJob("u2", URGENT, 10, gpus=1)
    got = decide([urgent, second], [full_worker()], now=1e6, running=now_running, rules=RULES,
                 stopping={"a"})  # fmt: skip
    assert [(p.job_id, p.victims) for p in got.preemptions] == [("u2", ("b",))]


def test_no_more_victims_than_the_job_needs():
    urgent = QueuedJob("u", URGENT, 9, gpus=2)
    now_running = [
        running("small_low", "w1", gpus=1, priority=LOW),
        running("pair", "w1", gpus=2, priority=NORMAL),
    ]
    got = decide([urgent], [full_worker(gpus=3)], now=1e6, running=now_running, rules=RULES)
    assert got.preemptions[0].victims == ("pair",)


def test_the_worker_whose_victims_matter_least_is_chosen():
    urgent = QueuedJob("u", URGENT, 9, gpus=1)
    workers = [full_worker("w1", 1), full_worker("w2", 1)]
    now_running = [running("n", "w1", priority=NORMAL), running("l", "w2", priority=LOW)]
    got = decide([urgent], workers, now=1e6, running=now_running, rules=RULES)
    assert [(p.worker, p.victims) for p in got.preemptions] == [("w2", ("l",))]


def test_a_job_past_its_gpu_quota_preempts_nobody():
    urgent = QueuedJob("u", URGENT, 9, gpus=1, user="ann")
    now_running = [running("a", "w1"), running("b", "w1")]
    got = decide([urgent], [full_worker()], now=1e6, running=now_running, rules=RULES,
                 gpu_caps={"ann": 1}, gpus_held={"ann": 1})  # fmt: skip
    assert got.preemptions == []


def test_a_resumed_job_goes_first_in_its_class():
    queue = ordered(
        QueuedJob("old", NORMAL, 1, gpus=1),
        QueuedJob("back", NORMAL, 5, gpus=1, resumes=True),
        QueuedJob("high", HIGH, 9, gpus=1),
    )
    assert [j.id for j in queue] == ["high", "back", "old"]


# --- group quotas -----------------------------------------------------------------------


def test_a_group_quota_holds_back_every_members_jobs_and_only_theirs():
    queue = ordered(
        QueuedJob("ann1", NORMAL, 1, gpus=1, user="ann", groups=("vision",)),
        QueuedJob("ben1", NORMAL, 2, gpus=1, user="ben", groups=("vision",)),
        QueuedJob("bob1", NORMAL, 3, gpus=1, user="bob"),
    )
    reasons = {}
    placed = plan(queue, [gpu_worker("w1", 4)], reasons, group_caps={"vision": 1},
                  groups_held={"vision": 0})  # fmt: skip
    assert [p.job_id for p in placed] == ["ann1", "bob1"]
    assert (
        reasons["ben1"]
        == "group vision may hold 1 GPUs at once (quota) and holds 1; it needs 1 GPU"
    )
    # An urgent member over the group's quota preempts nobody.
    urgent = QueuedJob("u", URGENT, 9, gpus=1, user="ben", groups=("vision",))
    now_running = [running("a", "w1"), running("b", "w1")]
    got = decide([urgent], [full_worker()], now=1e6, running=now_running, rules=RULES,
                 group_caps={"vision": 2}, groups_held={"vision": 2})  # fmt: skip
    assert got.preemptions == []
