"""Fair share inside a priority class (pure)."""

from __future__ import annotations

import math
import random

import pytest

from jupyter_trainorch.policy import QueuedJob, queue_key
from jupyter_trainorch.policy.fairshare import (
    DEFAULT_JOB_SECONDS,
    FairQueue,
    decayed_usage,
    fair_order,
)


def job(job_id, seq, user, priority=100, gpus=1):
    return QueuedJob(id=job_id, priority=priority, seq=seq, gpus=gpus, user=user)


def ids(jobs):
    return [j.id for j in jobs]


def test_users_take_turns_inside_a_class_and_classes_stay_strict():
    queue = sorted(
        [job("a1", 1, "ann"), job("a2", 2, "ann"), job("a3", 3, "ann"), job("b1", 4, "bob"),
         job("u1", 5, "ann", priority=300), job("low", 0, "cy", priority=0)],
        key=queue_key,
    )  # fmt: skip
    assert ids(fair_order(queue, {})) == ["u1", "a1", "b1", "a2", "a3", "low"]
    # Ann used the GPUs for the last two hours: Bob goes first, then Ann's jobs take turns.
    used = {"ann": 2 * DEFAULT_JOB_SECONDS}
    assert ids(fair_order(queue, used)) == ["u1", "b1", "a1", "a2", "a3", "low"]


def test_a_job_of_more_gpus_counts_for_more_and_known_runtimes_replace_the_default():
    queue = sorted([job("big", 1, "ann", gpus=4), job("a2", 2, "ann"), job("b1", 3, "bob"),
                    job("b2", 4, "bob"), job("b3", 5, "bob")], key=queue_key)  # fmt: skip
    assert ids(fair_order(queue, {})) == ["big", "b1", "b2", "b3", "a2"]
    assert ids(fair_order(queue, {}, {"big": 60.0})) == ["big", "b1", "a2", "b2", "b3"]


def test_one_user_keeps_the_queue_order():
    queue = sorted([job("x", 2, "ann"), job("y", 1, "ann", priority=200)], key=queue_key)
    assert fair_order(queue, {"ann": 1e9}) == queue


def test_the_lazy_queue_reads_as_fair_order_does():
    rng = random.Random(7)
    fair = FairQueue()
    queue = []
    for seq in range(300):
        item = job(
            f"j{seq}", seq, rng.choice("abcd"), rng.choice((0, 100, 300)), rng.choice((1, 2))
        )
        fair.add(item)
        queue.append(item)
    queue.sort(key=queue_key)
    usage = {"a": 5000.0, "c": 100.0}
    assert list(fair.ordered(usage)) == fair_order(queue, usage)
    assert fair[10] == fair_order(queue, usage)[10] and len(fair) == 300
    started = fair_order(queue, usage)[:25]
    fair.discard(started)
    rest = [j for j in queue if j not in started]
    assert list(fair.ordered(usage)) == fair_order(rest, usage) and len(fair) == 275


def test_decayed_usage_is_gpu_seconds_counting_less_with_age():
    hour = 3600.0
    now = 10 * hour
    # One GPU for the last hour, half-life one hour: the integral of 2^(-t/h) over an hour.
    expected = hour / math.log(2) * 0.5
    assert decayed_usage([("ann", 1, now - hour, None)], now, hour)["ann"] == pytest.approx(
        expected
    )
    # The same hour, two half-lives ago, counts a quarter as much; two GPUs, twice.
    old = decayed_usage([("bob", 2, now - 3 * hour, now - 2 * hour)], now, hour)["bob"]
    assert old == pytest.approx(2 * expected / 4)
    assert decayed_usage([("cy", 0, 0, None), ("dee", 1, now, now)], now, hour) == {}
