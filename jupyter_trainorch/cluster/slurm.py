"""``TRAINORCH_CLUSTER=slurm``: Dask workers as Slurm jobs (dask-jobqueue's SLURMCluster).

``slurm_cluster_kwargs(options)`` turns our settings into SLURMCluster's arguments: one
worker per Slurm job, ``--gres=gpu:n`` in its directives and ``--resources GPU=n`` on its
command line (our placement depends on the resource), queue, account, walltime and memory.

SLURMCluster runs the scheduler in the process that made it. So that jobs survive a restart
of the orchestrator, as on the embedded local cluster, that process is one of its own,
started detached (``python -m jupyter_trainorch.cluster.slurm STATE_FILE OPTIONS_FILE``) and
found again through its state file; it ends on SIGTERM, cancelling its Slurm jobs.
dask_jobqueue is imported only in that process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..environ import without_service_settings
from ..files import write_private
from .backends import CLUSTER_START_TIMEOUT, LocalBackend
from .local_process import add_scaling_arguments, read_state, scale_on_queue
from .managed import CLUSTER_DASK_CONFIG, NO_WORKER_PROFILER, backend_options
from .options import ClusterOptions, parse_cluster_options

if TYPE_CHECKING:
    from ..orchestrator.config import OrchestratorConfig

log = logging.getLogger(__name__)

STATE_FILE = "slurm-cluster.json"
OPTIONS_FILE = "slurm-options.json"
DEFAULT_MEMORY = 4 * 2**30
REPLACE_LOST_WORKERS_EVERY = 10.0  # seconds


def slurm_cluster_kwargs(options: ClusterOptions) -> dict[str, Any]:
    """SLURMCluster's keyword arguments for ``options`` (pure: nothing is started)."""
    gpus = options.gpus_per_worker
    directives = [f"--gres=gpu:{gpus}"] if gpus else []
    environment = {**NO_WORKER_PROFILER, **options.environment}
    exports = [f"export {name}={shlex.quote(value)}" for name, value in environment.items()]
    kwargs: dict[str, Any] = {
        "cores": options.cores or 1,  # also the worker's threads: jobs it may run at once
        "processes": 1,  # one worker per Slurm job, holding all of the job's GPUs
        "memory": str(options.memory or DEFAULT_MEMORY),
        "job_extra_directives": directives + list(options.job_directives),
        "worker_extra_args": ["--resources", f"GPU={gpus}"] if gpus else [],
        "job_script_prologue": exports + list(options.prologue),
        "job_name": "trainorch-worker",
        "name": "trainorch-slurm",
        "scheduler_options": {"dashboard_address": ":0"},
    }
    optional = {
        "queue": options.queue,
        "account": options.account,
        "walltime": options.walltime,
        "interface": options.interface,
        "python": options.python,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    return kwargs


class SlurmBackend(LocalBackend):
    """The SLURMCluster in its detached process; ``workers`` Slurm jobs, one worker each."""

    kind = "slurm"

    def __init__(self, state_dir: Path, options_text: str) -> None:
        super().__init__(state_dir)
        self.state_file = state_dir / STATE_FILE
        self.options_text = options_text

    @classmethod
    def from_config(cls, config: OrchestratorConfig) -> SlurmBackend:
        backend_options(config, "slurm")  # a wrong option stops the start here, not later
        return cls(config.data_dir, config.cluster_options)

    def _launch(self) -> str:
        # As LocalBackend._launch, with this module as the cluster's process.
        if shutil.which("sbatch") is None:
            raise RuntimeError(
                "TRAINORCH_CLUSTER=slurm needs sbatch and scancel on the service's PATH: run the "
                "service on a host that may submit Slurm jobs"
            )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.unlink(missing_ok=True)
        options_file = self.state_file.with_name(OPTIONS_FILE)
        write_private(options_file, self.options_text)  # not on a command line: ps shows those
        log_path = self.state_file.with_name("slurm-cluster.log")
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self.state_file), str(options_file),
                 *self.scaling_arguments()],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env=without_service_settings(), start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            state = read_state(self.state_file)
            if state and state.get("pid") == proc.pid:
                self.pid = proc.pid
                return str(state["address"])
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"the Slurm Dask cluster did not start; its log ends with:\n{tail}")


async def serve(state_file: Path, options: ClusterOptions, autoscale: tuple[int, int]) -> None:
    """Run the SLURMCluster until SIGTERM/SIGINT; then cancel its Slurm jobs. With
    ``autoscale`` (minimum, maximum > 0) it submits and cancels jobs on the queue's demand."""
    import dask
    from dask_jobqueue import SLURMCluster

    # Job tasks are retried by the orchestrator's policy, never re-run by Dask.
    dask.config.set(CLUSTER_DASK_CONFIG)
    cluster = await SLURMCluster(asynchronous=True, **slurm_cluster_kwargs(options))
    jobs = 1 if options.workers is None else options.workers
    if autoscale[1]:
        await scale_on_queue(cluster, *autoscale)
    else:
        cluster.scale(jobs=jobs)
    state = {"address": cluster.scheduler_address, "pid": os.getpid(), "started": time.time()}
    write_private(state_file, json.dumps(state))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=REPLACE_LOST_WORKERS_EVERY)
        except asyncio.TimeoutError:
            # A worker whose Slurm job ended (its walltime, a failed node) leaves the cluster
            # after distributed.deploy.lost-worker-timeout; scale then submits a job for it
            # (autoscaling replaces it by itself).
            if not autoscale[1]:
                cluster.scale(jobs=jobs)
    current = read_state(state_file)
    if current is not None and current.get("pid") == os.getpid():
        state_file.unlink(missing_ok=True)
    try:
        await cluster.close()  # scancel of every job it submitted
    except Exception:  # noqa: BLE001 - e.g. a job Slurm never started; exit all the same
        log.exception("the Slurm cluster did not close cleanly")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_trainorch.cluster.slurm")
    parser.add_argument("state_file")
    parser.add_argument("options_file", help="cluster_options JSON (TRAINORCH_CLUSTER_OPTIONS)")
    add_scaling_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    options = parse_cluster_options(Path(args.options_file).read_text(), "slurm")
    autoscale = (args.autoscale_minimum, args.autoscale_maximum)
    asyncio.run(serve(Path(args.state_file), options, autoscale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
