"""Scale: placement time with a 10,000-job queue, then dispatch rate on a real cluster.

Run ``python bench/scale.py [--jobs 10000] [--gpus-per-worker 64] [--duration 45]``;
``--tracking`` compares MLflow tracking on and off instead (``bench/tracking.py``).

1. Policy only: :func:`policy_decisions.measure` with 10,000 queued jobs on 64
   workers of 8 GPUs (target: one decision in at most 5 ms).
2. A local cluster of two worker processes, each advertising many GPU slots.
   ``--jobs`` one-GPU jobs are submitted while dispatch is held back, so they all
   sit in the queue; then the queue is opened and, for ``--duration`` seconds or
   until it drains, every attempt start (``starting``) and every finished job on
   the change feed is counted (target: 200 dispatches/s).
3. The baseline a user would write by hand, same shape and window: the jobs submitted at
   once as Dask tasks (one GPU slot each) that spawn a bare ``python -c pass`` child
   (target: trainorch's completions/s at least raw Dask's).

Every attempt spawns a real child process, so once the free slots are filled a
slot frees only when a child exits: the sustained rate is bounded by how fast the
machine starts processes, not by the orchestrator. The script therefore also
reports the first round (all free slots at once) and the orchestrator's own time
per dispatch, which bounds the rate it could sustain with faster children.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import policy_decisions  # noqa: E402

TARGET_DECISION_MS = 5.0
TARGET_DISPATCH_PER_S = 200.0
TERMINAL = {"succeeded", "failed", "cancelled"}
SUBMIT_CHUNK = 200
SETTLE_SECONDS = 30.0


def epoch(iso_time: str) -> float:
    """Seconds since the epoch of a change's ISO 8601 ``time``."""
    from datetime import datetime

    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def policy_section() -> bool:
    r = policy_decisions.measure(10000, 64, 8)
    n, cluster = r["queue_size"], f"{r['workers']}x{r['gpus_per_worker']} GPUs"
    print(f"policy: one decision with {n} queued jobs on {cluster}:")
    for label, name, placed in (
        ("saturated cluster", "saturated", r["placed_saturated"]),
        ("idle cluster, mixed GPU counts", "idle", r["placed_idle"]),
        ("idle cluster, 1-GPU jobs", "idle_single_gpu", r["placed_idle_single_gpu"]),
    ):
        print(
            f"  {label}: p50 {r[name + '_p50_ms']:.2f} ms p95 {r[name + '_p95_ms']:.2f} ms "
            f"(placed {placed})"
        )
    print(
        f"  naive planner, idle: p50 {r['naive_idle_p50_ms']:.2f} ms "
        f"({r['naive_over_plan_p50']:.0f}x slower, same placements: "
        f"{'yes' if r['same_placements_as_naive'] else 'NO'})"
    )
    cases = ("saturated", "idle", "idle_single_gpu")
    worst = max(r[f"{name}_p50_ms"] for name in cases)
    worst_p95 = max(r[f"{name}_p95_ms"] for name in cases)
    # Judged on the median: the tail moves with whatever else the machine runs.
    ok = worst <= TARGET_DECISION_MS
    print(
        f"  target decision <= {TARGET_DECISION_MS:g} ms (worst p50 {worst:.2f} ms, "
        f"worst p95 {worst_p95:.2f} ms): {'PASS' if ok else 'MISS'}"
    )
    return ok


class Recorder:
    """Collects job state changes from the feed (called on the orchestrator loop)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.failed = 0

    def __call__(self, change: dict[str, Any]) -> None:
        if change["kind"] != "job":
            return
        state = change.get("state")
        if state == "starting":
            with self.lock:
                self.starts.append(epoch(change["time"]))
        elif state in TERMINAL:
            with self.lock:
                self.ends.append(epoch(change["time"]))
                self.failed += state != "succeeded"


class ScheduleMeter:
    """Wraps the orchestrator's scheduling round: holds it back, and times it.

    Holding it back lets the whole backlog be submitted before anything starts;
    the time inside the round (plan, store writes, ``Client.submit``) is the
    orchestrator's own cost per dispatch, separate from process start-up.
    """

    def __init__(self, original: Callable[[], None], running: Callable[[], int]) -> None:
        self.original = original
        self.running = running
        self.held = True
        # (wall start, wall seconds, thread CPU seconds, dispatched)
        self.rounds: list[tuple[float, float, float, int]] = []

    def __call__(self) -> None:
        if self.held:
            return
        before = self.running()
        wall = time.time()
        start, cpu = time.perf_counter(), time.thread_time()
        self.original()
        took, cpu = time.perf_counter() - start, time.thread_time() - cpu
        self.rounds.append((wall, took, cpu, self.running() - before))


def cluster_section(jobs: int, gpus_per_worker: int, duration: float) -> float:
    from jupyter_trainorch.orchestrator.host import OrchestratorHost
    from jupyter_trainorch.settings import TrainOrch
    from jupyter_trainorch.spec import JobSpec, Resources

    workers = 2
    data_dir = Path(tempfile.mkdtemp(prefix="trainorch-bench-scale-"))
    # A store and cluster of its own, whatever TRAINORCH_* variables the shell has.
    config = TrainOrch(
        data_dir=str(data_dir),
        db="",
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        slots_per_worker=gpus_per_worker,  # CPU slots must not be what limits
        cluster="local",
        # Measures the scheduler; 10,000 MLflow runs on SQLite would measure MLflow instead.
        mlflow="off",
    ).to_config()
    host = OrchestratorHost(config)
    recorder = Recorder()
    try:
        started = time.perf_counter()
        host.start()
        print(
            f"cluster: {workers} workers x {gpus_per_worker} GPU slots, "
            f"started in {time.perf_counter() - started:.1f} s"
        )
        orch = host.orchestrator
        meter = ScheduleMeter(orch.scheduler.schedule, lambda: len(orch.attempts.running))
        host.call_sync(lambda o: setattr(o.scheduler, "schedule", meter))
        orch.feed.subscribe(recorder)

        async def submit_chunk(o: Any, first: int, count: int) -> None:
            for i in range(first, first + count):
                spec = JobSpec(
                    name=f"scale-{i}", source="pass", resources=Resources(gpus=1, cpus=1)
                )
                await o.submit(spec)

        started = time.perf_counter()
        for first in range(0, jobs, SUBMIT_CHUNK):
            count = min(SUBMIT_CHUNK, jobs - first)
            host.call(
                lambda o, first=first, count=count: submit_chunk(o, first, count), timeout=300
            )
        took = time.perf_counter() - started
        print(
            f"submit {jobs} jobs: {took:.1f} s, {jobs / took:.0f} jobs/s ({1000 * took / jobs:.2f} ms each)"
        )

        loop_cpu = host.call_sync(lambda o: time.thread_time())
        opened = time.time()

        def open_queue(o: Any) -> None:
            meter.held = False
            o._wake.set()

        deadline = time.monotonic() + duration
        host.call_sync(open_queue)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            with recorder.lock:
                if len(recorder.ends) >= jobs:
                    break
        closed = time.time()
        # The loop thread also runs the in-process Dask scheduler and client.
        loop_cpu = host.call_sync(lambda o: time.thread_time()) - loop_cpu
        with recorder.lock:
            starts = [t for t in recorder.starts if t <= closed]
            ends = [t for t in recorder.ends if t <= closed]
            failed = recorder.failed
        rounds = [r for r in meter.rounds if r[3] > 0 and r[0] <= closed]
        # Closing workers under running attempts fills the output with Dask's
        # complaints about cancelled tasks; let the started ones finish first.
        meter.held = True
        settle = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settle and host.call_sync(lambda o: len(o.attempts.running)):
            time.sleep(0.2)
        logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)
        host.stop()
    finally:
        if host.running:
            host.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    window = closed - opened
    slots = workers * gpus_per_worker
    drained = len(ends) >= jobs
    print(
        f"drain window: {window:.1f} s ({'queue drained' if drained else 'stopped at --duration'})"
    )
    print(f"  attempts started: {len(starts)}, jobs finished: {len(ends)} ({failed} not succeeded)")
    if not rounds:
        print("  no attempt was dispatched")
        return 0.0
    first_at, first_wall, first_cpu, first_n = rounds[0]
    first_rate = first_n / first_wall
    print(
        f"  first round: {first_n} attempts into {slots} free slots in {1000 * first_wall:.0f} ms "
        f"({1000 * first_cpu:.0f} ms CPU) -> {first_rate:.0f} dispatches/s"
    )
    first_done = first_at + first_wall
    later = [t for t in starts if t > first_done]
    if later and closed > first_done:
        print(
            f"  after the first round: {len(later) / (closed - first_done):.1f} dispatches/s "
            "(bounded by completions: a slot frees only when a child exits)"
        )
    print(
        f"  whole window: {len(starts) / window:.1f} dispatches/s, {len(ends) / window:.1f} completions/s"
    )
    dispatched = sum(r[3] for r in rounds)
    wall = sum(r[1] for r in rounds)
    cpu = sum(r[2] for r in rounds)
    ceiling = dispatched / cpu
    print(
        f"  scheduling rounds: {len(rounds)}, {1000 * wall / dispatched:.2f} ms wall and "
        f"{1000 * cpu / dispatched:.2f} ms CPU per dispatch -> ceiling {ceiling:.0f} dispatches/s"
    )
    later_rounds = rounds[1:]
    if later_rounds:
        sizes = sorted(r[3] for r in later_rounds)
        times = sorted(1000 * r[2] for r in later_rounds)
        per_later = 1000 * sum(r[2] for r in later_rounds) / sum(sizes)
        print(
            f"  later rounds: median {sizes[len(sizes) // 2]} dispatches, "
            f"CPU p50 {times[len(times) // 2]:.1f} ms p95 {p95(times):.1f} ms, "
            f"{per_later:.2f} ms CPU per dispatch"
        )
    if ends:
        print(
            f"  orchestrator loop thread: {1000 * loop_cpu / len(ends):.1f} ms CPU per finished job "
            f"(dispatch, events, completion, Dask scheduler) -> at most {len(ends) / loop_cpu:.0f} jobs/s"
        )
    ok = first_rate >= TARGET_DISPATCH_PER_S and ceiling >= TARGET_DISPATCH_PER_S
    print(
        f"  target >= {TARGET_DISPATCH_PER_S:g} dispatches/s (first round and ceiling): "
        f"{'PASS' if ok else 'MISS'}"
    )
    return len(ends) / window


def spawn_bare_child() -> int:
    """The raw baseline's task: what a user writes by hand to run a job's process."""
    import subprocess

    return subprocess.run([sys.executable, "-c", "pass"], check=False).returncode


def raw_dask_section(jobs: int, gpus_per_worker: int, duration: float) -> float:
    """The same shape by hand: ``jobs`` tasks submitted at once to a local cluster of two
    worker processes with as many threads and GPU slots, each task spawning a bare
    ``python -c pass`` child; completions/s over the same window."""
    from distributed import Client, LocalCluster, as_completed

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=gpus_per_worker, processes=True,
        resources={"GPU": gpus_per_worker}, dashboard_address=None,
        silence_logs=logging.CRITICAL,  # the workers' complaints about tasks left queued
    )  # fmt: skip
    client = Client(cluster)
    try:
        client.submit(spawn_bare_child, pure=False).result()  # workers up and warm
        opened = time.time()
        futures = [
            client.submit(spawn_bare_child, resources={"GPU": 1}, pure=False, key=f"raw-{i}")
            for i in range(jobs)
        ]
        done = 0
        try:
            for _ in as_completed(futures, timeout=duration):
                done += 1
        except TimeoutError:
            pass
        window = time.time() - opened
        rate = done / window
        print(
            f"raw Dask, same shape: {done} of {jobs} finished in {window:.1f} s, "
            f"{rate:.1f} completions/s",
            flush=True,
        )
    finally:
        # The cluster first, with the tasks still queued: a client closing first waits on
        # them and times out after a minute.
        cluster.close(timeout=60)
        client.close()
    return rate


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, -(-95 * len(ordered) // 100) - 1)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, help="jobs queued before dispatch opens (10000)")
    parser.add_argument("--gpus-per-worker", type=int, help="GPU slots of each of 2 workers (64)")
    parser.add_argument(
        "--duration", type=float, default=45.0, help="longest drain window, seconds"
    )
    parser.add_argument("--skip-policy", action="store_true", help="only the cluster part")
    parser.add_argument("--tracking", action="store_true", help="MLflow on against off instead "
                        "(bench/tracking.py: 1000 jobs on 2 x 16 slots unless given)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.tracking:
        import tracking

        given = [("--jobs", args.jobs), ("--gpus-per-worker", args.gpus_per_worker)]
        return tracking.main([*(f"{k}={v}" for k, v in given if v), "--first-line-jobs=0"])
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if not args.skip_policy:
        policy_section()
    jobs, slots = args.jobs or 10000, args.gpus_per_worker or 64
    ours = cluster_section(jobs, slots, args.duration)
    raw = raw_dask_section(jobs, slots, args.duration)
    print(
        f"sustained completions/s with {jobs} queued, trainorch / raw Dask: {ours / raw:.2f} "
        f"(target >= 1: {'PASS' if ours >= raw else 'MISS'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
