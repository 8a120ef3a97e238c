"""Tracking under load, against a real local cluster and MLflow on a SQLite file: every job
is tracked however many are queued, and a job's process never waits for its run to start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from conftest import start_host, submit, wait_final, wait_until

from jupyter_trainorch.orchestrator.attempts import AttemptTracker
from jupyter_trainorch.runner.protocol import MLFLOW_RUN_ID_ENV, TRACKING_ENV
from jupyter_trainorch.runner.supervisor import write_run_id
from jupyter_trainorch.tracking.fields import RESERVED_RUN_NAME
from jupyter_trainorch.tracking.lanes import LATER, URGENT, RecordLane
from jupyter_trainorch.tracking.pool import MAX_AGE, MIN_RESERVED, RunPool

PRINT_RUN = """
import os
print("run", os.environ.get("MLFLOW_RUN_ID"), "waits", os.environ.get("TRAINORCH_TRACKING"))
"""


def _client(data: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{data / 'mlflow.db'}")


def _caught_up(host, timeout: float) -> None:
    tracking = host.orchestrator.tracking
    wait_until(lambda: tracking.backlog() == 0, timeout=timeout, what="tracking to catch up")


def test_two_hundred_quick_jobs_are_each_tracked(tmp_path):
    data = tmp_path / "data"
    host = start_host(data, workers=2, gpus_per_worker=0, slots_per_worker=8)
    try:
        started = time.monotonic()
        ids = [submit(host, name=f"quick-{i}", source="pass", user="ada") for i in range(200)]
        jobs = [wait_final(host, job_id, timeout=300) for job_id in ids]
        ran_for = time.monotonic() - started
        _caught_up(host, timeout=300)
        caught_up = time.monotonic() - started
        jobs = [host.store.get_job(job_id) for job_id in ids]
    finally:
        host.stop()
    assert [j.state for j in jobs] == ["succeeded"] * 200
    assert ran_for < 240 and caught_up < 420, (ran_for, caught_up)  # bounded, on 2 busy cores
    client = _client(data)
    experiment = client.get_experiment_by_name("trainorch").experiment_id
    runs = {r.info.run_id: r for r in client.search_runs([experiment], max_results=1000)}
    assert len(runs) == 400  # a run per job and per attempt, no reserved run left over
    for job in jobs:
        assert "warning" not in job.mlflow, job.mlflow
        parent = runs[job.mlflow["run_id"]]
        assert parent.info.status == "FINISHED" and parent.info.run_name == job.name
        assert parent.data.tags["trainorch.job_id"] == job.id
        assert parent.data.tags["mlflow.user"] == "ada"
        (attempt,) = job.attempts
        run = runs[attempt.mlflow_run_id]
        assert run.info.status == "FINISHED" and run.info.run_name == f"{job.name} attempt 1"
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert (tags["trainorch.job_id"], tags["trainorch.attempt"]) == (job.id, "1")
        assert tags["trainorch.worker"] == attempt.worker
    deleted = client.search_runs([experiment], run_view_type=2, max_results=1000)  # DELETED_ONLY
    assert {r.info.run_name for r in deleted} <= {RESERVED_RUN_NAME}


def test_an_attempt_starts_with_its_run_id_in_its_request(tmp_path, monkeypatch):
    requests = []
    submit_attempt = AttemptTracker.submit

    def recording(self, request, *args):
        requests.append(request)
        return submit_attempt(self, request, *args)

    monkeypatch.setattr(AttemptTracker, "submit", recording)
    data = tmp_path / "data"
    host = start_host(data)
    try:
        wait_final(host, submit(host, name="first", source="pass"), timeout=120)
        hooks = host.orchestrator.tracking.hooks
        wait_until(lambda: len(hooks.pool.run_ids()) >= MIN_RESERVED, timeout=120,
                   what="runs reserved ahead")  # fmt: skip
        job = wait_final(host, submit(host, name="second", source=PRINT_RUN), timeout=120)
        lines = [line.text for line in host.store.read_logs(job.id)]
        _caught_up(host, timeout=120)
    finally:
        host.stop()
    run_id = job.attempts[0].mlflow_run_id
    env = requests[-1]["env"]
    # The id travels with the request: the process logs into the run from its first line.
    assert env["MLFLOW_RUN_ID"] == env[MLFLOW_RUN_ID_ENV] == run_id and TRACKING_ENV not in env
    assert lines == [f"run {run_id} waits None"]
    run = _client(data).get_run(run_id)
    assert run.info.run_name == "second attempt 1" and run.info.status == "FINISHED"
    # The job's own run was reserved at its start too: the job showed it as soon as it ended.
    assert run.data.tags["mlflow.parentRunId"] == job.mlflow["run_id"]
    assert _client(data).get_run(job.mlflow["run_id"]).info.run_name == "second"


LOGS_A_METRIC = """
import os
print("at start", os.environ.get("MLFLOW_RUN_ID"))
import mlflow
mlflow.log_metric("seen", 1.0)
print("logged into", mlflow.active_run().info.run_id)
"""


def test_without_a_reserved_run_only_import_mlflow_waits_for_it(tmp_path, monkeypatch):
    from jupyter_trainorch.tracking.hooks import TrackingHooks

    monkeypatch.setattr(TrackingHooks, "reserve", lambda self, experiment: None)
    reserve_now = TrackingHooks.reserve_now

    async def made_late(self, job_id, experiment):  # as under a burst of starts
        await asyncio.sleep(1.5)
        return await reserve_now(self, job_id, experiment)

    monkeypatch.setattr(TrackingHooks, "reserve_now", made_late)
    hurried = []
    hurry = TrackingHooks.hurry
    monkeypatch.setattr(TrackingHooks, "hurry",
                        lambda self, job_id: hurried.append(job_id) or hurry(self, job_id))  # fmt: skip
    data = tmp_path / "data"
    # No system samples: a cold tracking process on a busy machine can make a job wait
    # longer than their interval, and the test reads the run's metrics.
    host = start_host(data, system_metrics_interval=0)
    try:
        quiet = wait_final(host, submit(host, name="no-mlflow", source="pass"), timeout=120)
        job = wait_final(host, submit(host, name="late-run", source=LOGS_A_METRIC), timeout=120)
        command = wait_final(host, submit(host, name="late-command", kind="command",
                                          command='echo "run $MLFLOW_RUN_ID"'), timeout=120)  # fmt: skip
        _caught_up(host, timeout=120)
        job, command = host.store.get_job(job.id), host.store.get_job(command.id)
        lines = [line.text for line in host.store.read_logs(job.id)]
        command_lines = [line.text for line in host.store.read_logs(command.id)]
    finally:
        host.stop()
    assert job.state == "succeeded", lines
    run_id = job.attempts[0].mlflow_run_id
    assert lines == ["at start None", f"logged into {run_id}"]
    run = _client(data).get_run(run_id)
    assert run.data.metrics == {"seen": 1.0} and run.info.run_name == "late-run attempt 1"
    # A command reads its environment when it starts, so it waits for its run there.
    assert command_lines == [f"run {command.attempts[0].mlflow_run_id}"]
    # Each process that waited asked for its run to be made first; the job that never
    # imported mlflow did not.
    assert hurried == [job.id, command.id], (quiet.id, hurried)


def test_the_process_starts_at_once_and_import_mlflow_waits_for_the_run_id(tmp_path):
    probe = (
        "import os, sys, time\n"
        "from jupyter_trainorch.runner.mlflow_run import watch_for_run_id\n"
        "started = time.monotonic(); watch_for_run_id(sys.argv[1])\n"
        "print('started', round(time.monotonic() - started, 2), os.environ.get('MLFLOW_RUN_ID'), flush=True)\n"
        "import mlflow\n"
        "print('imported', os.environ.get('MLFLOW_RUN_ID'), flush=True)\n"
    )  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", probe, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["started", "0.0", "None"]
    time.sleep(0.5)  # the orchestrator delivers the id later
    write_run_id(tmp_path, "a" * 32)
    assert proc.stdout.readline().split() == ["imported", "a" * 32]
    assert proc.wait(timeout=60) == 0


def test_reserved_runs_follow_demand_and_age_out():
    now = [0.0]
    pool = RunPool(clock=lambda: now[0])
    assert pool.wanted("e") == 0  # not in use
    for _ in range(5):
        pool.note_demand("e")
    assert pool.wanted("e") == MIN_RESERVED + 5
    pool.add("e", "old", "1")
    now[0] = 1.0
    pool.add("e", "new", "1")
    taken = pool.take("e")
    assert taken is not None and taken.run_id == "old"  # the oldest first: start times stay close
    now[0] = 1.0 + MAX_AGE + 0.1
    assert pool.take("e") is None  # too old to hand out: deleted instead
    assert pool.expired() == ["new"]


def test_a_starting_attempt_goes_before_what_is_queued_for_later():
    lane = RecordLane(lambda: False)
    done: list[str] = []
    blocker = lane.submit(URGENT, time.sleep, 0.2)
    later = [lane.submit(LATER, done.append, f"later {i}") for i in range(3)]
    urgent = lane.submit(URGENT, done.append, "urgent")
    for future in (blocker, *later, urgent):
        future.result(timeout=10)
    lane.close()
    assert done == ["urgent", "later 0", "later 1", "later 2"]


def test_an_urgent_task_cuts_a_pause_short():
    lane = RecordLane(lambda: True)  # always yielding: the CPUs are busy with starts
    lane.submit(LATER, time.sleep, 0.1).result(timeout=10)  # then pauses about 0.9 s
    started = time.monotonic()
    lane.submit(URGENT, lambda: None).result(timeout=10)
    assert time.monotonic() - started < 0.5
    lane.close()


def test_a_hurried_run_is_made_next_and_only_once(tmp_path, monkeypatch):
    import io
    import json

    from jupyter_trainorch.tracking import worker as tracking_worker
    from jupyter_trainorch.tracking.mlflow_tracker import MlflowTracker

    # The CPUs read as busy and attempts keep starting: runs asked for are made in turn,
    # each followed by a pause.
    monkeypatch.setattr(tracking_worker.CpuLoad, "busy", lambda self: True)
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.warm_up()
    stream = io.StringIO()
    out = tracking_worker.Outbox(stream)
    worker = tracking_worker.TrackingWorker(tracker, out)
    for request in range(1, 9):
        worker.handle({"op": "reserve", "experiment": "trainorch", "job_id": f"job-{request}",
                       "request": request, "seq": request})  # fmt: skip
    worker.handle({"op": "hurry", "request": 8, "seq": 9})
    worker.close()
    out.close()
    messages = [json.loads(line) for line in stream.getvalue().splitlines()]
    made = [m["request"] for m in messages if "reserved" in m]
    assert sorted(made) == list(range(1, 9)) and made.index(8) <= 2, made
    assert sorted(m["done"] for m in messages if "done" in m) == list(range(1, 10))
    experiment = tracker.client.get_experiment_by_name("trainorch").experiment_id
    assert len(tracker.client.search_runs([experiment])) == 8


def test_an_attempt_gives_up_its_run_only_when_tracking_has_stalled(tmp_path, monkeypatch):
    import os
    import signal

    from jupyter_trainorch.tracking import hooks as tracking_hooks
    from jupyter_trainorch.tracking.mlflow_tracker import MlflowTracker

    monkeypatch.setattr(tracking_hooks, "ATTEMPT_RUN_WAIT", 1.0)
    monkeypatch.setattr(tracking_hooks, "STALL_CHECK_EVERY", 0.2)
    news: list[tuple[str, dict]] = []
    hooks = tracking_hooks.TrackingHooks(
        MlflowTracker, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", None,
        on_info=lambda job_id, info: news.append((job_id, info)),
    )  # fmt: skip
    try:
        assert hooks.wait_ready(60)
        hooks.job_submitted("trainorch")  # once runs are reserved, MLflow's store is set up
        wait_until(lambda: hooks.pool.run_ids(), timeout=120, what="runs reserved ahead")
        assert asyncio.run(hooks.reserve_now("job-1", "trainorch"))
        process = hooks._channel._process
        os.kill(process.pid, signal.SIGSTOP)  # a tracking process that does nothing
        try:
            started = time.monotonic()
            assert asyncio.run(hooks.reserve_now("job-2", "trainorch")) is None
            assert time.monotonic() - started < 10
        finally:
            os.kill(process.pid, signal.SIGCONT)
    finally:
        hooks.close()
    assert news == [("job-2", {"warning": "MLflow did nothing for 1s; the attempt runs untracked"})]


def test_naming_attempts_runs_yields_to_a_burst_of_starts(tmp_path, monkeypatch):
    import io
    import json

    from jupyter_trainorch.tracking import lanes
    from jupyter_trainorch.tracking import worker as tracking_worker
    from jupyter_trainorch.tracking.mlflow_tracker import MlflowTracker

    # The CPUs read as busy and attempts keep starting: after each task the record lane
    # pauses its longest.
    monkeypatch.setattr(tracking_worker.CpuLoad, "busy", lambda self: True)
    monkeypatch.setattr(tracking_worker, "STARTING_WINDOW", 60.0)
    monkeypatch.setattr(tracking_worker, "SHARE_WHILE_STARTING", 1e-4)
    monkeypatch.setattr(lanes, "LONGEST_PAUSE", 0.5)
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.warm_up()
    run_ids = [tracker.reserve_run(tracker.experiment_id("trainorch")) for _ in range(3)]
    written: list[tuple[float, str]] = []

    class Stamped(io.StringIO):
        def write(self, text: str) -> int:
            written.append((time.monotonic(), text))
            return len(text)

    out = tracking_worker.Outbox(Stamped())
    worker = tracking_worker.TrackingWorker(tracker, out)
    for seq, run_id in enumerate(run_ids, 1):
        job = {"id": f"job-{seq}", "name": f"job-{seq}", "params": {"lr": seq}}
        worker.handle({"op": "attempt_started", "job": job, "spec": {}, "created": time.time(),
                       "meta": {}, "stored": {}, "name_job": False, "run_id": run_id, "n": 1,
                       "worker": "w", "gpu_ids": [], "seq": seq})  # fmt: skip
    worker.close()
    out.close()
    done = {json.loads(text)["done"]: at for at, text in written if '"done"' in text}
    assert sorted(done) == [1, 2, 3]
    # Two pauses between the three namings: an attempt's naming waits like the rest.
    assert done[3] - done[1] >= 0.9, done
    names = [tracker.client.get_run(run_id).info.run_name for run_id in run_ids]
    assert names == ["job-1 attempt 1", "job-2 attempt 1", "job-3 attempt 1"]


def test_a_sqlite_tracking_store_is_written_with_a_write_ahead_log(tmp_path):
    import sqlite3

    from sqlalchemy import create_engine, text

    from jupyter_trainorch.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.warm_up()
    with sqlite3.connect(tmp_path / "mlflow.db") as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def settings(name: str) -> tuple[str, int]:
        engine = create_engine(f"sqlite:///{tmp_path / name}")
        with engine.connect() as connection:
            journal = connection.execute(text("PRAGMA journal_mode")).scalar()
            synchronous = connection.execute(text("PRAGMA synchronous")).scalar()
        engine.dispose()
        return journal, synchronous

    # This process's connections to the tracking store sync once per checkpoint (NORMAL);
    # another SQLite file is left as it is (rollback journal, FULL).
    assert settings("mlflow.db") == ("wal", 1)
    assert settings("other.db") == ("delete", 2)
