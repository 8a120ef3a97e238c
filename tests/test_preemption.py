"""Preemption and checkpoints on a real local Dask cluster: an urgent job stops a
checkpointing one, which waits first in its class and resumes where it saved."""

from __future__ import annotations

import os
import time

import pytest
from conftest import submit, wait_final, wait_until

from jupyter_trainorch import checkpoint
from jupyter_trainorch.spec import PRIORITY_CLASSES, Resources

CHECKPOINTING = """
import time
from jupyter_trainorch import checkpoint
state = checkpoint.load(default={"step": 0})
print("start at", state["step"], flush=True)
while state["step"] < steps:
    time.sleep(0.05)
    state["step"] += 1
    checkpoint.save(state)
    if checkpoint.should_stop():
        print("stopping at", state["step"], flush=True)
        raise SystemExit(0)
print("done", state["step"], flush=True)
"""


MIN_RUNTIME = 4.0


@pytest.fixture(scope="module")
def one_gpu(host_factory):
    return host_factory(workers=1, gpus_per_worker=1, preemption_min_runtime=MIN_RUNTIME)


def _lines(host, job_id, attempt):
    return [line.text for line in host.store.read_logs(job_id, attempt=attempt)]


def _started_at(host, job_id, attempt):
    return [int(t.split()[2]) for t in _lines(host, job_id, attempt) if t.startswith("start at ")]


def test_an_urgent_job_preempts_a_checkpointing_one_which_resumes(one_gpu):
    victim = submit(one_gpu, name="long", source=CHECKPOINTING, params={"steps": 200},
                    resources=Resources(gpus=1))  # fmt: skip
    wait_until(lambda: _started_at(one_gpu, victim, 1), what="the victim's code to run")
    urgent = submit(one_gpu, name="hotfix", source="print('urgent ran')",
                    resources=Resources(gpus=1), priority=PRIORITY_CLASSES["urgent"])  # fmt: skip
    time.sleep(0.5)
    young = time.time() - one_gpu.store.get_job(victim).attempts[0].started < MIN_RUNTIME - 0.5
    waiting = one_gpu.call_sync(lambda o: o.waiting([urgent])).get(urgent)
    if young and waiting:  # on a loaded machine the victim may be old enough already
        assert "preempt" not in waiting["wait_reason"]
    # Not before the victim has run the minimum run time: a timer decides again then.
    urgent_job = wait_final(one_gpu, urgent)
    assert urgent_job.state == "succeeded"
    job = wait_final(one_gpu, victim)
    assert job.state == "succeeded", job.error
    first, second = job.attempts
    assert first.state == "preempted" and second.state == "succeeded"
    assert job.user_failures == 0 and job.infrastructure_failures == 0
    assert first.ended - first.started >= MIN_RUNTIME
    assert urgent_job.attempts[0].started >= first.started + MIN_RUNTIME
    assert second.started >= urgent_job.attempts[0].started
    assert _started_at(one_gpu, victim, 1) == [0]
    stopped = [int(t.split()[2]) for t in _lines(one_gpu, victim, 1) if t.startswith("stopping")]
    assert stopped and stopped[0] > 0
    assert _started_at(one_gpu, victim, 2) == stopped, "the second attempt did not resume"
    assert "done 200" in _lines(one_gpu, victim, 2)
    # A succeeded job's checkpoints go.
    folder = one_gpu.config.checkpoint_folder(victim)
    wait_until(lambda: not folder.exists(), what="the checkpoint folder to be removed")


def test_a_job_that_does_not_listen_is_stopped_and_starts_over(one_gpu):
    source = "import time\nprint('start', flush=True)\ntime.sleep(float(seconds))\nprint('end')"
    victim = submit(one_gpu, name="plain", source=source, params={"seconds": MIN_RUNTIME + 3},
                    resources=Resources(gpus=1))  # fmt: skip
    wait_until(lambda: _lines(one_gpu, victim, 1), what="the victim's code to run")
    urgent = submit(one_gpu, name="hotfix", source="pass", resources=Resources(gpus=1),
                    priority=PRIORITY_CLASSES["urgent"])  # fmt: skip
    assert wait_final(one_gpu, urgent).state == "succeeded"
    job = wait_final(one_gpu, victim)
    assert [a.state for a in job.attempts] == ["preempted", "succeeded"]
    # SIGTERM ended it at once, well inside the grace period.
    assert job.attempts[0].ended - job.attempts[0].started < MIN_RUNTIME + 1.5
    assert _lines(one_gpu, victim, 1) == ["start"]
    assert _lines(one_gpu, victim, 2) == ["start", "end"]


def test_checkpoint_helpers_outside_a_job(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINORCH_CHECKPOINT_DIR", str(tmp_path / "ck"))
    assert checkpoint.load() is None and checkpoint.load(default=3) == 3
    path = checkpoint.save({"epoch": 2})
    assert path.parent == tmp_path / "ck" and checkpoint.load() == {"epoch": 2}
    assert not [p for p in os.listdir(tmp_path / "ck") if p.startswith(".saving-")]
    with pytest.raises(ValueError, match="plain file name"):
        checkpoint.save(1, name="../escape")
    assert checkpoint.should_stop() is False
    time.sleep(0)
