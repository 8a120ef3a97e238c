"""Verbs about services: the trainorch service itself and the MLflow UI."""

from __future__ import annotations

import argparse
import socket
import time

from .common import EXIT_ERROR, EXIT_OK, PROG


def cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from ..api.service_app import TrainOrchServiceApp

    argv = ["--TrainOrchServiceApp.hub=True" if arg == "--hub" else arg for arg in rest]
    TrainOrchServiceApp.launch_instance(argv=argv)
    return EXIT_OK


def _own_service() -> object:
    from ..service import find_service
    from ..settings import TrainOrch

    return find_service(TrainOrch().to_config().data_dir)


def cmd_service_status(args: argparse.Namespace) -> int:
    import json

    from ..client.transport import connect

    status = connect().service_status() if _reachable() else None
    if status is None:
        print("no trainorch service is running for this data folder")
        return EXIT_ERROR
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    recovery = status.get("recovery") or {}
    lines = [
        f"pid {status['pid']}, up {_duration(status['uptime'])}, {status['mode']} mode",
        f"store: {status['store']}",
        f"cluster: {status['cluster']['kind']} {status['cluster']['address']}, "
        f"{status['workers']} worker(s), GPUs {status['gpus']['busy']}/{status['gpus']['total']} busy",
        f"jobs: {status['running']} running, {status['queued']} queued"
        + (" (draining)" if status.get("draining") else ""),
        f"at its start: {recovery.get('adopted', 0)} attempt(s) adopted, "
        f"{recovery.get('collected', 0)} collected, {recovery.get('lost', 0)} lost",
        f"bodies run again after a restart or lost worker: {status['reexecutions']}",
    ]
    print("\n".join(lines))
    return EXIT_OK


def _reachable() -> bool:
    """A service is there to ask: configured (kernel, terminal, hub) or found (never started)."""
    import os

    return bool(
        os.environ.get("TRAINORCH_URL") or os.environ.get("TRAINORCH_SERVICE_URL") or _own_service()
    )


def cmd_service_stop(args: argparse.Namespace) -> int:
    from ..client.transport import connect

    if not _reachable():
        print("no trainorch service is running for this data folder")
        return EXIT_OK
    from ..processes import pid_alive

    transport = connect()
    status = transport.service_status()
    answer = transport.stop_service(force=args.force, drain=args.drain)
    if answer.get("draining"):
        print(f"draining: the service stops once its {answer['draining']} running job(s) end")
        return EXIT_OK
    # Its local cluster and running jobs stop first; then the process ends.
    local = status.get("host") == socket.gethostname()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (
        pid_alive(status["pid"]) if local else transport.answers()
    ):
        time.sleep(0.2)
    print(f"stopped the trainorch service (pid {status['pid']})")
    return EXIT_OK


def cmd_quota(args: argparse.Namespace) -> int:
    """Your quota on the service you use, and what your jobs use of it now."""
    import json

    from ..client.transport import connect

    me = connect().me()
    quota = me.get("quota") or {}
    if args.json:
        print(json.dumps({"user": me.get("name"), **quota}, indent=2))
        return EXIT_OK

    def limit(value: object) -> str:
        return "no limit" if value is None else str(value)

    print(f"quota of {me.get('name')}:")
    print(f"  GPUs held at once:  {quota.get('gpus_held', 0)} of {limit(quota.get('gpus'))}")
    print(f"  jobs waiting:       {quota.get('waiting', 0)} of {limit(quota.get('queued'))}")
    for group in quota.get("groups") or []:
        print(f"quota of group {group['name']} (all its members together):")
        print(f"  GPUs held at once:  {group['gpus_held']} of {limit(group.get('gpus'))}")
        print(f"  jobs waiting:       {group['waiting']} of {limit(group.get('queued'))}")
    return EXIT_OK


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the tracking store jobs log to (default: SQLite next to the job store).

    One server worker (MLflow's default of four took ~20 s to start and is more than one
    person browsing needs), in its own process group, stopped as a whole on SIGTERM or
    Ctrl-C so that no worker outlives the command.
    """
    import signal
    import subprocess

    from ..processes import stop_process_group
    from ..settings import TrainOrch
    from ..tracking import tracking_uri, ui

    config = TrainOrch().to_config()
    uri = tracking_uri(config.mlflow, config.data_dir)
    if uri is None:
        from ..spec.errors import SpecError

        raise SpecError("tracking is off (TRAINORCH_MLFLOW=off); there is no MLflow store to show")
    if not ui.local_store(uri):
        print(f"{PROG}: jobs are tracked on the MLflow server at {uri}; open it there")
        return EXIT_OK
    config.data_dir.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not the folder
    command = ui.ui_command(uri, config.data_dir, args.host, args.port)
    server = subprocess.Popen(command, env=ui.ui_environment(), start_new_session=True)
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    url = f"http://{host}:{args.port}/"
    try:
        print(f"starting the MLflow UI for {uri} …", flush=True)
        answered = False
        while not stopping and server.poll() is None:
            if not answered and _answers(url):
                answered = True
                print(f"MLflow UI at {url}", flush=True)
            time.sleep(0.2 if not answered else 0.5)
        if not stopping:
            # It ended by itself (its own error, e.g. a port in use, is above).
            print(f"{PROG}: the MLflow UI stopped (exit code {server.returncode})")
            return EXIT_ERROR
        return EXIT_OK
    finally:
        stop_process_group(server.pid)
        server.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
