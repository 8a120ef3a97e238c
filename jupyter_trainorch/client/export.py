"""``trainorch export``: a finished job as a standalone template plus script.

The template is of kind ``command``; a python job's cell becomes ``<name>.py`` with its
params assigned at the top and its captured variables loaded from ``variables.zip``, and
the kernel's local modules it took along lie beside it, so ``trainorch submit <name>.yaml``
reruns it anywhere, without the notebook.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..package import build_package, extract_files, read_modules, read_package

_LOADER = """import zipfile as _zipfile

import cloudpickle as _cloudpickle

with _zipfile.ZipFile("variables.zip") as _archive:
    for _name in _archive.namelist():
        if _name.startswith("variables/"):
            globals()[_name[len("variables/"):]] = _cloudpickle.loads(_archive.read(_name))
"""
_TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "TRAINORCH_MLFLOW_RUN_ID")


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "job"


def export_job(job: dict[str, Any], package: bytes | None, folder: Path) -> list[Path]:
    """Write the template, script and inputs of ``job`` (its detail JSON) into ``folder``."""
    spec = job["spec"]
    stem = _file_stem(job["name"])
    folder.mkdir(parents=True, exist_ok=True)
    variables, inputs = read_package(package) if package else ({}, {})
    # The kernel's local modules go beside the script, where its imports find them.
    inputs = {**read_modules(package), **inputs}
    extract_files(inputs, folder)
    written = [folder / name for name in inputs]
    shipped = list(inputs)
    if spec.get("kind", "python") == "python":
        script = folder / f"{stem}.py"
        header = [
            f"# Exported from trainorch job {job['id']} ({job['name']}), code hash {job.get('code_hash', '')}."
        ]
        header += [
            f"{key} = {value!r}" for key, value in sorted((spec.get("params") or {}).items())
        ]
        if variables:
            (folder / "variables.zip").write_bytes(build_package(variables))
            written.append(folder / "variables.zip")
            shipped.append("variables.zip")
            header.append(_LOADER)
        script.write_text("\n".join(header) + "\n" + spec.get("source", ""))
        written.append(script)
        shipped.append(script.name)
        command = f"python {script.name}"
    else:
        command = spec["command"]
    env = {k: v for k, v in (spec.get("env") or {}).items() if k not in _TRACKING_ENV}
    template = {
        "version": 1,
        "name": stem,
        "description": f"Exported from job {job['id']} ({job['name']})",
        "kind": "command",
        "command": command,
        "resources": spec.get("resources") or {},
        "retries": spec.get("retries") or {},
        "priority": job.get("priority", 100),
        "env": env,
        "inputs": sorted(shipped),
    }
    secrets = sorted(spec.get("secret_env") or {})
    if secrets:
        # Their values never leave the job: whoever submits the export sets them again.
        template["description"] += (
            f"; set its secrets when you submit it: --secret-env {'=… --secret-env '.join(secrets)}=…"
        )
    if spec.get("timeout"):
        template["timeout"] = spec["timeout"]
    if spec.get("experiment"):
        template["experiment"] = spec["experiment"]
    target = folder / f"{stem}.yaml"
    target.write_text(yaml.safe_dump(template, sort_keys=False))
    return [target, *written]
