"""Gang placement: a multi-node job gets distinct workers, all at once, or holds them."""

from __future__ import annotations

from jupyter_trainorch.policy import (
    Placement,
    QueuedJob,
    RunningJob,
    WorkerView,
    decide,
    fit_error,
    plan,
    wait_reasons,
)
from jupyter_trainorch.policy.preemption import PreemptionRules


def worker(address: str, gpus: int = 1, busy: tuple[str, ...] = (), cpus: float = 4.0,
           free_cpus: float | None = None) -> WorkerView:  # fmt: skip
    ids = tuple(str(n) for n in range(gpus))
    return WorkerView(
        address=address,
        gpu_ids=ids,
        free_gpu_ids=tuple(i for i in ids if i not in busy),
        cpus=cpus,
        free_cpus=cpus if free_cpus is None else free_cpus,
    )


def job(job_id: str, seq: int, gpus: int = 1, nodes: int = 1, priority: int = 100,
        cpus: float = 1.0) -> QueuedJob:  # fmt: skip
    return QueuedJob(job_id, priority, seq, gpus=gpus, cpus=cpus, nodes=nodes)


def test_a_gang_gets_distinct_workers_best_fit_per_node_in_one_call():
    workers = [worker("a", 2), worker("b", 1), worker("c", 2, busy=("0",)), worker("d", 1)]
    placements = plan([job("g", 1, nodes=3)], workers)
    # Best fit: the single-GPU workers first (b, c, d), keeping a's two GPUs whole.
    assert placements == [Placement("g", "b", ("0",), ranks=(("c", ("1",)), ("d", ("0",))))]
    assert [w for w, _ in placements[0].slots()] == ["b", "c", "d"]


def test_a_single_node_placement_has_no_ranks():
    placement = plan([job("j", 1)], [worker("a")])[0]
    assert placement == Placement("j", "a", ("0",)) and placement.ranks == ()
    assert placement.slots() == (("a", ("0",)),)


def test_a_gang_never_takes_part_of_what_it_needs():
    workers = [worker("a"), worker("b", busy=("0",))]
    reasons: dict[str, str] = {}
    assert plan([job("g", 1, nodes=2)], workers, reasons) == []
    assert reasons["g"] == (
        "needs 2 nodes of 1 GPU and 1 CPU each, on distinct workers, which are not all free "
        "now; a, b are held for it and it starts there next"
    )


def test_held_workers_are_not_stolen_by_smaller_jobs_behind_the_gang():
    workers = [worker("a"), worker("b", busy=("0",)), worker("c"), worker("d", busy=("0",))]
    queue = [job("g", 1, nodes=3), job("cpu", 2, gpus=0), job("small", 3)]
    # Only a and c are free: the gang holds them and b (the next most free), not d.
    assert plan(queue, workers) == [Placement("cpu", "d", ())]
    reasons = wait_reasons(queue, workers)
    assert "a, b, c are held for it" in reasons["g"]
    # The CPU job goes to d, past the gang; the GPU job can only wait for d.
    assert reasons["small"].endswith("d is held for it and it starts there next")


def test_a_gang_starts_once_its_workers_free_up():
    queue = [job("g", 1, nodes=2), job("small", 2)]
    before = [worker("a"), worker("b", busy=("0",))]
    assert plan(queue, before) == []
    after = [worker("a"), worker("b")]
    assert plan(queue, after) == [Placement("g", "a", ("0",), ranks=(("b", ("0",)),))]


def test_proven_backfill_may_use_a_worker_held_for_a_gang():
    now = 100.0
    workers = [worker("a", busy=("0",)), worker("b")]
    running = [RunningJob("r", "a", 100, gpus=1, started=0.0, ends=now + 60)]
    queue = [job("g", 1, nodes=2), job("short", 2), job("long", 3)]
    runtimes = {"short": 30.0, "long": 600.0}
    placements = plan(queue, workers, now=now, running=running, runtimes=runtimes)
    # b is held for the gang, which can start at the earliest at 160 (when r ends on a).
    assert placements == [Placement("short", "b", ("0",), backfill=True)]


def test_a_gang_behind_a_held_worker_waits_without_holding_the_rest():
    workers = [worker("a", 2, busy=("0",)), worker("b"), worker("c", busy=("0",))]
    queue = [job("pair", 1, gpus=2), job("g", 2, nodes=3), job("small", 3)]
    reasons: dict[str, str] = {}
    # a is held for pair; b and c are too few for the gang, which holds neither.
    assert plan(queue, workers, reasons) == [Placement("small", "b", ("0",))]
    assert reasons["g"] == (
        "needs 3 nodes of 1 GPU and 1 CPU each, on distinct workers; too few of the workers "
        "that could hold a node are free or unheld (held for jobs ahead of it: pair)"
    )


def test_gang_fit_error_counts_workers_that_could_hold_a_node():
    workers = [worker("a", 2), worker("b", 1), worker("c", 0)]
    assert fit_error(1, 1.0, 0, workers, nodes=2) is None
    assert fit_error(2, 1.0, 0, workers, nodes=2) == (
        "the job asks for 2 nodes of 2 GPUs and 1 CPU each, on distinct workers but only 1 "
        "of the cluster's 3 workers could hold one node (--nodes at most 1)"
    )
    assert fit_error(1, 1.0, 0, workers, nodes=3) is not None
    assert "largest worker has 2" in fit_error(3, 1.0, 0, workers, nodes=2)


def test_a_gang_past_the_users_quota_waits_on_its_total():
    workers = [worker("a"), worker("b")]
    queue = [QueuedJob("g", 100, 1, gpus=1, nodes=2, user="u")]
    reasons: dict[str, str] = {}
    assert plan(queue, workers, reasons, gpu_caps={"u": 1}, gpus_held={}) == []
    assert "it needs 2 GPUs" in reasons["g"]


def test_an_urgent_gang_preempts_nothing_and_the_decision_counts_every_rank():
    workers = [worker("a"), worker("b"), worker("c", busy=("0",))]
    running = [RunningJob("low", "c", 0, gpus=1, started=0.0)]
    queue = [job("g", 1, nodes=2, priority=300), job("urgent", 2, priority=300)]
    decision = decide(queue, workers, now=10_000.0, running=running, rules=PreemptionRules())
    assert [p.job_id for p in decision.placements] == ["g"]
    # The urgent single job preempts on c: a and b are taken by the gang's ranks.
    assert [(p.job_id, p.worker) for p in decision.preemptions] == [("urgent", "c")]
    gang_queue = [job("g2", 1, nodes=3, priority=300)]
    later = decide(gang_queue, workers, now=10_000.0, running=running, rules=PreemptionRules())
    assert later.placements == [] and later.preemptions == []
