"""The spec's data fields: ``data`` (inputs by URI) and ``artifacts`` (files the job
writes, logged to MLflow). Shapes and limits only; whether an input exists is checked by
the orchestrator at submit (``orchestrator.data_inputs``), the bytes are moved by the
job's process (``runner.data_inputs``, ``runner.artifacts``).

``inputs`` (files shipped in the code package) and ``outputs`` (variables brought back to
the kernel) keep their meanings; these are separate fields.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..data_uri import (
    ARTIFACT_NAME,
    DATA_NAME,
    MAX_ARTIFACTS,
    MAX_DATA_INPUTS,
    MAX_URI_CHARS,
    data_env_name,
    data_kind,
)

MAX_ARTIFACT_PATH_CHARS = 4096


def _data_name(name: str) -> str:
    if not DATA_NAME.fullmatch(name):
        raise ValueError(
            "is not a usable input name: letters, digits and _, starting with a letter, "
            "at most 64 characters (it becomes TRAINORCH_DATA_<NAME>)"
        )
    return name


def _data_uri(uri: str) -> str:
    data_kind(uri)
    return uri


def _data_inputs(value: Any) -> Any:
    """Names that differ only in case would share one variable."""
    if isinstance(value, dict):
        seen: dict[str, str] = {}
        for name in value:
            if not isinstance(name, str):
                continue
            other = seen.setdefault(data_env_name(name), name)
            if other != name:
                raise ValueError(
                    f"has the inputs {other!r} and {name!r}, which would share the variable "
                    f"{data_env_name(name)}"
                )
    return value


DataInputs = Annotated[
    dict[
        Annotated[str, AfterValidator(_data_name)],
        Annotated[str, Field(max_length=MAX_URI_CHARS), AfterValidator(_data_uri)],
    ],
    BeforeValidator(_data_inputs),
    Field(
        max_length=MAX_DATA_INPUTS,
        json_schema_extra={"propertyNames": {"pattern": DATA_NAME.pattern}},
        description="inputs by name: a path, file:// or fsspec URI (s3://…), models:/NAME@alias, "
        "models:/NAME/VERSION, runs:/RUN_ID/PATH or job:JOB/artifacts/PATH; the job finds "
        "each one's local path in TRAINORCH_DATA_<NAME>",
    ),
]


def _artifact_name(name: str) -> str:
    if not ARTIFACT_NAME.fullmatch(name):
        raise ValueError(
            "must be a file name: letters, digits, '.', '_' and '-', at most 128 characters"
        )
    return name


def _artifact_path(path: str) -> str:
    if "\x00" in path or not path.strip():
        raise ValueError("must be a path without NUL")
    return path


class Artifact(BaseModel):
    """A file or folder the job writes (``path``, relative to its working folder), logged
    to its attempt's MLflow run as ``artifacts/<name>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, AfterValidator(_artifact_name)]
    path: Annotated[str, Field(max_length=MAX_ARTIFACT_PATH_CHARS), AfterValidator(_artifact_path)]


def _artifact_entries(value: Any) -> Any:
    """``"out/model.pt"`` (named ``model.pt``) or ``{NAME: PATH}`` shorthands, as entries."""
    if not isinstance(value, list):
        return value
    entries: list[Any] = []
    for item in value:
        if isinstance(item, str):
            entries.append({"name": item.rstrip("/").rsplit("/", 1)[-1], "path": item})
        elif isinstance(item, dict) and set(item) != {"name", "path"}:
            entries.extend({"name": k, "path": v} for k, v in item.items())
        else:
            entries.append(item)
    return entries


def _unique_names(entries: list[Artifact]) -> list[Artifact]:
    names = [entry.name for entry in entries]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f"names {name!r} twice; give one of them another name ({{NAME: PATH}})"
            )
    return entries


Artifacts = Annotated[
    list[Artifact],
    BeforeValidator(_artifact_entries, json_schema_input_type=list[str | dict[str, str]]),
    AfterValidator(_unique_names),
    Field(
        max_length=MAX_ARTIFACTS,
        description="files or folders the job writes, logged to MLflow when it succeeds: "
        "PATH (named by its last part) or {NAME: PATH}",
    ),
]


class _DataFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataInputs = Field(default_factory=dict)
    artifacts: Artifacts = Field(default_factory=list)


def data_field(key: str, value: Any, folder: str | None = None) -> Any:
    """``data`` or ``artifacts`` of a template or flag, checked and in their JSON form; a
    relative local input is taken from ``folder`` (the template's) when there is one."""
    import os

    from ..data_uri import local_path
    from .model import validate

    checked = validate(_DataFields, {key: value}).model_dump(mode="json")[key]
    if key == "data" and folder is not None:
        for name, uri in checked.items():
            if data_kind(uri) == "path" and not os.path.isabs(local_path(uri)):
                checked[name] = os.path.join(folder, uri)
    return checked


def flag_overrides(data: list[str], artifacts: list[str]) -> dict[str, Any]:
    """``--data NAME=URI`` and ``--artifact [NAME=]PATH`` flags (each repeatable) as the
    ``data`` and ``artifacts`` overrides of a submit; a SpecError names the bad one."""
    from .errors import SpecError

    chosen: dict[str, Any] = {}
    if data:
        pairs = {}
        for pair in data:
            name, sep, uri = str(pair).partition("=")
            if not sep or not name.strip() or not uri.strip():
                raise SpecError(f"--data takes NAME=URI, not {str(pair)[:80]!r}")
            pairs[name.strip()] = uri.strip()
        chosen["data"] = data_field("data", pairs)
    if artifacts:
        entries: list[Any] = []
        for item in artifacts:
            name, sep, path = str(item).partition("=")
            entries.append({name: path} if sep and ARTIFACT_NAME.fullmatch(name) else item)
        chosen["artifacts"] = data_field("artifacts", entries)
    return chosen
