"""Plain Kubernetes pieces of an exported job: names, quantities, env, and the ConfigMap
that carries what ``trainorch export`` writes to the pods.

Only what the Kubeflow manifests (``client/kubeflow.py``) share; no Kubernetes client is
needed: the manifests are files for ``kubectl apply``.
"""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import Path
from typing import Any

from ..spec.errors import SpecError

# Where the ConfigMap of exported files is mounted in the training container.
FILES_MOUNT = "/trainorch/files"
FILES_VOLUME = "trainorch-files"
# Kubernetes refuses a ConfigMap whose keys and values pass 1 MiB together.
CONFIGMAP_LIMIT = 1024 * 1024
# Room for the suffixes Kubeflow adds to pod and service names (``-worker-12``,
# ``-node-0-0`` and the JobSet's own) inside the 63 characters of a DNS label.
MAX_NAME = 40
GPU_RESOURCE = "nvidia.com/gpu"


def kubernetes_name(text: str, suffix: str = "") -> str:
    """A DNS-1035 label (Kubeflow's rule for job names) made of ``text`` and ``suffix``."""
    tail = re.sub(r"[^a-z0-9-]+", "-", suffix.lower()).strip("-")
    room = MAX_NAME - len(tail) - 1 if tail else MAX_NAME
    head = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:room].strip("-")
    if not head or not head[0].isalpha():
        head = ("job-" + head)[:room].strip("-")
    return f"{head}-{tail}" if tail else head


def cpu_quantity(cpus: float) -> str:
    """``2`` or ``500m``: the exact Kubernetes quantity of a job's CPU claim."""
    millis = round(cpus * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size: int) -> str:
    """Bytes as ``32Gi`` / ``512Mi`` when exact, else as a plain number of bytes."""
    for unit, scale in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def container_resources(resources: dict[str, Any]) -> dict[str, Any]:
    """The job's per-node claim (``resources`` of its template): CPUs and memory requested,
    memory and GPUs as limits (a job past its memory claim is out of memory, as under
    trainorch; GPUs can only be limits)."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if resources.get("cpus"):
        requests["cpu"] = cpu_quantity(float(resources["cpus"]))
    if resources.get("memory"):
        requests["memory"] = limits["memory"] = memory_quantity(int(resources["memory"]))
    if resources.get("gpus"):
        limits[GPU_RESOURCE] = int(resources["gpus"])
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def container_env(
    env: dict[str, str], secret_names: list[str], secret: str, extra: dict[str, str]
) -> list[dict[str, Any]]:
    """The job's ``env`` as values and its ``secret_env`` names as references to keys of the
    Secret ``secret``: a secret value is never written into a manifest."""
    listed = [{"name": name, "value": str(value)} for name, value in {**env, **extra}.items()]
    listed += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in secret_names
    ]
    return listed


def config_map(name: str, folder: Path, files: list[Path]) -> tuple[dict[str, Any], list[dict]]:
    """The ConfigMap holding ``files`` (below ``folder``) and the volume items that lay them
    out again as the export did (a key cannot hold ``/``; ``items`` put ``mypkg/sub.py`` back
    in its folder)."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    items = []
    size = 0
    for path in sorted(files):
        relative = path.relative_to(folder).as_posix()
        key = re.sub(r"[^-._a-zA-Z0-9]", "_", relative)
        while key in data or key in binary:  # a/b.py and a_b.py
            key = "_" + key
        content = path.read_bytes()
        size += len(key) + len(content)
        try:
            data[key] = content.decode("utf-8")
        except UnicodeDecodeError:  # variables.zip and any binary input
            binary[key] = base64.b64encode(content).decode("ascii")
        items.append({"key": key, "path": relative})
    if size > CONFIGMAP_LIMIT:
        raise SpecError(
            f"the exported files come to {size / 2**20:.1f} MiB, more than the 1 MiB a "
            "Kubernetes ConfigMap holds; put the large inputs in the image or on a volume"
        )
    manifest: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    if data:
        manifest["data"] = data
    if binary:
        manifest["binaryData"] = binary
    return manifest, items


def start_script(command: str, with_files: bool, torchrun: bool) -> list[str]:
    """The container's command: a writable copy of the exported files as the working folder
    (as under trainorch), ``NODE_RANK`` as trainorch sets it, then the exported command."""
    steps = ["set -e", 'work="$(mktemp -d)"']
    if with_files:
        # The ConfigMap volume is read-only and made of links into a hidden ``..data``
        # folder: copy the files themselves, without the hidden folders.
        steps += ['cp -RL "$TRAINORCH_FILES/." "$work/"', 'rm -rf "$work"/..?*']
    steps += ['cd "$work"', 'export NODE_RANK="${PET_NODE_RANK:-0}"']
    if torchrun:
        # Kubeflow Trainer's torch runtime gives torchrun its PET_* settings (nodes, rank,
        # master); torchrun then sets RANK, WORLD_SIZE, LOCAL_RANK for the one process.
        steps.append(f"exec torchrun --no-python /bin/sh -c {shlex.quote(command)}")
    else:
        steps.append(f"exec /bin/sh -c {shlex.quote(command)}")
    return ["/bin/sh", "-c", "\n".join(steps)]
