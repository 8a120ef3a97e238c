"""The kernel's own modules that a cell needs, to travel in its code package.

A worker need not share the kernel's filesystem. A module that the cell imports, or that a
captured value refers to (its class, a function, the module itself), is sent as source when
its file is the user's own: under the kernel's working directory or a plain folder on
``sys.path``, and neither standard library, nor in a folder packages are installed to, nor
provided by an installed distribution (those are compared by version instead). A package
goes whole (its ``.py`` files), and the local modules these import in turn go too.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..spec import SpecError

MAX_FILES = 2000
MAX_BYTES = 20 * 2**20
# The worker runs its own copy of this package, whatever the kernel imported.
_NEVER_SENT = frozenset({"__main__", __name__.partition(".")[0]})

_imports_cache: dict[tuple[str, int, int], frozenset[str]] = {}


def imported_names(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (relative imports are
    the package's own business); none when it does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def _file_imports(path: str, source: bytes) -> frozenset[str]:
    """``imported_names`` of a file, kept while the file is unchanged (parsing every local
    module again on each ``%%train`` would show in its latency)."""
    try:
        stat = os.stat(path)
    except OSError:
        return frozenset(imported_names(source.decode("utf-8", "replace")))
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _imports_cache:
        _imports_cache[key] = frozenset(imported_names(source.decode("utf-8", "replace")))
    return _imports_cache[key]


def _is_under(path: str, folders: Iterable[str]) -> bool:
    return any(
        path == folder or path.startswith(folder.rstrip(os.sep) + os.sep) for folder in folders
    )


class LocalFolders:
    """Where the user's own code lies, as seen from this kernel now."""

    def __init__(self) -> None:
        # ``data`` is the installation prefix itself (``/usr``): users' folders lie under it.
        install = {path for name, path in sysconfig.get_paths().items() if name != "data"}
        install.update(site.getsitepackages())
        install.add(site.getusersitepackages())
        self.install = tuple(os.path.realpath(path) for path in install)
        roots = [os.getcwd(), *(entry or os.getcwd() for entry in sys.path)]
        self.roots = tuple(
            dict.fromkeys(
                os.path.realpath(root)
                for root in roots
                if os.path.isdir(root) and self._outside_installs(os.path.realpath(root))
            )
        )

    def _outside_installs(self, real: str) -> bool:
        parts = real.split(os.sep)
        return (
            "site-packages" not in parts
            and "dist-packages" not in parts
            and not _is_under(real, self.install)
        )

    def holds(self, path: str) -> bool:
        real = os.path.realpath(path)
        return self._outside_installs(real) and _is_under(real, self.roots)


def _locations(name: str) -> tuple[str | None, list[str]]:
    """(file, package folders) of the top-level module ``name``, without importing it."""
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__file__", None), list(getattr(module, "__path__", None) or [])
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None, []
    if spec is None:
        return None, []
    origin = spec.origin if spec.has_location else None
    return origin, list(spec.submodule_search_locations or [])


def _package_files(folder: str, name: str) -> Iterator[tuple[str, str]]:
    """(path, path in the package) of a package folder's ``.py`` files, in a stable order."""
    for current, dirs, files in os.walk(folder):
        # Only folders that could be subpackages: not __pycache__, .git or data folders.
        dirs[:] = sorted(d for d in dirs if d.isidentifier() and d != "__pycache__")
        relative = os.path.relpath(current, folder)
        for filename in sorted(files):
            if filename.endswith(".py"):
                inside = filename if relative == "." else os.path.join(relative, filename)
                yield os.path.join(current, filename), f"{name}/{inside}".replace(os.sep, "/")


def _module_files(name: str, folders: LocalFolders) -> list[tuple[str, str]]:
    """The files to send for top-level module ``name``; none unless it is local source."""
    origin, package_folders = _locations(name)
    if package_folders:
        files: list[tuple[str, str]] = []
        for folder in package_folders:
            if folders.holds(folder):
                files.extend(_package_files(folder, name))
        return files
    if origin and origin.endswith(".py") and folders.holds(origin):
        return [(origin, f"{name}.py")]
    return []


def local_modules(
    names: Iterable[str],
    provided: set[str] | frozenset[str],
    max_files: int = MAX_FILES,
    max_bytes: int = MAX_BYTES,
) -> dict[str, bytes]:
    """Source files, by their path below an import root, of the local modules among
    ``names`` (dotted names count by their top level) and of those they import;
    ``provided``: top-level names of installed distributions, never sent."""
    folders = LocalFolders()
    excluded = set(sys.stdlib_module_names) | set(sys.builtin_module_names) | _NEVER_SENT
    excluded |= set(provided)
    pending = sorted({name.partition(".")[0] for name in names} - excluded)
    seen = set(pending)
    sent: dict[str, bytes] = {}
    total = 0
    while pending:
        name = pending.pop(0)
        for path, inside in _module_files(name, folders):
            try:
                source = Path(path).read_bytes()
            except OSError:
                continue  # gone since it was imported: the job's ImportError says so
            total += len(source)
            if len(sent) >= max_files or total > max_bytes:
                raise SpecError(
                    f"the local module {name!r} is too large to send with the job (the cell's "
                    f"local code passes {max_files:,} files or {max_bytes // 2**20} MiB); "
                    "install it on the workers or put it on a filesystem they share"
                )
            sent[inside] = source
            for imported in sorted(_file_imports(path, source) - excluded - seen):
                seen.add(imported)
                pending.append(imported)
    return sent
