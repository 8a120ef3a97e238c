"""``TRAINORCH_CLUSTER=gateway``: a real dask-gateway-server on loopback (its local backend,
which starts schedulers and workers as processes), and an orchestrator whose backend asks it
for a cluster and runs GPU jobs there, across a restart of the service."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import free_port, log_text, start_host, stop_process, submit, wait_final, wait_until
from gpu_job import run_gpu_job

from jupyter_trainorch.cluster.gateway import gateway_option_values
from jupyter_trainorch.cluster.options import ClusterOptionsError, parse_cluster_options


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
        "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
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
        job = run_gpu_job(host)
        assert "gpus 0" in log_text(host, job)
        report = host.call(lambda o: o.backend.gateway.list_clusters())[0]
        assert report.options["image"] == "registry.example/trainorch:1.0"
        host.stop(detach=True)  # the service restarts: the gateway cluster stays
        host = start_host(tmp_path / "data", **settings)
        assert host.orchestrator.backend.cluster.name == report.name
        assert "gpus 0" in log_text(host, run_gpu_job(host))
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


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# Long enough that the first job still runs when the second worker arrives on a loaded machine.
SLEEPS = "import time\ntime.sleep(20)\n"


@pytest.mark.timeout(300)
def test_a_gateway_cluster_scales_on_the_queue_and_back_to_its_minimum(tmp_path, gateway_server):
    from jupyter_trainorch.spec import Resources

    options = {**gateway_server, "gpus_per_worker": 1, "cores": 1, "memory": "1 GiB"}
    host = start_host(
        tmp_path / "data", cluster="gateway", cluster_options=json.dumps(options), mlflow="off",
        slots_per_worker=1, autoscale_minimum=0, autoscale_maximum=2, autoscale_grace=2,
    )  # fmt: skip
    try:
        backend = host.orchestrator.backend
        jobs = [submit(host, name=f"s{i}", source=SLEEPS, resources=Resources(gpus=1))
                for i in range(2)]  # fmt: skip

        def both_running() -> bool:
            return all(host.store.get_job(j).state == "running" for j in jobs)

        wait_until(both_running, 180, "two gateway workers running the two jobs")
        assert len(backend.workers) == 2
        for job_id in jobs:
            assert wait_final(host, job_id, 60).state == "succeeded"
        wait_until(lambda: not backend.workers, 60, "the idle workers closed")
    finally:
        host.stop()
