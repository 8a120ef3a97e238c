"""Faults with real processes: a worker dies, the orchestrator dies (kill -9) mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
from conftest import (
    log_text,
    pid_alive,
    start_host,
    submit,
    wait_final,
    wait_until,
)

from jupyter_trainorch.spec import Resources
from jupyter_trainorch.store import JobStore

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


LONG_JOB = """
import os, time
print("pid", os.getpid(), flush=True)
n = 0
while not os.path.exists(gate):
    n += 1
    print("tick", n, flush=True)
    time.sleep(0.05)
for i in range(50):
    print("after", i, flush=True)
answer = 42
"""

ORCHESTRATOR_A = """
import sys, time
from jupyter_trainorch.orchestrator import OrchestratorHost
from jupyter_trainorch.settings import TrainOrch
from jupyter_trainorch.spec import JobSpec, Resources

def main():
    data, cluster, gate, source = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    host = OrchestratorHost(TrainOrch(data_dir=data, cluster=cluster, workers=1,
                                      gpus_per_worker=2, mlflow="off").to_config()).start()
    ids = [host.call(lambda o, i=i: o.submit(JobSpec(name=f"long{i}", source=source, params={"gate": gate},
                                                    outputs=["answer"], resources=Resources(gpus=1)))).id
           for i in range(2)]
    ids += [host.call(lambda o, i=i: o.submit(JobSpec(name=f"queued{i}", source="print('done')",
                                                     resources=Resources(gpus=1)))).id for i in range(3)]
    while not all(len(host.store.read_logs(i)) >= 3 for i in ids[:2]):
        time.sleep(0.05)
    print("READY", " ".join(ids), flush=True)
    time.sleep(600)

if __name__ == "__main__":
    main()
"""


def _kill_orchestrator_a(tmp_path, cluster):
    """Run orchestrator A in a process of its own until its two long jobs run, then SIGKILL it."""
    data, gate = tmp_path / "data", tmp_path / "gate"
    script = tmp_path / "orchestrator_a.py"
    script.write_text(textwrap.dedent(ORCHESTRATOR_A))
    first = subprocess.Popen(
        [sys.executable, str(script), str(data), cluster, str(gate), LONG_JOB],
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
    return data, gate, ids


def _assert_ran_once_with_whole_log(host, job_id):
    job = wait_final(host, job_id, timeout=90)
    assert job.state == "succeeded", (job.error, job.attempts)
    assert len(job.attempts) == 1, job.attempts  # adopted or collected, never run again
    lines = host.store.read_logs(job_id)
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))  # no gap, no duplicate
    texts = [line.text for line in lines]
    assert texts[-1] == "after 49" and texts.count("after 0") == 1
    ticks = [int(t.split()[1]) for t in texts if t.startswith("tick")]
    assert ticks == list(range(1, len(ticks) + 1))
    return job


def test_a_restarted_orchestrator_adopts_running_attempts(tmp_path, external_cluster):
    data, gate, ids = _kill_orchestrator_a(tmp_path, external_cluster)
    time.sleep(1.0)  # lines printed while nobody listens must still reach the store
    host = start_host(data, cluster=external_cluster, mlflow="off")
    try:
        children = [
            int(t.split()[1]) for i in ids[:2] for t in log_text(host, i) if t.startswith("pid")
        ]
        assert len(children) == 2 and all(pid_alive(p) for p in children)
        assert host.call_sync(lambda o: o.recovery.to_dict())["adopted"] == 2
        assert {host.store.get_job(i).state for i in ids[:2]} == {"running"}
        gate.write_text("go")
        for job_id in ids[:2]:
            job = _assert_ran_once_with_whole_log(host, job_id)
            assert cloudpickle.loads(host.store.get_outputs(job_id)) == {"answer": 42}
            assert job.attempts[0].pid in children
        assert [wait_final(host, i).state for i in ids[2:]] == ["succeeded"] * 3
    finally:
        host.stop()


def test_outcomes_of_attempts_that_ended_while_away_are_collected(tmp_path):
    """The embedded local cluster outlives its orchestrator too."""
    data, gate, ids = _kill_orchestrator_a(tmp_path, "local")
    state = json.loads((data / "cluster.json").read_text())
    store = JobStore(f"sqlite:///{data / 'trainorch.db'}")
    children = [int(line.text.split()[1]) for i in ids[:2] for line in store.read_logs(i)
                if line.text.startswith("pid")]  # fmt: skip
    store.close()
    assert len(children) == 2
    gate.write_text("go")
    outcomes = [data / "attempts" / f"trainorch-{job_id}-1" / "outcome.json" for job_id in ids[:2]]
    wait_until(lambda: all(path.exists() for path in outcomes), timeout=30, what="the jobs to end")
    assert not any(pid_alive(p) for p in children)
    host = start_host(data, mlflow="off")
    try:
        assert host.call_sync(lambda o: o.backend.pid) == state["pid"]  # the same cluster
        assert host.call_sync(lambda o: o.recovery.to_dict())["collected"] == 2
        for job_id in ids[:2]:
            _assert_ran_once_with_whole_log(host, job_id)
            assert cloudpickle.loads(host.store.get_outputs(job_id)) == {"answer": 42}
        assert [wait_final(host, i).state for i in ids[2:]] == ["succeeded"] * 3
    finally:
        host.stop()
    wait_until(lambda: not pid_alive(state["pid"]), timeout=30, what="the local cluster to stop")
