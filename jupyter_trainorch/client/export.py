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
from ..spec.template_migrate import SCHEMA_VERSION

_LOADER = """import zipfile as _zipfile

import cloudpickle as _cloudpickle

with _zipfile.ZipFile("variables.zip") as _archive:
    for _name in _archive.namelist():
        if _name.startswith("variables/"):
            globals()[_name[len("variables/"):]] = _cloudpickle.loads(_archive.read(_name))
"""
_TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "TRAINORCH_MLFLOW_RUN_ID")


def file_stem(name: str) -> str:
    """A job name as a file name (and template name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "job"


def unpack_files(package: bytes | None, folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """Write the package's input files and local modules into ``folder``; return its
    captured variables and the names of the files written."""
    variables, inputs = read_package(package) if package else ({}, {})
    # The kernel's local modules go beside the script, where its imports find them.
    inputs = {**read_modules(package), **inputs}
    folder.mkdir(parents=True, exist_ok=True)
    extract_files(inputs, folder)
    return variables, list(inputs)


def template_fields(job: dict[str, Any]) -> dict[str, Any]:
    """What a standalone template keeps of ``job``: resources, retries, priority, env (not
    the tracking variables of its run), the names of its secrets, timeout, experiment,
    image, data inputs and artifacts."""
    spec = job["spec"]
    env = {k: v for k, v in (spec.get("env") or {}).items() if k not in _TRACKING_ENV}
    fields: dict[str, Any] = {
        "resources": spec.get("resources") or {},
        "retries": spec.get("retries") or {},
        "priority": job.get("priority", 100),
        "env": env,
    }
    secrets = sorted(spec.get("secret_env") or {})
    if secrets:
        # Their values never leave the job: whoever submits the export sets them again.
        fields["secret_env"] = dict.fromkeys(secrets, "")
    if spec.get("timeout"):
        fields["timeout"] = spec["timeout"]
    if spec.get("experiment"):
        fields["experiment"] = spec["experiment"]
    if spec.get("image"):
        fields["image"] = spec["image"]
    if spec.get("data"):
        fields["data"] = dict(spec["data"])
    if spec.get("artifacts"):
        fields["artifacts"] = [{item["name"]: item["path"]} for item in spec["artifacts"]]
    return fields


def export_job(job: dict[str, Any], package: bytes | None, folder: Path) -> list[Path]:
    """Write the template, script and inputs of ``job`` (its detail JSON) into ``folder``."""
    spec = job["spec"]
    stem = file_stem(job["name"])
    variables, shipped = unpack_files(package, folder)
    written = [folder / name for name in shipped]
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
    fields = template_fields(job)
    template = {
        "version": SCHEMA_VERSION,
        "name": stem,
        "description": f"Exported from job {job['id']} ({job['name']})",
        "kind": "command",
        "command": command,
        **{k: fields[k] for k in ("resources", "retries", "priority", "env")},
        "files": sorted(shipped),
    }
    secrets = sorted(fields.get("secret_env") or {})
    if secrets:
        template["description"] += (
            f"; set its secrets when you submit it: --secret-env {'=… --secret-env '.join(secrets)}=…"
        )
    template.update(
        {
            k: fields[k]
            for k in ("timeout", "experiment", "image", "data", "artifacts")
            if k in fields
        }
    )
    target = folder / f"{stem}.yaml"
    target.write_text(yaml.safe_dump(template, sort_keys=False))
    return [target, *written]
