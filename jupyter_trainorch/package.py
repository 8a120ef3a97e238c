"""The code package a job carries to its worker: a zip of pickled variables, input files
and the kernel's local modules.

A zip, not a pickle, so that the server can add a template's input files to what a
kernel sent without unpickling (running) anything the user wrote. Variables are
pickled one by one so that the worker can name the one that fails to load.
"""

from __future__ import annotations

import io
import os
import posixpath
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

from .spec import SpecError

VARIABLES = "variables/"
FILES = "files/"
META = "meta/"  # about the submission (variable manifest, installed packages); not run
MODULES = "modules/"  # the kernel's own .py modules and packages the cell needs, by path
KERNEL_VERSIONS = "kernel_versions.json"  # meta: {distribution: version} of what the cell imports
DEFAULT_MAX_INPUT_BYTES = 256 * 2**20


def _safe_name(name: str) -> str:
    clean = posixpath.normpath(name.replace(os.sep, "/"))
    if clean.startswith(("/", "../")) or clean in ("..", ".", ""):
        raise SpecError(f"input file {name!r} must be a relative path inside the template's folder")
    return clean


def _safe_module_path(name: str) -> str:
    clean = posixpath.normpath(name.replace(os.sep, "/"))
    if clean.startswith(("/", "../")) or clean in ("..", ".") or not clean.endswith(".py"):
        raise SpecError(f"module file {name!r} must be a relative path to a .py file")
    return clean


def build_package(
    variables: dict[str, bytes] | None = None,
    files: dict[str, bytes] | None = None,
    meta: dict[str, str] | None = None,
    modules: dict[str, bytes] | None = None,
) -> bytes:
    """``modules``: source files by their path below an import root (``mypkg/sub.py``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, blob in (variables or {}).items():
            archive.writestr(VARIABLES + name, blob)
        for name, data in (files or {}).items():
            archive.writestr(FILES + _safe_name(name), data)
        for name, text in (meta or {}).items():
            archive.writestr(META + _safe_name(name), text)
        for name, source in (modules or {}).items():
            archive.writestr(MODULES + _safe_module_path(name), source)
    return buffer.getvalue()


def read_modules(data: bytes | None) -> dict[str, bytes]:
    """The ``modules/`` files of a package, by their path below the import root."""
    if not data:
        return {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            _safe_module_path(info.filename[len(MODULES) :]): archive.read(info)
            for info in archive.infolist()
            if info.filename.startswith(MODULES)
        }


def read_meta(data: bytes | None) -> dict[str, str]:
    """The ``meta/`` texts of a package (what the tracker logs as artifacts)."""
    if not data:
        return {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            info.filename[len(META) :]: archive.read(info).decode("utf-8", "replace")
            for info in archive.infolist()
            if info.filename.startswith(META)
        }


def submission_meta(variables: dict[str, bytes], namespace: dict[str, Any]) -> dict[str, str]:
    """A manifest of the captured variables and the submitting environment's packages."""
    import json

    manifest = {
        name: {"type": type(namespace[name]).__name__, "pickled_bytes": len(blob)}
        for name, blob in sorted(variables.items())
        if name in namespace
    }
    return {
        "variables.json": json.dumps(manifest, indent=2) + "\n",
        "requirements.txt": environment_snapshot(),
    }


_snapshot: tuple[tuple[tuple[str, int], ...], str] | None = None
_snapshot_lock = threading.Lock()


def _environment_fingerprint() -> tuple[tuple[str, int], ...]:
    """The package folders on the import path and their modification times: installing
    or removing a package adds or removes a ``*.dist-info`` folder there, which changes its
    folder's time (the notebook's own folder is left out: writing a file must not count)."""
    stamps = []
    for entry in sys.path:
        if not entry.endswith(("site-packages", "dist-packages")):
            continue
        try:
            stamps.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(stamps)


def environment_snapshot() -> str:
    """``requirements.txt`` of the submitting environment: every installed distribution
    pinned. Listing them takes ~150 ms, so it is kept until the environment changes (and
    ``client.distributions.warm_environment`` computes it ahead of the first submit)."""
    global _snapshot
    import platform
    from importlib import metadata

    key = _environment_fingerprint()
    with _snapshot_lock:
        if _snapshot is not None and _snapshot[0] == key:
            return _snapshot[1]
        packages = sorted(filter(None, map(_pinned, metadata.distributions())), key=str.lower)
        header = f"# python {platform.python_version()} on {platform.platform()}\n"
        text = header + "\n".join(packages) + "\n"
        _snapshot = (key, text)
        return text


def _pinned(distribution: Any) -> str | None:
    """``name==version``, or None for a broken install (a ``*.dist-info`` folder without
    its metadata must not stop a submit)."""
    try:
        name = distribution.metadata["Name"]
        return f"{name}=={distribution.version}" if name else None
    except Exception:  # noqa: BLE001 - whatever a broken folder raises, it is not listed
        return None


MAX_EXPANDED_BYTES = 2**30


def check_package(data: bytes) -> None:
    """Refuse, in one sentence, a package that is not a zip of ours or would expand past
    ``MAX_EXPANDED_BYTES`` (a zip bomb), before anything stores or unpacks it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise SpecError(
            "package must be a zip archive (as the magics and the CLI build it)"
        ) from None
    if sum(info.file_size for info in infos) > MAX_EXPANDED_BYTES:
        raise SpecError(f"package would expand to more than {MAX_EXPANDED_BYTES // 2**20} MiB")
    for info in infos:
        if info.filename.startswith(FILES):
            _safe_name(info.filename[len(FILES) :])
        elif info.filename.startswith(MODULES):
            _safe_module_path(info.filename[len(MODULES) :])


def read_package(data: bytes) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(variables, files) of a package."""
    variables: dict[str, bytes] = {}
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.filename.startswith(VARIABLES):
                variables[info.filename[len(VARIABLES) :]] = archive.read(info)
            elif info.filename.startswith(FILES):
                files[_safe_name(info.filename[len(FILES) :])] = archive.read(info)
    return variables, files


def with_files(package: bytes | None, files: dict[str, bytes]) -> bytes | None:
    """``package`` plus ``files`` (a template's inputs added on the server)."""
    if not files:
        return package
    variables, existing = read_package(package) if package else ({}, {})
    return build_package(
        variables, {**existing, **files}, read_meta(package), read_modules(package)
    )


def template_files(template: Any, max_bytes: int = DEFAULT_MAX_INPUT_BYTES) -> dict[str, bytes]:
    """The files a template's ``inputs`` match, keyed by their path under its folder."""
    folder = Path(template.path).parent if template.path else Path.cwd()
    files: dict[str, bytes] = {}
    total = 0
    for found in template.input_files():
        path = Path(found)
        try:
            name = path.resolve().relative_to(folder.resolve()).as_posix()
        except ValueError:
            name = path.name  # inherited from a template in another folder
        total += path.stat().st_size
        if total > max_bytes:
            raise SpecError(
                f"the inputs of template {template.name!r} exceed {max_bytes / 2**20:.0f} MiB at {name}; "
                "put large data on storage the workers can read instead"
            )
        files[name] = path.read_bytes()
    return files


def extract_files(files: dict[str, bytes], into: Path) -> None:
    for name, data in files.items():
        target = into / _safe_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def code_hash(kind: str, source: str, command: str, package: bytes | None) -> str:
    """What a job runs: its code, its command, its captured variables, input files and
    local modules (not the package's metadata or zip timestamps)."""
    import hashlib

    digest = hashlib.sha256()
    for part in (kind, source, command):
        digest.update(part.encode() + b"\0")
    variables, files = read_package(package) if package else ({}, {})
    modules = read_modules(package)
    for prefix, items in (("v", variables), ("f", files), ("m", modules)):
        for name, data in sorted(items.items()):
            digest.update(f"{prefix}:{name}:{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16]
