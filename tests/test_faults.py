"""Faults with real processes: a worker dies, the orchestrator dies (kill -9) mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import (
    dask_executable,
    free_port,
    log_text,
    pid_alive,
    start_host,
    submit,
    wait_final,
    wait_until,
)

from jupyter_trainorch.spec import Resources

FLAKY_FIRST_ATTEMPT = """
import os, pathlib, time
marker = pathlib.Path(marker_path)
print("pid", os.getpid(), flush=True)
if not marker.exists():
    marker.write_text("first")
    time.sleep(120)
print("second attempt done")
"""



def test_a_lost_worker_is_a_retried_infrastructure_failure(tmp_path):
    host = start_host(tmp_path / "data", workers=2, gpus_per_worker=1)
    try:
        job_id = submit(host, name="survivor", source=FLAKY_FIRST_ATTEMPT,
                        params={"marker_path": str(tmp_path / "marker")}, resources=Resources(gpus=1))  # fmt: skip
        child = wait_until(lambda: next((int(t.split()[1]) for t in log_text(host, job_id) if t.startswith("pid")), None),
                           what="first attempt pid")  # fmt: skip
        worker = host.store.get_job(job_id).attempts[0].worker
        pids = host.call(lambda o: o.backend.client.run(os.getpid, workers=[worker]))
        os.kill(pids[worker], signal.SIGKILL)
        job = wait_final(host, job_id, timeout=90)
        assert job.state == "succeeded"
        first, second = job.attempts
        assert first.state == "failed" and first.infrastructure
        assert second.state == "succeeded"
        assert job.max_retries == 0  # infrastructure failures do not use the job's own retries
        wait_until(lambda: not pid_alive(child), timeout=10, what="the orphaned child to exit")
    finally:
        host.stop()


@pytest.fixture
def external_cluster(tmp_path):
    """``dask scheduler`` + ``dask worker --resources GPU=2`` as separate processes."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    logs = open(tmp_path / "cluster.log", "w")  # noqa: SIM115
    scheduler = subprocess.Popen(
        [*dask_executable("scheduler"), "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=logs, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*dask_executable("worker"), address, "--resources", "GPU=2", "--nthreads", "4",
         "--no-dashboard", "--host", "127.0.0.1", "--name", "gpu-box"],
        stdout=logs, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        yield address
    finally:
        for proc in (worker, scheduler):
            proc.terminate()
        for proc in (worker, scheduler):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()


ORCHESTRATOR_A = """
import sys, time
from pathlib import Path
from jupyter_trainorch.orchestrator import OrchestratorConfig, OrchestratorHost
from jupyter_trainorch.spec import JobSpec, Resources

def main():
    data, address, gate = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    host = OrchestratorHost(OrchestratorConfig(data_dir=data, cluster=address)).start()
    source = "import os, time\\nprint('pid', os.getpid(), flush=True)\\nwhile not os.path.exists(gate):\\n    time.sleep(0.05)\\n"
    ids = [host.call(lambda o, i=i: o.submit(JobSpec(name=f"long{i}", source=source, params={"gate": gate},
                                                    resources=Resources(gpus=1)))).id for i in range(2)]
    ids += [host.call(lambda o, i=i: o.submit(JobSpec(name=f"queued{i}", source="print('done')",
                                                     resources=Resources(gpus=1)))).id for i in range(3)]
    while not all(len([l for l in host.store.read_logs(i)]) for i in ids[:2]):
        time.sleep(0.05)
    print("READY", " ".join(ids), flush=True)
    time.sleep(600)

if __name__ == "__main__":
    main()
"""


def test_killed_orchestrator_loses_no_job(tmp_path, external_cluster):
    data = tmp_path / "data"
    gate = tmp_path / "gate"
    script = tmp_path / "orchestrator_a.py"
    script.write_text(textwrap.dedent(ORCHESTRATOR_A))
    first = subprocess.Popen(
        [sys.executable, str(script), str(data), external_cluster, str(gate)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 90
        while not line.startswith("READY") and time.monotonic() < deadline:
            line = first.stdout.readline()
            assert line or first.poll() is None, "orchestrator A exited early"
        ids = line.split()[1:]
        assert len(ids) == 5
    finally:
        first.kill()
        first.wait()
    host = start_host(data, cluster=external_cluster)
    try:
        old_children = [int(t.split()[1]) for i in ids[:2] for t in log_text(host, i) if t.startswith("pid")]
        assert len(old_children) == 2
        # The new orchestrator stops what the dead one left running, then reruns it.
        wait_until(lambda: not any(pid_alive(p) for p in old_children), timeout=30, what="orphans stopped")
        gate.write_text("go")
        jobs = [wait_final(host, job_id, timeout=90) for job_id in ids]
        assert [j.state for j in jobs] == ["succeeded"] * 5
        for job in jobs[:2]:
            assert [a.state for a in job.attempts] == ["failed", "succeeded"]
            assert job.attempts[0].infrastructure
            assert job.attempts[0].error == "the orchestrator stopped while this attempt ran"
        assert all(job.attempts[-1].worker for job in jobs)
        assert all(len(j.attempts[-1].gpu_ids) == 1 and j.attempts[-1].gpu_ids[0] in ("0", "1") for j in jobs)
    finally:
        host.stop()
