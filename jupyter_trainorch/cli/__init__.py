"""The ``trainorch`` command: run the orchestrator standalone and manage jobs from a shell.

Only the standard library is imported up front so ``trainorch --help`` and argument
errors are instant; each command imports what it needs. Job commands reach the
orchestrator the same way kernels do (``connect()``): ``TRAINORCH_URL``, else the
lease holder's URL, else an orchestrator started inside this process.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ..policy.preemption import DEFAULT_MIN_RUNTIME
from ..policy.simulate import DEFAULT_HALF_LIFE, POLICIES
from .common import EXIT_ERROR, EXIT_OK, PROG
from .jobs import (
    cmd_cancel,
    cmd_export,
    cmd_list,
    cmd_logs,
    cmd_rerun,
    cmd_retry,
    cmd_status,
    cmd_submit,
)
from .services import (
    cmd_mlflow_ui,
    cmd_quota,
    cmd_serve,
    cmd_service_status,
    cmd_service_stop,
)
from .simulate import cmd_simulate
from .templates import (
    cmd_templates_diff,
    cmd_templates_list,
    cmd_templates_migrate,
    cmd_templates_show,
    cmd_templates_validate,
)


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
        "Run the trainorch service (orchestrator, job store, REST API) in the foreground; "
        "--hub runs it as a JupyterHub managed service (other arguments go to jupyter_server, "
        "e.g. --port 8765).",
    )
    service = verbs.add_parser("service", help="Show or stop the trainorch service.")
    service_actions = service.add_subparsers(dest="action", metavar="ACTION")
    service_actions.required = True
    status_of = service_actions.add_parser("status", help="where it runs, its cluster and jobs")
    status_of.add_argument("--json", action="store_true")
    status_of.set_defaults(handler=cmd_service_status)
    stop = service_actions.add_parser(
        "stop",
        help="stop it (and the local cluster it started); running jobs need --force or --drain",
    )
    stop_how = stop.add_mutually_exclusive_group()
    stop_how.add_argument(
        "--force",
        action="store_true",
        help="stop running jobs too (they run again at the next start)",
    )
    stop_how.add_argument(
        "--drain", action="store_true", help="start no new job; stop once the running ones end"
    )
    stop.set_defaults(handler=cmd_service_stop)

    submit = verb("submit", cmd_submit, "Submit a job from a template file or a named template.")
    submit.add_argument("file", nargs="?", metavar="FILE", help="a YAML template file")
    submit.add_argument("--template", "-t", metavar="NAME", help="a template the server knows")
    submit.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a template param (repeatable)"
    )
    submit.add_argument("--gpus", metavar="N")
    submit.add_argument(
        "--nodes", metavar="K", help="workers to run on at once (ranks); --gpus etc. per node"
    )
    submit.add_argument("--cpus", metavar="N")
    submit.add_argument("--memory", metavar="SIZE", help="e.g. 16GB")
    submit.add_argument("--priority", metavar="P", help="low, normal, high, urgent or a number")
    submit.add_argument("--retries", metavar="N")
    submit.add_argument("--timeout", metavar="DURATION", help="e.g. 90m or 2h")
    submit.add_argument("--experiment", metavar="NAME", help="MLflow experiment of the job")
    submit.add_argument(
        "--after", action="append", metavar="ID", help="run after this job succeeds (repeatable)"
    )
    submit.add_argument(
        "--after-any", dest="after_any", action="append", default=[], metavar="ID",
        help="run after this job ends, however it ends (repeatable)",
    )  # fmt: skip
    submit.add_argument(
        "--after-notok", dest="after_notok", action="append", default=[], metavar="ID",
        help="run only if this job fails or is cancelled; cancelled if it succeeds (repeatable)",
    )  # fmt: skip
    submit.add_argument("--name", metavar="NAME", help="the job's name")
    submit.add_argument(
        "--secret-env", dest="secret_env", action="append", default=[], metavar="NAME[=VALUE]",
        help="a variable only the job sees (never shown, logged or tracked); NAME alone takes "
        "it from this environment (repeatable)",
    )  # fmt: skip
    submit.add_argument(
        "--data", action="append", default=[], metavar="NAME=URI",
        help="a data input: a path, s3://… or another fsspec URI, models:/NAME@alias, "
        "job:JOB/artifacts/PATH; its local path is in TRAINORCH_DATA_<NAME> (repeatable)",
    )  # fmt: skip
    submit.add_argument(
        "--artifact", action="append", default=[], metavar="[NAME=]PATH",
        help="a file or folder the job writes, logged to MLflow when it succeeds (repeatable)",
    )  # fmt: skip
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
    export.add_argument(
        "--format", default="template", choices=("template", "pytorchjob", "trainjob", "airflow"),
        help="template: a trainorch template and script (default); pytorchjob, trainjob: "
        "also a Kubeflow manifest that runs them; airflow: the job's pipeline (its group and "
        "the jobs it waits on) as an Airflow DAG file (docs/integrations.md)",
    )  # fmt: skip
    export.add_argument(
        "--dag-id", dest="dag_id", metavar="NAME",
        help="the DAG id of an airflow export (default: trainorch_<job name>)",
    )  # fmt: skip
    export.add_argument(
        "--connection", default="trainorch_default", metavar="CONN_ID",
        help="the Airflow connection to the trainorch service (default: trainorch_default)",
    )  # fmt: skip
    export.add_argument(
        "--image", metavar="IMAGE", help="the container image of a Kubeflow manifest "
        "(default: the template's image)",
    )  # fmt: skip
    export.add_argument(
        "--secret", metavar="NAME", help="the Kubernetes Secret holding the job's secret env "
        "values (default: <job>-secrets)",
    )  # fmt: skip
    export.add_argument(
        "--runtime", default="torch-distributed", metavar="NAME",
        help="the ClusterTrainingRuntime of a trainjob (default: torch-distributed)",
    )  # fmt: skip
    mlflow_ui = verb("mlflow-ui", cmd_mlflow_ui, "Open the MLflow UI on the jobs' tracking store.")
    mlflow_ui.add_argument("--host", default="127.0.0.1")
    mlflow_ui.add_argument("--port", type=int, default=5000)

    quota = verb("quota", cmd_quota, "Show your quota (GPUs at once, jobs waiting) and its use.")
    quota.add_argument("--json", action="store_true", help="print it as JSON")

    simulate = verb(
        "simulate",
        cmd_simulate,
        "Replay a job trace (CSV: job_id,num_gpu,submit_time,duration[,priority,user,timeout]) "
        "through the scheduling policy on a virtual clock and print JCT, queueing delay, "
        "utilisation, preemptions.",
    )
    simulate.add_argument("trace", metavar="TRACE.csv")
    simulate.add_argument(
        "--cluster", default="4x8", metavar="WORKERSxGPUS", help="e.g. 32x4 (default: 4x8)"
    )
    simulate.add_argument(
        "--policy", default="fair", choices=POLICIES,
        help="fair: what the service does (default), priority classes with fair share inside "
        "each; priority: without fair share; fifo: submission order only",
    )  # fmt: skip
    simulate.add_argument(
        "--half-life", dest="half_life", type=float, default=DEFAULT_HALF_LIFE, metavar="SECONDS",
        help="how fast past GPU use stops counting for fair share (default: 4 hours)",
    )  # fmt: skip
    simulate.add_argument(
        "--min-runtime", dest="min_runtime", type=float, default=DEFAULT_MIN_RUNTIME,
        metavar="SECONDS", help="how long a job runs before an urgent one may preempt it "
        "(default: 600)",
    )  # fmt: skip
    simulate.add_argument(
        "--checkpoint-every", dest="checkpoint_every", type=float, default=0.0,
        metavar="SECONDS", help="how often jobs save a checkpoint, which a preempted job "
        "resumes from (default: 0, never: it starts over)",
    )  # fmt: skip
    simulate.add_argument(
        "--no-preemption", dest="preemption", action="store_false",
        help="urgent jobs wait instead of preempting",
    )  # fmt: skip
    simulate.add_argument("--json", action="store_true", help="print the figures as JSON")
    simulate.add_argument("--plot", metavar="OUT.png", help="GPUs busy and queue length over time")

    templates = verbs.add_parser(
        "templates", help="List, show, check, compare or migrate job templates."
    )
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
    compare = actions.add_parser(
        "diff", help="two templates, resolved, as a unified diff (exit 0: the same, 1: they "
        "differ); each a NAME, a FILE, or NAME@COMMIT / FILE@COMMIT from its git repository",
    )  # fmt: skip
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")
    compare.set_defaults(handler=cmd_templates_diff)
    migrate = actions.add_parser(
        "migrate", help="print a template file in the current schema and what changed"
    )
    migrate.add_argument("file", metavar="FILE")
    migrate.add_argument(
        "--write", action="store_true", help="rewrite FILE in place, keeping FILE.bak"
    )
    migrate.set_defaults(handler=cmd_templates_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        return cmd_serve(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    from ..client.transport import TrainOrchError
    from ..spec.errors import SpecError

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
