"""Job processes forked by the worker's zygote, on a real orchestrator and local cluster.

Each test on the cluster first makes sure the worker's zygote is ready (the first attempt on
a worker starts it and runs as a fresh interpreter), then proves that its job was forked by
it: the job's parent is the zygote, whose parent is the worker. The last test drives the
worker's side of the zygote in this process, without Dask.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cloudpickle
import pytest
from conftest import log_text, pid_alive, submit, wait_final, wait_until

from jupyter_trainorch.processes import group_alive
from jupyter_trainorch.runner.names import PROGRESS_FD_ENV, REQUEST_FILE
from jupyter_trainorch.runner.zygote_client import zygote_pid
from jupyter_trainorch.spec import Resources

REPOSITORY = Path(__file__).resolve().parents[1]

WHO_AM_I = """
import os, jupyter_trainorch
print("parent", os.getppid(), flush=True)
print("package", jupyter_trainorch.__file__, flush=True)
"""


@pytest.fixture(scope="module")
def host(host_factory):
    return host_factory(workers=1, gpus_per_worker=2, mlflow="off")


def worker_of(host) -> tuple[str, int]:
    """The address and pid of the host's only worker process."""
    [(address, pid)] = host.call(lambda o: o.backend.client.run(os.getpid)).items()
    return address, pid


def zygote_pid_of(host) -> int | None:
    """The pid of the worker's zygote while it is ready to fork."""
    [pid] = host.call(lambda o: o.backend.client.run(zygote_pid)).values()
    return pid


def ready_zygote(host) -> int:
    """The pid of the worker's zygote, once it can fork (a first job starts it)."""
    if zygote_pid_of(host) is None:
        wait_final(host, submit(host, name="starts-the-zygote", source="pass"))
    pid = wait_until(lambda: zygote_pid_of(host), timeout=30, what="the worker's zygote")
    return int(pid)  # type: ignore[call-overload]


def values(host, job_id: str, label: str) -> list[str]:
    return [t[len(label) + 1 :] for t in log_text(host, job_id) if t.startswith(label + " ")]


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def test_a_job_runs_in_a_process_forked_by_the_zygote_of_its_worker(host):
    zygote = ready_zygote(host)
    _, worker = worker_of(host)
    assert parent_of(zygote) == worker
    with open(f"/proc/{zygote}/cmdline", "rb") as cmdline:
        assert b"jupyter_trainorch.runner.zygote" in cmdline.read()
    job = wait_final(host, submit(host, name="forked", source=WHO_AM_I))
    assert job.state == "succeeded"
    assert values(host, job.id, "parent") == [str(zygote)]
    # The worker (and so the zygote and the job) imports this checkout's package.
    [package] = values(host, job.id, "package")
    assert Path(package).resolve().is_relative_to(REPOSITORY)


SHOW_ENVIRONMENT = """
import os
print("parent", os.getppid(), flush=True)
print("secrets", sorted(k for k in os.environ if k.startswith("ZYGOTE_SECRET")), flush=True)
print("secret matches", os.environ.get(mine) == expected, flush=True)
print("plain", os.environ.get("PLAIN"), flush=True)
print("cwd", os.getcwd(), flush=True)
print("gpus", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
print("progress fd open", os.fstat(int(os.environ["TRAINORCH_PROGRESS_FD"])).st_mode > 0, flush=True)
"""


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of ``pid`` holds ``needle``."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                found = found or needle in mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue  # a mapping that cannot be read ([vvar], [vsyscall])
    return found


def test_each_job_gets_its_own_environment_folder_and_gpus_and_none_leaks(host, tmp_path):
    zygote = ready_zygote(host)
    secrets = {"alpha": "alpha-zygote-secret-1", "beta": "beta-zygote-secret-2"}
    jobs = {}
    for name, gpus in (("alpha", 1), ("beta", 0)):
        folder = tmp_path / name
        folder.mkdir()
        key = f"ZYGOTE_SECRET_{name.upper()}"
        jobs[name] = wait_final(host, submit(
            host, name=name, source=SHOW_ENVIRONMENT, workdir=str(folder),
            params={"mine": key, "expected": secrets[name]}, env={"PLAIN": f"plain-{name}"},
            secret_env={key: secrets[name]}, resources=Resources(gpus=gpus),
        ))  # fmt: skip
    for name, job in jobs.items():
        assert job.state == "succeeded", log_text(host, job.id)
        assert values(host, job.id, "parent") == [str(zygote)]
        assert values(host, job.id, "secrets") == [f"['ZYGOTE_SECRET_{name.upper()}']"]
        assert values(host, job.id, "secret matches") == ["True"]
        assert values(host, job.id, "plain") == [f"plain-{name}"]
        assert values(host, job.id, "cwd") == [str(tmp_path / name)]
        assert values(host, job.id, "gpus") == [",".join(job.attempts[0].gpu_ids)]
        assert values(host, job.id, "progress fd open") == ["True"]
    assert values(host, jobs["alpha"].id, "gpus") != [""]
    assert values(host, jobs["beta"].id, "gpus") == [""]
    # The zygote never held a job's environment: its memory has neither secret.
    try:
        leaked = [n for n, s in secrets.items() if _memory_holds(zygote, s.encode())]
    except PermissionError:
        pytest.skip("this system does not let a process read another's memory")
    assert leaked == []
    assert _memory_holds(os.getpid(), secrets["alpha"].encode())  # the search finds what is there


GROUP_THAT_SLEEPS = """
import os, subprocess, time
sleeper = subprocess.Popen(["sleep", "300"])
print("parent", os.getppid(), flush=True)
print("pids", os.getpid(), sleeper.pid, flush=True)
time.sleep(300)
"""


def test_cancel_ends_the_forked_process_and_its_whole_group(host):
    zygote = ready_zygote(host)
    job_id = submit(host, name="cancelled", source=GROUP_THAT_SLEEPS)
    pids = wait_until(lambda: values(host, job_id, "pids"), what="the job's pids")
    child, sleeper = (int(p) for p in pids[0].split())
    assert values(host, job_id, "parent") == [str(zygote)]
    assert os.getpgid(sleeper) == child  # the job's process leads its group
    host.call(lambda o: o.cancel(job_id))
    job = wait_final(host, job_id)
    assert job.state == "cancelled"
    wait_until(lambda: not group_alive(child), timeout=10, what="the job's group to end")
    assert not pid_alive(sleeper)
    assert zygote_pid_of(host) == zygote  # the zygote serves on


def test_exit_codes_and_outputs_come_back_from_forked_processes(host):
    zygote = ready_zygote(host)
    cases = {
        "exits-4": ("python", "import sys; sys.exit(4)", "", 4),
        "killed": ("python", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "", -9),
        "raises": ("python", "raise ValueError('no')", "", 1),
        "command": ("command", "", "echo from the shell; exit 5", 5),
    }
    ids = {}
    for name, (kind, source, command, _) in cases.items():
        ids[name] = submit(host, name=name, kind=kind, source=source, command=command)
    answer = submit(host, name="answer", source="import os\nparent = os.getppid()\nanswer = 42",
                    outputs=["answer", "parent"])  # fmt: skip
    for name, (_, _, _, code) in cases.items():
        job = wait_final(host, ids[name])
        assert job.state == "failed" and job.attempts[0].exit_code == code, (name, job.attempts)
    assert "from the shell" in log_text(host, ids["command"])
    assert "ValueError: no" in "\n".join(log_text(host, ids["raises"]))
    assert wait_final(host, answer).state == "succeeded"
    assert cloudpickle.loads(host.store.get_outputs(answer)) == {"answer": 42, "parent": zygote}


ENDS_LIKE_A_FRESH_PROCESS = """
import atexit, os, sys, threading, time
print("parent", os.getppid(), flush=True)
left_open = open(os.path.join(folder, "left-open.txt"), "w")
left_open.write("written, never closed")
class Cycle:
    def __init__(self):
        self.me = self
    def __del__(self):
        print("collected", flush=True)
kept = Cycle()  # garbage only once the globals go at exit
atexit.register(lambda: print("atexit ran", flush=True))
def late():
    time.sleep(0.3)
    print("thread joined")
threading.Thread(target=late).start()
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(2)  # left open: its idle workers are not daemons
pool.submit(print, "pooled").result()
sys.stdout.write("buffered, no newline")
"""


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "fresh"])
def test_a_forked_job_ends_as_a_fresh_process_would(host, tmp_path, forked):
    """The forked process skips tearing down the zygote's heap, not what the job made: its
    thread is joined, its atexit handlers run, its cycles collected, its buffered output
    delivered and the file it left open flushed, as in a fresh interpreter."""
    zygote = ready_zygote(host)
    _, worker = worker_of(host)
    env = {} if forked else {"PYTHONHASHSEED": "0"}  # read at start: a fresh interpreter
    job_id = submit(host, name="ends", source=ENDS_LIKE_A_FRESH_PROCESS, env=env,
                    params={"folder": str(tmp_path)})  # fmt: skip
    job = wait_final(host, job_id)
    assert job.state == "succeeded", job.attempts
    text = log_text(host, job_id)
    assert values(host, job_id, "parent") == [str(zygote if forked else worker)]
    assert text[1:] == ["pooled", "buffered, no newlinethread joined", "atexit ran", "collected"], (
        text
    )
    assert (tmp_path / "left-open.txt").read_text() == "written, never closed"


def test_a_job_that_sets_what_an_interpreter_reads_at_start_runs_fresh(host):
    ready_zygote(host)
    _, worker = worker_of(host)
    spec = {"name": "hash-seed", "env": {"PYTHONHASHSEED": "0"}, "source": WHO_AM_I}
    job = wait_final(host, submit(host, **spec))
    assert job.state == "succeeded"
    assert values(host, job.id, "parent") == [str(worker)]  # not forked: started by the worker


LONG_FIRST_ATTEMPT = """
import os, pathlib, time
print("parent", os.getppid(), flush=True)
print("pid", os.getpid(), flush=True)
marker = pathlib.Path(marker_path)
if not marker.exists():
    marker.write_text("first")
    time.sleep(300)
print("second attempt done", flush=True)
"""


def test_a_killed_zygote_fails_its_jobs_as_infrastructure_and_is_replaced(host, tmp_path):
    zygote = ready_zygote(host)
    job_id = submit(host, name="outlived", source=LONG_FIRST_ATTEMPT,
                    params={"marker_path": str(tmp_path / "marker")})  # fmt: skip
    pid = int(wait_until(lambda: values(host, job_id, "pid"), what="the job's pid")[0])
    assert values(host, job_id, "parent") == [str(zygote)]
    os.kill(zygote, signal.SIGKILL)
    job = wait_final(host, job_id, timeout=90)
    assert job.state == "succeeded"  # retried: not the job's fault
    first, second = job.attempts
    assert first.infrastructure and "zygote" in (first.error or ""), first
    assert not pid_alive(pid)
    _, worker = worker_of(host)

    def forked_by_a_new_zygote() -> bool:
        # Jobs run on (fresh interpreters until a new zygote is ready), then forked again.
        job = wait_final(host, submit(host, name="after", source=WHO_AM_I))
        assert job.state == "succeeded"
        [parent] = values(host, job.id, "parent")
        return int(parent) not in (worker, zygote) and int(parent) == zygote_pid_of(host)

    wait_until(forked_by_a_new_zygote, timeout=60, what="a job forked by a new zygote")


def test_a_lost_worker_takes_its_zygote_and_its_forked_jobs_with_it(host, tmp_path):
    zygote = ready_zygote(host)
    _, worker = worker_of(host)
    job_id = submit(host, name="orphan", source=LONG_FIRST_ATTEMPT,
                    params={"marker_path": str(tmp_path / "marker")})  # fmt: skip
    pid = int(wait_until(lambda: values(host, job_id, "pid"), what="the job's pid")[0])
    assert values(host, job_id, "parent") == [str(zygote)]
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not pid_alive(zygote), timeout=10, what="the zygote to end")
    wait_until(lambda: not pid_alive(pid), timeout=10, what="the forked job to end")
    job = wait_final(host, job_id, timeout=120)  # the nanny starts a new worker; it runs there
    assert job.state == "succeeded" and job.attempts[0].infrastructure


def test_a_zygote_that_does_not_answer_is_killed_and_the_job_starts_fresh(tmp_path, monkeypatch):
    """No Dask here: the worker's side of the zygote, in this process."""
    from jupyter_trainorch.runner import launch, zygote_client

    monkeypatch.setattr(zygote_client, "SPAWN_TIMEOUT", 0.5)
    attempt = tmp_path / "attempt"
    attempt.mkdir()
    request = {"kind": "python", "name": "unanswered", "source": "import os; print(os.getppid())"}
    (attempt / REQUEST_FILE).write_text(json.dumps(request))
    log = tmp_path / "zygote.log"
    try:
        zygote = wait_until(lambda: zygote_client.ready_zygote(launch.worker_environment(), log),
                            timeout=30, what="a zygote in this process")  # fmt: skip
        os.kill(zygote.process.pid, signal.SIGSTOP)
        read_end, write_end = os.pipe()
        env = {**launch.worker_environment(), PROGRESS_FD_ENV: str(write_end)}
        proc = launch.start_job_process(attempt, env, str(attempt), write_end)
        os.close(write_end)
        assert isinstance(proc, launch.FreshProcess)
        assert proc.stdout.read().decode().split() == [str(os.getpid())]
        assert proc.wait() == 0
        os.close(read_end)
        assert not pid_alive(zygote.process.pid)
        assert zygote_client.zygote_pid() is None
    finally:
        zygote_client.stop_zygote()
