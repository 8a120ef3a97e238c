"""``TRAINORCH_CLUSTER=slurm``: dask-jobqueue's SLURMCluster, run for real but for Slurm itself.

The job script is dask-jobqueue's own (built without Slurm). End to end, dask-jobqueue submits
it to an ``sbatch`` that runs job scripts on this machine, and the orchestrator runs GPU jobs on
the worker it starts, across a restart of the service and the loss of a Slurm job.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import log_text, start_host, stop_process, wait_until
from gpu_job import run_gpu_job

from jupyter_trainorch.cluster.options import parse_cluster_options
from jupyter_trainorch.cluster.slurm import slurm_cluster_kwargs
from jupyter_trainorch.processes import group_alive

SLURM_OPTIONS = {
    "workers": 2, "gpus_per_worker": 2, "cores": 8, "memory": "64 GiB", "queue": "gpu",
    "account": "ml-team", "walltime": "04:00:00", "environment": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    "prologue": ["source /opt/envs/train/bin/activate"], "job_directives": ["--constraint=a100"],
}  # fmt: skip


def test_the_slurm_job_script_asks_for_the_gpus_and_advertises_them():
    from dask_jobqueue import SLURMCluster

    options = parse_cluster_options(json.dumps(SLURM_OPTIONS), "slurm")
    with SLURMCluster(**slurm_cluster_kwargs(options)) as cluster:
        script = cluster.job_script()
    lines = script.splitlines()
    for directive in ("-p gpu", "-A ml-team", "-t 04:00:00", "--gres=gpu:2", "--mem=64G",
                      "--cpus-per-task=8", "--constraint=a100"):  # fmt: skip
        assert f"#SBATCH {directive}" in lines
    assert "export MLFLOW_TRACKING_URI=http://mlflow:5000" in lines
    assert "source /opt/envs/train/bin/activate" in lines
    worker = lines[-1].split()
    assert worker[1:3] == ["-m", "distributed.cli.dask_worker"]
    assert worker[worker.index("--resources") + 1] == "GPU=2"
    assert worker[worker.index("--nthreads") + 1] == "8"


def test_a_cpu_slurm_worker_asks_for_no_gpu():
    kwargs = slurm_cluster_kwargs(parse_cluster_options('{"cores": 2}', "slurm"))
    assert kwargs["worker_extra_args"] == [] and kwargs["job_extra_directives"] == []


# Slurm's sbatch and scancel on this machine: a job is the job script run by bash in a
# session of its own, and its id is that session's process group. Both note the ids.
FAKE_SBATCH = r"""#!PYTHON
import pathlib, shutil, subprocess, sys
jobs = pathlib.Path("JOBS")
script = jobs / ("job-%d.sh" % len(list(jobs.glob("*.sh"))))
shutil.copy(sys.argv[-1], script)  # dask-jobqueue removes its file once submitted
log = open(script.with_suffix(".log"), "w")
proc = subprocess.Popen(["bash", str(script)], stdout=log, stderr=log, start_new_session=True)
with open(jobs / "submitted", "a") as ids:
    ids.write("%d\n" % proc.pid)
print("Submitted batch job %d" % proc.pid)
"""
FAKE_SCANCEL = r"""#!PYTHON
import os, signal, sys
with open("JOBS/cancelled", "a") as ids:
    ids.write("".join(job + "\n" for job in sys.argv[1:]))
for job in sys.argv[1:]:
    try:
        os.killpg(int(job), signal.SIGTERM)
    except ProcessLookupError:
        pass
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` and ``scancel`` on PATH; job ids are process groups on this machine."""
    bin_dir, jobs = tmp_path / "slurm-bin", tmp_path / "slurm-jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        tool = bin_dir / name
        tool.write_text(text.replace("PYTHON", sys.executable).replace("JOBS", str(jobs)))
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return jobs


@pytest.mark.timeout(150)
def test_a_gpu_job_runs_on_a_worker_that_slurm_started(tmp_path, fake_slurm, monkeypatch):
    options = {"workers": 1, "gpus_per_worker": 1, "cores": 2, "memory": "2 GiB",
               "interface": "lo", "queue": "gpu", "walltime": "00:30:00"}  # fmt: skip
    # A lost worker leaves the cluster after 1 s (not 15 s), so its replacement comes soon.
    monkeypatch.setenv("DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT", "1s")
    data = tmp_path / "data"
    settings = {"cluster": "slurm", "cluster_options": json.dumps(options), "mlflow": "off"}
    host = start_host(data, **settings)
    try:
        job = run_gpu_job(host)
        assert "gpus 0" in log_text(host, job)
        script = (fake_slurm / "job-0.sh").read_text()
        assert "#SBATCH --gres=gpu:1" in script and "--resources GPU=1" in script
        cluster_pid = host.orchestrator.backend.pid
        host.stop(detach=True)  # the service restarts: the cluster and its Slurm job stay
        host = start_host(data, **settings)
        assert host.orchestrator.backend.pid == cluster_pid
        assert "gpus 0" in log_text(host, run_gpu_job(host))
        first = int((fake_slurm / "submitted").read_text())
        os.killpg(first, signal.SIGKILL)  # its walltime is up: Slurm ends the job
        wait_until(lambda: len(_ids(fake_slurm / "submitted")) == 2, 40, "a job replacing it")
        assert "gpus 0" in log_text(host, run_gpu_job(host))
    finally:
        host.stop()  # stops the cluster's process, which cancels its Slurm jobs
        state = data / "slurm-cluster.json"
        if state.exists():
            stop_process(json.loads(state.read_text())["pid"])
    replacement = _ids(fake_slurm / "submitted")[-1]
    wait_until(lambda: (fake_slurm / "cancelled").exists(), what="scancel")
    assert replacement in _ids(fake_slurm / "cancelled")
    wait_until(lambda: not group_alive(replacement), what="the Slurm job to end")


def _ids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []


def test_a_host_that_cannot_submit_slurm_jobs_is_told_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(RuntimeError, match="^TRAINORCH_CLUSTER=slurm needs sbatch and scancel"):
        start_host(tmp_path / "data", cluster="slurm", mlflow="off")


@pytest.mark.timeout(300)
def test_slurm_jobs_are_submitted_for_the_queue_and_cancelled_when_idle(tmp_path, fake_slurm):
    from conftest import submit, wait_final

    from jupyter_trainorch.spec import Resources

    options = {"gpus_per_worker": 1, "cores": 1, "memory": "1 GiB", "interface": "lo"}
    data = tmp_path / "data"
    host = start_host(
        data, cluster="slurm", cluster_options=json.dumps(options), mlflow="off",
        slots_per_worker=1, autoscale_minimum=0, autoscale_maximum=2, autoscale_grace=2,
    )  # fmt: skip
    try:
        backend = host.orchestrator.backend
        assert not backend.workers and not _ids(fake_slurm / "submitted")
        jobs = [submit(host, name=f"s{i}", source="import time\ntime.sleep(20)",
                       resources=Resources(gpus=1)) for i in range(2)]  # fmt: skip

        def both_running() -> bool:
            return all(host.store.get_job(j).state == "running" for j in jobs)

        wait_until(both_running, 180, "two Slurm jobs' workers running the two jobs")
        assert len(_ids(fake_slurm / "submitted")) == 2
        for job_id in jobs:
            assert wait_final(host, job_id, 60).state == "succeeded"
        wait_until(lambda: not backend.workers, 60, "the idle workers closed")
        submitted = _ids(fake_slurm / "submitted")
        wait_until(lambda: all(not group_alive(job) for job in submitted), 30, "Slurm jobs ended")
    finally:
        host.stop()
        state = data / "slurm-cluster.json"
        if state.exists():
            stop_process(json.loads(state.read_text())["pid"])
