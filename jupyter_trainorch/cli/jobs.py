"""Job verbs: submit, list, status, logs, cancel, retry, rerun, export."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..contract.states import TERMINAL_STATES as FINAL_STATES
from .common import (
    EXIT_JOB_FAILED,
    EXIT_OK,
    PROG,
    _attempts,
    _percent,
    _print_json,
    _print_logs,
    _priority,
    _table,
    _transport,
    _when,
)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {
        "gpus": args.gpus,
        "nodes": args.nodes,
        "cpus": args.cpus,
        "memory": args.memory,
        "priority": args.priority,
        "retries": args.retries,
        "timeout": args.timeout,
        "experiment": args.experiment,
    }
    chosen: dict[str, Any] = {key: value for key, value in flags.items() if value is not None}
    if args.secret_env:
        from ..spec import parse_secret_pairs

        chosen["secret_env"] = parse_secret_pairs(args.secret_env)
    from ..spec.data import flag_overrides

    chosen.update(flag_overrides(args.data, args.artifact))
    return chosen


def cmd_submit(args: argparse.Namespace) -> int:
    from ..client.job import Job
    from ..spec import SpecError, parse_set_values

    if args.file and args.template:
        raise SpecError("give either a template FILE or --template NAME, not both")
    if not args.file and not args.template:
        raise SpecError("give a template FILE or --template NAME (see: trainorch templates list)")
    params = parse_set_values(args.set or [])
    overrides = _overrides(args)
    from ..spec.dependencies import conditional

    depends_on = list(args.after or [])
    dependencies = conditional(args.after_any, args.after_notok)
    if args.file:
        from ..client.file_request import template_file_request

        # Rendered here, where the file and its relative inputs are, not on the server.
        body: dict[str, Any] = template_file_request(
            args.file,
            params=params,
            overrides=overrides,
            depends_on=depends_on,
            dependencies=dependencies,
            workdir=os.getcwd(),
            name=args.name,
        )
    else:
        body = {
            "template": args.template,
            "params": params,
            "overrides": overrides,
            "depends_on": depends_on,
            "dependencies": dependencies,
            "workdir": os.getcwd(),
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
        conditions = {d["job_id"]: d["when"] for d in job.get("dependencies") or []}
        after = [f"{d} ({conditions[d]})" if conditions.get(d, "ok") != "ok" else d
                 for d in job["depends_on"]]  # fmt: skip
        lines.append(f"  after:      {', '.join(after)}")
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
    if job.get("reexecutions"):
        lines.append(
            f"  re-run:     {job['reexecutions']} time(s) after a lost worker or a stopped service"
        )
    from ..client.job import schedule_text

    schedule = schedule_text(job)
    if schedule:
        label = "waiting:" if job.get("queue_position") or job.get("wait_reason") else "expected:"
        lines.append(f"  {label:<12}{schedule}")
    if job.get("restricted"):
        lines.append("  (another user's job: only its owner and admins see its details)")
    for attempt in attempts:
        gpus = ",".join(str(g) for g in attempt.get("gpu_ids") or []) or "-"
        exit_code = attempt.get("exit_code")
        entry = (
            f"    #{attempt['n']} {attempt['state']}{' (infrastructure)' if attempt.get('infrastructure') else ''}"
            f"  worker {attempt.get('worker') or '-'}"
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
        from ..client.job import Job

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

    from ..client.export import export_job

    transport = _transport()
    if args.format == "airflow":
        from ..client.airflow_dag import export_airflow

        for path in export_airflow(
            transport, args.id, Path(args.dir), args.dag_id, args.connection
        ):
            print(path)
        return EXIT_OK
    job = transport.get(args.id)
    package = transport.package(args.id)
    if args.format == "template":
        written = export_job(job, package, Path(args.dir))
    else:
        from ..client.kubeflow import export_kubeflow

        written = export_kubeflow(
            job, package, Path(args.dir), args.format, image=args.image, secret=args.secret,
            runtime=args.runtime,
        )  # fmt: skip
    for path in written:
        print(path)
    return EXIT_OK
