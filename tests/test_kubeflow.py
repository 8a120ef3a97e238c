"""``trainorch export --format pytorchjob|trainjob``: Kubeflow manifests checked against the
real CRDs' OpenAPI v3 schemas (vendored in tests/data/kubeflow, source and commit in each
file), and run: a real two-node DDP job runs on a local cluster, is exported, and the pods
the manifest describes are played on this machine (the ConfigMap laid out as the kubelet
mounts it, the env the training operator or torchrun sets) — they print what the job printed.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import jsonschema
import pytest
import yaml
from conftest import free_port

from jupyter_trainorch.cli import main
from jupyter_trainorch.client import transport as transport_module
from jupyter_trainorch.client.job import submit
from jupyter_trainorch.client.kubeflow import export_kubeflow
from jupyter_trainorch.package import build_package
from jupyter_trainorch.spec import SpecError

pytest.importorskip("torch")

CRDS = Path(__file__).parent / "data" / "kubeflow"
SECRET_VALUE = "s3cret-value-never-in-a-manifest"

ALL_REDUCE = """
import os
import torch
import torch.distributed as dist
from ddphelpers.scaling import scaled

dist.init_process_group("gloo")
rank = dist.get_rank()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"rank {rank} of {dist.get_world_size()} sum {value.item():g} "
      f"scaled {scaled(value.item(), scale) + offset:g} run {os.environ['RUN_NAME']} "
      f"key length {len(os.environ['API_KEY'])}", flush=True)
print(f"placement rank {rank} node {os.environ['NODE_RANK']} "
      f"local {os.environ['LOCAL_RANK']}/{os.environ['LOCAL_WORLD_SIZE']}", flush=True)
dist.destroy_process_group()
"""
MODULES = {
    "ddphelpers/__init__.py": b"",
    "ddphelpers/scaling.py": b"def scaled(value, factor):\n    return value * factor\n",
}


def crd_schema(file: str, strict: bool = False) -> dict[str, Any]:
    """The OpenAPI v3 schema of the CRD's served version. ``strict``: an object with listed
    properties takes no other, as Kubernetes prunes unknown fields (silently: a misspelled
    field would be lost, not refused)."""
    crd = yaml.safe_load((CRDS / file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
    schema = version["schema"]["openAPIV3Schema"]
    if strict:
        schema = copy.deepcopy(schema)
        nodes = [schema]
        while nodes:
            node = nodes.pop()
            if isinstance(node, dict):
                if (
                    "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")
                ):
                    node["additionalProperties"] = False
                nodes.extend(node.values())
            elif isinstance(node, list):
                nodes.extend(node)
    return schema


PYTORCHJOB = crd_schema("kubeflow.org_pytorchjobs.yaml", strict=True)
TRAINJOB = crd_schema("trainer.kubeflow.org_trainjobs.yaml", strict=True)


def schema_errors(manifest: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]  # fmt: skip


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    files, job = yaml.safe_load_all(path.read_text())
    assert files["kind"] == "ConfigMap"
    return files, job


def mount_config_map(files: dict[str, Any], items: list[dict[str, str]], folder: Path) -> Path:
    """The ConfigMap's volume as the kubelet writes it: the files in a timestamped folder,
    ``..data`` a link to it, each top-level entry a link through ``..data``."""
    import base64

    stamped = folder / "..2026_01_01_00_00_00.000000001"
    for item in items:
        target = stamped / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if item["key"] in files.get("data", {}):
            target.write_text(files["data"][item["key"]])
        else:
            target.write_bytes(base64.b64decode(files["binaryData"][item["key"]]))
    (folder / "..data").symlink_to(stamped.name)
    for top in {item["path"].split("/")[0] for item in items}:
        (folder / top).symlink_to(f"..data/{top}")
    return folder


def run_pods(
    container: dict[str, Any], mounted: Path, ranks: list[dict[str, str]], secrets: dict[str, str]
) -> list[str]:
    """Run the container's command once per rank, at once, with the env the manifest gives
    (secret references resolved from ``secrets``) plus what Kubeflow sets for that rank;
    their output lines, sorted."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRAINORCH_")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}"
    for entry in container["env"]:
        reference = entry.get("valueFrom", {}).get("secretKeyRef")
        base[entry["name"]] = secrets[reference["key"]] if reference else entry["value"]
    base["TRAINORCH_FILES"] = str(mounted)  # the one difference: where the volume is mounted
    pods = [
        subprocess.Popen(container["command"], env={**base, **rank}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for rank in ranks
    ]  # fmt: skip
    outputs = [pod.communicate(timeout=120)[0] for pod in pods]
    assert [pod.returncode for pod in pods] == [0] * len(pods), outputs
    return sorted(line for out in outputs for line in out.splitlines() if line.startswith(("rank", "placement")))  # fmt: skip


@pytest.fixture
def local(monkeypatch):
    """The user's own service on a two-worker local cluster (stopped after the test)."""
    monkeypatch.setenv("TRAINORCH_WORKERS", "2")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")
    monkeypatch.setenv("TRAINORCH_MLFLOW", "off")
    return transport_module.connect()


def test_a_ddp_job_exports_to_kubeflow_manifests_whose_pods_run_it(local, tmp_path, capsys):
    job = submit(
        {"template": "python-cell", "name": "ddp", "source": ALL_REDUCE, "params": {"scale": 10},
         "overrides": {"nodes": 2, "gpus": 1, "cpus": 0.5, "memory": "1GiB",
                       "env": {"RUN_NAME": "demo"}, "secret_env": {"API_KEY": SECRET_VALUE}}},
        build_package({"offset": cloudpickle.dumps(5)}, modules=MODULES),
    )  # fmt: skip
    assert job.wait(180) == "succeeded", job.logs()
    ran = sorted(line.removeprefix("[rank 1] ") for line in job.logs().splitlines())
    common = [line for line in ran if line.startswith("rank")]
    assert common == [f"rank {r} of 2 sum 3 scaled 35 run demo key length {len(SECRET_VALUE)}"
                      for r in (0, 1)]  # fmt: skip

    # The default format is the plain export, as before.
    assert main(["export", job.id, "--dir", str(tmp_path / "plain")]) == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "ddp.py", "ddp.yaml", "ddphelpers", "variables.zip"
    ]  # fmt: skip
    capsys.readouterr()
    assert main(["export", job.id, "--format", "pytorchjob", "--dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (
        f"trainorch: job {job.id} names no container image: give one with --image (an image "
        "with python and what the job imports, e.g. pytorch/pytorch)\n"
    )

    for kind in ("pytorchjob", "trainjob"):
        folder = tmp_path / kind
        args = ["export", job.id, "--format", kind, "--image", "pytorch/pytorch:2.6.0"]
        assert main([*args, "--dir", str(folder)]) == 0
        manifest = folder / f"ddp.{kind}.yaml"
        assert str(manifest) == capsys.readouterr().out.splitlines()[0]
        text = manifest.read_text()
        assert SECRET_VALUE not in text and "API_KEY" in text
        files, kubeflow_job = load(manifest)
        port = str(free_port())
        if kind == "pytorchjob":
            assert schema_errors(kubeflow_job, PYTORCHJOB) == []
            specs = kubeflow_job["spec"]["pytorchReplicaSpecs"]
            assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 1)
            pod = specs["Worker"]["template"]["spec"]
            (container,) = pod["containers"]
            assert container["name"] == "pytorch"
            assert container["resources"] == {
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"memory": "1Gi", "nvidia.com/gpu": 1},
            }
            items = pod["volumes"][0]["configMap"]["items"]
            # What the training operator sets for the Master (rank 0) and Worker 0 (rank 1).
            ranks = [{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
                      "RANK": str(r), "PET_NODE_RANK": str(r), "PET_NNODES": "2",
                      "PET_NPROC_PER_NODE": "1", "PYTHONUNBUFFERED": "1"} for r in (0, 1)]  # fmt: skip
        else:
            assert schema_errors(kubeflow_job, TRAINJOB) == []
            trainer = kubeflow_job["spec"]["trainer"]
            assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 1)
            assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 1
            container = trainer
            (patch,) = kubeflow_job["spec"]["runtimePatches"]
            (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
            pod = replicated["template"]["spec"]["template"]["spec"]
            assert pod["containers"] == [{"name": "node", "volumeMounts": [
                {"name": "trainorch-files", "mountPath": "/trainorch/files", "readOnly": True}]}]  # fmt: skip
            items = pod["volumes"][0]["configMap"]["items"]
            # What Kubeflow Trainer's torch runtime sets on each node, for torchrun.
            ranks = [{"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(r),
                      "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port} for r in (0, 1)]  # fmt: skip
        assert {item["path"] for item in items} == {
            "ddp.py", "variables.zip", "ddphelpers/__init__.py", "ddphelpers/scaling.py"
        }  # fmt: skip
        mounted = mount_config_map(files, items, tmp_path / f"{kind}-volume")
        lines = run_pods(container, mounted, ranks, {"API_KEY": SECRET_VALUE})
        # As under trainorch; each pod is a node of its own, with one local rank.
        assert lines == [f"placement rank {r} node {r} local 0/1" for r in (0, 1)] + common, kind


def _job(**spec: Any) -> dict[str, Any]:
    base = {"kind": "command", "command": "python train.py --epochs 3", "env": {},
            "resources": {"gpus": 2, "cpus": 8.0, "memory": 32 * 2**30, "nodes": 3},
            "retries": {"max": 2}, "timeout": 5400.5, "secret_env": {"HF_TOKEN": "***"}}  # fmt: skip
    return {"id": "0a1b2c3d4e", "name": "Resnet 50!", "spec": {**base, **spec}}


def test_the_manifests_follow_the_crds_and_broken_ones_do_not(tmp_path):
    job = _job(image="registry.example/train:1.2")  # a template's image: field
    written = export_kubeflow(job, None, tmp_path / "p", "pytorchjob")
    (pytorchjob,) = yaml.safe_load_all(written[0].read_text())
    assert schema_errors(pytorchjob, PYTORCHJOB) == []
    assert pytorchjob["metadata"]["name"] == "resnet-50-0a1b2c3d4e"
    specs = pytorchjob["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 2)
    assert pytorchjob["spec"]["runPolicy"] == {"backoffLimit": 2, "activeDeadlineSeconds": 5401}
    (container,) = specs["Master"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/train:1.2"
    assert container["resources"]["limits"] == {"memory": "32Gi", "nvidia.com/gpu": 2}
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "resnet-50-0a1b2c3d4e-secrets", "key": "HF_TOKEN"}}} in container["env"]  # fmt: skip
    # No files to carry (a command job without inputs): no ConfigMap, no volume.
    assert "volumes" not in specs["Master"]["template"]["spec"]
    assert "kubectl create secret generic resnet-50-0a1b2c3d4e-secrets" in written[0].read_text()

    # --image wins over the template's; --secret names the Secret.
    written = export_kubeflow(job, None, tmp_path / "t", "trainjob", image="other/img:2",
                              secret="team-tokens")  # fmt: skip
    (trainjob,) = yaml.safe_load_all(written[0].read_text())
    assert schema_errors(trainjob, TRAINJOB) == []
    assert trainjob["spec"]["trainer"]["image"] == "other/img:2"
    assert trainjob["spec"]["trainer"]["numNodes"] == 3
    assert (
        trainjob["spec"]["trainer"]["env"][-1]["valueFrom"]["secretKeyRef"]["name"] == "team-tokens"
    )

    # What the schemas refuse: a count that is text, a quantity that is none, a field
    # Kubernetes would drop, a TrainJob with no runtime.
    broken = copy.deepcopy(pytorchjob)
    broken["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "two"
    assert schema_errors(broken, PYTORCHJOB) == [
        "spec.pytorchReplicaSpecs.Worker.replicas: 'two' is not of type 'integer'"
    ]
    broken = copy.deepcopy(pytorchjob)
    limits = broken["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]["limits"]  # fmt: skip
    limits["memory"] = "lots"
    assert any("'lots' does not match" in e for e in schema_errors(broken, PYTORCHJOB))
    broken = copy.deepcopy(pytorchjob)
    broken["spec"]["pytorchReplicaSpecs"]["Master"]["replica"] = 1
    assert any("'replica' was unexpected" in e for e in schema_errors(broken, PYTORCHJOB))
    broken = copy.deepcopy(trainjob)
    del broken["spec"]["runtimeRef"]
    broken["spec"]["trainer"]["numNodes"] = "3"
    assert sorted(schema_errors(broken, TRAINJOB)) == [
        "spec.trainer.numNodes: '3' is not of type 'integer'",
        "spec: 'runtimeRef' is a required property",
    ]


@pytest.mark.parametrize(
    ("job", "options", "sentence"),
    [
        (_job(), {}, "job 0a1b2c3d4e names no container image: give one with --image (an image with python and what the job imports, e.g. pytorch/pytorch)"),
        (_job(), {"image": "has space"}, "--image must be an image reference such as pytorch/pytorch:2.6.0, not 'has space'"),
        (_job(), {"image": "i", "secret": "Team_Tokens"}, "--secret must be a Kubernetes name (lower-case letters, digits, '-' and '.'), not 'Team_Tokens'"),
        (_job(), {"image": "i", "runtime": "torch distributed"}, "--runtime must be the name of a ClusterTrainingRuntime, not 'torch distributed'"),
    ],
)  # fmt: skip
def test_a_wrong_export_is_one_sentence_naming_the_flag(job, options, sentence, tmp_path):
    with pytest.raises(SpecError) as raised:
        export_kubeflow(job, None, tmp_path, "pytorchjob", **options)
    assert str(raised.value) == sentence


def test_files_past_a_configmap_are_refused_in_one_sentence(tmp_path):
    package = build_package(files={"data.bin": os.urandom(1100 * 1024)})
    with pytest.raises(SpecError) as raised:
        export_kubeflow(_job(), package, tmp_path, "trainjob", image="i")
    assert str(raised.value) == (
        "the exported files come to 1.1 MiB, more than the 1 MiB a Kubernetes ConfigMap "
        "holds; put the large inputs in the image or on a volume"
    )


def test_crds_are_the_vendored_releases():
    for file, source in (
        ("kubeflow.org_pytorchjobs.yaml", "kubeflow/training-operator/blob/v1.9.0/"),
        ("trainer.kubeflow.org_trainjobs.yaml", "kubeflow/trainer/blob/v2.3.0/"),
    ):
        head = (CRDS / file).read_text()[:600]
        assert source in head and "commit " in head
