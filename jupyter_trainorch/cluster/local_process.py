"""The embedded local Dask cluster as a process of its own.

``python -m jupyter_trainorch.cluster.local_process STATE_FILE --workers N …`` runs a
scheduler and N worker processes on loopback and writes its address to ``STATE_FILE``.
It is started detached by the service and outlives it, so running jobs survive a
restart of the service (which then adopts them). It ends on SIGTERM, or by itself once
nobody has used it for ``--idle-timeout`` seconds: no client connected, no task
running and no attempt outcome left uncollected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..files import write_private
from ..runner.protocol import ATTEMPT_DIR_ENV, OUTCOME_FILE


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _uncollected_outcomes(attempt_dir: Path) -> bool:
    return any(attempt_dir.glob(f"*/{OUTCOME_FILE}"))


def _worker_spec(args: argparse.Namespace, attempt_dir: Path, index: int) -> dict[str, Any]:
    """Worker ``index``: its GPU slots get ids of their own, as a host's GPUs would."""
    from distributed import Nanny

    ids = [str(index * args.gpus_per_worker + g) for g in range(args.gpus_per_worker)]
    resources = {"CPU": float(args.slots_per_worker)}
    if ids:
        resources["GPU"] = float(len(ids))
    return {
        "cls": Nanny,
        "options": {
            "host": "127.0.0.1",
            "nthreads": args.slots_per_worker,
            "resources": resources,
            "env": {"CUDA_VISIBLE_DEVICES": ",".join(ids), ATTEMPT_DIR_ENV: str(attempt_dir)},
            "memory_limit": 0,
            "silence_logs": logging.WARNING,
        },
    }


def _worker_cluster(args: argparse.Namespace, attempt_dir: Path) -> Any:
    """A SpecCluster whose added workers (autoscaling) each get the next GPU ids."""
    from distributed import Scheduler, SpecCluster

    class Workers(SpecCluster):  # type: ignore[misc]
        def new_worker_spec(self) -> dict[str, Any]:
            index = 0
            while f"trainorch-{index}" in self.worker_spec:
                index += 1
            return {f"trainorch-{index}": _worker_spec(args, attempt_dir, index)}

    return Workers(
        workers={f"trainorch-{i}": _worker_spec(args, attempt_dir, i) for i in range(args.workers)},
        worker=_worker_spec(args, attempt_dir, 0),
        scheduler={
            "cls": Scheduler,
            "options": {"host": "127.0.0.1", "port": 0, "dashboard_address": ":0"},
        },
        asynchronous=True,
        name="trainorch-local",
    )


async def _start(args: argparse.Namespace, attempt_dir: Path) -> Any:
    if args.cuda:
        from dask_cuda import LocalCUDACluster

        os.environ[ATTEMPT_DIR_ENV] = str(attempt_dir)
        # dask-cuda pins one GPU per worker but sets no resources itself.
        cluster = await LocalCUDACluster(
            asynchronous=True,
            resources={"GPU": 1, "CPU": args.slots_per_worker},
            threads_per_worker=args.slots_per_worker,
            host="127.0.0.1",
            dashboard_address=":0",
        )
    else:
        cluster = await _worker_cluster(args, attempt_dir)
    if args.autoscale_maximum:
        await scale_on_queue(cluster, args.autoscale_minimum, args.autoscale_maximum)
    return cluster


async def scale_on_queue(cluster: Any, minimum: int, maximum: int) -> None:
    """Grow and shrink ``cluster`` (a SpecCluster in this process) on the orchestrator's
    demand (``QueueDemand``), never on Dask's."""
    from .demand import QueueDemand

    await cluster.scheduler.register_scheduler_plugin(QueueDemand(), idempotent=True)
    # The grace period is the orchestrator's: a worker it offers is closed at once.
    cluster.adapt(minimum=minimum, maximum=maximum, interval="500ms", wait_count=1)


def add_scaling_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--autoscale-minimum", type=int, default=0)
    parser.add_argument("--autoscale-maximum", type=int, default=0, help="0: no autoscaling")


def _idle(scheduler: Any) -> bool:
    clients = [c for c in scheduler.clients if c != "fire-and-forget"]
    busy = any(ws.processing for ws in scheduler.workers.values())
    return not clients and not busy


async def serve(args: argparse.Namespace) -> None:
    import dask

    from .managed import CLUSTER_DASK_CONFIG

    # Job tasks are retried by the orchestrator's policy, never re-run by Dask. The workers
    # (spawned with this process's Dask config) run without Dask's profiler: see its reason.
    dask.config.set(CLUSTER_DASK_CONFIG)
    state_file = Path(args.state_file)
    attempt_dir = Path(args.attempt_dir or state_file.parent / "attempts")
    attempt_dir.mkdir(parents=True, exist_ok=True)
    cluster = await _start(args, attempt_dir)
    state = {
        "address": cluster.scheduler_address,
        "pid": os.getpid(),
        "workers": args.workers,
        "gpus_per_worker": args.gpus_per_worker,
        "slots_per_worker": args.slots_per_worker,
        "cuda": args.cuda,
        "attempt_dir": str(attempt_dir),
        "started": time.time(),
    }
    write_private(state_file, json.dumps(state))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    idle_since: float | None = None
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=min(5.0, args.idle_timeout or 5.0))
        except asyncio.TimeoutError:
            pass
        if not args.idle_timeout:
            continue
        if _idle(cluster.scheduler) and not _uncollected_outcomes(attempt_dir):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= args.idle_timeout:
                logging.getLogger(__name__).warning("unused for %ss; stopping", args.idle_timeout)
                break
        else:
            idle_since = None
    current = read_state(state_file)
    if current is not None and current.get("pid") == os.getpid():
        state_file.unlink(missing_ok=True)
    await cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_trainorch.cluster.local_process")
    parser.add_argument("state_file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpus-per-worker", type=int, default=0)
    parser.add_argument("--slots-per-worker", type=int, default=4)
    parser.add_argument("--cuda", action="store_true", help="one dask-cuda worker per GPU")
    parser.add_argument("--attempt-dir", default="")
    parser.add_argument("--idle-timeout", type=float, default=600.0, help="0: never")
    add_scaling_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
