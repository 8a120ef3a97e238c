"""The job specification: what to run, with which resources, how to retry.

Pydantic models with no I/O, shared by every other component, and the one definition of
a spec's shape and limits: the REST API validates submissions with them, the OpenAPI
document and the panel's TypeScript types are generated from them. ``to_dict`` /
``from_dict`` give the JSON form stored in the job store and sent over REST; a model
error becomes one ``SpecError`` sentence naming the field (``sentence``).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .data import Artifacts, DataInputs
from .errors import SpecError
from .units import (
    MAX_PRIORITY,
    PRIORITY_CLASSES,
    parse_duration,
    parse_memory,
    parse_priority,
    short_repr,
)

MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 200  # experiment, group, model names, template names
MAX_SOURCE_CHARS = 16 * 2**20
MAX_COMMAND_CHARS = 64 * 2**10
MAX_PATH_CHARS = 4096
MAX_ENV_ENTRIES = 256
MAX_ENV_VALUE_CHARS = 32 * 2**10
MAX_PARAMS_BYTES = 2**20
MAX_LIST_ITEMS = 1000
MAX_IMAGE_CHARS = 512
MAX_NODES = 64  # ranks of one multi-node job, each a supervised process on its own worker
JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An OCI image reference as docker and podman read it: [registry[:port]/]path[:tag][@digest].
_IMAGE_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# The first part names a registry only with a dot, a port or as localhost (docker's rule).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_IMAGE_HOST = rf"(?:localhost(?::[0-9]+)?|{_LABEL}(?:\.{_LABEL})+(?::[0-9]+)?|{_LABEL}:[0-9]+)"
IMAGE_REFERENCE = re.compile(
    rf"(?:{_IMAGE_HOST}/)?{_IMAGE_PART}(?:/{_IMAGE_PART})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


class SpecModel(BaseModel):
    """Unknown fields are refused; JSON names (``retries``, ``max``) are the aliases."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=True)


# -- field types: each carries its own limits and its one-sentence complaint ---------------
def _no_control(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("must not contain control characters (such as NUL or a newline)")
    return text


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    return text


def _unit(parser: Any) -> Any:
    """A unit parser (sizes, durations, priorities) as a pydantic 'before' validator."""

    def parse(value: Any) -> Any:
        try:
            return parser(value, "it")
        except SpecError as err:
            raise ValueError(str(err).removeprefix("it ")) from None

    return parse


def _seconds(value: Any, field_name: str) -> float:
    """A duration where 0 means none (a backoff), not "no limit"."""
    return parse_duration(value, field_name) or 0.0


def _whole(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    return value


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of variable names to strings")
    if len(value) > MAX_ENV_ENTRIES:
        raise ValueError(f"must have at most {MAX_ENV_ENTRIES} variables")
    env: dict[str, str] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            raise ValueError(
                f"has the name {str(key)[:40]!r}, which is not a variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ValueError(f"variable {key} must be a string")
        text = str(raw)
        if "\x00" in text or len(text) > MAX_ENV_VALUE_CHARS:
            raise ValueError(
                f"variable {key} must be at most {MAX_ENV_VALUE_CHARS} characters without NUL"
            )
        env[key] = text
    return env


def _image(value: str) -> str:
    if not IMAGE_REFERENCE.fullmatch(value):
        raise ValueError(
            "must be a container image reference such as pytorch/pytorch:2.6.0 or "
            f"registry.example:5000/team/train@sha256:…, not {short_repr(value)}"
        )
    return value


def _params(value: dict[str, Any]) -> dict[str, Any]:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ValueError("must hold only JSON values with finite numbers") from None
    if len(text) > MAX_PARAMS_BYTES:
        raise ValueError(f"must be at most {MAX_PARAMS_BYTES // 2**10} KiB as JSON")
    return value


def _identifiers(value: list[str]) -> list[str]:
    for name in value:
        if not name.isidentifier():
            raise ValueError(f"must be Python variable names, and {name[:40]!r} is not one")
    return value


Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_CHARS),
    BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v),
    AfterValidator(_no_control),
]
Label = Annotated[str, Field(max_length=MAX_TEXT_CHARS), AfterValidator(_no_control)]
Env = Annotated[
    dict[str, str],
    BeforeValidator(_env, json_schema_input_type=dict[str, str | int | float]),
    Field(json_schema_extra={"propertyNames": {"pattern": ENV_NAME.pattern}}),
]
Seconds = Annotated[
    float | None,
    BeforeValidator(_unit(parse_duration), json_schema_input_type=float | str | None),
]
JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
Image = Annotated[str, Field(max_length=MAX_IMAGE_CHARS), AfterValidator(_image)]


class ImageRef(BaseModel):
    """Checks a template's ``image`` with the same rule and sentence as a spec's."""

    image: Image


class Resources(SpecModel):
    model_config = ConfigDict(frozen=True)

    gpus: Annotated[int, BeforeValidator(_whole), Field(ge=0, le=1024)] = 0
    cpus: Annotated[float, Field(ge=0, le=4096, allow_inf_nan=False)] = 1.0
    memory: Annotated[
        int,
        BeforeValidator(_unit(parse_memory), json_schema_input_type=int | str),
        Field(ge=0, description="bytes (input also as 16GiB, 512MB); 0 means unspecified"),
    ] = 0
    nodes: Annotated[
        int,
        BeforeValidator(_whole),
        Field(
            ge=1,
            le=MAX_NODES,
            description="workers the job runs on at once (ranks of a distributed job); "
            "gpus, cpus and memory are per node",
        ),
    ] = 1

    @classmethod
    def parse(cls, data: dict[str, Any] | None, prefix: str = "resources") -> Resources:
        return validate(cls, data or {}, prefix)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


FailureCause = Literal["job", "out_of_memory", "timeout", "infrastructure"]
RetryAction = Literal["retry", "no_retry", "other_worker", "notify_admins"]
FAILURE_CAUSES: tuple[str, ...] = ("job", "out_of_memory", "timeout", "infrastructure")
# What each kind of failure does unless the job says otherwise.
DEFAULT_ACTIONS: dict[str, frozenset[str]] = {
    "job": frozenset({"retry"}),
    "out_of_memory": frozenset({"no_retry"}),
    "timeout": frozenset({"retry"}),
    "infrastructure": frozenset({"retry"}),
}


def _actions(value: Any) -> Any:
    """``{"out_of_memory": "other_worker"}`` or a list of actions per cause."""
    if not isinstance(value, dict):
        return value
    return {cause: [a] if isinstance(a, str) else a for cause, a in value.items()}


class RetryPolicy(SpecModel):
    """How a failed job is retried; in JSON ``{"max", "backoff", "factor", "max_backoff",
    "on"}``, or just the count. ``on`` maps a kind of failure (``job``: its own code,
    ``out_of_memory``, ``timeout``, ``infrastructure``: a lost worker or a restart) to what
    it does: ``retry``, ``no_retry``, ``other_worker`` (retry, not on the worker where it
    failed) and, with any of them, ``notify_admins``."""

    model_config = ConfigDict(frozen=True)

    max_retries: Annotated[int, BeforeValidator(_whole), Field(alias="max", ge=0, le=100)] = 0
    backoff: Annotated[
        float, BeforeValidator(_unit(_seconds), json_schema_input_type=float | str)
    ] = 2.0  # seconds before the first retry
    factor: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] = 2.0
    max_backoff: Annotated[
        float, BeforeValidator(_unit(_seconds), json_schema_input_type=float | str)
    ] = 300.0
    on: Annotated[
        dict[
            FailureCause,
            Annotated[
                list[RetryAction],
                Field(min_length=1, max_length=4),
                # Plain strings in the schema: openapi-typescript's enum lists cannot type
                # an enum inside a map's arrays (the values are checked here all the same).
                WithJsonSchema({"type": "array", "items": {"type": "string"}}),
            ],
        ],
        BeforeValidator(_actions),
        Field(description="per kind of failure: retry, no_retry, other_worker, notify_admins"),
    ] = {}

    @model_validator(mode="after")
    def _consistent(self) -> RetryPolicy:
        for cause, actions in self.on.items():
            if "no_retry" in actions and {"retry", "other_worker"} & set(actions):
                raise ValueError(f"on.{cause} cannot both retry and not retry")
        return self

    def actions(self, cause: str) -> frozenset[str]:
        """What a failure of this kind does: the job's rule, else the default."""
        chosen = self.on.get(cause)  # type: ignore[call-overload]
        if chosen is None:
            return DEFAULT_ACTIONS.get(cause, frozenset({"retry"}))
        actions = frozenset(chosen)
        if not actions & {"retry", "no_retry", "other_worker"}:
            # Only notify_admins: the retry behaviour stays the default.
            actions |= DEFAULT_ACTIONS.get(cause, frozenset())
        return actions

    @model_validator(mode="before")
    @classmethod
    def _count(cls, data: Any) -> Any:
        if data is None:
            return {}
        return data if isinstance(data, (dict, RetryPolicy)) else {"max": data}

    @classmethod
    def parse(cls, data: Any, prefix: str = "retries") -> RetryPolicy:
        return validate(cls, data, prefix)

    def delay(self, failed_attempts: int) -> float:
        """Backoff before the next attempt, after ``failed_attempts`` (>= 1) failures."""
        return min(self.max_backoff, self.backoff * self.factor ** max(0, failed_attempts - 1))

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if not data["on"]:
            del data["on"]  # the defaults: jobs stored before rules existed look the same
        return data


class TemplateRef(SpecModel):
    model_config = ConfigDict(frozen=True)

    name: Label = "python-cell"
    version: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    hash: Annotated[str, Field(max_length=128)] = ""
    commit: Annotated[str | None, Field(max_length=64, pattern=r"^[0-9a-f]{7,64}$")] = Field(
        None, description="the git commit of the repository the template file lies in, if any"
    )
    dirty: bool | None = Field(
        None, description="whether the template file differs from that commit (null: not in git)"
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _dependency_entry(value: Any) -> Any:
    """A bare string is a dependency on success (``--after``)."""
    return {"job": value} if isinstance(value, str) else value


class Dependency(SpecModel):
    """A job to wait on (an id, or before submission also the name of a job) and when the
    waiting job may run: ``ok`` (it succeeded), ``any`` (it ended) or ``notok`` (it
    failed or was cancelled)."""

    model_config = ConfigDict(frozen=True)

    job: Name
    when: Literal["ok", "any", "notok"] = "ok"


DependencyEntry = Annotated[
    Dependency, BeforeValidator(_dependency_entry, json_schema_input_type=str | Dependency)
]


class JobSpec(SpecModel):
    """A fully rendered job: everything the orchestrator and runner need."""

    name: Name
    kind: Literal["python", "command"] = Field(
        "python", description='"python": run source; "command": run command in a shell'
    )
    source: Annotated[str, Field(max_length=MAX_SOURCE_CHARS), AfterValidator(_no_nul)] = ""
    command: Annotated[str, Field(max_length=MAX_COMMAND_CHARS), AfterValidator(_no_nul)] = ""
    params: Annotated[dict[str, Any], AfterValidator(_params)] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    retry: RetryPolicy = Field(default_factory=RetryPolicy, alias="retries")
    timeout: Seconds = Field(
        None, description="seconds (input also as 90s, 15m, 2h); none: no limit"
    )
    priority: Annotated[
        int,
        BeforeValidator(_unit(parse_priority), json_schema_input_type=int | str),
        Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="larger runs first; low=0, normal=100, high=200, urgent=300"),
    ] = PRIORITY_CLASSES["normal"]  # fmt: skip
    env: Env = Field(default_factory=dict)
    secret_env: Env = Field(
        default_factory=dict,
        description="variables the job gets but no one reads back: never returned, logged or tracked",
    )
    depends_on: Annotated[list[JobId], Field(max_length=MAX_LIST_ITEMS)] = Field(
        default_factory=list
    )
    dependencies: Annotated[
        list[DependencyEntry],
        Field(
            max_length=MAX_LIST_ITEMS,
            description="jobs to wait on, with the condition; depends_on entries wait on success",
        ),
    ] = Field(default_factory=list)
    outputs: Annotated[
        list[Annotated[str, Field(max_length=200)]],
        Field(max_length=100),
        AfterValidator(_identifiers),
    ] = Field(default_factory=list)
    data: DataInputs = Field(default_factory=dict)
    artifacts: Artifacts = Field(default_factory=list)
    workdir: Annotated[str, Field(max_length=MAX_PATH_CHARS), AfterValidator(_no_nul)] | None = None
    image: Image | None = Field(
        None,
        description="a container image the job runs in (podman or docker on its worker); "
        "none: the worker's own environment",
    )
    experiment: Label = ""  # MLflow experiment; empty: the orchestrator's default
    group: Label = ""  # jobs of one sweep share it
    register_model: Label = ""  # "NAME" or "NAME@alias": register the model the job logs
    template: TemplateRef = Field(default_factory=TemplateRef)
    user: Label = ""
    # The owner's groups that have a quota, from authentication (never from the request).
    quota_groups: Annotated[list[Label], Field(max_length=MAX_LIST_ITEMS)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _command_needs_text(self) -> JobSpec:
        if self.kind == "command" and not self.command.strip():
            raise ValueError("command must be set for a job of kind command")
        return self

    def conditions(self) -> list[Dependency]:
        """Every dependency once: ``dependencies``, then ``depends_on`` entries not among
        them (on success); a job named in both keeps the condition ``dependencies`` gives."""
        named = {dep.job for dep in self.dependencies}
        extra = [Dependency(job=ref) for ref in dict.fromkeys(self.depends_on) if ref not in named]
        return list({dep.job: dep for dep in [*self.dependencies, *extra]}.values())

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        """Inverse of ``to_dict``; also the validation of a spec sent over REST."""
        if not isinstance(data, dict):
            raise SpecError("the job spec must be a JSON object")
        return validate(cls, data)


def validate(model: type[Any], data: Any, prefix: str = "") -> Any:
    """``model`` from ``data``, or a SpecError sentence naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SpecError(sentence(err, prefix)) from None


_PREDICATES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing_size": "must be a whole number of a sensible size",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def sentence(err: ValidationError, prefix: str = "") -> str:
    """The first error of ``err`` as one sentence that names its field."""
    first = err.errors(include_url=False)[0]
    kind, ctx, value = first["type"], first.get("ctx") or {}, first.get("input")
    loc = ".".join(str(part) for part in first["loc"] if part != "[key]")
    where = ".".join(part for part in (prefix, loc) if part)
    if kind == "value_error":
        text = str(ctx.get("error", first["msg"]))
        if text.startswith(("command must", "the ")) or not where:
            return text
        return f"{where} {text}"
    if kind in ("greater_than_equal", "greater_than"):
        predicate = f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    elif kind in ("less_than_equal", "less_than"):
        predicate = f"must be at most {ctx.get('le', ctx.get('lt'))}"
    elif kind == "string_too_long":
        predicate = f"must be at most {ctx['max_length']} characters"
    elif kind == "too_long":
        predicate = f"must have at most {ctx['max_length']} items"
    elif kind == "literal_error":
        predicate = f"must be {ctx['expected']}"
    elif kind == "string_pattern_mismatch":
        predicate = "must be a job id (letters, digits, _ and -)"
    else:
        predicate = _PREDICATES.get(kind, str(first["msg"]).lower())
    shown = (
        "" if kind in ("missing", "extra_forbidden") or isinstance(value, (dict, list)) else value
    )
    suffix = f", not {short_repr(shown)}" if shown != "" and shown is not None else ""
    return f"{where or 'the value'} {predicate}{suffix}"
