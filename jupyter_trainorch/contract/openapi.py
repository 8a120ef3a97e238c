"""The OpenAPI 3.1 document of the REST API, built from the contract's models.

Served at ``trainorch/api/openapi.json`` and checked in as ``jupyter_trainorch/api/
openapi.json`` (``python -m jupyter_trainorch.contract.openapi --write`` refreshes it; a
test fails while it is stale). The panel's TypeScript types are generated from it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, RootModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from ..spec.model import JOB_ID_PATTERN, JobSpec
from . import jobs, service
from .limits import JOB_ORDERS, MAX_LIST_LIMIT, MAX_WAIT_SECONDS

CHECKED_IN = Path(__file__).parent.parent / "api" / "openapi.json"
API = "/trainorch/api"


@dataclass
class Query:
    name: str
    schema: dict[str, Any]
    description: str = ""


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    response: type[BaseModel] | type[RootModel[Any]] | None
    status: int = 200
    body: type[BaseModel] | None = None
    query: list[Query] = field(default_factory=list)
    content_type: str = "application/json"
    errors: tuple[int, ...] = (400, 403, 404)


def _int(low: int, high: int | None = None, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    if default is not None:
        schema["default"] = default
    return schema


def _seconds(default: float) -> dict[str, Any]:
    return {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "default": default}


SUBMITS = (API + "/jobs", API + "/jobs/batch")  # the posts that take an Idempotency-Key
AFTER = Query("after", _int(0, 2**62, 0), "return what came after this cursor")
JOB = API + "/jobs/{job_id}"
OPERATIONS = [
    Operation(
        "get",
        API + "/jobs",
        "List jobs, newest first",
        jobs.JobList,
        query=[
            Query("state", {"type": "string", "maxLength": 200}, "comma-separated job states"),
            Query("user", {"type": "string", "maxLength": 200}),
            Query("limit", _int(1, MAX_LIST_LIMIT, 100)),
            Query("offset", _int(0, 2**62, 0)),
            Query("q", {"type": "string", "maxLength": 200}, "part of the name, or the id's start"),
            Query(
                "sort",
                {"type": "string", "enum": list(JOB_ORDERS), "default": "newest"},
                "priority: dispatch order (higher priority, then earlier submission)",
            ),
        ],
    ),  # fmt: skip
    Operation(
        "post",
        API + "/jobs",
        "Submit a job (Idempotency-Key: a repeat returns 200 and the same job)",
        jobs.Job,
        status=201,
        body=jobs.SubmitRequest,
        errors=(400, 403, 404, 429),
    ),  # fmt: skip
    Operation(
        "post",
        API + "/jobs/batch",
        "Submit jobs that name each other in their dependencies: all are created or none "
        "(Idempotency-Key: a repeat returns 200 and the same jobs)",
        jobs.BatchAnswer,
        status=201,
        body=jobs.BatchRequest,
        errors=(400, 403, 404, 429),
    ),  # fmt: skip
    Operation("get", JOB, "A job", jobs.JobView),
    Operation("delete", JOB, "Cancel a job", jobs.Job, errors=(400, 403, 404, 409)),
    Operation(
        "patch",
        JOB,
        "Change a waiting job's priority",
        jobs.Job,
        body=jobs.PriorityChange,
        errors=(400, 403, 404, 409),
    ),  # fmt: skip
    Operation(
        "post",
        JOB + "/retry",
        "Retry a failed or cancelled job",
        jobs.Job,
        errors=(400, 403, 404, 409),
    ),  # fmt: skip
    Operation(
        "post",
        JOB + "/rerun",
        "Run a job's spec again as a new job",
        jobs.Job,
        status=201,
        errors=(400, 403, 404, 409),
    ),  # fmt: skip
    Operation(
        "get",
        JOB + "/logs",
        "Log lines after a cursor; with wait, a long poll",
        jobs.LogPage,
        query=[Query("attempt", _int(1, 10_000)), AFTER, Query("wait", _seconds(0.0))],
    ),  # fmt: skip
    Operation(
        "get", JOB + "/metrics", "Metric histories of the job's attempts", jobs.MetricHistory
    ),
    Operation(
        "get",
        JOB + "/package",
        "The job's code package (zip)",
        None,
        content_type="application/zip",
    ),  # fmt: skip
    Operation(
        "get",
        JOB + "/outputs",
        "The pickled outputs of a succeeded job",
        None,
        content_type="application/octet-stream",
    ),  # fmt: skip
    Operation("get", API + "/cluster", "Workers, GPUs and the queue", service.Cluster),
    Operation("get", API + "/templates", "Job templates", service.TemplateList),
    Operation("get", API + "/templates/{name}", "One template", service.Template),
    Operation(
        "get",
        API + "/events",
        "Changes after a cursor; with timeout, a long poll",
        service.ChangePage,
        query=[AFTER, Query("timeout", _seconds(25.0))],
    ),  # fmt: skip
    Operation("get", API + "/me", "Who the caller is and what they may do", service.Me),
    Operation("get", API + "/service", "The service's status", service.ServiceStatus),
    Operation(
        "post",
        API + "/service/stop",
        "Stop the service (admins)",
        service.Stopping,
        status=202,
        body=service.StopRequest,
        errors=(400, 403, 409),
    ),  # fmt: skip
    Operation("get", API + "/openapi.json", "This document", None, errors=(403,)),
    Operation(
        "get", "/trainorch/metrics", "Prometheus metrics", None, content_type="text/plain"
    ),  # fmt: skip
]


def _schemas() -> tuple[dict[Any, Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], Any]] = [
        (JobSpec, "validation"),
        (service.Error, "serialization"),
    ]
    for op in OPERATIONS:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
    refs, top = models_json_schema(wanted, ref_template="#/components/schemas/{model}")
    return refs, top.get("$defs", {})


def _error(status: int, refs: dict[Any, Any]) -> dict[str, Any]:
    what = {400: "Bad input", 403: "Not allowed", 404: "No such job", 409: "Not in this state",
            401: "Not authenticated", 413: "Body too large", 429: "Past the queue quota",
            500: "Service error"}  # fmt: skip
    return {
        "description": f"{what.get(status, 'Error')}: one sentence in message",
        "content": {"application/json": {"schema": refs[(service.Error, "serialization")]}},
    }


def document() -> dict[str, Any]:
    refs, schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        parameters = [
            {"name": q.name, "in": "query", "required": False, "schema": q.schema,
             **({"description": q.description} if q.description else {})}
            for q in op.query
        ]  # fmt: skip
        for name in ("job_id", "name"):
            if "{" + name + "}" in op.path:
                pattern = JOB_ID_PATTERN if name == "job_id" else r"^[A-Za-z0-9_.-]{1,200}$"
                parameters.insert(0, {"name": name, "in": "path", "required": True,
                                      "schema": {"type": "string", "pattern": pattern}})  # fmt: skip
        if op.response is not None:
            content = {op.content_type: {"schema": refs[(op.response, "serialization")]}}
        else:
            kind = "object" if op.content_type == "application/json" else "string"
            content = {op.content_type: {"schema": {"type": kind}}}
        responses: dict[str, Any] = {
            str(op.status): {"description": op.summary, "content": content}
        }
        if op.method == "post" and op.path in SUBMITS:
            responses["200"] = {"description": "What an earlier request with this "
                                "Idempotency-Key created", "content": content}  # fmt: skip
        for status in (*op.errors, 401):
            responses[str(status)] = _error(status, refs)
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": f"{op.method}{op.path.replace('/trainorch', '').replace('/api', '')}"
            .replace("/", "_").replace("{", "").replace("}", ""),
            "parameters": parameters,
            "responses": responses,
        }  # fmt: skip
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        if op.method == "post" and op.path in SUBMITS:
            entry["parameters"].append({
                "name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            })  # fmt: skip
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jupyter-trainorch",
            "version": __version__,
            "description": "Training jobs from notebooks: the orchestrator service's API.",
        },  # fmt: skip
        "servers": [
            {"url": "/", "description": "the Jupyter server (or trainorch serve) base URL"}
        ],
        "security": [{"token": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "token <Jupyter, hub or service token>",
                },  # fmt: skip
            },
        },
    }


def text() -> str:
    return json.dumps(document(), indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print or write the API's OpenAPI document.")
    parser.add_argument("--write", action="store_true", help=f"write it to {CHECKED_IN}")
    args = parser.parse_args(argv)
    if args.write:
        CHECKED_IN.write_text(text())
    else:
        print(text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
