"""A pipeline of jobs as it ran, gathered and written as template folders.

The pipeline of a job is every job of its group (the jobs one ``Pipeline.submit()`` or
``POST jobs/batch`` created, or one sweep) and every job they wait on, however far back.
Each job becomes a folder holding a template that runs it again as it ran: a python job
stays a python job (its source, params and ``outputs``, so jobs after it still get its
values through ``upstream()``), with its captured variables in ``variables.zip``; its input
files and local modules lie beside the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ..package import build_package
from ..spec.errors import SpecError
from ..spec.template_migrate import SCHEMA_VERSION
from .export import file_stem, template_fields, unpack_files
from .transport import HTTPTransport

# The jobs of one group are created by one request; a sweep's within a short while.
SAME_SUBMISSION_SECONDS = 300.0
_LIST_PAGE = 1000
_MAX_PAGES = 50
VARIABLES_FILE = "variables.zip"


@dataclass(frozen=True)
class ExportedJob:
    """One job of the pipeline, written to ``folder``."""

    job: dict[str, Any]
    template: Path
    variables: Path | None

    @property
    def conditions(self) -> list[tuple[str, str]]:
        """``(job id, when)`` of each job it waits on."""
        return [(dep["job_id"], dep["when"]) for dep in self.job.get("dependencies") or []]


def pipeline_jobs(transport: HTTPTransport, job_id: str) -> list[dict[str, Any]]:
    """The pipeline of ``job_id`` (each job's detail JSON), every job after those it waits on."""
    root = transport.get(job_id)
    if "spec" not in root:
        raise SpecError(f"job {job_id} belongs to another user: only its owner may export it")
    found = {root["id"]: root}
    for member in _group_members(transport, root):
        found.setdefault(member, transport.get(member))
    waiting = list(found.values())
    while waiting:
        for dep in waiting.pop().get("dependencies") or []:
            if dep["job_id"] not in found:
                found[dep["job_id"]] = transport.get(dep["job_id"])
                waiting.append(found[dep["job_id"]])
    return _in_dependency_order(found)


def _group_members(transport: HTTPTransport, root: dict[str, Any]) -> list[str]:
    """Ids of the owner's jobs in ``root``'s group, looked for among the jobs submitted
    after it and shortly before (the list has no group filter; groups are made at once)."""
    group = root.get("group")
    if not group:
        return []
    oldest = _time(root["created"]) - SAME_SUBMISSION_SECONDS
    members: list[str] = []
    for page in range(_MAX_PAGES):
        listing = transport.list(user=root["user"], limit=_LIST_PAGE, offset=page * _LIST_PAGE)
        jobs = listing["jobs"]
        members += [job["id"] for job in jobs if job.get("group") == group]
        if len(jobs) < _LIST_PAGE or _time(jobs[-1]["created"]) < oldest:
            break
    return members


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _in_dependency_order(jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each job after the jobs it waits on; otherwise in the order they were submitted."""
    by_age = sorted(jobs.values(), key=lambda job: (job["created"], job["id"]))
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()
    while by_age:
        ready = next(
            (
                job
                for job in by_age
                if all(d["job_id"] in placed for d in job.get("dependencies") or [])
            ),
            None,
        )
        if ready is None:  # the service refuses cycles; never loop on a broken store
            raise SpecError(
                f"the dependencies of jobs {', '.join(j['id'] for j in by_age)} form a cycle"
            )
        ordered.append(ready)
        placed.add(ready["id"])
        by_age.remove(ready)
    return ordered


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line text (a python job's source) as a ``|`` block, as a person writes it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _text)


def write_job_folder(job: dict[str, Any], package: bytes | None, folder: Path) -> ExportedJob:
    """Write ``job`` (its detail JSON) as a template with its files into ``folder``."""
    spec = job["spec"]
    stem = file_stem(job["name"])
    variables, shipped = unpack_files(package, folder)
    kind = spec.get("kind", "python")
    template: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "name": stem,
        "description": f"Job {job['id']} ({job['name']}), code hash {job.get('code_hash', '')}",
        "kind": kind,
    }
    if kind == "python":
        template["source"] = spec.get("source", "")
        if spec.get("outputs"):
            template["outputs"] = list(spec["outputs"])
    else:
        template["command"] = spec["command"]
    template.update(template_fields(job))
    if spec.get("params"):
        template["params"] = spec["params"]
    if spec.get("register_model"):
        template["register_model"] = spec["register_model"]
    if shipped:
        template["files"] = sorted(shipped)
    target = folder / f"{stem}.yaml"
    target.write_text(yaml.dump(template, Dumper=_ReadableDumper, sort_keys=False))
    variables_path = None
    if variables:
        variables_path = folder / VARIABLES_FILE
        variables_path.write_bytes(build_package(variables))
    return ExportedJob(job, target, variables_path)
