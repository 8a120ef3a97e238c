"""Jobs come first for the CPU: a service that leads its own session lowers that session's
priority (Linux shares the CPU between sessions first); jobs keep the full priority."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import running_service, wait_until

from jupyter_trainorch.client.transport import HTTPTransport
from jupyter_trainorch.processes import SERVICE_SESSION_NICE

AUTOGROUP = Path("/proc/self/autogroup")
pytestmark = pytest.mark.skipif(
    not AUTOGROUP.exists(), reason="this kernel does not group the CPU by session"
)

# A process whose ancestors never started a session (a container's first process) sits in
# no session group: its autogroup file reads empty, shown here as "-".
PROBE = (
    "from jupyter_trainorch.processes import yield_cpu_to_jobs; print(yield_cpu_to_jobs()); "
    "print((open('/proc/self/autogroup').read().split() or ['-'])[-1])"
)
# What a job sees of its own priority: its session's and its own.
JOB_PRIORITY = (
    "import os; print('priority', open('/proc/self/autogroup').read().split()[-1], os.nice(0))"
)


def session_nice(pid: int | str) -> str:
    return (Path(f"/proc/{pid}/autogroup").read_text().split() or ["-"])[-1]


def test_only_a_process_leading_its_session_lowers_its_priority() -> None:
    led = subprocess.run(
        [sys.executable, "-c", PROBE], start_new_session=True, capture_output=True, text=True
    )
    assert led.stdout.split() == ["True", str(SERVICE_SESSION_NICE)], led.stderr
    # Started from a terminal, the service shares the terminal's session: left alone.
    ours = session_nice("self")
    shared = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert shared.stdout.split() == ["False", ours], shared.stderr
    assert session_nice("self") == ours


@pytest.mark.timeout(300)
def test_the_service_yields_the_cpu_and_its_jobs_do_not(tmp_path: Path) -> None:
    with running_service(tmp_path) as server:
        assert server.proc is not None
        client = HTTPTransport(server.url, server.token)
        job = client.submit({"spec": {"name": "priority", "source": JOB_PRIORITY}})
        done = client.wait(job["id"], timeout=120)
        assert done["state"] == "succeeded", done
        wait_until(lambda: session_nice(server.proc.pid) == str(SERVICE_SESSION_NICE),
                   what="the service's lower priority")  # fmt: skip
        text = [line["text"] for line in client.logs(job["id"])["lines"]]
    assert "priority 0 0" in text, text
