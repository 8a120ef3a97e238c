"""YAML job templates: loading with file/line errors, ``extends``, and rendering to a JobSpec.

A template file is checked field by field as it is read, so every error names the
file, line and field it came from; inheritance then merges the already-checked
documents, and rendering layers model defaults, the template and the user's flags.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError

from .data import data_field
from .errors import SpecError
from .model import ENV_NAME, Dependency, ImageRef, Resources, RetryPolicy, TemplateRef, validate
from .sandbox import JINJA
from .template_git import search_path, split_path_list
from .template_migrate import SCHEMA_VERSION, check_version, migrate_v0, written_schema
from .units import JOB_KINDS, PRIORITY_CLASSES, parse_duration, parse_priority
from .yaml_files import Where as _Where
from .yaml_files import parse_yaml
from .yaml_files import read_yaml as _read

TEMPLATE_FIELDS = tuple(
    "version name description extends kind command source resources retries timeout priority "
    "env secret_env inputs files outputs data artifacts params experiment register_model depends_on "
    "image".split()
)
BUILTIN_DIR = Path(__file__).parent / "builtin"
_TEXT_FIELDS = (
    "name",
    "description",
    "extends",
    "kind",
    "command",
    "source",
    "experiment",
    "register_model",
    "image",
)
_MAPPING_FIELDS = ("resources", "env", "secret_env", "params")
# Plain keys that users carry over from other tools or the legacy schema; difflib alone
# would not point ``gpu`` at ``resources``.
_HINTS = {k: "resources" for k in ("gpu", "gpus", "cpu", "cpus", "memory", "mem", "nodes")}
_HINTS.update(defaults="params", retry="retries", vars="params", variables="params")


@dataclass(frozen=True)
class Template:
    """A fully resolved template (its ``extends`` chain already merged in)."""

    name: str
    # The schema its file is written in: a schema 1 file keeps the version and hash it had.
    version: int = SCHEMA_VERSION
    description: str = ""
    kind: str = "python"
    command: str = ""
    source: str = ""
    resources: Resources = field(default_factory=Resources)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    priority: int = PRIORITY_CLASSES["normal"]
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    data: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""
    register_model: str = ""
    dependencies: list[dict[str, str]] = field(default_factory=list)  # {job, when}
    image: str = ""  # the container image its jobs run in; empty: the worker's environment
    path: str | None = None
    extends: str | None = None
    hash: str = field(init=False, default="")

    def __post_init__(self) -> None:
        # Computed rather than passed so ``dataclasses.replace`` can never keep a stale hash.
        canonical = json.dumps(self._content(), sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
        object.__setattr__(self, "hash", digest)

    def _content(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "description": self.description,
            "kind": self.kind, "command": self.command, "source": self.source,
            "resources": self.resources.to_dict(), "retries": self.retry.to_dict(),
            "timeout": self.timeout, "priority": self.priority, "env": self.env,
            # Names only: a secret's value never leaves the job, not even as a hash input.
            "secret_env": {name: "***" for name in self.secret_env}, "inputs": self.inputs, "outputs": self.outputs, "params": self.params,
            "experiment": self.experiment, "register_model": self.register_model,
            # Only when set: templates without dependencies keep the hash they always had.
            **({"depends_on": self.dependencies} if self.dependencies else {}),
            **({"data": self.data} if self.data else {}),
            **({"artifacts": self.artifacts} if self.artifacts else {}),
            **({"image": self.image} if self.image else {}),
        }  # fmt: skip

    def ref(self) -> TemplateRef:
        """Its reference in a job: name, schema, content hash and, for a file in a git work
        tree, the commit and whether the file has uncommitted changes (asked now, not when
        it was loaded, since the file may have been committed since)."""
        from .template_git import git_state

        commit, dirty = git_state(self.path)
        return TemplateRef(
            name=self.name, version=self.version, hash=self.hash, commit=commit, dirty=dirty
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self._content(), "depends_on": self.dependencies, "path": self.path,
                "extends": self.extends, "hash": self.hash}  # fmt: skip

    def input_files(self) -> list[str]:
        """The files the ``inputs`` globs match now, sorted and without duplicates; only
        files inside the template's folder (a symbolic link cannot lead out of it)."""
        folder = os.path.realpath(os.path.dirname(self.path) if self.path else os.getcwd())
        found = {p for pattern in self.inputs for p in glob.glob(pattern, recursive=True)}
        inside = [
            p for p in found
            if os.path.isfile(p) and os.path.commonpath([folder, os.path.realpath(p)]) == folder
        ]  # fmt: skip
        return sorted(inside)


@dataclass(eq=False)
class _Doc:
    """One template document after its own fields were checked, before ``extends``."""

    name: str
    data: dict[str, Any]
    where: _Where
    path: str | None
    version: int = SCHEMA_VERSION


def _check_jinja(where: _Where, path: str, text: str) -> None:
    try:
        JINJA.parse(text)
    except TemplateSyntaxError as err:
        raise where.error(path, f"{path} has a template syntax error ({err.message})") from None


def _scalar_text(where: _Where, path: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        # The written text, so ``off`` stays ``off`` rather than becoming ``False``.
        return where.texts.get(path, str(value).lower() if isinstance(value, bool) else str(value))
    raise where.error(path, f"{path} must be text, not a {type(value).__name__}")


def _check_fields(raw: dict[str, Any], where: _Where, folder: Path | None) -> dict[str, Any]:
    """Validate each field of one document and return it normalised for merging."""
    for key in raw:
        if key not in TEMPLATE_FIELDS:
            hint = _HINTS.get(str(key)) or next(
                iter(difflib.get_close_matches(str(key), TEMPLATE_FIELDS, n=1)), None
            )
            tail = f" (did you mean {hint!r}?)" if hint else ""
            raise where.error(str(key), f"{str(key)!r} is not a template field{tail}")
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "version" or (value is None and key != "timeout"):
            continue
        if key in _TEXT_FIELDS:
            if not isinstance(value, str):
                raise where.error(key, f"{key} must be text, not {value!r}")
            if key in ("name", "extends") and not value.strip():
                raise where.error(key, f"{key} must not be empty")
            if key == "kind" and value not in JOB_KINDS:
                raise where.error(key, f"kind must be one of {', '.join(JOB_KINDS)}, not {value!r}")
            if key == "command":
                _check_jinja(where, key, value)
            if key == "image":
                where.call(key, validate, ImageRef, {"image": value})
            data[key] = value.strip() if key in ("name", "extends") else value
        elif key in _MAPPING_FIELDS and not isinstance(value, dict):
            raise where.error(key, f"{key} must be a mapping of names to values, not {value!r}")
        elif key == "resources":
            where.call(key, Resources.parse, value, "resources")
            data[key] = dict(value)
        elif key == "retries":
            where.call(key, RetryPolicy.parse, value, "retries")
            data[key] = dict(value) if isinstance(value, dict) else value
        elif key == "timeout":
            data[key] = where.call(key, parse_duration, value, "timeout")
        elif key == "priority":
            data[key] = where.call(key, parse_priority, value, "priority")
        elif key == "depends_on":
            data[key] = where.call(key, _dependencies, value)
        elif key in ("data", "artifacts"):
            data[key] = where.call(key, data_field, key, value, folder and str(folder))
        elif key in ("env", "secret_env"):
            env = {}
            for name, text in value.items():
                if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
                    raise where.error(
                        f"{key}.{name}", f"{key}: {name!r} is not a valid variable name"
                    )
                env[name] = _scalar_text(where, f"{key}.{name}", text)
                _check_jinja(where, f"{key}.{name}", env[name])
            data[key] = env
        elif key == "params":
            for name in value:
                if not isinstance(name, str) or not name.isidentifier():
                    raise where.error(f"params.{name}", f"params: {name!r} is not a valid name")
            data[key] = dict(value)
        else:  # inputs (spelled files since schema 2), outputs
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise where.error(key, f"{key} must be a list of text entries, not {value!r}")
            for i, item in enumerate(items):
                if key == "outputs" and not item.isidentifier():
                    raise where.error(f"{key}[{i}]", f"outputs: {item!r} is not a variable name")
            if key in ("inputs", "files"):
                for i, item in enumerate(items):
                    if os.path.isabs(item) or item.startswith("~") or ".." in Path(item).parts:
                        raise where.error(f"{key}[{i}]", f"{key}: {item!r} must be a path "
                                          "inside the template's folder (relative, without ..)")  # fmt: skip
                if folder is not None:
                    items = [str(folder / i) for i in items]
            data["inputs" if key == "files" else key] = list(items)
    if "command" in data and "kind" not in data:
        data["kind"] = "command"
    return data


def _dependencies(value: Any) -> list[dict[str, str]]:
    """``depends_on``: entries ``NAME|ID`` (on success) or ``{job: NAME|ID, when: ok|any|notok}``."""
    items = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(items, list):
        raise SpecError(
            f"depends_on must be a list of job names or {{job, when}} entries, not {value!r}"
        )
    return [
        validate(
            Dependency, {"job": item} if isinstance(item, str) else item, f"depends_on[{i}]"
        ).model_dump(mode="json")
        for i, item in enumerate(items)
    ]


def _parse_doc(raw: Any, where: _Where, path: Path | None, default_name: str) -> _Doc:
    if not isinstance(raw, dict):
        raise where.error("", "a template must be a YAML mapping of fields such as name and kind")
    version = check_version(raw, where, required=path is not None)
    if version == 0:
        raw = migrate_v0(raw, where)
    written = written_schema(raw, where, version)
    data = _check_fields(raw, where, path.parent if path is not None else None)
    name = data.pop("name", default_name)
    return _Doc(name, data, where, str(path) if path is not None else None, written)


def check_document(raw: Any, where: _Where, path: Path) -> None:
    """Check a template file's own fields as loading it would (``extends`` left aside)."""
    _parse_doc(raw, where, path, path.stem)


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(parent)
    for key, value in child.items():
        old = merged.get(key)
        mergeable = key in _MAPPING_FIELDS or key == "retries"
        if mergeable and isinstance(old, dict) and isinstance(value, dict):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def _build(doc: _Doc, data: dict[str, Any]) -> Template:
    kind = data.get("kind") or ("command" if data.get("command") else "python")
    if kind == "command" and not data.get("command", "").strip():
        raise doc.where.error("kind", "the template is of kind command but sets no command")
    return Template(
        name=doc.name,
        version=doc.version,
        description=data.get("description", ""),
        kind=kind,
        command=data.get("command", ""),
        source=data.get("source", ""),
        resources=doc.where.call("resources", Resources.parse, data.get("resources")),
        retry=doc.where.call("retries", RetryPolicy.parse, data.get("retries")),
        timeout=data.get("timeout"),
        priority=data.get("priority", PRIORITY_CLASSES["normal"]),
        env=dict(data.get("env", {})),
        secret_env=dict(data.get("secret_env", {})),
        inputs=list(data.get("inputs", [])),
        outputs=list(data.get("outputs", [])),
        data=dict(data.get("data", {})),
        artifacts=list(data.get("artifacts", [])),
        params=dict(data.get("params", {})),
        experiment=data.get("experiment", ""),
        register_model=data.get("register_model", ""),
        dependencies=list(data.get("depends_on", [])),
        image=data.get("image", ""),
        path=doc.path,
        extends=doc.data.get("extends"),
    )


def default_search_paths() -> list[str | Path]:
    """The Jupyter config folder's ``trainorch/templates``, then ``TRAINORCH_TEMPLATE_PATH``.

    Later entries override earlier ones, so the environment variable (the more deliberate
    choice) wins over the config folder.
    """
    try:
        from jupyter_core.paths import jupyter_config_dir
    except ImportError:  # a client without Jupyter (an Airflow worker): the variable only
        paths: list[str | Path] = []
    else:
        paths = [Path(jupyter_config_dir()) / "trainorch" / "templates"]
    env = os.environ.get("TRAINORCH_TEMPLATE_PATH", "")
    # Entries stay text: a file:// URL is read (or refused) by the registry.
    return [*paths, *(p for p in split_path_list(env) if p.strip())]


def _yaml_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


class TemplateRegistry:
    """Builtin templates, overridden by name by those found in the search paths."""

    def __init__(self, search_paths: list[str | Path] | None = None):
        if search_paths is None:
            search_paths = list(default_search_paths())
        self.search_paths: list[Path] = []
        self._path_errors: dict[str, str] = {}
        for entry in search_paths:
            try:
                self.search_paths.append(search_path(entry))
            except SpecError as err:
                self._path_errors[str(entry)] = str(err)
        self.reload()

    def reload(self) -> None:
        """Re-read every template file (after one was added or edited)."""
        self.errors: dict[str, str] = dict(self._path_errors)
        self._docs: dict[str, list[_Doc]] = {}  # lowest priority first, per name
        self._cache: dict[str, Template] = {}
        self._broken: dict[str, str] = {}  # file stem -> path, to explain a failed ``extends``
        for path in _yaml_files(BUILTIN_DIR):
            self._add(self._read_doc(path))  # a broken builtin is a packaging bug: let it raise
        for folder in self.search_paths:
            for path in _yaml_files(folder):
                try:
                    self._add(self._read_doc(path))
                except SpecError as err:
                    self.errors[str(path)] = str(err)
                    self._broken[path.stem] = str(path)

    def _add(self, doc: _Doc) -> None:
        self._docs.setdefault(doc.name, []).append(doc)

    @staticmethod
    def _read_doc(path: Path) -> _Doc:
        raw, lines, texts = _read(path)
        return _parse_doc(raw, _Where(str(path), lines, texts), path, path.stem)

    def names(self) -> list[str]:
        return sorted(self._docs)

    def list(self) -> list[Template]:
        """Every template that resolves; the others are skipped and recorded in ``errors``."""
        found = []
        for name in self.names():
            try:
                found.append(self.get(name))
            except SpecError as err:
                self.errors[str(self._docs[name][-1].path)] = str(err)
        return found

    def get(self, name: str) -> Template:
        if name not in self._docs:
            raise SpecError(f"unknown template {name!r} (available: {', '.join(self.names())})")
        if name not in self._cache:
            self._cache[name] = self._resolve(self._docs[name][-1])
        return self._cache[name]

    def load_file(self, path: str | Path) -> Template:
        """A template file outside the registry (``trainorch submit job.yaml``)."""
        return self._resolve(self._read_doc(Path(path)))

    def load_text(self, text: str, path: str | Path, origin: str) -> Template:
        """A template file's text from elsewhere (git at a commit), read as if it lay at
        ``path``; ``origin`` names it in errors."""
        raw, lines, texts = parse_yaml(text, origin)
        path = Path(path)
        return self._resolve(_parse_doc(raw, _Where(origin, lines, texts), path, path.stem))

    def path_of(self, name: str) -> str | None:
        """The file the template ``name`` comes from (the one that wins, by priority)."""
        self.get(name)  # an unknown name: the usual sentence
        return self._docs[name][-1].path

    def from_dict(self, data: dict[str, Any], origin: str = "<inline>") -> Template:
        """A template given as a mapping (schema version defaults to the current one)."""
        where = _Where(origin, {}, {})
        name = data.get("name") if isinstance(data, dict) else None
        return self._resolve(_parse_doc(data, where, None, name or "inline"))

    def _resolve(self, doc: _Doc) -> Template:
        return _build(doc, self._merged(doc, ()))

    def _parent(self, doc: _Doc) -> _Doc:
        name = doc.data["extends"]
        defs = self._docs.get(name, [])
        for i, candidate in enumerate(defs):
            # Extending its own name means the definition it overrides; the same file read
            # again (at another commit, or by path) stands for its registered copy.
            if candidate is doc or (doc.path is not None and candidate.path == doc.path):
                defs = defs[:i]
                break
        if not defs and name in self._broken:
            raise doc.where.error(
                "extends", f"extends {name!r}, but {self._broken[name]} could not be loaded"
            )
        if not defs:
            available = ", ".join(self.names())
            raise doc.where.error(
                "extends", f"extends unknown template {name!r} (available: {available})"
            )
        return defs[-1]

    def _merged(self, doc: _Doc, chain: tuple[_Doc, ...]) -> dict[str, Any]:
        if "extends" not in doc.data:
            return dict(doc.data)
        parent = self._parent(doc)
        chain = (*chain, doc)
        if parent in chain:
            names = [d.name for d in chain[chain.index(parent) :]] + [parent.name]
            raise doc.where.error("extends", f"extends forms a cycle: {' -> '.join(names)}")
        return _merge(self._merged(parent, chain), doc.data)
