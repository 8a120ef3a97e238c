"""``trainorch export ID --format pytorchjob|trainjob``: a job as a Kubeflow manifest.

The manifest runs exactly what ``trainorch export`` writes (the standalone template's
command, its script, captured variables, inputs and local modules): those files travel in a
ConfigMap, mounted into the training container, copied to a writable working folder, and
the template's command runs there. One file, ``kubectl apply -f``-able, holds the ConfigMap
and the job:

- ``pytorchjob``: a Kubeflow Training Operator (v1) ``PyTorchJob``: a Master and
  ``nodes - 1`` Workers, one process each, as trainorch runs a multi-node job (one rank per
  node, with the job's GPUs, CPUs and memory per node); the operator sets ``MASTER_ADDR``,
  ``MASTER_PORT``, ``WORLD_SIZE`` and ``RANK``.
- ``trainjob``: a Kubeflow Trainer (v2) ``TrainJob`` on a torch runtime
  (``torch-distributed`` unless told otherwise) with ``numNodes`` nodes of one process;
  the command runs under ``torchrun``, which the runtime configures.

Secret env names become references to keys of a Kubernetes Secret; values never appear.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from ..spec.errors import SpecError
from .export import export_job
from .kubernetes_objects import (
    FILES_MOUNT,
    FILES_VOLUME,
    config_map,
    container_env,
    container_resources,
    kubernetes_name,
    start_script,
)

FORMATS = ("pytorchjob", "trainjob")
DEFAULT_RUNTIME = "torch-distributed"
# The container name the training operator looks for (its port and env go there).
PYTORCH_CONTAINER = "pytorch"
# The replicated job and container of Kubeflow's torch runtimes that runtimePatches target.
TRAINER_NODE = "node"
_PATCH_MANAGER = "trainorch.jupyter.org/export"
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:@-]*")


def export_kubeflow(
    job: dict[str, Any],
    package: bytes | None,
    folder: Path,
    kind: str,
    image: str | None = None,
    secret: str | None = None,
    runtime: str = DEFAULT_RUNTIME,
) -> list[Path]:
    """Write the export of ``job`` into ``folder`` and, beside it, ``<name>.<kind>.yaml``.

    ``image``: the container image (an ``image`` of the job's template otherwise);
    ``secret``: the Secret that holds the job's ``secret_env`` values.
    Returns the manifest's path, then what the export wrote.
    """
    if kind not in FORMATS:
        raise SpecError(f"--format must be one of template, {', '.join(FORMATS)}, not {kind!r}")
    image = image or (job.get("spec") or {}).get("image") or ""
    if not image:
        raise SpecError(
            f"job {job['id']} names no container image: give one with --image (an image "
            "with python and what the job imports, e.g. pytorch/pytorch)"
        )
    if not _IMAGE.fullmatch(image):
        raise SpecError(f"--image must be an image reference such as pytorch/pytorch:2.6.0, not {image!r}")  # fmt: skip
    name = kubernetes_name(job["name"], job["id"])
    secret = secret or f"{name}-secrets"
    if not _SUBDOMAIN.fullmatch(secret):
        raise SpecError(
            f"--secret must be a Kubernetes name (lower-case letters, digits, '-' and '.'), not {secret!r}"
        )
    if not _SUBDOMAIN.fullmatch(runtime):
        raise SpecError(f"--runtime must be the name of a ClusterTrainingRuntime, not {runtime!r}")
    written = export_job(job, package, folder)
    template_path, files = written[0], written[1:]
    template = yaml.safe_load(template_path.read_text())
    secret_names = sorted((job.get("spec") or {}).get("secret_env") or {})

    documents: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if files:
        files_map, items = config_map(f"{name}-files", folder, files)
        documents.append(files_map)
        volumes.append(
            {
                "name": FILES_VOLUME,
                "configMap": {"name": files_map["metadata"]["name"], "items": items},
            }
        )
    container = {
        "image": image,
        "command": start_script(template["command"], bool(files), torchrun=kind == "trainjob"),
        "env": container_env(template.get("env") or {}, secret_names, secret, _extra_env(kind, files)),
    }  # fmt: skip
    resources = container_resources(template.get("resources") or {})
    nodes = int((template.get("resources") or {}).get("nodes", 1))
    metadata = {"name": name, "annotations": {"trainorch/job-id": str(job["id"])}}
    if kind == "pytorchjob":
        documents.append(_pytorchjob(metadata, template, container, resources, volumes, nodes))
    else:
        documents.append(
            _trainjob(metadata, template, container, resources, volumes, nodes, runtime)
        )
    target = folder / f"{template_path.stem}.{kind}.yaml"
    target.write_text(
        _header(job, kind, target.name, secret, secret_names)
        + yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False, explicit_start=True)
    )
    return [target, *written]


class _PlainDumper(yaml.SafeDumper):
    """Writes a part shared by two replicas twice: a reader of the manifest (and kubectl's
    strict decoding) should not have to follow YAML anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # Scripts and the start command read as they run, not as one quoted line.
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_PlainDumper.add_representer(str, _text)


def _extra_env(kind: str, files: list[Path]) -> dict[str, str]:
    extra = {"TRAINORCH_FILES": FILES_MOUNT} if files else {}
    if kind == "pytorchjob":
        # One process per pod: what trainorch sets for a rank (torchrun does it in a TrainJob).
        extra |= {"LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    return extra


_FILES_MOUNTED = [{"name": FILES_VOLUME, "mountPath": FILES_MOUNT, "readOnly": True}]


def _pytorchjob(
    metadata: dict[str, Any], template: dict[str, Any], container: dict[str, Any],
    resources: dict[str, Any], volumes: list[dict[str, Any]], nodes: int,
) -> dict[str, Any]:  # fmt: skip
    retries = int((template.get("retries") or {}).get("max", 0))
    main = {"name": PYTORCH_CONTAINER, **container, "resources": resources}
    pod: dict[str, Any] = {"containers": [main]}
    if volumes:
        main["volumeMounts"] = _FILES_MOUNTED
        pod["volumes"] = volumes

    def replicas(count: int) -> dict[str, Any]:
        # A failed pod restarts in place while the job's retries last, as trainorch retries.
        restart = "OnFailure" if retries else "Never"
        return {"replicas": count, "restartPolicy": restart, "template": {"spec": pod}}

    specs = {"Master": replicas(1)}
    if nodes > 1:
        specs["Worker"] = replicas(nodes - 1)
    run_policy: dict[str, Any] = {"backoffLimit": retries}
    if template.get("timeout"):
        run_policy["activeDeadlineSeconds"] = math.ceil(float(template["timeout"]))
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {"nprocPerNode": "1", "runPolicy": run_policy, "pytorchReplicaSpecs": specs},
    }


def _trainjob(
    metadata: dict[str, Any], template: dict[str, Any], container: dict[str, Any],
    resources: dict[str, Any], volumes: list[dict[str, Any]], nodes: int, runtime: str,
) -> dict[str, Any]:  # fmt: skip
    trainer = {**container, "numNodes": nodes, "numProcPerNode": 1}
    if resources:
        trainer["resourcesPerNode"] = resources
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                       "name": runtime},
        "trainer": trainer,
    }  # fmt: skip
    if template.get("timeout"):
        spec["activeDeadlineSeconds"] = math.ceil(float(template["timeout"]))
    if volumes:
        # The trainer's container has no volume field of its own: the runtime's pod
        # template is patched, on the job and container Kubeflow's torch runtimes name "node".
        pod = {
            "volumes": volumes,
            "containers": [{"name": TRAINER_NODE, "volumeMounts": _FILES_MOUNTED}],
        }
        replicated = {"name": TRAINER_NODE, "template": {"spec": {"template": {"spec": pod}}}}
        spec["runtimePatches"] = [
            {
                "manager": _PATCH_MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [replicated]}}},
            }
        ]
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": spec,
    }


def _header(job: dict[str, Any], kind: str, file: str, secret: str, secrets: list[str]) -> str:
    lines = [
        f"# trainorch job {job['id']} ({job['name']}) as a Kubeflow {kind}, written by",
        f"# `trainorch export {job['id']} --format {kind}`; the job's files are in the ConfigMap.",
    ]
    if secrets:
        values = " ".join(f"--from-literal={name}=…" for name in secrets)
        lines += ["# Its secrets come from a Secret; create it first:",
                  f"#   kubectl create secret generic {secret} {values}"]  # fmt: skip
    lines.append(f"# Then: kubectl apply -f {file}")
    return "\n".join(lines) + "\n"
