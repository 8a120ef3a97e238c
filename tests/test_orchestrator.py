"""The orchestrator on real local Dask clusters: order, GPUs, retries, cancel, timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cloudpickle
import pytest
from conftest import log_text, pid_alive, submit, wait_final, wait_until

from jupyter_trainorch.spec import PRIORITY_CLASSES, Resources, RetryPolicy, SpecError

WAIT_FOR_FILE = """
import os, time
print("holding", flush=True)
while not os.path.exists(gate):
    time.sleep(0.02)
"""

SLEEPER = """
import os, time
print("pid", os.getpid(), flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def one_gpu(host_factory):
    return host_factory(workers=1, gpus_per_worker=1)


@pytest.fixture(scope="module")
def two_by_two(host_factory):
    return host_factory(workers=2, gpus_per_worker=2)


def _pid_from_log(host, job_id):
    def find():
        for text in log_text(host, job_id):
            if text.startswith("pid "):
                return int(text.split()[1])
        return None

    return wait_until(find, what="the job to print its pid")


def test_urgent_submitted_last_starts_first_once_the_gpu_frees(one_gpu, tmp_path):
    gate = tmp_path / "gate"
    blocker = submit(one_gpu, name="blocker", source=WAIT_FOR_FILE, params={"gate": str(gate)},
                     resources=Resources(gpus=1))  # fmt: skip
    wait_until(lambda: one_gpu.store.get_job(blocker).state == "running", what="blocker running")
    order = [("low", "low"), ("normal-a", "normal"), ("normal-b", "normal"), ("urgent", "urgent")]
    ids = {
        name: submit(
            one_gpu,
            name=name,
            source="print('ran')",
            resources=Resources(gpus=1),
            priority=PRIORITY_CLASSES[cls],
        )  # fmt: skip
        for name, cls in order
    }
    time.sleep(0.5)
    assert {one_gpu.store.get_job(i).state for i in ids.values()} == {"queued"}
    gate.write_text("go")
    finished = {name: wait_final(one_gpu, job_id) for name, job_id in ids.items()}
    started = sorted(finished, key=lambda name: finished[name].attempts[0].started)
    assert started == ["urgent", "normal-a", "normal-b", "low"]
    assert all(job.state == "succeeded" for job in finished.values())


def test_no_two_running_jobs_share_a_gpu_id(two_by_two):
    source = (
        "import os, time\nprint('gpus', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\n"
        "time.sleep(0.4)\n"
    )
    ids = [
        submit(two_by_two, name=f"g{i}", source=source, resources=Resources(gpus=1))
        for i in range(8)
    ]
    ids.append(submit(two_by_two, name="pair", source=source, resources=Resources(gpus=2)))
    jobs = [wait_final(two_by_two, job_id) for job_id in ids]
    spans = []
    for job in jobs:
        assert job.state == "succeeded", job.error
        attempt = job.attempts[-1]
        assert len(attempt.gpu_ids) == job.spec["resources"]["gpus"]
        shown = [t for t in log_text(two_by_two, job.id) if t.startswith("gpus ")][0].split()[1]
        assert shown.split(",") == attempt.gpu_ids
        for gpu in attempt.gpu_ids:
            spans.append((attempt.worker, gpu, attempt.started, attempt.ended, job.id))
    for i, (worker, gpu, start, end, job_id) in enumerate(spans):
        for other_worker, other_gpu, other_start, other_end, other_id in spans[i + 1 :]:
            if (worker, gpu) == (other_worker, other_gpu) and job_id != other_id:
                assert end <= other_start or other_end <= start, (
                    f"{job_id} and {other_id} shared GPU {gpu}"
                )


def test_a_job_larger_than_any_worker_is_rejected_with_one_sentence(two_by_two):
    with pytest.raises(SpecError) as err:
        submit(two_by_two, name="huge", source="pass", resources=Resources(gpus=16))
    message = str(err.value)
    assert "16 GPUs" in message and "largest worker has 2" in message and "\n" not in message


def test_failed_attempts_are_retried_then_succeed(one_gpu, tmp_path):
    counter = tmp_path / "count"
    source = (
        "import pathlib\np = pathlib.Path(counter)\nn = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\nif n < 2:\n    raise RuntimeError(f'flaky {n}')\nprint('ok', n + 1)\n"
    )
    job_id = submit(one_gpu, name="flaky", source=source, params={"counter": str(counter)},
                    retry=RetryPolicy(max_retries=2, backoff=0.1))  # fmt: skip
    job = wait_final(one_gpu, job_id)
    assert job.state == "succeeded"
    assert [a.state for a in job.attempts] == ["failed", "failed", "succeeded"]
    assert job.attempts[0].error == "RuntimeError: flaky 0"
    assert job.attempts[0].exit_code == 1 and job.attempts[2].exit_code == 0
    assert "ok 3" in log_text(one_gpu, job_id)


def test_retries_are_bounded_by_max_retries(one_gpu):
    job_id = submit(one_gpu, name="always-fails", source="raise ValueError('nope')",
                    retry=RetryPolicy(max_retries=1, backoff=0.1))  # fmt: skip
    job = wait_final(one_gpu, job_id)
    assert job.state == "failed" and len(job.attempts) == 2
    assert job.error == "ValueError: nope"


def test_a_syntax_error_is_not_retried(one_gpu):
    job_id = submit(one_gpu, name="typo", source="def broken(:\n    pass\n",
                    retry=RetryPolicy(max_retries=3, backoff=0.1))  # fmt: skip
    job = wait_final(one_gpu, job_id)
    assert job.state == "failed" and len(job.attempts) == 1
    assert job.error.startswith("SyntaxError")


def test_cancel_kills_the_running_child(one_gpu):
    job_id = submit(one_gpu, name="sleeper", source=SLEEPER)
    pid = _pid_from_log(one_gpu, job_id)
    assert pid_alive(pid)
    one_gpu.call(lambda o: o.cancel(job_id))
    job = wait_final(one_gpu, job_id, timeout=20)
    assert job.state == "cancelled"
    wait_until(lambda: not pid_alive(pid), timeout=10, what=f"pid {pid} to exit")


def test_cancel_of_a_queued_job_needs_no_worker(one_gpu, tmp_path):
    gate = tmp_path / "gate"
    blocker = submit(one_gpu, name="blocker2", source=WAIT_FOR_FILE, params={"gate": str(gate)},
                     resources=Resources(gpus=1))  # fmt: skip
    waiting = submit(one_gpu, name="waiting", source="pass", resources=Resources(gpus=1))
    one_gpu.call(lambda o: o.cancel(waiting))
    job = one_gpu.store.get_job(waiting)
    assert job.state == "cancelled" and job.attempts == []
    gate.write_text("go")
    assert wait_final(one_gpu, blocker).state == "succeeded"


def test_timeout_stops_the_job(one_gpu):
    job_id = submit(one_gpu, name="slow", source=SLEEPER, timeout=1.5)
    pid = _pid_from_log(one_gpu, job_id)
    job = wait_final(one_gpu, job_id, timeout=20)
    assert job.state == "failed"
    assert job.error == "timed out after 1.5s"
    wait_until(lambda: not pid_alive(pid), timeout=10, what=f"pid {pid} to exit")


def test_dependencies_wait_and_propagate_failure(one_gpu, tmp_path):
    gate = tmp_path / "gate"
    first = submit(one_gpu, name="first", source=WAIT_FOR_FILE, params={"gate": str(gate)})
    second = submit(one_gpu, name="second", source="print('after first')", depends_on=[first])
    assert one_gpu.store.get_job(second).state == "pending"
    broken = submit(one_gpu, name="broken", source="raise SystemExit(4)")
    orphan = submit(one_gpu, name="orphan", source="print('never')", depends_on=["broken"])
    gate.write_text("go")
    assert wait_final(one_gpu, second).state == "succeeded"
    assert wait_final(one_gpu, broken).state == "failed"
    job = wait_final(one_gpu, orphan)
    assert job.state == "failed" and job.error == f"dependency {broken} failed" and not job.attempts
    with pytest.raises(SpecError, match="no job with id or name 'missing'"):
        submit(one_gpu, name="x", source="pass", depends_on=["missing"])


def test_progress_tqdm_and_outputs(one_gpu):
    source = (
        "import jupyter_trainorch, tqdm, time\n"
        "for i in tqdm.tqdm(range(5)):\n    time.sleep(0.05)\n"
        "for step in range(1, 4):\n    jupyter_trainorch.progress(step, 3, loss=1.0 / step)\n    time.sleep(0.3)\n"
        "model = {'weights': [1, 2, 3]}\n"
    )
    job_id = submit(one_gpu, name="reporting", source=source, outputs=["model"])
    job = wait_final(one_gpu, job_id)
    assert job.state == "succeeded", log_text(one_gpu, job_id)
    assert job.progress["step"] == 3 and job.progress["fraction"] == 1.0
    assert job.progress["metrics"]["loss"] == pytest.approx(1 / 3)
    assert cloudpickle.loads(one_gpu.store.get_outputs(job_id)) == {"model": {"weights": [1, 2, 3]}}
    assert any("5/5" in line for line in log_text(one_gpu, job_id))


def test_missing_output_variable_fails_clearly(one_gpu):
    job = wait_final(one_gpu, submit(one_gpu, name="no-out", source="x = 1", outputs=["y"]))
    assert job.state == "failed" and job.error == "output variable 'y' was not defined by the cell"


def test_a_command_job_runs_in_its_workdir(one_gpu, tmp_path: Path):
    (tmp_path / "train.py").write_text("import sys\nprint('lr', sys.argv[1])\n")
    job_id = submit(
        one_gpu, name="cmd", kind="command", command="python train.py 0.1", workdir=str(tmp_path)
    )
    assert wait_final(one_gpu, job_id).state == "succeeded"
    assert log_text(one_gpu, job_id) == ["lr 0.1"]


def test_a_second_orchestrator_on_the_same_store_refuses_to_dispatch(one_gpu):
    from jupyter_trainorch.orchestrator import OrchestratorBusy, OrchestratorHost

    second = OrchestratorHost(one_gpu.config)
    with pytest.raises(OrchestratorBusy, match="owned by another orchestrator") as err:
        second.start()
    assert f"pid {os.getpid()}" in str(err.value) and "\n" not in str(err.value)


def test_a_job_past_its_memory_claim_is_stopped_with_one_sentence(one_gpu):
    source = "import time\nblock = bytearray(400 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\ntime.sleep(30)"
    job_id = submit(one_gpu, name="greedy", source=source,
                    resources=Resources(memory=200 * 2**20),
                    retry=RetryPolicy(max_retries=2, backoff=0.1))  # fmt: skip
    job = wait_final(one_gpu, job_id)
    assert job.state == "failed" and len(job.attempts) == 1, "an out-of-memory job is not retried"
    assert job.error.startswith("out of memory: its processes used ")
    assert job.error.endswith("(claimed 200 MiB)")
    assert job.attempts[0].ended - job.attempts[0].started < 20
