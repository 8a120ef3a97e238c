"""Dispatch latency: submit until the first line of job code runs, trainorch vs raw Dask.

Run ``python bench/dispatch.py [--jobs 50]``. One local cluster (one worker
process with one GPU slot) serves both paths:

(a) trainorch: ``Orchestrator.submit`` of a python job whose first statement
    records ``time.time()``; the job runs through the queue, the scheduling loop,
    the store, ``run_attempt`` and ``runner.child``.
(b) raw Dask: ``Client.submit`` on the same scheduler, pinned to the same worker
    with the same ``GPU`` resource, of a function that spawns a child which does
    the same imports as ``runner.child`` and prints ``time.time()``.

Jobs run one at a time, each waiting for the previous to finish, so every sample
is a dispatch to an idle cluster. The two paths alternate so that load from other
processes on the machine falls on both alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import percentile  # noqa: E402 - after the path

from jupyter_trainorch.contract.states import TERMINAL_STATES  # noqa: E402

TARGET_RATIO = 1.2
TARGET_P50_MS = 150.0


# Mirrors what ``python -m jupyter_trainorch.runner.child`` pays before the cell's
# first line: interpreter start, the package and the child module (json, subprocess,
# threading, traceback, pathlib). The benchmark's job captures no variables, so the
# child does not import cloudpickle either. A bare ``python -c`` would leave that
# bootstrap out of the baseline and make the orchestrator look slower than it is.
BASELINE_CHILD = (
    "import time, json, jupyter_trainorch.runner.child; print(repr(time.time()), flush=True)"
)

JOB_SOURCE = """\
_first_line_at = __import__("time").time()
with open(stamp_file, "w") as _handle:
    _handle.write(repr(_first_line_at))
"""


def epoch(iso_time: str) -> float:
    """Seconds since the epoch of a change's ISO 8601 ``time``."""
    from datetime import datetime

    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def spawn_and_read_first_line(argv: list[str]) -> dict[str, float]:
    """Dask task of the baseline: spawn like the supervisor does, return the first line."""
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


def run_trainorch(host: Any, stamps: Path, index: int) -> dict[str, float]:
    from jupyter_trainorch.spec import JobSpec, Resources

    stamp = stamps / f"job-{index}"
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
    first = float(stamp.read_text())
    # The supervisor records when it spawned the child (the attempt's process_started).
    spawned = host.store.get_job(record.id).attempts[0].process_started
    return {
        "total": first - t0,
        "submit_call": submitted - t0,
        "to_starting": epoch(seen["starting"]["time"]) - t0,
        "starting_to_spawn": spawned - epoch(seen["starting"]["time"]),
        "spawn_to_first": first - spawned,
    }


def run_raw(client: Any, worker: str, gpus: int) -> dict[str, float]:
    argv = [sys.executable, "-c", BASELINE_CHILD]
    t0 = time.time()
    future = client.submit(
        spawn_and_read_first_line,
        argv,
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50, help="measured jobs per path")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured jobs per path first")
    parser.add_argument("--gpus-per-worker", type=int, default=1, choices=(0, 1))
    parser.add_argument(
        "--tracking",
        action="store_true",
        help="with MLflow tracking (a SQLite store in the temp folder); off by default so the "
        "figure is the orchestration overhead alone",
    )
    args = parser.parse_args(argv)

    from distributed import Client

    from jupyter_trainorch.orchestrator.host import OrchestratorHost
    from jupyter_trainorch.settings import TrainOrch

    logging.getLogger("distributed").setLevel(logging.WARNING)
    gpus = args.gpus_per_worker
    data_dir = Path(tempfile.mkdtemp(prefix="trainorch-bench-dispatch-"))
    stamps = data_dir / "stamps"
    stamps.mkdir()
    # A store and cluster of its own, whatever TRAINORCH_* variables the shell has.
    config = TrainOrch(
        data_dir=str(data_dir), db="", workers=1, gpus_per_worker=gpus, slots_per_worker=4,
        cluster="local", mlflow="" if args.tracking else "off",
    ).to_config()  # fmt: skip
    print(f"MLflow tracking: {'on (SQLite)' if args.tracking else 'off'}")
    host = OrchestratorHost(config)
    client = None
    try:
        host.start()
        address = host.orchestrator.backend.client.scheduler.address
        worker = next(iter(host.orchestrator.backend.workers))
        client = Client(address, timeout=60, name="bench-raw-dask")

        trainorch: list[dict[str, float]] = []
        raw: list[dict[str, float]] = []
        for index in range(args.warmup + args.jobs):
            a = run_trainorch(host, stamps, index)
            b = run_raw(client, worker, gpus)
            if index >= args.warmup:
                trainorch.append(a)
                raw.append(b)

        a50, a95 = summary(trainorch, "total")
        b50, b95 = summary(raw, "total")
        n = args.jobs
        print(f"trainorch submit->first line: p50 {a50:.1f} ms p95 {a95:.1f} ms ({n} jobs)")
        print(f"raw dask submit+spawn: p50 {b50:.1f} ms p95 {b95:.1f} ms ({n} jobs)")
        print(f"ratio a/b p50 {a50 / b50:.2f} p95 {a95 / b95:.2f}")
        print("trainorch breakdown (p50 / p95 ms):")
        for label, name in (
            ("submit() call", "submit_call"),
            ("submit -> starting (queue, plan, store, Client.submit)", "to_starting"),
            ("starting -> supervisor spawns (Dask, worker, attempt dir)", "starting_to_spawn"),
            ("spawn -> first line (child bootstrap)", "spawn_to_first"),
        ):
            p50, p95 = summary(trainorch, name)
            print(f"  {label}: {p50:.1f} / {p95:.1f}")
        print("raw dask breakdown (p50 / p95 ms):")
        for label, name in (
            ("submit -> task running on worker", "to_task"),
            ("spawn -> first line (child bootstrap)", "spawn_to_first"),
        ):
            p50, p95 = summary(raw, name)
            print(f"  {label}: {p50:.1f} / {p95:.1f}")
        ratio_ok = a50 / b50 <= TARGET_RATIO and a95 / b95 <= TARGET_RATIO
        p50_ok = a50 <= TARGET_P50_MS
        print(f"target ratio a/b <= {TARGET_RATIO}: {'PASS' if ratio_ok else 'MISS'}")
        print(f"target trainorch p50 <= {TARGET_P50_MS:.0f} ms: {'PASS' if p50_ok else 'MISS'}")
    finally:
        if client is not None:
            client.close()
        host.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
