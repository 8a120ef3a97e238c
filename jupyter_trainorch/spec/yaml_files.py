"""Reading a template file: YAML with file/line positions, bounded in size and expansion.

Kept apart from ``templates`` (what the fields mean): this is only how the text becomes
data and where each field came from, so an error can name the file, line and field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError

# A template is a small hand-written file: these bounds refuse a YAML alias bomb (a few
# hundred bytes that expand to gigabytes) before anything walks or renders it.
MAX_TEMPLATE_BYTES = 2**20
MAX_TEMPLATE_NODES = 100_000


class Loader(yaml.SafeLoader):
    """SafeLoader that reads ``3e-4`` as a float and leaves dates as text.

    Params end up in JSON (job store, REST), where a ``datetime.date`` cannot go, and
    YAML 1.1 only accepts exponents with a dot (``3.0e-4``), which surprises everyone.
    """


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class Where:
    """File name plus a field-path -> line map, to turn a field error into a located sentence."""

    def __init__(self, origin: str, lines: dict[str, int], texts: dict[str, str]):
        self.origin, self.lines, self.texts = origin, lines, texts

    def error(self, path: str, message: str) -> SpecError:
        # An unknown sub-field falls back to its parent's line (``env.X`` -> ``env``).
        while path and path not in self.lines:
            parent = re.sub(r"(\.[^.\[\]]*|\[\d+\])$", "", path)
            path = "" if parent == path else parent
        line = self.lines.get(path)
        return SpecError(
            f"{self.origin}, line {line}: {message}" if line else f"{self.origin}: {message}"
        )

    def call(self, path: str, parser: Any, *args: Any) -> Any:
        try:
            return parser(*args)
        except SpecError as err:
            message = str(err)
            # The model parsers name the sub-field that failed (``resources.gpus``); use its line.
            inner = [p for p in self.lines if message.startswith(p + " ")]
            raise self.error(max(inner, key=len) if inner else path, message) from None


def _walk(node: yaml.Node, prefix: str, lines: dict[str, int], texts: dict[str, str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            lines[path] = key.start_mark.line + 1
            _walk(value, path, lines, texts)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{prefix}[{i}]"] = item.start_mark.line + 1
            _walk(item, f"{prefix}[{i}]", lines, texts)
    elif isinstance(node, yaml.ScalarNode):
        texts[prefix] = node.value


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes the document has once aliases are expanded (each anchor counted once
    per reference, computed once per node)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_TEMPLATE_NODES + 1  # a recursive alias expands without end
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_TEMPLATE_NODES:
            break
    sizes[id(node)] = total
    return total


def read_yaml(path: Path) -> tuple[Any, dict[str, int], dict[str, str]]:
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise SpecError(
                f"{path}: the template is larger than {MAX_TEMPLATE_BYTES // 2**10} KiB"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "it is not UTF-8 text"
        raise SpecError(f"{path}: the template could not be read ({reason})") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, path: str) -> tuple[Any, dict[str, int], dict[str, str]]:
    """A template's text (from a file, or from git at a commit) read as ``read_yaml`` does;
    ``path`` names it in errors."""
    if len(text.encode("utf-8")) > MAX_TEMPLATE_BYTES:
        raise SpecError(f"{path}: the template is larger than {MAX_TEMPLATE_BYTES // 2**10} KiB")
    loader = None
    try:
        loader = Loader(text)  # reads the first characters already: may refuse them
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_TEMPLATE_NODES:
            raise SpecError(f"{path}: the template expands to more than {MAX_TEMPLATE_NODES} "
                            "values (too many nested YAML aliases)")  # fmt: skip
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}" if mark else ""
        reason = " ".join(str(err.problem or err.context or "invalid syntax").split())
        raise SpecError(f"{path}{where}: the template is not valid YAML ({reason})") from None
    except yaml.YAMLError:
        raise SpecError(f"{path}: the template is not valid YAML") from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[str, int] = {}
    texts: dict[str, str] = {}
    if node is not None:
        _walk(node, "", lines, texts)
    return data, lines, texts


MAX_VALUE_NODES = 10_000


def load_value(text: str) -> Any:
    """One ``key=value`` value read as YAML (``0.1``, ``[1, 2]``, ``true``), refusing a
    value that aliases expand past ``MAX_VALUE_NODES`` values."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_VALUE_NODES:
            raise SpecError(
                f"the value {text[:40]!r}… expands to more than {MAX_VALUE_NODES} values"
            )
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
