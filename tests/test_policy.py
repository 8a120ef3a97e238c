"""The placement policy: ordering, GPU-aware fit, reservations, fit errors."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from jupyter_trainorch.policy import (
    Placement,
    QueuedJob,
    WorkerView,
    fit_error,
    plan,
    queue_key,
    wait_reasons,
)

GIB = 2**30
LOW, NORMAL, HIGH, URGENT = 0, 100, 200, 300
SLACK = 1e-9


def gpu_worker(address, gpus, busy=(), cpus=8.0, free_cpus=None, memory=0, free_memory=None):
    ids = tuple(str(n) for n in range(gpus))
    return WorkerView(
        address=address,
        gpu_ids=ids,
        free_gpu_ids=tuple(i for i in ids if i not in set(busy)),
        cpus=cpus,
        free_cpus=cpus if free_cpus is None else free_cpus,
        memory=memory,
        free_memory=memory if free_memory is None else free_memory,
    )


def ordered(*jobs):
    return sorted(jobs, key=queue_key)


def by_job(placements):
    return {p.job_id: p for p in placements}


# --- a direct transcription of the rules, used as an oracle --------------------


@dataclass
class _Slot:
    index: int
    address: str
    cap_gpus: int
    cap_cpus: float
    cap_memory: int
    free_ids: list = field(default_factory=list)
    free_cpus: float = 0.0
    free_memory: int = 0


def _slots(workers):
    return [
        _Slot(
            index=i,
            address=w.address,
            cap_gpus=len(w.gpu_ids),
            cap_cpus=w.cpus,
            cap_memory=w.memory,
            free_ids=list(w.free_gpu_ids),
            free_cpus=w.free_cpus,
            free_memory=w.free_memory,
        )
        for i, w in enumerate(workers)
    ]


def _fits_now(job, slot):
    return (
        len(slot.free_ids) >= job.gpus
        and job.cpus <= slot.free_cpus + SLACK
        and (not job.memory or not slot.cap_memory or job.memory <= slot.free_memory)
    )


def _fits_ever(job, slot):
    return (
        slot.cap_gpus >= job.gpus
        and job.cpus <= slot.cap_cpus + SLACK
        and (not job.memory or not slot.cap_memory or job.memory <= slot.cap_memory)
    )


def _consume(job, slot):
    taken = tuple(slot.free_ids[: job.gpus])
    del slot.free_ids[: job.gpus]
    slot.free_cpus -= job.cpus
    if slot.free_cpus <= SLACK:
        slot.free_cpus = 0.0
    if job.memory and slot.cap_memory:
        slot.free_memory -= job.memory
    return taken


def reference_plan(queue, workers):
    """Every job against every worker, no shortcuts: slow but obviously right."""
    slots = _slots(workers)
    reserved = set()
    result = []
    for job in sorted(queue, key=queue_key):
        free = [s for s in slots if s.index not in reserved]
        now = [s for s in free if _fits_now(job, s)]
        if now:
            best = min(now, key=lambda s: (len(s.free_ids), s.free_cpus, s.address, s.index))
            result.append(Placement(job.id, best.address, _consume(job, best)))
            continue
        ever = [s for s in free if _fits_ever(job, s)]
        if ever:
            hold = min(ever, key=lambda s: (-len(s.free_ids), -s.free_cpus, s.address, s.index))
            reserved.add(hold.index)
    return result


def check_invariants(queue, workers, placements):
    jobs = {j.id: j for j in queue}
    slots = {s.address: s for s in _slots(workers)}
    placed = by_job(placements)
    assert len(placed) == len(placements), "a job was placed twice"
    handed = set()
    for job in queue:  # replayed in queue order, as the decisions were made
        if job.id not in placed:
            continue
        p = placed[job.id]
        assert p.job_id in jobs
        slot = slots[p.worker]
        assert len(p.gpu_ids) == job.gpus
        assert set(p.gpu_ids) <= set(slot.free_ids), "GPU id not free on that worker"
        assert p.gpu_ids == tuple(slot.free_ids[: job.gpus]), "not the first free ids"
        for gpu in p.gpu_ids:
            assert (p.worker, gpu) not in handed, "GPU id handed out twice"
            handed.add((p.worker, gpu))
        assert _fits_now(job, slot), "CPU or memory oversubscribed"
        for earlier in queue:
            if earlier is job:
                break
            if earlier.id not in placed:
                assert not _fits_now(earlier, slot), (
                    f"{earlier.id} fit on {p.worker} but {job.id}, ordered after it, went first"
                )
        _consume(job, slot)
    for slot in slots.values():
        assert slot.free_cpus >= -SLACK
        assert not slot.cap_memory or slot.free_memory >= 0


# --- ordering -------------------------------------------------------------------


def test_queue_key_orders_priority_then_submission():
    jobs = [
        QueuedJob("a", NORMAL, 3),
        QueuedJob("b", URGENT, 9),
        QueuedJob("c", NORMAL, 1),
        QueuedJob("d", LOW, 0),
        QueuedJob("e", HIGH, 5),
    ]
    assert [j.id for j in sorted(jobs, key=queue_key)] == ["b", "e", "c", "a", "d"]


def test_urgent_submitted_last_takes_the_gpu_once_it_frees():
    queue = ordered(
        QueuedJob("n1", NORMAL, 1, gpus=1),
        QueuedJob("n2", NORMAL, 2, gpus=1),
        QueuedJob("u", URGENT, 3, gpus=1),
    )
    assert plan(queue, [gpu_worker("w", 1, busy=("0",))]) == []
    assert plan(queue, [gpu_worker("w", 1)]) == [Placement("u", "w", ("0",))]


def test_fifo_within_a_priority_class():
    queue = ordered(*(QueuedJob(f"j{n}", NORMAL, n, gpus=1) for n in (4, 2, 3, 1)))
    got = plan(queue, [gpu_worker("w", 2)])
    assert [p.job_id for p in got] == ["j1", "j2"]
    assert [p.gpu_ids for p in got] == [("0",), ("1",)]


def test_lower_class_does_not_jump_a_waiting_higher_one_on_its_worker():
    queue = ordered(QueuedJob("h", HIGH, 1, gpus=2), QueuedJob("l", LOW, 2, gpus=1))
    assert plan(queue, [gpu_worker("w", 2, busy=("0",))]) == []


# --- GPU-aware fit ----------------------------------------------------------------


def test_two_gpu_job_goes_only_where_two_are_free():
    workers = [gpu_worker("a", 4, busy=("0", "1", "2")), gpu_worker("b", 4, busy=("1", "3"))]
    got = plan([QueuedJob("j", NORMAL, 1, gpus=2)], workers)
    assert got == [Placement("j", "b", ("0", "2"))]


def test_best_fit_keeps_whole_blocks_free_for_big_jobs():
    workers = [gpu_worker("big", 8), gpu_worker("part", 8, busy=tuple("012345"))]
    queue = ordered(QueuedJob("small", HIGH, 1, gpus=1), QueuedJob("whole", NORMAL, 2, gpus=8))
    got = by_job(plan(queue, workers))
    assert got["small"].worker == "part"
    assert got["whole"] == Placement("whole", "big", tuple(str(n) for n in range(8)))


def test_ties_are_broken_by_address():
    workers = [gpu_worker("w2", 2), gpu_worker("w1", 2), gpu_worker("w3", 2)]
    assert plan([QueuedJob("j", NORMAL, 1, gpus=1)], workers)[0].worker == "w1"


def test_no_gpu_id_is_handed_out_twice():
    queue = ordered(*(QueuedJob(f"j{n}", NORMAL, n, gpus=1, cpus=0.5) for n in range(10)))
    got = plan(queue, [gpu_worker("a", 4), gpu_worker("b", 2)])
    pairs = [(p.worker, g) for p in got for g in p.gpu_ids]
    assert len(pairs) == 6 == len(set(pairs))


def test_repeated_free_id_in_the_view_is_given_once():
    worker = WorkerView("w", gpu_ids=("0", "1"), free_gpu_ids=("0", "0"), cpus=4, free_cpus=4)
    queue = ordered(QueuedJob("a", NORMAL, 1, gpus=1), QueuedJob("b", NORMAL, 2, gpus=1))
    assert plan(queue, [worker]) == [Placement("a", "w", ("0",))]


# --- reservations -----------------------------------------------------------------


def test_reservation_protects_a_waiting_multi_gpu_job():
    # Only a can ever hold "big"; its one free GPU must not go to small jobs.
    workers = [gpu_worker("a", 2, busy=("0",)), gpu_worker("b", 1)]
    queue = ordered(
        QueuedJob("big", URGENT, 1, gpus=2),
        QueuedJob("s1", NORMAL, 2, gpus=1),
        QueuedJob("s2", NORMAL, 3, gpus=1),
    )
    assert plan(queue, workers) == [Placement("s1", "b", ("0",))]
    # Once a frees up, big starts there ahead of the waiting small job.
    workers[0] = gpu_worker("a", 2)
    assert plan(queue, workers) == [
        Placement("big", "a", ("0", "1")),
        Placement("s1", "b", ("0",)),
    ]


def test_reservation_picks_the_worker_with_most_free_gpus():
    workers = [gpu_worker("a", 4, busy=("0", "1", "2")), gpu_worker("b", 4, busy=("0", "1"))]
    queue = ordered(QueuedJob("big", URGENT, 1, gpus=4), QueuedJob("s", NORMAL, 2, gpus=1))
    # b is closer to four free GPUs, so big holds b and s may use a.
    assert plan(queue, workers) == [Placement("s", "a", ("3",))]


def test_job_larger_than_any_worker_blocks_nothing():
    queue = ordered(QueuedJob("huge", URGENT, 1, gpus=16), QueuedJob("s", LOW, 2, gpus=1))
    assert plan(queue, [gpu_worker("a", 8), gpu_worker("b", 8)]) == [Placement("s", "a", ("0",))]


def test_saturated_cluster_places_nothing_and_ignores_the_rest_of_the_queue():
    workers = [gpu_worker(f"w{n}", 2, busy=("0", "1")) for n in range(3)]
    queue = ordered(*(QueuedJob(f"j{n}", NORMAL, n, gpus=1) for n in range(1000)))
    assert plan(queue, workers) == []


# --- CPU-only jobs and memory ---------------------------------------------------


def test_cpu_only_job_prefers_workers_without_free_gpus():
    workers = [
        gpu_worker("gpu", 4, cpus=8),
        gpu_worker("cpu-roomy", 0, cpus=16),
        gpu_worker("cpu-tight", 0, cpus=4),
    ]
    got = plan([QueuedJob("j", NORMAL, 1, cpus=2)], workers)
    assert got == [Placement("j", "cpu-tight", ())]


def test_cpu_claims_are_never_oversubscribed():
    queue = ordered(*(QueuedJob(f"j{n}", NORMAL, n, cpus=1.5) for n in range(5)))
    got = plan(queue, [gpu_worker("w", 0, cpus=4)])
    assert [p.job_id for p in got] == ["j0", "j1"]


def test_fractional_cpus_add_up_without_float_drift():
    queue = ordered(*(QueuedJob(f"j{n}", NORMAL, n, cpus=0.1) for n in range(12)))
    got = plan(queue, [gpu_worker("w", 0, cpus=1.0)])
    assert len(got) == 10


def test_zero_cpu_job_can_use_a_worker_with_no_free_cpus():
    workers = [gpu_worker("w", 2, busy=("0",), cpus=2, free_cpus=0)]
    queue = ordered(
        QueuedJob("needs-cpu", NORMAL, 1, gpus=0, cpus=1),
        QueuedJob("gpu-only", LOW, 2, gpus=1, cpus=0),
    )
    # "needs-cpu" holds the only worker, so nothing starts this round.
    assert plan(queue, workers) == []
    assert plan(queue[1:], workers) == [Placement("gpu-only", "w", ("1",))]


def test_memory_limits_placement_when_both_sides_state_it():
    workers = [
        gpu_worker("small", 2, memory=32 * GIB, free_memory=8 * GIB),
        gpu_worker("large", 2, memory=64 * GIB, free_memory=40 * GIB),
    ]
    queue = ordered(QueuedJob("m", NORMAL, 1, gpus=1, memory=16 * GIB))
    assert plan(queue, workers) == [Placement("m", "large", ("0",))]


def test_memory_is_consumed_within_one_call():
    workers = [gpu_worker("w", 4, memory=64 * GIB)]
    queue = ordered(*(QueuedJob(f"j{n}", NORMAL, n, gpus=1, memory=24 * GIB) for n in range(3)))
    assert [p.job_id for p in plan(queue, workers)] == ["j0", "j1"]


def test_unknown_worker_memory_never_limits():
    workers = [gpu_worker("w", 1, memory=0)]
    assert plan([QueuedJob("j", NORMAL, 1, gpus=1, memory=512 * GIB)], workers)


# --- property-style: random clusters and queues ------------------------------------


def random_case(rng):
    workers = []
    for n in range(rng.randint(0, 6)):
        gpus = rng.choice([0, 1, 2, 4, 8])
        busy = tuple(str(g) for g in range(gpus) if rng.random() < 0.4)
        cpus = float(rng.choice([1, 2, 4, 8]))
        memory = rng.choice([0, 16 * GIB, 64 * GIB])
        address = f"tcp://10.0.0.{rng.randint(1, 9)}:{8000 + n}"
        workers.append(
            gpu_worker(
                address,
                gpus,
                busy=busy,
                cpus=cpus,
                free_cpus=rng.randint(0, int(cpus) * 2) / 2,
                memory=memory,
                free_memory=rng.randint(0, 4) * memory // 4,
            )
        )
    rng.shuffle(workers)
    seqs = list(range(rng.randint(0, 40)))
    rng.shuffle(seqs)
    queue = [
        QueuedJob(
            id=f"job{seq}",
            priority=rng.choice([LOW, NORMAL, NORMAL, HIGH, URGENT]),
            seq=seq,
            gpus=rng.choice([0, 0, 1, 1, 1, 2, 4, 8, 16]),
            cpus=rng.choice([0, 0.5, 1, 1, 2, 4, 16]),
            memory=rng.choice([0, 0, 4 * GIB, 16 * GIB, 128 * GIB]),
        )
        for seq in seqs
    ]
    return sorted(queue, key=queue_key), workers


@pytest.mark.parametrize("seed", range(400))
def test_random_cases_keep_every_invariant(seed):
    queue, workers = random_case(random.Random(seed))
    got = plan(queue, workers)
    check_invariants(queue, workers, got)
    assert got == reference_plan(queue, workers)


def test_plan_is_deterministic_and_leaves_inputs_alone():
    rng = random.Random(7)
    for _ in range(50):
        queue, workers = random_case(rng)
        snapshot = (list(queue), list(workers))
        first = plan(queue, workers)
        assert plan(tuple(queue), tuple(workers)) == first
        assert (queue, workers) == snapshot


# --- fit_error ---------------------------------------------------------------------


def test_fit_error_none_when_some_worker_could_hold_it():
    workers = [gpu_worker("a", 8, busy=tuple("01234567"), cpus=4, free_cpus=0)]
    assert fit_error(8, 4, 0, workers) is None


def test_fit_error_no_workers():
    assert fit_error(1, 1, 0, []) == "the cluster has no workers yet"


def test_fit_error_too_many_gpus():
    workers = [gpu_worker("a", 8), gpu_worker("b", 8)]
    assert fit_error(16, 1, 0, workers) == (
        "the job asks for 16 GPUs but the largest worker has 8 "
        "(cluster: 2 workers, 16 GPUs in all); a job must fit on one worker"
    )


def test_fit_error_gpus_on_a_cpu_only_cluster():
    assert fit_error(1, 1, 0, [gpu_worker("a", 0)]) == (
        "the job asks for 1 GPU but the cluster has no GPUs (cluster: 1 worker, 0 GPUs in all)"
    )


def test_fit_error_too_many_cpus():
    assert fit_error(0, 4, 0, [gpu_worker("a", 0, cpus=2)]) == (
        "the job asks for 4 CPUs but the largest worker has 2"
    )


def test_fit_error_too_much_memory():
    workers = [gpu_worker("a", 1, memory=16 * GIB), gpu_worker("b", 1, memory=8 * GIB)]
    assert fit_error(0, 1, 64 * GIB, workers) == (
        "the job asks for 64.0 GiB of memory but the largest worker has 16.0 GiB"
    )


def test_fit_error_memory_is_fine_if_any_worker_size_is_unknown():
    workers = [gpu_worker("a", 1, memory=16 * GIB), gpu_worker("b", 1, memory=0)]
    assert fit_error(0, 1, 64 * GIB, workers) is None


def test_fit_error_when_only_the_combination_is_missing():
    workers = [gpu_worker("a", 8, cpus=2), gpu_worker("b", 0, cpus=32)]
    assert fit_error(8, 4, 0, workers) == (
        "the job asks for 8 GPUs and 4 CPUs but no single worker has all of that "
        "(cluster: 2 workers, 8 GPUs in all); a job must fit on one worker"
    )


def test_fit_error_agrees_with_plan_on_what_can_ever_run():
    rng = random.Random(11)
    for _ in range(200):
        queue, workers = random_case(rng)
        for job in queue:
            idle = [
                WorkerView(w.address, w.gpu_ids, w.gpu_ids, w.cpus, w.cpus, w.memory, w.memory)
                for w in workers
            ]
            runs_when_idle = bool(plan([job], idle))
            assert (fit_error(job.gpus, job.cpus, job.memory, workers) is None) == runs_when_idle


@pytest.mark.parametrize("seed", range(200))
def test_every_job_that_waits_has_one_reason_and_reasons_change_nothing(seed):
    queue, workers = random_case(random.Random(seed))
    reasons: dict[str, str] = {}
    got = plan(queue, workers, reasons)
    assert got == plan(queue, workers)
    placed = {p.job_id for p in got}
    assert set(reasons) == {job.id for job in queue} - placed
    assert all(text and "\n" not in text for text in reasons.values())
    some = [job.id for job in queue[::3]]
    assert wait_reasons(queue, workers, some) == {k: reasons[k] for k in some if k in reasons}


def test_wait_reasons_name_the_held_worker_the_jobs_ahead_and_the_impossible():
    workers = [gpu_worker("tcp://a", 2, busy=("0", "1")), gpu_worker("tcp://b", 2, busy=("0",))]
    queue = ordered(
        QueuedJob("big", URGENT, 1, gpus=2),
        QueuedJob("one", NORMAL, 2, gpus=1),
        QueuedJob("cpu", NORMAL, 3, cpus=1),
        QueuedJob("huge", NORMAL, 4, gpus=8),
    )
    reasons = wait_reasons(queue, workers)
    assert reasons["big"] == (
        "needs 2 GPUs and 1 CPU, which no worker has free now; tcp://b is held for it and it "
        "starts there next"
    )
    assert reasons["one"].endswith("tcp://a is held for it and it starts there next")
    assert reasons["cpu"] == (
        "behind 2 jobs that go first; every worker is busy or held (tcp://a for one, tcp://b for big)"
    )
    assert reasons["huge"].startswith("the job asks for 8 GPUs but the largest worker has 2")


def test_a_user_at_the_gpu_quota_waits_and_others_go_past():
    workers = [gpu_worker("tcp://a", 4)]
    queue = ordered(
        QueuedJob("a1", NORMAL, 1, gpus=2, user="ann"),
        QueuedJob("a2", NORMAL, 2, gpus=1, user="ann"),
        QueuedJob("b1", NORMAL, 3, gpus=1, user="bob"),
    )
    caps, held = {"ann": 2}, {"ann": 0}
    # a1 takes Ann to her quota within the call; a2 waits, reserving nothing, and b1 starts.
    assert [p.job_id for p in plan(queue, workers, gpu_caps=caps, gpus_held=held)] == ["a1", "b1"]
    reasons = wait_reasons(queue, workers, gpu_caps=caps, gpus_held={"ann": 2})
    assert reasons["a1"] == "ann may hold 2 GPUs at once (quota) and holds 2; it needs 2 GPUs"
    assert reasons["a2"] == "ann may hold 2 GPUs at once (quota) and holds 2; it needs 1 GPU"
    assert "b1" not in reasons
    # A job needing no GPU is not held back by a GPU quota.
    cpu_only = ordered(QueuedJob("c", NORMAL, 4, gpus=0, user="ann"))
    assert plan(cpu_only, workers, gpu_caps=caps, gpus_held={"ann": 2})[0].job_id == "c"
