"""Rendering a template into a JobSpec: defaults ◄ template ◄ flags, ``{{ }}`` sandboxed.

Also ``parse_set_values`` for the ``key=value`` pairs of ``%%train`` and ``--set``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SecurityError

from .errors import SpecError
from .model import JobSpec, Resources, RetryPolicy, validate
from .sandbox import JINJA, render_bounded
from .templates import Template
from .units import parse_duration, parse_memory, parse_priority
from .yaml_files import load_value


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).rstrip(".")


def _render(text: str, params: dict[str, Any], what: str) -> str:
    try:
        return render_bounded(JINJA.from_string(text), params)
    except SpecError as err:
        raise SpecError(f"{what} {err}") from None
    except SecurityError as err:
        raise SpecError(
            f"{what} uses something templates may not access ({_one_line(err)})"
        ) from None
    except UndefinedError as err:
        missing = re.match(r"'([^']+)' is undefined", str(err.message or ""))
        if missing:
            var = missing.group(1)
            raise SpecError(
                f"{what} uses '{{{{ {var} }}}}' but no param '{var}' is set "
                f"(use --set {var}=… or {var}=… after the flags)"
            ) from None
        raise SpecError(f"{what} could not be rendered ({_one_line(err)})") from None
    except TemplateSyntaxError as err:
        raise SpecError(f"{what} has a template syntax error ({_one_line(err.message)})") from None
    except Exception as err:  # user-written expressions can fail in any way (1/0, bad types)
        raise SpecError(f"{what} could not be rendered ({_one_line(err) or 'error'})") from None


_OVERRIDES = (
    "gpus",
    "nodes",
    "cpus",
    "memory",
    "priority",
    "retries",
    "timeout",
    "env",
    "secret_env",
    "name",
    "experiment",
    "register_model",
    "data",
    "artifacts",
    "image",
)


_RESOURCE_FLAGS = ("gpus", "cpus", "memory", "nodes")


def _flag(key: str, value: Any) -> Any:
    """Parse one flag value with the model parser, naming it ``--key`` in errors."""
    flag = f"--{key}"
    try:
        if key in ("gpus", "cpus", "nodes"):
            return getattr(Resources.parse({key: value}, "resources"), key)
        if key == "memory":
            return parse_memory(value, flag)
        if key == "priority":
            return parse_priority(value, flag)
        if key == "timeout":
            return parse_duration(value, flag)
        if not isinstance(value, dict):
            if isinstance(value, bool) or not re.fullmatch(r"\s*\d{1,3}\s*", str(value)):
                raise SpecError(f"{flag} must be a whole number from 0 to 100, not {value!r}")
        return RetryPolicy.parse(value, flag)
    except SpecError as err:
        raise SpecError(str(err).replace(f"resources.{key}", flag, 1)) from None


def render_spec(
    template: Template,
    *,
    params: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    source: str | None = None,
    user: str = "",
    depends_on: Iterable[str] = (),
    dependencies: Iterable[Any] = (),
    outputs: list[str] | None = None,
    workdir: str | None = None,
    name: str | None = None,
) -> JobSpec:
    """Layer model defaults ◄ template ◄ overrides, render ``{{ }}`` and build the JobSpec."""
    if params is not None and not isinstance(params, dict):
        raise SpecError("params must be a mapping of names to values")
    values = {**template.params, **(params or {})}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise SpecError(f"--{unknown[0]} is not an option a template can take")
    resources = template.resources.model_copy(
        update={k: _flag(k, overrides[k]) for k in _RESOURCE_FLAGS if k in overrides}
    )
    retry = template.retry
    if "retries" in overrides:
        policy = _flag("retries", overrides["retries"])
        # A bare count keeps the template's backoff; a mapping is a whole new policy.
        if not isinstance(overrides["retries"], dict):
            policy = retry.model_copy(update={"max_retries": policy.max_retries})
        retry = policy
    extra_env = overrides.get("env", {})
    if not isinstance(extra_env, dict):
        raise SpecError("--env must be a mapping of variable names to values")
    env = {**template.env, **{str(k): str(v) for k, v in extra_env.items()}}
    env = {k: _render(v, values, f"env.{k}") for k, v in env.items()}
    extra_secrets = overrides.get("secret_env", {})
    if not isinstance(extra_secrets, dict):
        raise SpecError("--secret-env must be a mapping of variable names to values")
    secrets = {**template.secret_env, **{str(k): str(v) for k, v in extra_secrets.items()}}
    secrets = {k: _render(v, values, f"secret_env.{k}") for k, v in secrets.items()}
    for key, shape in (("data", dict), ("artifacts", list)):
        if not isinstance(overrides.get(key) or shape(), shape):
            raise SpecError(
                f"--{key} must be a {'mapping of names to URIs' if shape is dict else 'list of paths'}"
            )
    command = _render(template.command, values, "command") if template.kind == "command" else ""
    job_name = name if name is not None else overrides.get("name", template.name)
    job_name = _render(str(job_name), values, "name").strip()
    if not job_name:
        raise SpecError("name must not be empty")
    # Validated as a request would be: a bad flag value is a sentence naming its field.
    return validate(
        JobSpec,
        dict(
            name=job_name,
            kind=template.kind,
            source=source if source is not None else template.source,
            command=command,
            params=values,
            resources=resources,
            retry=retry,
            timeout=_flag("timeout", overrides["timeout"])
            if "timeout" in overrides
            else template.timeout,
            priority=_flag("priority", overrides["priority"])
            if "priority" in overrides
            else template.priority,
            env=env,
            secret_env=secrets,
            depends_on=[str(d) for d in depends_on],
            # The template's own, then the caller's: a job named twice takes its last condition.
            dependencies=[
                *template.dependencies,
                *({"job": str(d)} for d in depends_on),
                *dependencies,
            ],
            outputs=list(outputs) if outputs is not None else list(template.outputs),
            # The caller's inputs add to (or replace, by name) the template's; artifacts add up.
            data={**template.data, **(overrides.get("data") or {})},
            artifacts=[*template.artifacts, *(overrides.get("artifacts") or [])],
            workdir=workdir,
            image=str(overrides.get("image") or template.image).strip() or None,
            register_model=str(overrides.get("register_model") or template.register_model).strip(),
            experiment=_render(
                str(overrides.get("experiment") or template.experiment), values, "experiment"
            ).strip(),
            template=template.ref(),
            user=user,
        ),
    )


def parse_set_values(pairs: list[str]) -> dict[str, Any]:
    """``["lr=0.1", "tag=a"]`` -> ``{"lr": 0.1, "tag": "a"}``, values read as YAML scalars."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SpecError(f"{pair!r} is not a key=value pair")
        try:
            value = load_value(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text  # e.g. ``msg=a: b: c``: the user meant the text as written
        values[key] = value
    return values


def parse_secret_pairs(pairs: list[str], flag: str = "--secret-env") -> dict[str, str]:
    """``["API_KEY=abc", "TOKEN"]`` -> ``{"API_KEY": "abc", "TOKEN": <$TOKEN here>}``.

    Values are taken as written (a secret ``0123`` stays text); a bare name takes the
    variable from this process's environment, so the value need not appear in a command
    line or a notebook."""
    import os

    secrets: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        key = key.strip()
        if not key.isidentifier():
            raise SpecError(f"{flag} takes NAME=VALUE or NAME, and {key[:40]!r} is not a name")
        if not sep:
            if key not in os.environ:
                raise SpecError(f"{flag} {key}: there is no environment variable {key} to take")
            value = os.environ[key]
        secrets[key] = value
    return secrets
