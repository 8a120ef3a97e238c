"""The code package a job carries to its worker: a zip of pickled variables and input files.

A zip, not a pickle, so that the server can add a template's input files to what a
kernel sent without unpickling (running) anything the user wrote. Variables are
pickled one by one so that the worker can name the one that fails to load.
"""

from __future__ import annotations

import io
import os
import posixpath
import zipfile
from pathlib import Path
from typing import Any

from .spec import SpecError

VARIABLES = "variables/"
FILES = "files/"
DEFAULT_MAX_INPUT_BYTES = 256 * 2**20


def _safe_name(name: str) -> str:
    clean = posixpath.normpath(name.replace(os.sep, "/"))
    if clean.startswith(("/", "../")) or clean in ("..", ".", ""):
        raise SpecError(f"input file {name!r} must be a relative path inside the template's folder")
    return clean


def build_package(variables: dict[str, bytes] | None = None, files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, blob in (variables or {}).items():
            archive.writestr(VARIABLES + name, blob)
        for name, data in (files or {}).items():
            archive.writestr(FILES + _safe_name(name), data)
    return buffer.getvalue()


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
    return build_package(variables, {**existing, **files})


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
