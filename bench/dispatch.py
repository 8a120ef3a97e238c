"""Dispatch latency: submit until the first line of job code runs, trainorch vs raw Dask.

Run ``python bench/dispatch.py [--jobs 50]``. One local cluster (one worker process with
one GPU slot) serves four paths, in a shuffled order each round so that other load on the
machine (and one job's clean-up) falls on all alike:

- trainorch, tracking off: ``Orchestrator.submit`` of a python job whose first statement
  records ``time.time()``; the job runs through the queue, the scheduling loop, the store,
  ``run_attempt`` and ``runner.child`` (forked by the worker's zygote once it is ready);
- trainorch, tracking on: the same through a second orchestrator on the same cluster with
  MLflow tracking (a SQLite store), the product's default;
- raw Dask + bare python child: ``Client.submit``, pinned to the same worker with the same
  ``GPU`` resource, of a task that spawns ``python -c "import time; print(repr(time.time()))"``
  and reads its first line: what a user would write by hand;
- raw Dask + module-importing child: the same task, its child importing our child module
  first (the baseline this script used before: it hides our child's start-up cost).

Jobs run one at a time, each waiting for the previous to finish, so every sample is a
dispatch to an idle cluster. The ratios are of p50s measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import percentile  # noqa: E402 - after the path

from jupyter_trainorch.contract.states import TERMINAL_STATES  # noqa: E402

TARGET_RATIO = 1.2
TARGET_RATIO_TRACKING = 1.5
TARGET_P50_MS = 150.0

BARE_CHILD = "import time; print(repr(time.time()))"
# What ``python -m jupyter_trainorch.runner.child`` paid before the cell's first line, less
# the cell: the interpreter, the package and the child module.
MODULE_CHILD = "import time, json, jupyter_trainorch.runner.child; print(repr(time.time()))"

# The job records when its first line ran, and its parent: the worker's zygote, or the
# worker itself when the job started as a fresh interpreter.
JOB_SOURCE = """\
_first_line_at = __import__("time").time()
with open(stamp_file, "w") as _handle:
    _handle.write(f"{_first_line_at!r} {__import__('os').getppid()}")
"""

OFF, ON = "trainorch, tracking off", "trainorch, tracking on"
BARE, MODULE = "raw Dask + bare python -c child", "raw Dask + module-importing child"


def epoch(iso_time: str) -> float:
    """Seconds since the epoch of a change's ISO 8601 ``time``."""
    from datetime import datetime

    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def spawn_and_read_first_line(argv: list[str]) -> dict[str, float]:
    """Dask task of the baselines: spawn a child in its own session, return its first line."""
    started = time.time()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    line = proc.stdout.readline()
    proc.wait()
    proc.stdout.close()
    return {"task_started": started, "first_line": float(line)}


def wait_terminal(feed: Any, job_id: str, after: int, timeout: float = 120.0) -> dict[str, dict]:
    """The job's state changes seen on the feed, up to a terminal one, by state."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        changes = feed.wait(after, timeout=deadline - time.monotonic())
        for change in changes:
            after = max(after, change["seq"])
            if change["job_id"] == job_id and change["kind"] == "job":
                seen.setdefault(change["state"], change)
                if change["state"] in TERMINAL_STATES:
                    return seen
    raise TimeoutError(f"job {job_id} did not finish within {timeout:g}s")


def run_trainorch(host: Any, stamps: Path, index: int, worker_pid: int) -> dict[str, float]:
    from jupyter_trainorch.spec import JobSpec, Resources

    stamp = stamps / f"job-{id(host)}-{index}"
    spec = JobSpec(
        name=f"dispatch-{index}",
        source=JOB_SOURCE,
        params={"stamp_file": str(stamp)},
        resources=Resources(gpus=1, cpus=1),
    )
    feed = host.orchestrator.feed
    after = feed.last_seq
    t0 = time.time()
    record = host.call(lambda o: o.submit(spec))
    submitted = time.time()
    seen = wait_terminal(feed, record.id, after)
    if "succeeded" not in seen:
        logs = "\n".join(line.text for line in host.store.read_logs(record.id))
        raise RuntimeError(f"benchmark job {record.id} did not succeed:\n{logs}")
    first, parent = stamp.read_text().split()
    # The supervisor records when it started the job's process (the attempt's process_started).
    spawned = host.store.get_job(record.id).attempts[0].process_started
    return {
        "total": float(first) - t0,
        "submit_call": submitted - t0,
        "to_starting": epoch(seen["starting"]["time"]) - t0,
        "starting_to_spawn": spawned - epoch(seen["starting"]["time"]),
        "spawn_to_first": float(first) - spawned,
        "forked": float(int(parent) != worker_pid),
    }


def run_raw(client: Any, worker: str, gpus: int, child: str) -> dict[str, float]:
    t0 = time.time()
    future = client.submit(
        spawn_and_read_first_line,
        [sys.executable, "-c", child],
        workers=[worker],
        allow_other_workers=False,
        resources={"GPU": gpus} if gpus else None,
        pure=False,
    )
    got = future.result(timeout=120)
    return {
        "total": got["first_line"] - t0,
        "to_task": got["task_started"] - t0,
        "spawn_to_first": got["first_line"] - got["task_started"],
    }


def summary(samples: list[dict[str, float]], name: str) -> tuple[float, float]:
    values = [s[name] * 1000.0 for s in samples]
    return percentile(values, 50), percentile(values, 95)


def report(samples: dict[str, list[dict[str, float]]]) -> None:
    for name, values in samples.items():
        p50, p95 = summary(values, "total")
        print(f"{name}: submit->first line p50 {p50:.1f} ms p95 {p95:.1f} ms ({len(values)} jobs)")
    bare = summary(samples[BARE], "total")[0]
    for name, target in ((OFF, TARGET_RATIO), (ON, TARGET_RATIO_TRACKING)):
        if name in samples:
            ratio = summary(samples[name], "total")[0] / bare
            suffix = "" if name == OFF else " (tracking on)"
            verdict = "PASS" if ratio <= target else "MISS"
            print(
                f"ratio vs bare python child{suffix}: {ratio:.2f}   (target <= {target}: {verdict})"
            )
    off, module = summary(samples[OFF], "total")[0], summary(samples[MODULE], "total")[0]
    print(f"ratio vs module-importing child (tracking off): {off / module:.2f}")
    p50_ok = off <= TARGET_P50_MS
    print(f"target trainorch p50 <= {TARGET_P50_MS:.0f} ms: {'PASS' if p50_ok else 'MISS'}")
    for name in (OFF, ON):
        if name not in samples:
            continue
        forked = sum(int(s["forked"]) for s in samples[name])
        count = len(samples[name])
        print(f"{name} breakdown (p50 / p95 ms), {forked} of {count} forked by the zygote:")
        for label, part in (
            ("submit() call", "submit_call"),
            ("submit -> starting (queue, plan, store, Client.submit)", "to_starting"),
            ("starting -> process started (Dask, worker, attempt dir, fork)", "starting_to_spawn"),
            ("process started -> first line (child bootstrap)", "spawn_to_first"),
        ):
            p50, p95 = summary(samples[name], part)
            print(f"  {label}: {p50:.1f} / {p95:.1f}")
    for name in (BARE, MODULE):
        print(f"{name} breakdown (p50 / p95 ms):")
        for label, part in (("submit -> task running on worker", "to_task"),
                            ("spawn -> first line", "spawn_to_first")):  # fmt: skip
            p50, p95 = summary(samples[name], part)
            print(f"  {label}: {p50:.1f} / {p95:.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50, help="measured jobs per path")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured jobs per path first")
    parser.add_argument("--gpus-per-worker", type=int, default=1, choices=(0, 1))
    parser.add_argument("--no-tracking", action="store_true", help="leave out tracking on")
    args = parser.parse_args(argv)

    from distributed import Client

    from jupyter_trainorch.orchestrator.host import OrchestratorHost
    from jupyter_trainorch.settings import TrainOrch

    logging.getLogger("distributed").setLevel(logging.WARNING)
    gpus = args.gpus_per_worker
    root = Path(tempfile.mkdtemp(prefix="trainorch-bench-dispatch-"))
    stamps = root / "stamps"
    stamps.mkdir()
    # Stores and a cluster of their own, whatever TRAINORCH_* variables the shell has.
    untracked = OrchestratorHost(TrainOrch(
        data_dir=str(root / "off"), db="", workers=1, gpus_per_worker=gpus, slots_per_worker=4,
        cluster="local", mlflow="off",
    ).to_config())  # fmt: skip
    hosts = [untracked]
    client = None
    try:
        untracked.start()
        address = untracked.orchestrator.backend.client.scheduler.address
        worker = next(iter(untracked.orchestrator.backend.workers))
        client = Client(address, timeout=60, name="bench-raw-dask")
        worker_pid = client.run(os.getpid, workers=[worker])[worker]
        paths: dict[str, Callable[[int], dict[str, float]]] = {
            OFF: lambda i: run_trainorch(untracked, stamps, i, worker_pid),
            BARE: lambda _: run_raw(client, worker, gpus, BARE_CHILD),
            MODULE: lambda _: run_raw(client, worker, gpus, MODULE_CHILD),
        }
        if not args.no_tracking:
            tracked = OrchestratorHost(TrainOrch(
                data_dir=str(root / "on"), db="", cluster=address, mlflow="",
            ).to_config())  # fmt: skip
            hosts.append(tracked)
            tracked.start()
            paths[ON] = lambda i: run_trainorch(tracked, stamps, i, worker_pid)
        print(f"one worker, paths interleaved: {', '.join(paths)}")
        samples: dict[str, list[dict[str, float]]] = {
            name: [] for name in (OFF, ON, BARE, MODULE) if name in paths
        }
        order = list(paths)
        shuffle = random.Random(0).shuffle
        for index in range(args.warmup + args.jobs):
            shuffle(order)  # no path always follows another one's clean-up
            for name in order:
                sample = paths[name](index)
                if index >= args.warmup:
                    samples[name].append(sample)
        report(samples)
    finally:
        if client is not None:
            client.close()
        for host in reversed(hosts):
            host.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
