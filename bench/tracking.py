"""Tracking under load: MLflow tracking on against off, measured in the same run.

Run ``python bench/tracking.py [--jobs 1000] [--first-line-jobs 40]`` (also
``python bench/scale.py --tracking``).

1. Throughput: ``--jobs`` trivial one-GPU jobs are queued on a local cluster of two
   workers with ``--gpus-per-worker`` slots each while dispatch is held back, then the
   queue is opened and drained; completions/s with tracking on (MLflow on a SQLite file,
   the product's default) against off, in the order off, on, on, off, off, on
   (``--rounds 3``), and each on drain against the off drain beside it. With tracking on,
   the script then waits until tracking has caught up and checks every job in MLflow
   (``tracking.audit``): a closed run per job, a closed run per attempt named and nested
   under it. A job missing any of that is counted as untracked.
   Targets: completions ratio on/off over all drains >= 0.90, 0 untracked jobs.
2. First line: submit until the job's first line runs, one job at a time on two idle
   one-worker services (tracking off, on), taking turns; how many tracked jobs started
   before their run existed (none was reserved; the process did not wait for it).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import percentile  # noqa: E402
from scale import SUBMIT_CHUNK, Recorder, ScheduleMeter  # noqa: E402

TARGET_RATIO = 0.90
CATCH_UP_LIMIT = 900.0
FIRST_LINE_SOURCE = """\
_first_line_at, _env = __import__("time").time(), __import__("os").environ
with open(stamp_file, "w") as _handle:
    _handle.write(f"{_first_line_at!r} {int('TRAINORCH_TRACKING' in _env)}")
"""


def host_for(data_dir: Path, tracking: bool, workers: int, slots: int) -> Any:
    from jupyter_trainorch.orchestrator.host import OrchestratorHost
    from jupyter_trainorch.settings import TrainOrch

    # A store and cluster of its own, whatever TRAINORCH_* variables the shell has.
    config = TrainOrch(
        data_dir=str(data_dir), db="", workers=workers, gpus_per_worker=slots,
        slots_per_worker=slots, cluster="local", mlflow="" if tracking else "off",
    ).to_config()  # fmt: skip
    return OrchestratorHost(config).start()


ROLES = (
    ("tracking", "jupyter_trainorch.tracking.worker"),
    ("jobs", "jupyter_trainorch.runner.zygote"),
    ("dask workers", "multiprocessing.spawn"),
    ("dask scheduler", "jupyter_trainorch.cluster.local_process"),
)


def cpu_by_role() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process ("service": the orchestrator runs in it) and of
    every process it started, by pid, with their role; a process's reaped children count
    as its own (a zygote's jobs)."""
    import psutil

    me = psutil.Process()
    found: dict[int, tuple[str, float]] = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            with process.oneshot():
                times, command = process.cpu_times(), " ".join(process.cmdline())
        except psutil.Error:
            continue  # ended meanwhile
        role = "service" if process.pid == me.pid else "other"
        role = next((name for name, mark in ROLES if mark in command), role)
        used = times.user + times.system + times.children_user + times.children_system
        found[process.pid] = (role, used)
    # The service's threads that feed the tracking process, apart (negative keys: not pids).
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    for thread in me.threads():
        if names.get(thread.id, "").startswith(("trainorch-tracking", "trainorch-mlflow")):
            found[-thread.id] = ("service: tracking threads", thread.user_time + thread.system_time)
            role, used = found[me.pid]
            found[me.pid] = (role, used - thread.user_time - thread.system_time)
    return found


def cpu_used(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by role since ``before`` (a process started since counts from zero)."""
    used: dict[str, float] = {}
    for pid, (role, now) in cpu_by_role().items():
        used[role] = used.get(role, 0.0) + now - before.get(pid, (role, 0.0))[1]
    return used


def drain(jobs: int, slots: int, tracking: bool, duration: float) -> dict[str, Any]:
    """Queue ``jobs``, open the queue, and time the drain (and tracking's catching up)."""
    from jupyter_trainorch.spec import JobSpec, Resources

    data_dir = Path(tempfile.mkdtemp(prefix="trainorch-bench-tracking-"))
    host = host_for(data_dir, tracking, 2, slots)
    try:
        # A service that has run a job before (MLflow imported, its store open).
        warm_up = host.call(lambda o: o.submit(JobSpec(name="warm-up", source="pass")))
        while host.store.get_job(warm_up.id).ended is None or host.orchestrator.tracking.backlog():
            time.sleep(0.05)
        orch, recorder = host.orchestrator, Recorder()
        meter = ScheduleMeter(orch.scheduler.schedule, lambda: len(orch.attempts.running))
        host.call_sync(lambda o: setattr(o.scheduler, "schedule", meter))

        def record(change: dict[str, Any]) -> None:
            # Not the warm-up's end (it may reach the feed only now), nor tracking's news of
            # a job (its run, final metrics), which repeats the job's state.
            if change["job_id"] != warm_up.id and "mlflow" not in change:
                recorder(change)

        orch.feed.subscribe(record)

        async def submit_chunk(o: Any, first: int, count: int) -> list[str]:
            specs = [JobSpec(name=f"load-{i}", source="pass", resources=Resources(gpus=1, cpus=1))
                     for i in range(first, first + count)]  # fmt: skip
            return [(await o.submit(spec)).id for spec in specs]

        ids: list[str] = []
        for first in range(0, jobs, SUBMIT_CHUNK):
            count = min(SUBMIT_CHUNK, jobs - first)
            ids += host.call(lambda o, f=first, c=count: submit_chunk(o, f, c), timeout=300)
        cpu_before = cpu_by_role()
        opened = time.time()
        meter.held = False
        host.call_sync(lambda o: o._wake.set())
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and len(recorder.ends) < jobs:
            time.sleep(0.1)
        with recorder.lock:
            ends = list(recorder.ends)
        last_end = max(ends, default=time.time())
        result: dict[str, Any] = {
            "finished": len(ends), "window": last_end - opened,
            "rate": len(ends) / max(last_end - opened, 1e-9), "failed": recorder.failed,
            "cpu": cpu_used(cpu_before),
        }  # fmt: skip
        if tracking:
            limit = time.monotonic() + CATCH_UP_LIMIT
            while time.monotonic() < limit and (orch.tracking.backlog() or orch.attempts.running):
                time.sleep(0.2)
            result["caught_up"] = time.time() - last_end
            records = host.store.get_jobs(ids)
            finished = [records[i][0].to_dict() for i in ids if records[i][0].ended is not None]
            from jupyter_trainorch.tracking.audit import untracked

            result["untracked"] = untracked(orch.tracking.uri, finished)
            result["unfinished"] = jobs - len(finished)
        logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)
        return result
    finally:
        host.stop()
        logging.getLogger("distributed").setLevel(logging.WARNING)
        shutil.rmtree(data_dir, ignore_errors=True)


def throughput_section(jobs: int, slots: int, rounds: int, duration: float) -> bool:
    order = ([False, True, True, False] * rounds)[: 2 * rounds]
    names = "/".join("on" if tracking else "off" for tracking in order)
    print(f"{jobs} jobs queued, then drained, on 2 workers x {slots} GPU slots (drains {names}):")
    done: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for tracking in order:
        got = drain(jobs, slots, tracking, duration)
        done[tracking].append(got)
        line = (f"  tracking {'on ' if tracking else 'off'}: {got['finished']} finished in "
                f"{got['window']:.1f} s, {got['rate']:.1f} completions/s")  # fmt: skip
        if tracking:
            line += (f"; tracking caught up {got['caught_up']:.1f} s after the last job; "
                     f"untracked {len(got['untracked'])} of {got['finished']}")  # fmt: skip
        line += "\n    CPU s in the drain: " + ", ".join(
            f"{role} {seconds:.1f}" for role, seconds in sorted(got["cpu"].items())
        )
        if tracking:
            for job_id, why in list(got["untracked"].items())[:5]:
                line += f"\n    {job_id}: {why}"
        print(line, flush=True)

    def rate(runs: list[dict[str, Any]]) -> float:
        return sum(r["finished"] for r in runs) / sum(r["window"] for r in runs)

    ratio = rate(done[True]) / rate(done[False])
    # The machine drifts between drains by about as much as tracking costs: each on drain
    # against the off drain beside it shows how far one pair alone can mislead.
    pairs = [on["rate"] / off["rate"] for off, on in zip(done[False], done[True], strict=False)]
    print("  each on drain against the off drain beside it: "
          + ", ".join(f"{pair:.2f}" for pair in pairs))  # fmt: skip
    lost = sum(len(r["untracked"]) + r["unfinished"] for r in done[True])
    print(f"tracking on/off completions ratio: {ratio:.2f} "
          f"(target >= {TARGET_RATIO:.2f}: {'PASS' if ratio >= TARGET_RATIO else 'MISS'})")  # fmt: skip
    print(f"untracked jobs with {jobs} queued: {lost} (target 0: {'PASS' if not lost else 'MISS'})")
    return ratio >= TARGET_RATIO and not lost


def first_line(host: Any, stamps: Path, index: int) -> tuple[float, bool]:
    """Submit to first line (seconds), and whether the process started without its run id
    (none was reserved: the id came after, and only ``import mlflow`` would wait for it)."""
    from jupyter_trainorch.spec import JobSpec, Resources

    stamp = stamps / f"job-{index}"
    spec = JobSpec(name=f"first-line-{index}", source=FIRST_LINE_SOURCE,
                   params={"stamp_file": str(stamp)}, resources=Resources(gpus=1, cpus=1))  # fmt: skip
    submitted = time.time()
    job_id = host.call(lambda o: o.submit(spec)).id
    deadline = time.monotonic() + 120
    while (job := host.store.get_job(job_id)).ended is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not finish")
        time.sleep(0.01)
    if job.state != "succeeded":
        raise RuntimeError(f"job {job_id} {job.state}: {job.error}")
    at, waited = stamp.read_text().split()
    return float(at) - submitted, waited == "1"


def first_line_section(jobs: int, warmup: int = 3) -> None:
    roots = [Path(tempfile.mkdtemp(prefix="trainorch-bench-first-line-")) for _ in range(2)]
    hosts: list[Any] = []
    try:
        hosts = [host_for(roots[0], False, 1, 1), host_for(roots[1], True, 1, 1)]
        samples: dict[bool, list[float]] = {False: [], True: []}
        waited = 0
        for index in range(warmup + jobs):
            for tracking, host in zip((False, True), hosts, strict=True):
                took, did_wait = first_line(host, roots[int(tracking)], index)
                if index >= warmup:
                    samples[tracking].append(1000 * took)
                    waited += did_wait
        for tracking in (False, True):
            values = samples[tracking]
            print(f"submit->first line, tracking {'on ' if tracking else 'off'}: "
                  f"p50 {percentile(values, 50):.1f} ms p95 {percentile(values, 95):.1f} ms "
                  f"({len(values)} jobs)")  # fmt: skip
        ratio = percentile(samples[True], 50) / percentile(samples[False], 50)
        print(f"tracking on/off first line ratio (p50): {ratio:.2f}; tracked jobs that "
              f"started before their run existed: {waited} of {jobs}")  # fmt: skip
    finally:
        for host in hosts:
            host.stop()
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs queued before the drain")
    parser.add_argument(
        "--gpus-per-worker", type=int, default=16, help="slots of each of 2 workers"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="drains per mode (off, on, on, off, off, on, ...)"
    )
    parser.add_argument("--duration", type=float, default=600.0, help="longest drain, seconds")
    parser.add_argument("--first-line-jobs", type=int, default=40, help="0 skips that part")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    ok = True
    if not args.skip_throughput:
        ok = throughput_section(args.jobs, args.gpus_per_worker, args.rounds, args.duration)
    if args.first_line_jobs:
        first_line_section(args.first_line_jobs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
