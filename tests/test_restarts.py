"""Jobs outlive what restarts around them: JupyterLab (SIGTERM or SIGKILL), the trainorch
service itself (SIGKILL at random moments), and a submit whose answer was lost."""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    Process,
    free_port,
    get_json,
    pid_alive,
    service_env,
    service_process,
    stop_services_under,
    wait_until,
)

from jupyter_trainorch.client.transport import HTTPTransport
from jupyter_trainorch.package import build_package
from jupyter_trainorch.service import read_runtime
from jupyter_trainorch.store import JobStore

FINAL = ("succeeded", "failed", "cancelled")

# A job that says when its body starts and ends (in a file outside the job), with lines between.
MARKED = """
import os, time
attempt = os.environ["TRAINORCH_JOB_ID"] + " " + os.environ["TRAINORCH_ATTEMPT"]
with open(marker, "a") as out:
    out.write("start " + attempt + "\\n")
for i in range(lines):
    print("line", i, flush=True)
    time.sleep(pause)
with open(marker, "a") as out:
    out.write("end " + attempt + "\\n")
"""


def _jupyter_server(root: Path) -> Process:
    port, token = free_port(), secrets.token_hex(8)
    (root / "notebooks").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "jupyter_server", f"--port={port}", "--ServerApp.ip=127.0.0.1",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--no-browser",
               f"--ServerApp.root_dir={root / 'notebooks'}", "--allow-root"]  # fmt: skip
    env = {**service_env(root), "TRAINORCH_MLFLOW": "off"}
    return Process(command, env, root / "jupyter.log", f"http://127.0.0.1:{port}/", token)


@pytest.mark.timeout(600)
def test_a_job_runs_once_across_jupyterlab_restarts(tmp_path):
    lab = _jupyter_server(tmp_path)
    marker = tmp_path / "marker"
    try:
        lab.start()
        client = HTTPTransport(lab.url, lab.token)
        job = client.submit({
            "template": "python-cell", "name": "outlives-lab", "source": MARKED,
            # 30 s of lines: still printing after a JupyterLab restart on a loaded machine.
            "params": {"marker": str(marker), "lines": 300, "pause": 0.1},
        })  # fmt: skip
        wait_until(lambda: len(client.logs(job["id"])["lines"]) > 5, what="the job's first lines")
        service = read_runtime(tmp_path / "data")
        assert service is not None and service.pid not in (lab.proc.pid,)

        lab.signal(signal.SIGTERM)  # a clean JupyterLab shutdown
        assert pid_alive(service.pid)
        assert (
            get_json(service.url + f"trainorch/api/jobs/{job['id']}", service.token)["state"]
            == "running"
        )
        lab.start()
        assert read_runtime(tmp_path / "data").pid == service.pid  # found again, not started anew
        seen = len(client.logs(job["id"])["lines"])
        wait_until(
            lambda: len(client.logs(job["id"])["lines"]) > seen, what="lines after the restart"
        )

        lab.signal(signal.SIGKILL)  # JupyterLab dies hard
        assert pid_alive(service.pid)
        lab.start()
        done = client.wait(job["id"], timeout=90)
    finally:
        lab.stop()
        stop_services_under(tmp_path)
    assert done["state"] == "succeeded", done
    assert len(done["attempts"]) == 1 and done["reexecutions"] == 0
    assert marker.read_text().split("\n")[:-1] == [f"start {job['id']} 1", f"end {job['id']} 1"]
    store = JobStore(f"sqlite:///{tmp_path / 'data' / 'trainorch.db'}")
    lines = store.read_logs(job["id"])
    store.close()
    assert [line.text for line in lines] == [f"line {i}" for i in range(300)]
    assert [line.seq for line in lines] == list(range(1, 301))


@pytest.mark.timeout(900)
def test_twenty_kills_of_the_service_lose_and_rerun_nothing(tmp_path, external_cluster):
    service = service_process(tmp_path, external_cluster)
    marker = tmp_path / "marker"
    rng = random.Random(7)
    submitted: dict[str, str] = {}  # idempotency key -> job id the client was told
    kills: list[float] = []
    errors: list[BaseException] = []
    service.start()
    client = HTTPTransport(service.url, service.token, reconnect_for=120)

    def submit_jobs() -> None:
        try:
            for i in range(50):
                key = f"job-{i}"
                body = {
                    "template": "python-cell", "name": key, "source": MARKED,
                    "params": {"marker": str(marker), "lines": rng.randint(10, 40),
                               "pause": rng.uniform(0.05, 0.12)},
                    "overrides": {"gpus": rng.choice([0, 1, 1])},
                }  # fmt: skip
                submitted[key] = client.submit(body, idempotency_key=key)["id"]
                time.sleep(rng.uniform(0.3, 2.5))
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            errors.append(err)

    submitter = threading.Thread(target=submit_jobs)
    submitter.start()
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.3, 2.5))
            kills.append(time.time())
            service.signal(signal.SIGKILL)
            service.start()
        submitter.join(timeout=300)
        assert not errors, errors
        ids = set(submitted.values())
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = [client.get(job_id)["state"] for job_id in ids]
            if all(state in FINAL for state in states):
                break
            time.sleep(1)
        jobs = client.list(limit=1000)["jobs"]
        details = {job["id"]: client.get(job["id"]) for job in jobs}
    finally:
        service.stop()
        stop_services_under(tmp_path)

    events = [line.split() for line in marker.read_text().splitlines()]
    starts = Counter(job_id for kind, job_id, _ in events if kind == "start")
    ends = Counter(job_id for kind, job_id, _ in events if kind == "end")
    lost = len(submitted) - len(jobs)
    stuck = [job_id for job_id, job in details.items() if job["state"] not in FINAL]
    failed = [job_id for job_id, job in details.items() if job["state"] == "failed"]
    finished_again = sum(count - 1 for count in ends.values() if count > 1)
    restarted_bodies = sum(count - 1 for count in starts.values() if count > 1)
    kills_during_run = {
        job_id: sum(1 for k in kills if _running_at(job, k)) for job_id, job in details.items()
    }
    print(
        f"\nservice SIGKILLs: {len(kills)}; jobs submitted: {len(submitted)}, in the store: "
        f"{len(jobs)}; lost: {lost}; stuck: {len(stuck)}; failed: {len(failed)}; bodies re-run after "
        f"they had finished: {finished_again}; bodies re-run after a kill: {restarted_bodies} "
        f"(kills during some job's run: {sum(1 for k in kills if any(_running_at(j, k) for j in details.values()))}); "
        f"re-executions the jobs report: {sum(job['reexecutions'] for job in details.values())}"
    )
    assert len(kills) == 20
    assert sorted(job["name"] for job in jobs) == sorted(
        submitted
    )  # one job per key: no duplicates
    assert {job["id"] for job in jobs} == set(submitted.values())  # the client learned every id
    assert lost == 0 and not stuck and not failed
    assert set(ends) == set(submitted.values()) and finished_again == 0
    for job_id, count in starts.items():
        assert count - 1 <= kills_during_run[job_id], (job_id, count, details[job_id]["attempts"])


def _running_at(job: dict, moment: float) -> bool:
    from datetime import datetime

    def seconds(stamp: str | None) -> float | None:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None

    started, ended = seconds(job.get("started")), seconds(job.get("ended"))
    return started is not None and started <= moment and (ended is None or moment <= ended)


@pytest.mark.timeout(600)
def test_a_submit_whose_answer_was_lost_is_not_made_twice(tmp_path):
    """The service dies after storing the job and before answering; the client's retry
    (same Idempotency-Key) gets that job, not a second one."""
    service = service_process(tmp_path, "local")
    store = None
    outcomes = []
    try:
        service.start()
        store = JobStore(f"sqlite:///{tmp_path / 'data' / 'trainorch.db'}")
        client = HTTPTransport(service.url, service.token, reconnect_for=120)
        # A large code package keeps the request in flight long enough to be cut.
        package = base64.b64encode(
            build_package(files={"weights.bin": os.urandom(6 << 20)})
        ).decode()
        for attempt in range(8):
            key = f"lost-answer-{attempt}"
            answer: dict = {}
            thread = threading.Thread(target=lambda k=key, a=answer: a.update(client.submit(
                {"template": "command", "params": {"cmd": "true"}, "package": package}, idempotency_key=k
            )))  # fmt: skip
            thread.start()
            stored = wait_until(lambda k=key: store.find_by_idempotency_key(_user(), k), timeout=60,
                                what="the job to be stored")  # fmt: skip
            answered_before_kill = bool(answer)
            service.signal(signal.SIGKILL)
            service.start()
            thread.join(timeout=120)
            assert answer["id"] == stored.id
            assert store.count_jobs() == attempt + 1
            outcomes.append(answered_before_kill)
            if not answered_before_kill:
                break
    finally:
        if store is not None:
            store.close()
        service.stop()
        stop_services_under(tmp_path)
    print(f"\nkills after the job was stored: {len(outcomes)}; answers lost at the kill: "
          f"{outcomes.count(False)}")  # fmt: skip
    assert False in outcomes, "no kill landed between storing a job and answering"


def _user() -> str:
    import getpass

    return getpass.getuser()


@pytest.mark.timeout(300)
def test_a_lost_local_cluster_is_replaced_and_its_jobs_run_again(tmp_path, monkeypatch):
    """The local cluster process dies: the service ends (it cannot dispatch any more); the
    next client call starts a new service and cluster, and the job runs again there."""
    from jupyter_trainorch.client.transport import connect
    from jupyter_trainorch.processes import stop_process

    data = tmp_path / "trainorch-data"  # the test's own (conftest), cleaned up after it
    for name, value in (("TRAINORCH_WORKERS", "1"), ("TRAINORCH_GPUS_PER_WORKER", "1"),
                        ("TRAINORCH_MLFLOW", "off")):  # fmt: skip
        monkeypatch.setenv(name, value)
    marker = tmp_path / "marker"
    client = connect()
    job = client.submit({"template": "python-cell", "name": "survivor", "source": MARKED,
                         "params": {"marker": str(marker), "lines": 100, "pause": 0.1}})  # fmt: skip
    wait_until(lambda: client.logs(job["id"])["lines"], what="the job to run")
    service, cluster = read_runtime(data), json.loads((data / "cluster.json").read_text())
    stop_process(cluster["pid"], grace=5)
    wait_until(lambda: not pid_alive(service.pid), timeout=60, what="the service to end")
    done = client.wait(job["id"], timeout=120)  # a new service, started by this client
    assert read_runtime(data).pid != service.pid
    assert done["state"] == "succeeded" and done["reexecutions"] == 1, done["attempts"]
    assert [a["infrastructure"] for a in done["attempts"]] == [True, False]
