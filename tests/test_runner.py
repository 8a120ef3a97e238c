"""The worker side of an attempt: the request it is given, secrets, and the log cap.

``run_attempt`` runs as a task on a real Dask worker process (what the orchestrator
submits); the last tests go through a real orchestrator and its local cluster.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from conftest import log_text, submit, wait_final, wait_until

from jupyter_trainorch.log_batches import unpack
from jupyter_trainorch.runner.protocol import (
    ATTEMPT_ENV,
    CHECKPOINT_DIR_ENV,
    EVENT_TOPIC,
    JOB_ID_ENV,
    JOB_NAME_ENV,
    LOG_FILE,
    OUTCOME_FILE,
    PROGRESS_FD_ENV,
    REQUEST_FILE,
    STATUS_FILE,
    UPSTREAM_DIR,
    UPSTREAM_INDEX,
    AttemptOutcome,
    AttemptRequest,
    attempt_key,
)
from jupyter_trainorch.runner.streams import (
    MAX_BATCH_LINES,
    MAX_PENDING_BYTES,
    TRUNCATED,
    LineBatcher,
    read_lines,
)
from jupyter_trainorch.runner.supervisor import _attempt_root, read_log, run_attempt

SECRET = "hunter2-s3cr3t-value"
CAP = 2000
NOTICE = TRUNCATED.format(mb=CAP / 1e6)


@pytest.fixture(scope="module")
def dask_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True,
        host="127.0.0.1", dashboard_address=":0",
    )  # fmt: skip
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _request(job_id: str, **fields: Any) -> AttemptRequest:
    request: AttemptRequest = {
        "job_id": job_id, "attempt": 1, "name": job_id, "kind": "python", "source": "",
        "command": "", "params": {}, "env": {}, "secret_env": {}, "outputs": [],
        "workdir": None, "timeout": 60, "gpu_ids": [], "grace": 2.0,
        "system_metrics_interval": 0, "checkpoint_dir": "", "package": None,
        "max_log_bytes": 0,
    }  # fmt: skip
    request.update(fields)  # type: ignore[typeddict-item]
    return request


def _run(client: Any, request: AttemptRequest) -> tuple[AttemptOutcome, Path]:
    outcome = client.submit(run_attempt, request, pure=False).result(timeout=90)
    return outcome, Path(outcome["log_path"]).parent


def _sent(client: Any, job_id: str, count: int) -> list[dict[str, Any]]:
    """The output messages the supervisor sent, once ``count`` lines have arrived; their
    lines (sent packed, as the store keeps them) unpacked."""

    def arrived() -> list[dict[str, Any]] | None:
        messages = [
            {**m, "lines": unpack(m["lines"]) if "lines" in m else []}
            for _, m in client.get_events(EVENT_TOPIC)
            if m.get("job_id") == job_id and isinstance(m.get("lines", b""), bytes)
        ]
        lines = sum(len(m["lines"]) for m in messages)
        return messages if lines >= count else None

    return wait_until(arrived, what="the attempt's events")  # type: ignore[return-value]


def test_the_request_reaches_the_child_and_the_outcome_comes_back_whole(dask_client, tmp_path):
    names = [JOB_ID_ENV, JOB_NAME_ENV, ATTEMPT_ENV, CHECKPOINT_DIR_ENV, PROGRESS_FD_ENV]
    source = (
        "import json, os\n"
        f"print(json.dumps({{n: os.environ.get(n) for n in {names!r}}}))\n"
        f"open(os.path.join(os.environ[{CHECKPOINT_DIR_ENV!r}], 'step'), 'w').write(str(lr))\n"
        "doubled = lr * 2\n"
    )
    checkpoints = tmp_path / "checkpoints"
    request = _request("round-trip", attempt=2, source=source, params={"lr": 0.5},
                       outputs=["doubled"], checkpoint_dir=str(checkpoints))  # fmt: skip
    outcome, folder = _run(dask_client, request)

    assert outcome["exit_code"] == 0, read_log(outcome["log_path"], 0)
    # ``rank`` only for a rank of a multi-node attempt.
    assert set(outcome) == set(AttemptOutcome.__annotations__) - {"rank"}
    assert cloudpickle.loads(outcome["outputs"]) == {"doubled": 1.0}
    assert folder.name == attempt_key("round-trip", 2)
    stored = json.loads((folder / REQUEST_FILE).read_text())
    assert stored == {k: v for k, v in request.items() if k != "package"}
    recorded = json.loads((folder / OUTCOME_FILE).read_text())
    assert recorded == {k: v for k, v in outcome.items() if k != "outputs"}
    [line] = [record[2] for record in read_log(outcome["log_path"], 0)]
    seen = json.loads(line)
    assert seen[JOB_ID_ENV] == "round-trip" and seen[JOB_NAME_ENV] == "round-trip"
    assert seen[ATTEMPT_ENV] == "2" and seen[CHECKPOINT_DIR_ENV] == str(checkpoints)
    assert seen[PROGRESS_FD_ENV].isdigit()
    assert (checkpoints / "step").read_text() == "0.5"


def test_secrets_reach_the_job_but_nothing_it_reports(dask_client):
    source = (
        "import os, jupyter_trainorch\n"
        "token = os.environ['API_TOKEN']\n"
        "print('token', token)\n"
        "print('twice', token + token)\n"
        "print('pin', os.environ['PIN'])\n"
        "jupyter_trainorch.progress(1, 2, message='using ' + token, note=token)\n"
        "raise RuntimeError('refused ' + token)\n"
    )
    request = _request(
        "secretive", source=source,
        env={"API_TOKEN": "the-plain-value", "PIN": "7"},
        # Too short to mask: it would hide every "123" in the output.
        secret_env={"API_TOKEN": SECRET, "PIN": "123"},
    )  # fmt: skip
    outcome, folder = _run(dask_client, request)

    assert outcome["exit_code"] == 1 and outcome["error"] == "RuntimeError: refused ***"
    lines = [record[2] for record in read_log(outcome["log_path"], 0)]
    assert lines[:3] == ["token ***", "twice ******", "pin 123"]
    assert lines[-1] == "RuntimeError: refused ***"
    messages = _sent(dask_client, "secretive", len(lines))
    assert [line[2] for m in messages for line in m.get("lines") or []] == lines
    progress = [m["progress"] for m in messages if m.get("progress")]
    assert progress[-1]["message"] == "using ***" and progress[-1]["metrics"] == {"note": "***"}
    assert SECRET not in json.dumps(messages)

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / REQUEST_FILE).stat().st_mode) == 0o600
    assert SECRET in (folder / REQUEST_FILE).read_text()  # where the child reads it
    for name in (LOG_FILE, OUTCOME_FILE, STATUS_FILE):
        assert SECRET not in (folder / name).read_text(), name
    assert stat.S_IMODE((folder / STATUS_FILE).stat().st_mode) == 0o600


def test_output_past_the_cap_is_dropped_but_drained(dask_client):
    source = (
        "import sys, tqdm\n"
        "for i in range(100):\n    print(f'line {i:03d} ' + 'x' * 40)\n"
        # Far more than a pipe holds: a supervisor that stopped reading would hang the job.
        "for i in range(20000):\n    print('z' * 100)\n"
        "for _ in tqdm.tqdm(range(10), desc='late', mininterval=0):\n    pass\n"
        "print('the end')\n"
    )
    outcome, _ = _run(dask_client, _request("chatty", source=source, max_log_bytes=CAP))

    assert outcome["exit_code"] == 0
    records = read_log(outcome["log_path"], 0)
    lines = [record[2] for record in records]
    assert lines[-1] == NOTICE and lines.count(NOTICE) == 1
    assert outcome["log_lines"] == len(records) == records[-1][0]
    # Each line is 50 bytes with its newline: 40 of them fill the cap exactly.
    assert lines[:-1] == [f"line {i:03d} " + "x" * 40 for i in range(CAP // 50)]
    messages = _sent(dask_client, "chatty", len(lines))
    progress = [m["progress"] for m in messages if m.get("progress")]
    assert progress[-1] == {"step": 10, "total": 10, "message": "late", "metrics": {}}


def test_a_line_that_never_ends_is_cut_not_hoarded():
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(b"y" * (3 * MAX_PENDING_BYTES) + b"\nnext\n")

    writer = threading.Thread(target=write)
    writer.start()
    lines: list[str] = []
    read_lines(read_fd, lines.extend, lambda bar: None)
    writer.join()
    os.close(read_fd)
    assert len(lines) == 2 and lines[1] == "next"
    assert MAX_PENDING_BYTES < len(lines[0]) <= MAX_PENDING_BYTES + 65536


def test_a_fast_printer_is_read_thousands_of_lines_at_a_time(monkeypatch):
    # Unbuffered, as jobs run: every print is its own write, and a reader that read as
    # soon as any byte arrived took a few lines a read, its CPU taken from the job's.
    printer = subprocess.Popen(
        [sys.executable, "-c", "for i in range(20000): print(f'{i:08d}', 'x' * 38)"],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    reads = []
    real_read = os.read

    def read(fd: int, size: int) -> bytes:
        reads.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", read)
    lines: list[str] = []
    read_lines(printer.stdout.fileno(), lines.extend, lambda bar: None)
    monkeypatch.undo()
    assert printer.wait() == 0
    assert lines == [f"{i:08d} " + "x" * 38 for i in range(20000)]
    assert len(reads) <= 200, f"{len(reads)} reads for 20,000 lines"


# -- through the orchestrator ----------------------------------------------------------
WAIT_FOR_FILE = """
import os, time
while not os.path.exists(gate):
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def orchestrator(host_factory):
    return host_factory(workers=1, gpus_per_worker=0, max_log_bytes=CAP, mlflow="off")


def test_the_local_clusters_workers_run_without_dasks_profiler(orchestrator):
    # Its sampling of every thread's stack deadlocked a worker after some thousand jobs on
    # Python 3.11 (cluster.managed.NO_WORKER_PROFILER).
    profiled = orchestrator.call(
        lambda o: o.backend.client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    )  # fmt: skip
    assert profiled and not any(profiled.values()), profiled


def test_a_finished_jobs_files_and_checkpoints_leave_its_worker(orchestrator):
    source = (
        "from jupyter_trainorch import checkpoint\ncheckpoint.save({'step': 1})\nprint('saved')"
    )
    job = wait_final(orchestrator, submit(orchestrator, name="leaves-nothing", source=source))
    assert job.state == "succeeded", job.error
    folder = orchestrator.config.checkpoint_folder(job.id)
    key = attempt_key(job.id, 1, 0)

    def attempt_files() -> bool:
        found = orchestrator.call(lambda o: o.backend.client.run(
            lambda dask_worker: (_attempt_root(dask_worker) / key).exists()
        ))  # fmt: skip
        return any(found.values())

    wait_until(lambda: not folder.exists() and not attempt_files(), timeout=30,
               what="the job's checkpoints and attempt files to be removed")  # fmt: skip
    assert "saved" in log_text(orchestrator, job.id)


def test_a_jobs_secrets_are_masked_in_its_stored_log_and_error(orchestrator, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    blocker = submit(
        orchestrator, name="blocker", source=WAIT_FOR_FILE, params={"gate": str(first)}
    )
    source = (
        "import os\nprint('token', os.environ['API_TOKEN'], flush=True)\n"
        + WAIT_FOR_FILE
        + "raise RuntimeError('refused ' + os.environ['API_TOKEN'])\n"
    )
    job_id = submit(orchestrator, name="secretive", source=source, params={"gate": str(second)},
                    depends_on=[blocker], secret_env={"API_TOKEN": SECRET})  # fmt: skip
    first.write_text("go")

    wait_until(lambda: "token ***" in log_text(orchestrator, job_id), what="the masked line")
    folder = orchestrator.config.data_dir / "attempts" / attempt_key(job_id, 1)
    request = json.loads((folder / REQUEST_FILE).read_text())
    # The package and the upstream jobs' values lie in files of their own.
    assert set(request) == set(AttemptRequest.__annotations__) - {
        "package",
        "upstream",
        "gang",
        "data",
        "data_errors",
        "image",
        "container_engine",
    }
    upstream = json.loads((folder / UPSTREAM_DIR / UPSTREAM_INDEX).read_text())
    assert [u["job_id"] for u in upstream] == [blocker] and SECRET not in json.dumps(upstream)
    assert request["secret_env"] == {"API_TOKEN": SECRET} and request["max_log_bytes"] == CAP
    assert stat.S_IMODE((folder / REQUEST_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert SECRET not in (folder / LOG_FILE).read_text()
    second.write_text("go")

    job = wait_final(orchestrator, job_id)
    assert job.state == "failed" and job.error == "RuntimeError: refused ***"
    assert job.attempts[0].error == "RuntimeError: refused ***"
    assert not any(SECRET in line for line in log_text(orchestrator, job_id))


def test_a_job_past_the_log_cap_succeeds_with_one_truncation_line(orchestrator):
    source = "for i in range(500):\n    print(f'line {i:03d} ' + 'x' * 40)\nprint('the end')\n"
    job = wait_final(orchestrator, submit(orchestrator, name="chatty", source=source))
    lines = log_text(orchestrator, job.id)
    assert job.state == "succeeded"
    assert lines == [f"line {i:03d} " + "x" * 40 for i in range(CAP // 50)] + [NOTICE]


def test_a_workers_packed_batches_are_stored_as_they_came(host_factory):
    """Over real Dask events (whose lists arrive as tuples) each batch takes the packed
    path: stored without being decoded and packed again line by line."""
    host = host_factory(workers=1, gpus_per_worker=0, mlflow="off")
    repacked: list[int] = []
    append_logs = host.store.append_logs

    def counting_append_logs(job_id: str, attempt: int, lines: Any) -> int:
        repacked.append(len(lines))
        return append_logs(job_id, attempt, lines)

    host.store.append_logs = counting_append_logs
    source = "for i in range(5000):\n    print(f'line {i}')\n"
    job = wait_final(host, submit(host, name="packed", source=source))
    assert job.state == "succeeded"
    assert log_text(host, job.id) == [f"line {i}" for i in range(5000)]
    assert repacked == []


def test_batches_leave_in_the_order_their_lines_were_taken(tmp_path):
    """The reader's full batch and the timer's flush never swap places on the way out,
    however long the first send takes."""
    first_sending, release = threading.Event(), threading.Event()
    sent: list[int] = []

    def send(message: dict[str, Any]) -> None:
        if "seqs" in message:
            if not sent and not first_sending.is_set():
                first_sending.set()
                release.wait(5)
            sent.append(message["seqs"][0])

    batcher = LineBatcher(send, tmp_path / "output.log")
    full = [f"a{n}" for n in range(MAX_BATCH_LINES)]
    reader = threading.Thread(target=batcher.add, args=(full,))
    reader.start()
    assert first_sending.wait(5)
    batcher.add(["b"])  # the next line, while the full batch is on its way
    timer = threading.Thread(target=batcher.flush)
    timer.start()
    timer.join(0.3)
    release.set()
    reader.join(5)
    timer.join(5)
    batcher.close()
    assert sent == [1, MAX_BATCH_LINES + 1]


def test_every_attempts_system_samples_are_taken_by_one_thread():
    import time

    from jupyter_trainorch.runner.system_metrics import SystemSampler

    before = threading.active_count()
    got: list[tuple[int, int]] = []
    samplers = [
        SystemSampler(os.getpid(), [], 0.2, lambda metrics, step, i=i: got.append((i, step)))
        for i in range(40)
    ]
    for sampler in samplers:
        sampler.start()
    assert threading.active_count() <= before + 1
    wait_until(lambda: {i for i, step in got if step >= 2} == set(range(40)), 30,
               "two samples of each")  # fmt: skip
    for sampler in samplers[1:]:
        sampler.stop()
    time.sleep(0.1)  # a sample being taken as they stopped
    taken = len(got)
    time.sleep(0.6)
    assert {i for i, _ in got[taken:]} <= {0}  # only the one left going
    samplers[0].stop()
