"""Reading a submit request: the body becomes the caller's ``JobSpec`` and code package;
``check_runnable`` then refuses a job the cluster could never run.

Identity and quota groups come from the authenticated caller, never from the body; the
idempotency key and the request's hash make a repeated submit return the job it made.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ..contract.jobs import SubmitRequest
from ..package import check_package
from ..spec import JobSpec, SpecError
from ..spec.model import validate
from .access import Caller
from .quotas import Quotas


class Intake:
    def __init__(self, quotas: Quotas, templates: Callable[[], Any]) -> None:
        self.quotas = quotas
        self.templates = templates  # the template registry, loaded on first use

    def spec(self, caller: Caller, body: Any) -> tuple[JobSpec, bytes | None]:
        """The caller's job spec and code package from one submit body."""
        if not isinstance(body, dict):
            raise SpecError("the request body must be a JSON object")
        if "user" in body:
            raise SpecError("user comes from authentication; leave it out of the request")
        validate(SubmitRequest, body)
        package = None
        if body.get("package"):
            try:
                package = base64.b64decode(body["package"], validate=True)
            except ValueError:
                raise SpecError("package must be base64-encoded bytes") from None
            check_package(package)
        if "spec" in body:
            spec = JobSpec.from_dict(body["spec"])
        elif "template" in body:
            from ..package import template_files, with_files

            template = self.templates().get(str(body["template"]))
            spec = self._render(template, body)
            spec.group = str(body.get("group") or "")
            package = with_files(package, template_files(template))
        else:
            raise SpecError("the request must contain either spec or template")
        spec.user = caller.name
        spec.quota_groups = self.quotas.quota_groups(caller.groups)
        return spec, package

    def _render(self, template: Any, body: dict[str, Any]) -> JobSpec:
        from ..spec.render import render_spec

        return render_spec(
            template,
            params=body.get("params") or {},
            overrides=body.get("overrides") or {},
            source=body.get("source"),
            user="",
            depends_on=list(body.get("depends_on") or []),
            dependencies=list(body.get("dependencies") or []),
            outputs=body.get("outputs"),
            workdir=body.get("workdir"),
            name=body.get("name"),
        )


# The backends whose workers run on the orchestrator's machine, where an engine can be asked.
_LOCAL_BACKENDS = ("local", "local-cuda")


def check_runnable(orchestrator: Any, spec: JobSpec) -> None:
    """Refuse, with one sentence, a job no worker could take: more than a worker holds (of
    those there are, or autoscaling could add), or an image with no engine to run it."""
    from .. import policy

    autoscaler = orchestrator.autoscaler
    could_hold = autoscaler.could_hold() if autoscaler is not None else []
    if orchestrator.backend.workers or could_hold:
        res = spec.resources
        views = orchestrator.scheduler.views() + could_hold
        problem = policy.fit_error(res.gpus, res.cpus, res.memory, views, nodes=res.nodes)
        if problem:
            raise SpecError(problem)
    setting = orchestrator.config.container_engine
    # Remote workers' engines cannot be asked from here: their attempt says so if absent.
    if spec.image and (setting == "off" or orchestrator.backend.kind in _LOCAL_BACKENDS):
        from ..runner.containers import image_refusal

        refusal = image_refusal(spec.image, setting)
        if refusal:
            raise SpecError(refusal)


def key_and_hash(
    body: dict[str, Any], header: str | None, reserve: int = 0
) -> tuple[str | None, str | None]:
    """The request's idempotency key (the header, else ``client_token``) and its hash."""
    key = header or body.get("client_token")
    if key is None:
        return None, None
    return _idempotency_key(key, 128 - reserve), _request_hash(body)


def _idempotency_key(value: Any, most: int = 128) -> str:
    text = str(value)
    if not 1 <= len(text) <= most or not text.isascii() or not text.isprintable():
        raise SpecError(f"the Idempotency-Key must be 1 to {most} printable ASCII characters")
    return text


def _request_hash(body: dict[str, Any]) -> str:
    import hashlib
    import json

    canonical = json.dumps(
        {k: v for k, v in body.items() if k != "client_token"}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
