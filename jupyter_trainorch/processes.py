"""Processes on this machine: is one alive, and ending one we started."""

from __future__ import annotations

import os
import signal
import time


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, which holds nothing, counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's, and alive
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust kill(0)


def stop_process(pid: int, grace: float = 20.0) -> None:
    """SIGTERM; after ``grace`` seconds SIGKILL to the process group it leads."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies, which hold nothing, left out)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc: trust killpg(0)
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                state, _ppid, group = stat.read().rsplit(")", 1)[-1].split()[:3]
        except (OSError, ValueError):
            continue  # ended while we looked
        if int(group) == pgid and state != "Z":
            return True
    return False


def stop_process_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM to every process of the group, SIGKILL to what is left after ``grace``
    seconds: a server's workers end with it, whichever of them ignores SIGTERM."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# Linux shares the CPU between sessions before it shares it between their processes
# ("autogroup"): the service's session, the cluster's and each job's get equal parts. Jobs
# come first: the service's session, when it has one of its own, yields this much.
SERVICE_SESSION_NICE = 2


def yield_cpu_to_jobs(nice: int = SERVICE_SESSION_NICE) -> bool:
    """Lower the CPU priority of the session this process leads below a job's; a session
    it does not lead (a terminal's) is left alone. True when the priority was lowered."""
    if not hasattr(os, "getsid") or os.getsid(0) != os.getpid():
        return False
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:  # not Linux, or a kernel without session groups
        return False
    return True
