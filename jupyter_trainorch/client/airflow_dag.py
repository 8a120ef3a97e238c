"""``trainorch export ID --format airflow``: a pipeline of jobs as an Airflow DAG file.

The DAG has one ``TrainorchSubmitOperator`` task per job of the pipeline (see
``pipeline_export``), each submitting its job's template from a folder beside the DAG
file, and the jobs' dependencies as task dependencies:

- ``ok`` (``--after``): Airflow's default trigger rule (all upstream tasks succeeded);
- ``any`` (``--after-any``): ``all_done``;
- ``notok`` (``--after-notok``): ``one_failed`` (``all_failed`` when it waits on several).

A job waiting on jobs with different conditions gets ``all_done`` and the operator checks
each condition itself (it skips the task when one does not hold). Every task also hands
the job ids of its upstream tasks to trainorch as the new job's dependencies, so a job
reads what they left through ``jupyter_trainorch.upstream(name)`` as it did before.

Nothing here imports Airflow: the CLI writes the file; Airflow runs it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from ..spec.errors import SpecError
from .pipeline_export import ExportedJob, pipeline_jobs, write_job_folder
from .transport import HTTPTransport

DEFAULT_CONNECTION = "trainorch_default"
# Python string literals in the DAG file, in double quotes as the formatters write them.
_q = json.dumps
_AIRFLOW_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}")
# The job folders hold scripts and modules, never DAGs: Airflow's DAG processor skips them.
# Airflow 3 reads this file as globs, Airflow 2 as regular expressions: one line for each
# (the other is ignored as an invalid or non-matching pattern).
_IGNORE_ALL = "# Job folders of a trainorch DAG: no DAG files here.\n*\n.*\n"


def trigger_rule(conditions: list[str]) -> str | None:
    """The Airflow trigger rule for a job that waits with these conditions (``None``: the
    default, ``all_success``)."""
    kinds = set(conditions)
    if kinds <= {"ok"}:
        return None
    if kinds == {"any"}:
        return "all_done"
    if kinds == {"notok"}:
        return "one_failed" if len(conditions) == 1 else "all_failed"
    return "all_done"  # mixed: the operator checks each condition


def task_ids(jobs: list[dict[str, str]]) -> dict[str, str]:
    """A unique Airflow task id for each job id: its name, or its name and id."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for job in jobs:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", job["name"]).strip("_.-")[:200] or "job"
        task_id = base if base not in taken else f"{base}_{job['id']}"
        ids[job["id"]] = task_id
        taken.add(task_id)
    return ids


def export_airflow(
    transport: HTTPTransport,
    job_id: str,
    folder: Path,
    dag_id: str | None = None,
    connection: str = DEFAULT_CONNECTION,
) -> list[Path]:
    """Write ``<dag_id>.py`` and its job folders (``<dag_id>/<task>/``) into ``folder``;
    return the DAG file's path, then the job templates'."""
    jobs = pipeline_jobs(transport, job_id)
    root = next(job for job in jobs if job["id"] == job_id)
    dag_id = dag_id or "trainorch_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", root["name"])[:200]
    if not _AIRFLOW_ID.fullmatch(dag_id):
        raise SpecError(
            f"--dag-id must be 1 to 250 letters, digits, '_', '.' or '-', not {dag_id!r}"
        )
    if not _AIRFLOW_ID.fullmatch(connection):
        raise SpecError(
            f"--connection must be an Airflow connection id such as {DEFAULT_CONNECTION}, "
            f"not {connection!r}"
        )
    ids = task_ids(jobs)
    jobs_folder = folder / dag_id
    exported = [
        write_job_folder(job, transport.package(job["id"]), jobs_folder / ids[job["id"]])
        for job in jobs
    ]
    (jobs_folder / ".airflowignore").write_text(_IGNORE_ALL)
    dag_file = folder / f"{dag_id}.py"
    dag_file.write_text(dag_source(exported, ids, dag_id, connection, root))
    return [dag_file, *(job.template for job in exported)]


def dag_source(
    exported: list[ExportedJob],
    ids: dict[str, str],
    dag_id: str,
    connection: str,
    root: dict[str, str],
) -> str:
    """The Python source of the DAG file."""
    today = datetime.now(timezone.utc)
    group = f", group {root['group']}" if root.get("group") else ""
    lines = [
        f'"""Airflow DAG of the trainorch pipeline of job {root["id"]} ({root["name"]}{group}).',
        "",
        f"Written by `trainorch export {root['id']} --format airflow` on {today:%Y-%m-%d}. Each task",
        f"submits a job from the folder {dag_id}/ beside this file and waits for it. The",
        "tasks reach trainorch through the Airflow connection CONNECTION: its host is the",
        "service URL, its password the service's token (or a JupyterHub API token).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import datetime",
        "from pathlib import Path",
        "",
        "try:",
        "    from airflow.sdk import DAG",
        "except ImportError:  # Airflow 2",
        "    from airflow import DAG",
        "",
        "from jupyter_trainorch.airflow import TrainorchSubmitOperator",
        "",
        f"JOBS = Path(__file__).resolve().parent / {_q(dag_id)}",
        f"CONNECTION = {_q(connection)}",
        "# Deferred tasks wait in Airflow's triggerer, holding no worker slot; with False a",
        "# worker waits (and prints the job's log as it comes).",
        "DEFERRABLE = True",
        "",
        "with DAG(",
        f"    dag_id={_q(dag_id)},",
        "    schedule=None,",
        f"    start_date=datetime.datetime({today.year}, {today.month}, {today.day}, "
        "tzinfo=datetime.timezone.utc),",
        "    catchup=False,",
        '    tags=["trainorch"],',
        "):",
        "    tasks = {}",
    ]
    for item in exported:
        lines += _task_source(item, ids)
    edges = [(ids[dep], ids[item.job["id"]]) for item in exported for dep, _ in item.conditions]
    if edges:
        lines.append("")
    lines += [f"    tasks[{_q(up)}] >> tasks[{_q(down)}]" for up, down in edges]
    return "\n".join(lines) + "\n"


def _task_source(item: ExportedJob, ids: dict[str, str]) -> list[str]:
    task_id = ids[item.job["id"]]
    template = item.template.relative_to(item.template.parent.parent)
    lines = [
        f"    tasks[{_q(task_id)}] = TrainorchSubmitOperator(",
        f"        task_id={_q(task_id)},",
        f"        job_name={_q(item.job['name'])},",
        f"        template_file=str(JOBS / {_q(template.parent.as_posix())} / {_q(template.name)}),",
    ]
    if item.variables is not None:
        lines.append(
            f"        variables_file=str(JOBS / {_q(template.parent.as_posix())} / "
            f"{_q(item.variables.name)}),"
        )
    if item.conditions:
        upstream = ", ".join(f"{_q(ids[dep])}: {_q(when)}" for dep, when in item.conditions)
        lines.append(f"        upstream_jobs={{{upstream}}},")
    rule = trigger_rule([when for _, when in item.conditions])
    if rule:
        lines.append(f"        trigger_rule={_q(rule)},")
    secrets = sorted(item.job["spec"].get("secret_env") or {})
    if secrets:
        values = ", ".join(f"{_q(name)}: {_q('{{ var.value.' + name + ' }}')}" for name in secrets)
        lines += [
            "        # The job's secret env values: from the Airflow Variables of the same names.",
            f'        overrides={{"secret_env": {{{values}}}}},',
        ]
    lines += [
        "        trainorch_conn_id=CONNECTION,",
        "        deferrable=DEFERRABLE,",
        "    )",
    ]
    return lines
