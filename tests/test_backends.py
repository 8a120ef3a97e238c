"""The cluster backends' one setting, cluster_options, and the kubernetes backend.

Each of gateway, kubernetes and slurm is chosen by TRAINORCH_CLUSTER and told what to start by
TRAINORCH_CLUSTER_OPTIONS, checked once with a sentence naming a wrong key. Kubernetes cannot
run here: its DaskCluster resource is checked against the operator's own schema and its worker
command against ``dask worker``'s, and the backend runs a job on the workers that resource
describes, started by a stand-in for the operator. (Gateway and slurm run for real:
test_backends_gateway.py, test_backends_slurm.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import log_text, start_host
from gpu_job import run_gpu_job

from jupyter_trainorch.cluster import make_backend
from jupyter_trainorch.cluster.gateway import GatewayBackend
from jupyter_trainorch.cluster.kubernetes import KubernetesBackend, cluster_spec
from jupyter_trainorch.cluster.options import parse_cluster_options
from jupyter_trainorch.cluster.slurm import SlurmBackend
from jupyter_trainorch.settings import SettingError, TrainOrch


# -- the setting ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cluster", "options", "sentence"),
    [
        ("slurm", '{"namespace": "ml"}', "'namespace' is not an option of the slurm cluster, which takes account, cores, environment, gpus_per_worker, interface, job_directives, memory, prologue, python, queue, walltime, workers"),
        ("kubernetes", '{"workers": 2}', "the kubernetes cluster needs image"),
        ("gateway", '{"workers": 2}', "the gateway cluster needs address"),
        ("slurm", '{"cores": 0}', "cores must be a whole number from 1 to 4096"),
        ("slurm", '{"workers": 1e999}', "workers must be a whole number from 0 to 10000"),
        ("slurm", '{"gpus_per_worker": true}', "gpus_per_worker must be a whole number from 0 to 64"),
        ("slurm", '{"memory": "lots"}', "memory must be a size such as 16GiB or 512MB, not 'lots'"),
        ("slurm", '{"queue": "gpu\\n#SBATCH --uid=0"}', 'queue must be text such as "gpu"'),
        ("slurm", '{"workers": NaN}', "it must be a JSON object"),
        ("local", '{"wrokers": 2}', "'wrokers' is not a cluster option"),
    ],
)  # fmt: skip
def test_a_wrong_cluster_option_is_one_sentence_naming_it(cluster, options, sentence, monkeypatch):
    monkeypatch.setenv("TRAINORCH_CLUSTER", cluster)
    monkeypatch.setenv("TRAINORCH_CLUSTER_OPTIONS", options)
    with pytest.raises(SettingError) as caught:
        TrainOrch().to_config()
    assert str(caught.value) == (
        'TRAINORCH_CLUSTER_OPTIONS must be a JSON object of cluster options such as {"workers": '
        f'2, "gpus_per_worker": 1}} ({sentence}), not {options!r}'
    )


def test_options_set_in_jupyter_config_are_named_as_written(tmp_path):
    settings = TrainOrch(cluster="kubernetes", cluster_options='{"queue": "gpu"}')
    with pytest.raises(SettingError, match=r"^c\.TrainOrch\.cluster_options must be .*'queue'"):
        settings.to_config()


def test_each_name_builds_its_backend_without_starting_it(tmp_path):
    def backend(cluster: str, options: dict) -> object:
        config = TrainOrch(
            data_dir=str(tmp_path), cluster=cluster, cluster_options=json.dumps(options)
        ).to_config()
        return make_backend(config)

    gateway = backend("gateway", {"address": "http://gw.example:8000", "workers": 3})
    assert type(gateway) is GatewayBackend and gateway.options.workers == 3
    kubernetes = backend("kubernetes", {"image": "reg.example/trainorch:1"})
    assert type(kubernetes) is KubernetesBackend and kubernetes.client is None
    slurm = backend("slurm", {"queue": "gpu"})
    assert type(slurm) is SlurmBackend and slurm.state_file == tmp_path / "slurm-cluster.json"


# -- kubernetes -----------------------------------------------------------------------------
K8S_OPTIONS = {"workers": 2, "gpus_per_worker": 2, "cores": 8, "memory": "64 GiB",
               "image": "registry.example/trainorch:1.0", "namespace": "ml",
               "environment": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}}  # fmt: skip


def _operator_schema() -> dict:
    import dask_kubernetes

    crd = (
        Path(dask_kubernetes.__file__).parent
        / "operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
    )
    return yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_the_dask_cluster_resource_gives_workers_gpus_and_the_image():
    import jsonschema

    spec = cluster_spec(parse_cluster_options(json.dumps(K8S_OPTIONS), "kubernetes"))
    jsonschema.validate(spec, _operator_schema())
    assert (spec["kind"], spec["metadata"]) == (
        "DaskCluster",
        {"name": "trainorch", "namespace": "ml"},
    )
    worker_group = spec["spec"]["worker"]
    assert worker_group["replicas"] == 2
    worker = worker_group["spec"]["containers"][0]
    assert worker["image"] == "registry.example/trainorch:1.0"
    assert worker["resources"]["limits"] == {
        "nvidia.com/gpu": "2",
        "cpu": "8",
        "memory": str(64 * 2**30),
    }
    assert "nvidia.com/gpu" not in worker["resources"]["requests"]
    assert worker["args"][worker["args"].index("--resources") + 1] == "GPU=2"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in worker["env"]
    assert worker_group["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["image"] == worker["image"] and "resources" not in scheduler
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    assert {"name": "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "value": "0"} in scheduler[
        "env"
    ]


def test_the_operator_schema_does_check_what_it_is_given():
    import jsonschema

    spec = cluster_spec(parse_cluster_options(json.dumps(K8S_OPTIONS), "kubernetes"))
    spec["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, _operator_schema())


def test_the_worker_command_is_one_dask_worker_accepts():
    """Parsed by ``dask worker``'s own command line (as the pod would run it), not run."""
    spec = cluster_spec(parse_cluster_options(json.dumps(K8S_OPTIONS), "kubernetes"))
    assert spec["spec"]["worker"]["spec"]["containers"][0]["args"][:2] == ["dask", "worker"]
    params = _worker_params(spec)
    assert (params["resources"], params["nthreads"], params["name"]) == ("GPU=2", 8, "w")


def _worker_params(spec: dict) -> dict:
    """The worker container's ``dask worker`` arguments, as that command reads them."""
    from distributed.cli.dask_worker import main

    args = spec["spec"]["worker"]["spec"]["containers"][0]["args"]
    return main.make_context(
        "dask worker", [a.replace("$(DASK_WORKER_NAME)", "w") for a in args[2:]]
    ).params


class StandInOperator:
    """``KubeCluster`` without Kubernetes: the workers the DaskCluster resource describes
    (its replicas, and its ``dask worker`` arguments as that command parses them), started
    as a real local Dask cluster. Records what the backend asked of the operator."""

    made: list[StandInOperator] = []

    def __init__(self, *, custom_cluster_spec: dict, namespace: str, shutdown_on_close: bool,
                 asynchronous: bool, quiet: bool) -> None:  # fmt: skip
        self.spec, self.namespace = custom_cluster_spec, namespace
        self.shutdown_on_close, self.deleted, self.scaled_to = shutdown_on_close, None, None
        StandInOperator.made.append(self)

    def __await__(self):
        return self._start().__await__()

    async def _start(self) -> StandInOperator:
        from distributed import LocalCluster

        params = _worker_params(self.spec)
        name, count = params["resources"].split("=")
        self.local = await LocalCluster(
            n_workers=self.spec["spec"]["worker"]["replicas"], threads_per_worker=params["nthreads"],
            resources={name: float(count)}, host="127.0.0.1", dashboard_address=":0", asynchronous=True,
        )  # fmt: skip
        self.scheduler_address = self.local.scheduler_address
        return self

    async def scale(self, n: int) -> None:
        self.scaled_to = n

    async def close(self) -> None:
        self.deleted = self.shutdown_on_close  # KubeCluster deletes the resource only then
        await self.local.close()


@pytest.mark.timeout(120)
def test_the_kubernetes_backend_runs_a_job_on_the_workers_its_resource_describes(
    tmp_path, monkeypatch
):
    import dask_kubernetes.operator

    monkeypatch.setattr(dask_kubernetes.operator, "KubeCluster", StandInOperator)
    StandInOperator.made.clear()
    options = {**K8S_OPTIONS, "workers": 1, "gpus_per_worker": 1, "cores": 2}
    settings = {"cluster": "kubernetes", "cluster_options": json.dumps(options), "mlflow": "off"}
    host = start_host(tmp_path / "data", **settings)
    try:
        (made,) = StandInOperator.made
        assert (made.namespace, made.shutdown_on_close, made.scaled_to) == ("ml", False, 1)
        assert made.spec == cluster_spec(parse_cluster_options(json.dumps(options), "kubernetes"))
        (worker,) = host.orchestrator.backend.workers.values()
        assert worker.advertises_gpus and worker.gpu_ids == ("0",)
        assert "gpus 0" in log_text(host, run_gpu_job(host))
        host.stop(detach=True)
        assert made.deleted is False  # a restarting service leaves the DaskCluster
        host = start_host(tmp_path / "data", **settings)
    finally:
        host.stop()
    assert StandInOperator.made[-1].deleted is True  # a stopped service deletes it


def test_a_worker_whose_arrival_was_not_heard_is_found_all_the_same(monkeypatch):
    # A worker that registers before the backend's subscription reaches the scheduler
    # announces itself to nobody: here no announcement is heard at all.
    import asyncio

    from distributed import Scheduler, Worker

    from jupyter_trainorch.cluster import backends
    from jupyter_trainorch.cluster.backends import ClusterBackend

    monkeypatch.setattr(backends, "WORKERS_REREAD_SECONDS", 0.2)

    async def run() -> list[str]:
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as scheduler:
            backend = ClusterBackend(scheduler.address)
            backend._scheduler_event = lambda event: None  # deaf to add-worker
            joined: list[str] = []

            async def on_change(added: list, left: list) -> None:
                joined.extend(worker.address for worker in added)

            await backend.start(on_change)
            assert backend.workers == {}
            async with Worker(scheduler.address, host="127.0.0.1", nthreads=1) as worker:
                for _ in range(50):
                    if joined:
                        break
                    await asyncio.sleep(0.1)
                assert joined == [worker.address]
            await backend.close()
            return joined

    assert len(asyncio.run(run())) == 1
