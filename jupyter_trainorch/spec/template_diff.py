"""``trainorch templates diff A B``: two resolved templates compared as YAML.

Each side is a template name, a template file, or either followed by ``@COMMIT`` (the
file as it was at that commit of its git repository). Sides are compared after
``extends`` is resolved (an older commit's ``extends`` resolves against the templates
as they are now), in the current schema's names, with keys sorted, so only what a job
would get differently shows.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import yaml

from .errors import SpecError
from .template_git import text_at_commit
from .templates import Template, TemplateRegistry


def resolve(registry: TemplateRegistry, text: str) -> Template:
    """The template ``text`` names: a file, a name, ``FILE@COMMIT`` or ``NAME@COMMIT``."""
    if os.path.isfile(text):
        return registry.load_file(text)
    if text in registry.names():
        return registry.get(text)
    base, at, commit = text.rpartition("@")
    if at and base and commit:
        path = base if os.path.isfile(base) else _path_of(registry, base, text)
        return registry.load_text(text_at_commit(path, commit), path, f"{path}@{commit}")
    raise SpecError(
        f"{text!r} is neither a template file nor a template name (available: "
        f"{', '.join(registry.names())}); an older version is NAME@COMMIT or FILE@COMMIT"
    )


def _path_of(registry: TemplateRegistry, name: str, text: str) -> str:
    if name not in registry.names():
        raise SpecError(
            f"{text!r}: {name!r} is neither a template file nor a template name (available: "
            f"{', '.join(registry.names())})"
        )
    path = registry.path_of(name)
    if path is None:  # pragma: no cover - every registered template comes from a file
        raise SpecError(f"template {name!r} has no file, so it has no commits")
    return path


def view(template: Template) -> dict[str, Any]:
    """What a job gets from ``template``, in the current schema's names: ``files``
    relative to the template's folder, without its path and hash (which only say where it
    lies and what it is a hash of)."""
    data = template.to_dict()
    for key in ("path", "hash"):
        data.pop(key, None)
    folder = os.path.dirname(template.path) if template.path else os.getcwd()
    data["files"] = [os.path.relpath(p, folder) for p in data.pop("inputs", [])]
    return data


def diff(registry: TemplateRegistry, a: str, b: str) -> str:
    """A unified diff of the templates ``a`` and ``b`` name; empty when they are the same."""
    left, right = (
        yaml.safe_dump(view(resolve(registry, side)), sort_keys=True, allow_unicode=True)
        for side in (a, b)
    )
    lines = difflib.unified_diff(
        left.splitlines(keepends=True), right.splitlines(keepends=True), fromfile=a, tofile=b
    )
    return "".join(lines)
