"""Template schema versions: reading the older ones, and rewriting a file in the current one.

- 0: resources at the top level (``gpus: 2``) and params called ``defaults``.
- 1: ``resources:`` and ``params:``; ``inputs:`` lists files shipped with the job.
- 2: ``inputs:`` is spelled ``files:``. Since templates gained ``data:`` (URIs staged for
  the job) and ``artifacts:`` (files the job writes), "inputs" no longer said which of the
  two kinds of input it meant. Nothing else changed: a schema 1 template and its
  migration render the same job.

Files of every schema keep loading; ``trainorch templates migrate`` rewrites one in the
current schema, keeping its comments and layout where only names change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError
from .yaml_files import Where, parse_yaml

SCHEMA_VERSION = 2
_V0_RESOURCES = ("gpus", "cpus", "memory", "nodes")


def rename(mapping: dict[str, Any], old: str, new: str) -> None:
    """Rename field path ``old`` (and the paths below it) in a path-keyed map of a file."""
    for key in list(mapping):
        if key == old or key.startswith((old + ".", old + "[")):
            mapping[new + key[len(old) :]] = mapping.pop(key)


def migrate_v0(data: dict[str, Any], where: Where) -> dict[str, Any]:
    """Schema 0 kept resources at the top level and called params ``defaults``."""
    data = dict(data)
    moved = {k: data.pop(k) for k in _V0_RESOURCES if k in data}
    if moved:
        existing = data.get("resources")
        data["resources"] = {**moved, **(existing if isinstance(existing, dict) else {})}
        for key in moved:
            for mapping in (where.lines, where.texts):
                rename(mapping, key, f"resources.{key}")
    if "defaults" in data and "params" not in data:
        data["params"] = data.pop("defaults")
        for mapping in (where.lines, where.texts):
            rename(mapping, "defaults", "params")
    return data


def check_version(data: dict[str, Any], where: Where, required: bool) -> int:
    if "version" not in data:
        if required:
            raise where.error(
                "", f"the template has no 'version' field (add 'version: {SCHEMA_VERSION}' at "
                "the top)"
            )  # fmt: skip
        return SCHEMA_VERSION
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise where.error("version", f"version must be a schema number such as 2, not {version!r}")
    if version > SCHEMA_VERSION:
        raise where.error(
            "version",
            f"the template was written for a newer jupyter-trainorch (schema version {version}; "
            f"this one reads up to {SCHEMA_VERSION})",
        )
    return version


def written_schema(data: dict[str, Any], where: Where, version: int) -> int:
    """The schema whose field names the document uses (refusing a name of another one).

    A mapping without ``version`` (an inline template) may use either spelling; a file
    says its schema, so a schema 1 name in a schema 2 file is a mistake worth a sentence.
    """
    if "inputs" in data and "files" in data:
        raise where.error("files", "files is the schema 2 name of inputs: give only one of them")
    if "version" not in data:
        return 2 if "files" in data else 1
    if version >= 2 and "inputs" in data:
        raise where.error(
            "inputs", "schema 2 calls inputs 'files' (the files shipped with the job, apart "
            "from data:); rename it, or run: trainorch templates migrate FILE"
        )  # fmt: skip
    if version < 2 and "files" in data:
        raise where.error(
            "files", f"files is a schema 2 field: set 'version: 2' or call it inputs as schema "
            f"{version} does"
        )  # fmt: skip
    return max(version, 1)


@dataclass
class Migration:
    """A template file in the current schema and what changed, one sentence each (none:
    the file already was in the current schema)."""

    text: str
    changes: list[str] = field(default_factory=list)


def migrate_file(path: str | Path) -> Migration:
    """The template file at ``path`` rewritten in the current schema; the file must load."""
    from .templates import check_document

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "it is not UTF-8 text"
        raise SpecError(f"{path}: the template could not be read ({reason})") from None
    raw, lines, texts = parse_yaml(text, str(path))
    check_document(raw, Where(str(path), dict(lines), dict(texts)), path)
    version = raw["version"]
    if version == SCHEMA_VERSION:
        return Migration(text)
    target, changes = _migrated_data(raw)
    changes.insert(0, f"version: {version} → {SCHEMA_VERSION}")
    if version >= 1:
        edited = _rename_in_text(text, lines, raw)
        if edited is not None and parse_yaml(edited, str(path))[0] == target:
            return Migration(edited, changes)
    # Schema 0 moved fields into a mapping: the file is written anew from its data.
    changes.append("the file was rewritten from its data, so its comments and layout are gone")
    return Migration(yaml.safe_dump(target, sort_keys=False, allow_unicode=True), changes)


def _migrated_data(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    changes = []
    data = dict(raw)
    if raw["version"] == 0:
        moved = [k for k in _V0_RESOURCES if k in raw]
        data = migrate_v0(data, Where("", {}, {}))
        if moved:
            changes.append(f"{', '.join(moved)} → resources: schema 1 groups a job's resources")
        if "defaults" in raw and "params" not in raw:
            changes.append("defaults → params: the values a template's {{ }} fields take")
    if "inputs" in data:
        items = data["inputs"] if isinstance(data["inputs"], list) else [data["inputs"]]
        changes.append(
            f"inputs → files: the files shipped with the job ({', '.join(map(str, items))}), "
            "named apart from data:, the URIs staged for it"
        )
    # ``version`` first and ``files`` where ``inputs`` was, so the file reads as before.
    target = {"version": SCHEMA_VERSION}
    for key, value in data.items():
        if key != "version":
            target["files" if key == "inputs" else key] = value
    return target, changes


_TOP_KEY = r"^(?P<q>[\"']?){key}(?P=q)(?P<rest>\s*:)"


def _rename_in_text(text: str, lines: dict[str, int], raw: dict[str, Any]) -> str | None:
    """``text`` with the version number and top-level names changed in place (so comments
    and layout stay), or None where the file is not laid out one field per line."""
    rows = text.splitlines(keepends=True)
    edits = {"version": ("version", str(SCHEMA_VERSION))}
    if "inputs" in raw:
        edits["inputs"] = ("files", None)
    for key, (new_key, new_value) in edits.items():
        index = lines.get(key, 0) - 1
        if not 0 <= index < len(rows):
            return None
        match = re.match(_TOP_KEY.format(key=re.escape(key)), rows[index])
        if not match:
            return None
        row = f"{match['q']}{new_key}{match['q']}{match['rest']}" + rows[index][match.end() :]
        if new_value is not None:
            value = re.match(r"(?P<space>\s*)\d+(?P<tail>\s*(#.*)?\r?\n?)$", row[len(match[0]) :])
            if not value:
                return None
            row = row[: len(match[0])] + value["space"] + new_value + value["tail"]
        rows[index] = row
    return "".join(rows)
