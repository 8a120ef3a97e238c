"""The gateway, kubernetes and slurm cluster backends and their one setting, cluster_options.

dask-gateway runs for real here: a dask-gateway-server on loopback (its local backend, which
starts schedulers and workers as processes), and an orchestrator whose backend asks it for a
cluster and runs a GPU job there. Slurm runs for real too, but for Slurm itself: dask-jobqueue
submits its job scripts to an ``sbatch`` that runs them on this machine. Kubernetes cannot
run here: its DaskCluster resource is checked against the operator's own schema instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import (
    free_port,
    log_text,
    start_host,
    stop_process,
    submit,
    wait_final,
    wait_until,
)

from jupyter_trainorch.cluster import make_backend
from jupyter_trainorch.cluster.gateway import GatewayBackend, gateway_option_values
from jupyter_trainorch.cluster.kubernetes import KubernetesBackend, cluster_spec
from jupyter_trainorch.cluster.options import ClusterOptionsError, parse_cluster_options
from jupyter_trainorch.cluster.slurm import SlurmBackend, slurm_cluster_kwargs
from jupyter_trainorch.processes import group_alive
from jupyter_trainorch.settings import SettingError, TrainOrch
from jupyter_trainorch.spec import Resources

GPU_JOB = "import os\nprint('gpus', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\n"


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


# -- slurm ----------------------------------------------------------------------------------
SLURM_OPTIONS = {
    "workers": 2, "gpus_per_worker": 2, "cores": 8, "memory": "64 GiB", "queue": "gpu",
    "account": "ml-team", "walltime": "04:00:00", "environment": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
    "prologue": ["source /opt/envs/train/bin/activate"], "job_directives": ["--constraint=a100"],
}  # fmt: skip


def test_the_slurm_job_script_asks_for_the_gpus_and_advertises_them():
    from dask_jobqueue import SLURMCluster

    options = parse_cluster_options(json.dumps(SLURM_OPTIONS), "slurm")
    with SLURMCluster(**slurm_cluster_kwargs(options)) as cluster:
        script = cluster.job_script()
    lines = script.splitlines()
    for directive in ("-p gpu", "-A ml-team", "-t 04:00:00", "--gres=gpu:2", "--mem=64G",
                      "--cpus-per-task=8", "--constraint=a100"):  # fmt: skip
        assert f"#SBATCH {directive}" in lines
    assert "export MLFLOW_TRACKING_URI=http://mlflow:5000" in lines
    assert "source /opt/envs/train/bin/activate" in lines
    worker = lines[-1].split()
    assert worker[1:3] == ["-m", "distributed.cli.dask_worker"]
    assert worker[worker.index("--resources") + 1] == "GPU=2"
    assert worker[worker.index("--nthreads") + 1] == "8"


def test_a_cpu_slurm_worker_asks_for_no_gpu():
    kwargs = slurm_cluster_kwargs(parse_cluster_options('{"cores": 2}', "slurm"))
    assert kwargs["worker_extra_args"] == [] and kwargs["job_extra_directives"] == []


# Slurm's sbatch and scancel on this machine: a job is the job script run by bash in a
# session of its own, and its id is that session's process group. Both note the ids.
FAKE_SBATCH = r"""#!PYTHON
import pathlib, shutil, subprocess, sys
jobs = pathlib.Path("JOBS")
script = jobs / ("job-%d.sh" % len(list(jobs.glob("*.sh"))))
shutil.copy(sys.argv[-1], script)  # dask-jobqueue removes its file once submitted
log = open(script.with_suffix(".log"), "w")
proc = subprocess.Popen(["bash", str(script)], stdout=log, stderr=log, start_new_session=True)
with open(jobs / "submitted", "a") as ids:
    ids.write("%d\n" % proc.pid)
print("Submitted batch job %d" % proc.pid)
"""
FAKE_SCANCEL = r"""#!PYTHON
import os, signal, sys
with open("JOBS/cancelled", "a") as ids:
    ids.write("".join(job + "\n" for job in sys.argv[1:]))
for job in sys.argv[1:]:
    try:
        os.killpg(int(job), signal.SIGTERM)
    except ProcessLookupError:
        pass
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` and ``scancel`` on PATH; job ids are process groups on this machine."""
    bin_dir, jobs = tmp_path / "slurm-bin", tmp_path / "slurm-jobs"
    bin_dir.mkdir()
    jobs.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        tool = bin_dir / name
        tool.write_text(text.replace("PYTHON", sys.executable).replace("JOBS", str(jobs)))
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return jobs


@pytest.mark.timeout(150)
def test_a_gpu_job_runs_on_a_worker_that_slurm_started(tmp_path, fake_slurm, monkeypatch):
    options = {"workers": 1, "gpus_per_worker": 1, "cores": 2, "memory": "2 GiB",
               "interface": "lo", "queue": "gpu", "walltime": "00:30:00"}  # fmt: skip
    # A lost worker leaves the cluster after 1 s (not 15 s), so its replacement comes soon.
    monkeypatch.setenv("DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT", "1s")
    data = tmp_path / "data"
    settings = {"cluster": "slurm", "cluster_options": json.dumps(options), "mlflow": "off"}
    host = start_host(data, **settings)
    try:
        job = _run_gpu_job(host)
        assert "gpus 0" in log_text(host, job)
        script = (fake_slurm / "job-0.sh").read_text()
        assert "#SBATCH --gres=gpu:1" in script and "--resources GPU=1" in script
        cluster_pid = host.orchestrator.backend.pid
        host.stop(detach=True)  # the service restarts: the cluster and its Slurm job stay
        host = start_host(data, **settings)
        assert host.orchestrator.backend.pid == cluster_pid
        assert "gpus 0" in log_text(host, _run_gpu_job(host))
        first = int((fake_slurm / "submitted").read_text())
        os.killpg(first, signal.SIGKILL)  # its walltime is up: Slurm ends the job
        wait_until(lambda: len(_ids(fake_slurm / "submitted")) == 2, 40, "a job replacing it")
        assert "gpus 0" in log_text(host, _run_gpu_job(host))
    finally:
        host.stop()  # stops the cluster's process, which cancels its Slurm jobs
        state = data / "slurm-cluster.json"
        if state.exists():
            stop_process(json.loads(state.read_text())["pid"])
    replacement = _ids(fake_slurm / "submitted")[-1]
    wait_until(lambda: (fake_slurm / "cancelled").exists(), what="scancel")
    assert replacement in _ids(fake_slurm / "cancelled")
    wait_until(lambda: not group_alive(replacement), what="the Slurm job to end")


def _ids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()] if path.exists() else []


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
    from distributed.cli.dask_worker import main

    spec = cluster_spec(parse_cluster_options(json.dumps(K8S_OPTIONS), "kubernetes"))
    args = spec["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["dask", "worker"]
    context = main.make_context(
        "dask worker", [a.replace("$(DASK_WORKER_NAME)", "w0") for a in args[2:]]
    )
    assert (context.params["resources"], context.params["nthreads"]) == ("GPU=2", 8)


# -- dask-gateway ---------------------------------------------------------------------------
def test_gateway_options_follow_what_the_gateway_offers():
    options = parse_cluster_options(
        '{"address": "http://gw:8000", "cores": 4, "memory": "8 GiB", "gpus_per_worker": 1, '
        '"image": "reg.example/t:1", "environment": {"A": "b"}}',
        "gateway",
    )
    offered = {"worker_cores": 1, "worker_memory": 2.0, "image": "", "environment": {"Z": "1"}}
    values = gateway_option_values(options, offered)
    assert values["worker_cores"] == 4 and values["worker_memory"] == 8.0
    assert values["image"] == "reg.example/t:1"
    assert values["environment"] == {
        "Z": "1", "A": "b", "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
        "DASK_DISTRIBUTED__WORKER__RESOURCES": '{"GPU": 1}',
    }  # fmt: skip
    assert (
        gateway_option_values(options, {**offered, "worker_memory": "2 G"})["worker_memory"]
        == "8 GiB"
    )
    with pytest.raises(
        ClusterOptionsError, match="gpus_per_worker needs the gateway cluster option 'environment'"
    ):
        gateway_option_values(options, {"worker_cores": 1, "worker_memory": 1.0, "image": ""})


GATEWAY_CONFIG = """
import sys
from dask_gateway_server.options import Float, Integer, Mapping, Options, String

c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{http_port}"
c.Proxy.tcp_address = "127.0.0.1:{tcp_port}"
c.LocalBackend.clusters_directory = {clusters!r}
# distributed 2026 has no dask-scheduler/dask-worker scripts
c.ClusterConfig.scheduler_cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
c.ClusterConfig.worker_cmd = [sys.executable, "-m", "distributed.cli.dask_worker"]

def options_handler(options, user):
    return {{"worker_cores": options.worker_cores, "worker_memory": f"{{options.worker_memory}} G",
             "environment": options.environment}}

c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=4),
    Float("worker_memory", 1, min=0.5, max=4),
    String("image", ""),
    Mapping("environment", {{}}),
    handler=options_handler,
)
"""


@pytest.fixture
def gateway_server(tmp_path):
    """A real dask-gateway-server on loopback; stopped (with its clusters) at the end."""
    http_port, tcp_port, api_port = free_port(), free_port(), free_port()
    config = tmp_path / "gateway_config.py"
    config.write_text(GATEWAY_CONFIG.format(api_port=api_port, http_port=http_port,
                                            tcp_port=tcp_port, clusters=str(tmp_path / "gw")))  # fmt: skip
    log = open(tmp_path / "gateway.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "dask_gateway_server", "-f", str(config)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{address}/api/health"):
            assert server.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dask-gateway-server did not answer in 30 s"
            time.sleep(0.2)
        yield {"address": address, "proxy_address": f"gateway://127.0.0.1:{tcp_port}"}
    finally:
        stop_process(server.pid)  # SIGTERM: the server stops its clusters first
        log.close()


@pytest.mark.timeout(150)
def test_a_gpu_job_runs_on_a_cluster_from_a_real_gateway(tmp_path, gateway_server):
    options = {**gateway_server, "workers": 2, "gpus_per_worker": 1, "cores": 2,
               "memory": "1 GiB", "image": "registry.example/trainorch:1.0"}  # fmt: skip
    settings = {"cluster": "gateway", "cluster_options": json.dumps(options), "mlflow": "off"}
    host = start_host(tmp_path / "data", **settings)
    try:
        backend = host.orchestrator.backend
        assert backend.address.startswith(gateway_server["proxy_address"] + "/")
        wait_until(lambda: len(backend.workers) == 2, what="two gateway workers")
        assert all(w.advertises_gpus and w.gpu_ids == ("0",) for w in backend.workers.values())
        assert all(w.cpus == 2 and w.memory == 2**30 for w in backend.workers.values())
        job = _run_gpu_job(host)
        assert "gpus 0" in log_text(host, job)
        report = host.call(lambda o: o.backend.gateway.list_clusters())[0]
        assert report.options["image"] == "registry.example/trainorch:1.0"
        host.stop(detach=True)  # the service restarts: the gateway cluster stays
        host = start_host(tmp_path / "data", **settings)
        assert host.orchestrator.backend.cluster.name == report.name
        assert "gpus 0" in log_text(host, _run_gpu_job(host))
    finally:
        host.stop()  # not detached: the gateway cluster is shut down too
    remaining = subprocess.run(
        [sys.executable, "-c", _LIST_CLUSTERS, gateway_server["address"]],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert remaining.stdout.strip() == "[]", remaining.stderr


_LIST_CLUSTERS = (
    "import sys; from dask_gateway import Gateway; "
    "print([c.name for c in Gateway(sys.argv[1], auth='basic').list_clusters()])"
)


# -- helpers --------------------------------------------------------------------------------
def _run_gpu_job(host) -> str:
    job_id = submit(host, name="on-gpu", source=GPU_JOB, resources=Resources(gpus=1))
    job = wait_final(host, job_id, timeout=90)
    assert job.state == "succeeded", log_text(host, job_id)
    return job_id


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
