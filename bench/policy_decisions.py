"""How long one placement decision takes with a 10,000-job queue.

Run ``python bench/policy_decisions.py``. It times :func:`plan` on a saturated
and on an idle cluster, and a naive planner that sorts the queue and tries
every worker for every job, in the same process so the numbers compare.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jupyter_trainorch.policy import (  # noqa: E402
    Placement,
    QueuedJob,
    WorkerView,
    plan,
    queue_key,
)

GIB = 2**30
PRIORITIES = (0, 100, 100, 100, 200, 300)
GPU_MIX = (1, 1, 1, 2, 4, 8)
CPUS_PER_GPU = 4
MEMORY_PER_GPU = 32 * GIB
SLACK = 1e-9


def make_queue(size: int, seed: int = 0, gpu_mix: Sequence[int] = GPU_MIX) -> list[QueuedJob]:
    """Jobs in submission order, mixed priorities and GPU counts."""
    rng = random.Random(seed)
    jobs = []
    for seq in range(size):
        gpus = rng.choice(gpu_mix)
        jobs.append(
            QueuedJob(
                id=f"job-{seq}",
                priority=rng.choice(PRIORITIES),
                seq=seq,
                gpus=gpus,
                cpus=float(gpus * CPUS_PER_GPU),
                memory=gpus * MEMORY_PER_GPU,
                user=f"user{rng.randrange(20)}",
            )
        )
    return jobs


def make_workers(count: int, gpus: int, busy: bool) -> list[WorkerView]:
    """Identical GPU nodes, either every GPU taken or all free."""
    ids = tuple(str(n) for n in range(gpus))
    cpus = float(gpus * CPUS_PER_GPU * 2)
    memory = gpus * MEMORY_PER_GPU * 2
    return [
        WorkerView(
            address=f"tcp://10.0.{n // 256}.{n % 256}:8786",
            gpu_ids=ids,
            free_gpu_ids=() if busy else ids,
            cpus=cpus,
            # Running jobs leave CPUs and memory over, so only GPUs bind.
            free_cpus=cpus / 2 if busy else cpus,
            memory=memory,
            free_memory=memory // 2 if busy else memory,
        )
        for n in range(count)
    ]


def naive_plan(queue: Sequence[QueuedJob], workers: Sequence[WorkerView]) -> list[Placement]:
    """Same rules as ``plan``, written the obvious way: sort, then scan all workers."""
    state = [
        [w.address, list(w.free_gpu_ids), w.free_cpus, w.free_memory, len(w.gpu_ids), w]
        for w in workers
    ]
    reserved: set[int] = set()
    placements = []
    for job in sorted(queue, key=queue_key):
        best = None
        for index, (address, free_ids, free_cpus, free_memory, _, worker) in enumerate(state):
            if index in reserved or len(free_ids) < job.gpus or job.cpus > free_cpus + SLACK:
                continue
            if job.memory and worker.memory and job.memory > free_memory:
                continue
            key = (len(free_ids), free_cpus, address, index)
            if best is None or key < best[0]:
                best = (key, index)
        if best is not None:
            slot = state[best[1]]
            taken = tuple(slot[1][: job.gpus])
            del slot[1][: job.gpus]
            slot[2] = 0.0 if slot[2] - job.cpus <= SLACK else slot[2] - job.cpus
            if job.memory and slot[5].memory:
                slot[3] -= job.memory
            placements.append(Placement(job.id, slot[0], taken))
            continue
        hold = None
        for index, (address, free_ids, free_cpus, _, cap_gpus, worker) in enumerate(state):
            if index in reserved or cap_gpus < job.gpus or job.cpus > worker.cpus + SLACK:
                continue
            if job.memory and worker.memory and job.memory > worker.memory:
                continue
            key = (-len(free_ids), -free_cpus, address, index)
            if hold is None or key < hold[0]:
                hold = (key, index)
        if hold is not None:
            reserved.add(hold[1])
    return placements


def _timings(call: Callable[[], object], repeat: int) -> list[float]:
    call()  # warm caches and the allocator before timing
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return sorted(times)


def _summary(times: list[float]) -> tuple[float, float]:
    p50 = times[len(times) // 2]
    p95 = times[min(len(times) - 1, -(-95 * len(times) // 100) - 1)]
    return p50, p95


def measure(
    queue_size: int = 10000,
    workers: int = 64,
    gpus_per_worker: int = 8,
    repeat: int = 100,
    naive_repeat: int = 30,
) -> dict:
    """Time ``plan`` and the naive planner; all durations in milliseconds."""
    submitted = make_queue(queue_size)
    queue = sorted(submitted, key=queue_key)
    saturated = make_workers(workers, gpus_per_worker, busy=True)
    idle = make_workers(workers, gpus_per_worker, busy=False)
    singles = sorted(make_queue(queue_size, seed=1, gpu_mix=(1,)), key=queue_key)

    placed = plan(queue, idle)
    same = placed == naive_plan(submitted, idle)
    result: dict = {
        "queue_size": queue_size,
        "workers": workers,
        "gpus_per_worker": gpus_per_worker,
        "placed_saturated": len(plan(queue, saturated)),
        "placed_idle": len(placed),
        "placed_idle_single_gpu": len(plan(singles, idle)),
        "same_placements_as_naive": same,
    }
    cases = {
        "saturated": _timings(lambda: plan(queue, saturated), repeat),
        "idle": _timings(lambda: plan(queue, idle), repeat),
        "idle_single_gpu": _timings(lambda: plan(singles, idle), repeat),
        "naive_idle": _timings(lambda: naive_plan(submitted, idle), naive_repeat),
    }
    for name, times in cases.items():
        result[f"{name}_p50_ms"], result[f"{name}_p95_ms"] = _summary(times)
    result["naive_over_plan_p50"] = result["naive_idle_p50_ms"] / result["idle_p50_ms"]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue-size", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--gpus-per-worker", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--naive-repeat", type=int, default=30)
    args = parser.parse_args(argv)
    r = measure(args.queue_size, args.workers, args.gpus_per_worker, args.repeat, args.naive_repeat)
    n = r["queue_size"]
    cluster = f"{r['workers']}x{r['gpus_per_worker']} GPUs"
    print(
        f"plan saturated {n} jobs: p50 {r['saturated_p50_ms']:.2f} ms "
        f"p95 {r['saturated_p95_ms']:.2f} ms ({cluster}, placed {r['placed_saturated']})"
    )
    print(
        f"plan idle {n} jobs: p50 {r['idle_p50_ms']:.2f} ms p95 {r['idle_p95_ms']:.2f} ms "
        f"({cluster}, placed {r['placed_idle']})"
    )
    print(
        f"plan idle {n} 1-GPU jobs: p50 {r['idle_single_gpu_p50_ms']:.2f} ms "
        f"p95 {r['idle_single_gpu_p95_ms']:.2f} ms (placed {r['placed_idle_single_gpu']})"
    )
    print(
        f"naive idle {n} jobs: p50 {r['naive_idle_p50_ms']:.2f} ms "
        f"p95 {r['naive_idle_p95_ms']:.2f} ms (same placements: "
        f"{'yes' if r['same_placements_as_naive'] else 'NO'})"
    )
    print(f"naive / plan (idle p50): {r['naive_over_plan_p50']:.0f}x")
    return 0 if r["same_placements_as_naive"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
