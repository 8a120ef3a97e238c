"""The ``trainorch`` command: run the orchestrator standalone and manage jobs from a shell.

Only the standard library is imported up front so ``trainorch --help`` and argument
errors are instant; each command imports what it needs. Job commands reach the
orchestrator the same way kernels do (``connect()``): ``TRAINORCH_URL``, else the
lease holder's URL, else an orchestrator started inside this process.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable
from typing import Any

PROG = "trainorch"
FINAL_STATES = ("succeeded", "failed", "cancelled")

# Exit codes: a job command that failed because of the user's input or the server's
# answer is 2, like an argparse usage error; 1 is kept for "the job itself failed".
EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2


# -- helpers ---------------------------------------------------------------------------------


def _transport() -> Any:
    from .client.transport import connect

    return connect()


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _when(stamp: str | None) -> str:
    """An ISO UTC time from the job JSON, shown in local time to the second."""
    if not stamp:
        return "-"
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _percent(progress: dict[str, Any] | None) -> str:
    fraction = (progress or {}).get("fraction")
    return "-" if fraction is None else f"{fraction * 100:.0f}%"


def _priority(job: dict[str, Any]) -> str:
    return str(job.get("priority_class") or job.get("priority"))


def _attempts(job: dict[str, Any]) -> str:
    return f"{len(job.get('attempts') or [])}/{int(job.get('max_retries') or 0) + 1}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _print_logs(lines: list[dict[str, Any]], shown: list[int | None], per_attempt: bool) -> None:
    """Print log lines, marking where a new attempt starts when all attempts are shown."""
    for line in lines:
        if per_attempt and line["attempt"] != shown[0]:
            if shown[0] is not None:
                print(f"--- attempt {line['attempt']} ---")
            shown[0] = line["attempt"]
        print(line["text"])
    sys.stdout.flush()


# -- commands --------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from .api.extension import TrainOrchApp

    # A standalone orchestrator is a headless service: no browser unless asked for.
    TrainOrchApp.launch_instance(argv=["--ServerApp.open_browser=False", *rest])
    return EXIT_OK


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "gpus": args.gpus,
        "cpus": args.cpus,
        "memory": args.memory,
        "priority": args.priority,
        "retries": args.retries,
        "timeout": args.timeout,
        "experiment": args.experiment,
    }
    return {key: value for key, value in flags.items() if value is not None}


def cmd_submit(args: argparse.Namespace) -> int:
    from .client.job import Job
    from .package import build_package, template_files
    from .spec import SpecError, TemplateRegistry, default_user, parse_set_values, render_spec

    if args.file and args.template:
        raise SpecError("give either a template FILE or --template NAME, not both")
    if not args.file and not args.template:
        raise SpecError("give a template FILE or --template NAME (see: trainorch templates list)")
    params = parse_set_values(args.set or [])
    overrides = _overrides(args)
    depends_on = list(args.after or [])
    user = default_user()
    if args.file:
        # Rendered here, where the file and its relative inputs are, not on the server.
        template = TemplateRegistry().load_file(args.file)
        spec = render_spec(
            template,
            params=params,
            overrides=overrides,
            depends_on=depends_on,
            workdir=os.getcwd(),
            user=user,
            name=args.name,
        )
        body: dict[str, Any] = {"spec": spec.to_dict()}
        files = template_files(template)
        if files:
            body["package"] = base64.b64encode(build_package(files=files)).decode()
    else:
        body = {
            "template": args.template,
            "params": params,
            "overrides": overrides,
            "depends_on": depends_on,
            "workdir": os.getcwd(),
            "user": user,
        }
        if args.name is not None:
            body["name"] = args.name
    transport = _transport()
    info = transport.submit(body)
    job = Job(info["id"], transport, info)
    if not args.wait:
        if args.json:
            _print_json(info)
        else:
            print(job.id)
        return EXIT_OK
    if args.json:
        # Logs go to stderr so stdout stays one parseable JSON document.
        job.follow(out=sys.stderr)
        final = job.refresh()
        _print_json(final)
    else:
        print(job.id, flush=True)
        job.follow(out=sys.stdout)
        final = job.refresh()
    if final["state"] == "succeeded":
        return EXIT_OK
    reason = f": {final['error']}" if final.get("error") else ""
    print(f"{PROG}: job {job.id} {final['state']}{reason}", file=sys.stderr)
    return EXIT_JOB_FAILED


def cmd_list(args: argparse.Namespace) -> int:
    listing = _transport().list(state=args.state, user=args.user, limit=args.limit)
    if args.json:
        _print_json({"jobs": listing["jobs"], "total": listing["total"]})
        return EXIT_OK
    headers = ["ID", "NAME", "USER", "STATE", "PRIORITY", "GPUS", "ATTEMPTS", "PROGRESS", "CREATED"]
    rows = [
        [
            str(job["id"]),
            str(job["name"]),
            str(job["user"]),
            str(job["state"]),
            _priority(job),
            str(job["resources"]["gpus"]),
            _attempts(job),
            _percent(job.get("progress")),
            _when(job.get("created")),
        ]
        for job in listing["jobs"]
    ]
    if not rows:
        print("no jobs")
    else:
        print(_table(headers, rows))
    if listing["total"] > len(rows) and rows:
        print(
            f"({len(rows)} of {listing['total']} jobs shown; use --limit for more)", file=sys.stderr
        )
    return EXIT_OK


def _summary(job: dict[str, Any]) -> str:
    resources = job.get("resources") or {}
    parts = [f"{resources.get('gpus', 0)} GPU", f"{resources.get('cpus', 1):g} CPU"]
    if resources.get("memory"):
        parts.append(f"{resources['memory']} bytes of memory")
    template = job.get("template") or {}
    lines = [
        f"job {job['id']}  {job['name']}",
        f"  state:      {job['state']}",
        f"  user:       {job['user']}",
        f"  priority:   {_priority(job)} ({job.get('priority')})",
        f"  resources:  {', '.join(parts)}",
    ]
    if template.get("name"):
        lines.append(f"  template:   {template['name']} (version {template.get('version')})")
    if job.get("depends_on"):
        lines.append(f"  after:      {', '.join(job['depends_on'])}")
    progress = job.get("progress") or {}
    if progress.get("fraction") is not None or progress.get("step") is not None:
        text = _percent(progress)
        if progress.get("step") is not None:
            total = f"/{progress['total']}" if progress.get("total") is not None else ""
            text += f" (step {progress['step']}{total})"
        if progress.get("message"):
            text += f" {progress['message']}"
        lines.append(f"  progress:   {text}")
    lines.append(
        f"  created:    {_when(job.get('created'))}   started: {_when(job.get('started'))}"
        f"   ended: {_when(job.get('ended'))}"
    )
    if job.get("error"):
        lines.append(f"  error:      {job['error']}")
    mlflow = job.get("mlflow") or {}
    if mlflow.get("url") or mlflow.get("run_id"):
        lines.append(f"  mlflow:     {mlflow.get('url') or mlflow.get('run_id')}")
    attempts = job.get("attempts") or []
    lines.append(f"  attempts:   {_attempts(job)}")
    for attempt in attempts:
        gpus = ",".join(str(g) for g in attempt.get("gpu_ids") or []) or "-"
        exit_code = attempt.get("exit_code")
        entry = (
            f"    #{attempt['n']} {attempt['state']}  worker {attempt.get('worker') or '-'}"
            f"  gpus {gpus}  exit {'-' if exit_code is None else exit_code}"
        )
        if attempt.get("error"):
            entry += f"  error: {attempt['error']}"
        lines.append(entry)
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    job = _transport().get(args.id)
    if args.json:
        _print_json(job)
    else:
        print(_summary(job))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    transport = _transport()
    if args.follow:
        from .client.job import Job

        Job(args.id, transport).follow(out=sys.stdout, attempt=args.attempt)
        return EXIT_OK
    after, shown = 0, [None]
    while True:
        chunk = transport.logs(args.id, attempt=args.attempt, after=after)
        _print_logs(chunk["lines"], shown, per_attempt=args.attempt is None)
        if not chunk["lines"] or chunk["next"] == after:
            return EXIT_OK
        after = chunk["next"]


CANCEL_WAIT = 30.0


def cmd_cancel(args: argparse.Namespace) -> int:
    transport = _transport()
    job = transport.cancel(args.id)
    if job["state"] not in FINAL_STATES:
        # A running attempt is stopped asynchronously (SIGTERM, grace, SIGKILL); answering
        # "running" would read as if the cancel had been ignored.
        job = transport.wait(args.id, timeout=CANCEL_WAIT)
    print(f"job {job['id']}: {job['state']}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    job = _transport().retry(args.id)
    print(f"job {job['id']}: {job['state']}")
    return EXIT_OK


def cmd_rerun(args: argparse.Namespace) -> int:
    job = _transport().rerun(args.id)
    print(job["id"])
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .client.export import export_job

    transport = _transport()
    job = transport.get(args.id)
    for path in export_job(job, transport.package(args.id), Path(args.dir)):
        print(path)
    return EXIT_OK


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the tracking store jobs log to (default: SQLite next to the job store)."""
    import subprocess

    from .orchestrator import OrchestratorConfig
    from .tracking import tracking_uri

    config = OrchestratorConfig.from_env()
    uri = tracking_uri(config.mlflow, config.data_dir)
    if uri is None:
        from .spec.errors import SpecError

        raise SpecError("tracking is off (TRAINORCH_MLFLOW=off); there is no MLflow store to show")
    if uri.startswith(("http://", "https://")):
        print(f"{PROG}: jobs are tracked on the MLflow server at {uri}; open it there")
        return EXIT_OK
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", args.host, "--port", str(args.port)]  # fmt: skip
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port}", flush=True)
    return subprocess.call(command)


def cmd_templates_list(args: argparse.Namespace) -> int:
    from .spec import TemplateRegistry

    registry = TemplateRegistry()
    templates = registry.list()
    rows = [[t.name, t.kind, t.description] for t in templates]
    print(_table(["NAME", "KIND", "DESCRIPTION"], rows))
    # Each sentence already names its file; sorting by path keeps the order stable.
    for _path, error in sorted(registry.errors.items()):
        print(f"{PROG}: skipped: {error}", file=sys.stderr)
    return EXIT_OK


def cmd_templates_show(args: argparse.Namespace) -> int:
    import yaml

    from .spec import TemplateRegistry

    template = TemplateRegistry().get(args.name)
    print(yaml.safe_dump(template.to_dict(), sort_keys=False, allow_unicode=True), end="")
    return EXIT_OK


def cmd_templates_validate(args: argparse.Namespace) -> int:
    from .spec import SpecError, TemplateRegistry

    registry = TemplateRegistry()
    status = EXIT_OK
    for path in args.files:
        try:
            registry.load_file(path)
        except SpecError as err:
            print(str(err), file=sys.stderr)
            status = EXIT_JOB_FAILED
        else:
            print(f"{path}: ok")
    return status


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run notebook code and commands as prioritised, retried training jobs.",
    )
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND")
    verbs.required = True

    def verb(name: str, handler: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    verb(
        "serve",
        cmd_serve,
        "Run the orchestrator and its REST API as a standalone Jupyter server "
        "(other arguments go to jupyter_server, e.g. --port 8765).",
    )

    submit = verb("submit", cmd_submit, "Submit a job from a template file or a named template.")
    submit.add_argument("file", nargs="?", metavar="FILE", help="a YAML template file")
    submit.add_argument("--template", "-t", metavar="NAME", help="a template the server knows")
    submit.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a template param (repeatable)"
    )
    submit.add_argument("--gpus", metavar="N")
    submit.add_argument("--cpus", metavar="N")
    submit.add_argument("--memory", metavar="SIZE", help="e.g. 16GB")
    submit.add_argument("--priority", metavar="P", help="low, normal, high, urgent or a number")
    submit.add_argument("--retries", metavar="N")
    submit.add_argument("--timeout", metavar="DURATION", help="e.g. 90m or 2h")
    submit.add_argument("--experiment", metavar="NAME", help="MLflow experiment of the job")
    submit.add_argument(
        "--after", action="append", metavar="ID", help="run after this job succeeds (repeatable)"
    )
    submit.add_argument("--name", metavar="NAME", help="the job's name")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="print the logs until the job ends; exit 1 unless it succeeded",
    )
    submit.add_argument("--json", action="store_true", help="print the job as JSON")

    listing = verb("list", cmd_list, "List jobs, newest first.")
    listing.add_argument("--state", metavar="S", help="only jobs in these states (comma-separated)")
    listing.add_argument("--user", metavar="U", help="only this user's jobs")
    listing.add_argument("--limit", type=int, default=100, metavar="N")
    listing.add_argument("--json", action="store_true", help='print {"jobs": [...], "total": n}')

    status = verb("status", cmd_status, "Show one job: state, attempts, progress.")
    status.add_argument("id", metavar="ID")
    status.add_argument("--json", action="store_true", help="print the job as JSON")

    logs = verb("logs", cmd_logs, "Print a job's log lines.")
    logs.add_argument("id", metavar="ID")
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing until the job ends"
    )
    logs.add_argument("--attempt", type=int, metavar="N", help="only this attempt's lines")

    verb("cancel", cmd_cancel, "Cancel a job and wait until it has stopped.").add_argument(
        "id", metavar="ID"
    )
    verb("retry", cmd_retry, "Run a finished job again.").add_argument("id", metavar="ID")
    verb("rerun", cmd_rerun, "Submit a new job with this job's exact spec and code.").add_argument(
        "id", metavar="ID"
    )
    export = verb("export", cmd_export, "Write a job as a standalone template and script.")
    export.add_argument("id", metavar="ID")
    export.add_argument("--dir", default=".", metavar="DIR", help="where to write (default: here)")
    mlflow_ui = verb("mlflow-ui", cmd_mlflow_ui, "Open the MLflow UI on the jobs' tracking store.")
    mlflow_ui.add_argument("--host", default="127.0.0.1")
    mlflow_ui.add_argument("--port", type=int, default=5000)

    templates = verbs.add_parser("templates", help="List, show or check job templates.")
    actions = templates.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    actions.add_parser("list", help="the templates this machine knows").set_defaults(
        handler=cmd_templates_list
    )
    show = actions.add_parser("show", help="one template, resolved, as YAML")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=cmd_templates_show)
    validate = actions.add_parser("validate", help="check template files")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(handler=cmd_templates_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        return cmd_serve(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    from .client.transport import TrainOrchError
    from .spec.errors import SpecError

    try:
        return args.handler(args)
    except (TrainOrchError, SpecError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # ``trainorch logs ID | head``: the reader left; say nothing more to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
