"""Data inputs and artifacts on a real orchestrator (local Dask cluster, MLflow on SQLite):
local and remote (fsspec over a real HTTP server) inputs staged with their hashes
recorded, missing inputs failing before placement, ``models:/`` inputs downloaded, and
artifacts logged to MLflow and read by a dependent job."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import threading

import pytest
from conftest import log_text, submit, wait_final, wait_until

from jupyter_trainorch.spec import JobSpec, SpecError

READ_INPUT = """
import os
path = os.environ["TRAINORCH_DATA_TRAIN"]
print("path", path)
print("text", open(path).read() if os.path.isfile(path) else sorted(os.listdir(path)))
"""


@pytest.fixture(scope="module")
def host(host_factory, tmp_path_factory):
    return host_factory(workers=1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _client(host):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{host.config.data_dir / 'mlflow.db'}")


def _attempt_run(host, job):
    run_id = job.attempts[-1].mlflow_run_id
    return _client(host).get_run(run_id) if run_id else None


def _params(host, job_id: str) -> dict:
    run = _attempt_run(host, host.store.get_job(job_id))
    return run.data.params if run else {}


def _logged(host, job_id: str, key: str):
    """The attempt run's params once the tracking process has recorded ``key`` (the run
    may be made, and named, after the attempt started)."""
    return wait_until(
        lambda: (params := _params(host, job_id)).get(key) and params,
        timeout=60,
        what=f"{key} on the attempt's run",
    )


def _refused(host, **fields) -> str:
    with pytest.raises(SpecError) as caught:
        submit(host, **fields)
    return str(caught.value)


def test_a_local_input_is_in_the_env_and_its_hash_is_recorded(host, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    job_id = submit(host, name="local", source=READ_INPUT, data={"train": str(data)})
    job = wait_final(host, job_id)
    lines = log_text(host, job_id)
    assert job.state == "succeeded", lines
    assert f"path {data}" in lines and "text a,b" in lines and "1,2" in lines
    params = _logged(host, job_id, "trainorch.data.train.sha256")
    assert params["trainorch.data.train.sha256"] == _sha256(data.read_bytes())
    assert params["trainorch.data.train.uri"] == str(data)
    # The job's run carries the latest attempt's as tags.
    tags = _client(host).get_run(host.store.get_job(job_id).mlflow["run_id"]).data.tags
    assert tags["trainorch.data.train.sha256"] == _sha256(data.read_bytes())


def test_a_folder_input_given_as_file_uri_is_hashed_by_its_files(host, tmp_path):
    folder = tmp_path / "shards"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_bytes(b"bee")
    (folder / "sub" / "a.txt").write_bytes(b"ay")
    job_id = submit(host, name="folder", source=READ_INPUT, data={"train": f"file://{folder}"})
    job = wait_final(host, job_id)
    assert job.state == "succeeded", log_text(host, job_id)
    assert "text ['b.txt', 'sub']" in log_text(host, job_id)
    listing = "".join(
        f"{name}\0{_sha256(content)}\n"
        for name, content in [("b.txt", b"bee"), ("sub/a.txt", b"ay")]
    )
    params = _logged(host, job_id, "trainorch.data.train.sha256")
    assert params["trainorch.data.train.sha256"] == _sha256(listing.encode())


def test_a_missing_input_fails_before_placement_with_a_sentence(host, tmp_path):
    missing = tmp_path / "nope" / "train.csv"
    assert _refused(host, name="m", source="pass", data={"train": str(missing)}) == (
        f"data input 'train' not found: {missing}"
    )
    # Waiting on a job: looked for when that job ends, and the job fails unplaced.
    upstream = submit(host, name="no-writer", command="sleep 0.5", kind="command")
    waiting = submit(
        host, name="reader", source=READ_INPUT, data={"train": str(missing)}, depends_on=[upstream]
    )
    job = wait_final(host, waiting)
    assert job.state == "failed" and job.error == f"data input 'train' not found: {missing}"
    assert job.attempts == []  # never placed, so it never held a GPU


def test_a_file_written_by_the_job_waited_on_is_found(host, tmp_path):
    made = tmp_path / "made.csv"
    upstream = submit(host, name="writer", kind="command", command=f"sleep 0.3; echo x > {made}")
    waiting = submit(
        host, name="reader", source=READ_INPUT, data={"train": str(made)}, depends_on=[upstream]
    )
    assert wait_final(host, waiting).state == "succeeded", log_text(host, waiting)


@pytest.fixture
def http_folder(tmp_path):
    """A real HTTP server on loopback serving a folder (fsspec's HTTPFileSystem reads it)."""
    pytest.importorskip("aiohttp")
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_remote_input_is_copied_for_the_job(host, http_folder):
    folder, url = http_folder
    (folder / "train.csv").write_bytes(b"remote,1\n")
    job_id = submit(host, name="remote", source=READ_INPUT, data={"train": f"{url}/train.csv"})
    job = wait_final(host, job_id)
    lines = log_text(host, job_id)
    assert job.state == "succeeded", lines
    path = next(line for line in lines if line.startswith("path ")).split(" ", 1)[1]
    assert path.endswith("/data/train/train.csv") and "text remote,1" in lines
    params = _logged(host, job_id, "trainorch.data.train.sha256")
    assert params["trainorch.data.train.sha256"] == _sha256(b"remote,1\n")

    gone = submit(host, name="gone", source=READ_INPUT, data={"train": f"{url}/missing.csv"})
    job = wait_final(host, gone)
    assert job.state == "failed" and job.error == f"data input 'train' not found: {url}/missing.csv"
    assert len(job.attempts) == 1  # not retried: a missing file stays missing


def test_a_registered_model_is_an_input(host, tmp_path):
    client = _client(host)
    experiment = client.create_experiment("models-in", artifact_location=str(tmp_path / "art"))
    run = client.create_run(experiment)
    weights = tmp_path / "model"
    weights.mkdir()
    (weights / "weights.bin").write_bytes(b"\x01\x02")
    client.log_artifacts(run.info.run_id, str(weights), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("tiny")
    version = client.create_model_version(
        "tiny", f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("tiny", "champion", version.version)

    job_id = submit(host, name="uses-model", source=READ_INPUT.replace("DATA_TRAIN", "DATA_MODEL"),
                    data={"model": "models:/tiny@champion"})  # fmt: skip
    job = wait_final(host, job_id, timeout=120)
    lines = log_text(host, job_id)
    assert job.state == "succeeded", lines
    assert "text ['weights.bin']" in lines
    params = _logged(host, job_id, "trainorch.data.model.sha256")
    assert params["trainorch.data.model.version"] == "1"
    assert params["trainorch.data.model.uri"] == "models:/tiny@champion"

    absent = submit(host, name="no-model", source="pass", data={"model": "models:/absent/3"})
    job = wait_final(host, absent, timeout=120)
    assert job.state == "failed" and job.error.startswith(
        "data input 'model' not found: models:/absent/3"
    ), job.error


WRITE_MODEL = """
import os
os.makedirs("out", exist_ok=True)
open("out/model.pt", "wb").write(b"weights-" + str(epochs).encode())
"""

READ_MODEL = """
import os
print("got", open(os.environ["TRAINORCH_DATA_MODEL"], "rb").read().decode())
"""


def test_artifacts_are_logged_and_read_by_a_dependent_job(host):
    train = submit(host, name="train", source=WRITE_MODEL, params={"epochs": 3},
                   artifacts=[{"model.pt": "out/model.pt"}])  # fmt: skip
    evaluate = submit(host, name="evaluate", source=READ_MODEL, depends_on=["train"],
                      data={"model": "job:train/artifacts/model.pt"})  # fmt: skip
    job = wait_final(host, evaluate, timeout=120)
    assert job.state == "succeeded", (log_text(host, train), log_text(host, evaluate))
    assert "got weights-3" in log_text(host, evaluate)
    trained = host.store.get_job(train)
    run = wait_until(lambda: _attempt_run(host, trained), what="train's attempt run")
    listed = [f.path for f in _client(host).list_artifacts(run.info.run_id, "artifacts")]
    assert listed == ["artifacts/model.pt"]
    # The reference was stored by id, and the attempt read the run's artifact.
    spec = host.store.get_job(evaluate).spec
    assert spec["data"]["model"] == f"job:{train}/artifacts/model.pt"
    params = _logged(host, evaluate, "trainorch.data.model.uri")
    assert params["trainorch.data.model.uri"] == f"runs:/{run.info.run_id}/artifacts/model.pt"


def test_an_artifact_the_job_did_not_write_fails_it(host):
    job = wait_final(host, submit(host, name="lazy", source="pass", artifacts=["model.pt"]))
    assert job.state == "failed" and job.error.startswith(
        "artifact 'model.pt' was not written by the job: "
    ), job.error


def test_bad_data_fields_are_refused_with_a_sentence(host):
    def refused(**fields) -> str:
        with pytest.raises(SpecError) as caught:
            JobSpec.from_dict({"name": "x", **fields})
        return str(caught.value)

    assert refused(data={"tr-ain": "/x"}).startswith("data.tr-ain is not a usable input name")
    assert refused(data={"train": "x" * 3000}).startswith(
        "data.train must be at most 2048 characters"
    )
    assert refused(data={"m": "models:/only-a-name"}) == (
        "data.m must be models:/NAME@alias or models:/NAME/VERSION, not 'models:/only-a-name'"
    )
    assert refused(data={"a": "/x", "A": "/y"}) == (
        "data has the inputs 'a' and 'A', which would share the variable TRAINORCH_DATA_A"
    )
    assert refused(artifacts=["a/model.pt", "b/model.pt"]).startswith(
        "artifacts names 'model.pt' twice"
    )
    if importlib.util.find_spec("s3fs") is None:
        assert _refused(host, name="s3", source="pass", data={"d": "s3://b/k"}).startswith(
            "data.d: the protocol 's3' needs a package that is not installed where the service "
            "runs (Install s3fs"
        )
    assert _refused(host, name="p", source="pass", data={"d": "nosuch://x/y"}) == (
        "data.d: 'nosuch' is not a protocol fsspec knows ('nosuch://x/y')"
    )
    assert _refused(host, name="r", source="pass", data={"d": "job:elsewhere/artifacts/m"}) == (
        "data.d reads an artifact of job 'elsewhere', which this job does not wait on; "
        "add it to depends_on (--after elsewhere)"
    )
    plain = submit(host, name="plain", source="pass")
    assert _refused(host, name="q", source="pass", depends_on=[plain],
                    data={"d": f"job:{plain}/artifacts/m.pt"}) == (
        f"data.d: job '{plain}' declares no artifact 'm.pt' (its artifacts: none)"
    )  # fmt: skip


def test_the_train_magic_takes_data_and_artifact_flags():
    from IPython.core.error import UsageError

    from jupyter_trainorch.client.magics import build_request

    line = "--data train=s3://b/train.csv --data base=models:/m@prod --artifact out/model.pt --artifact w=ckpt/"
    body, _, _ = build_request(line, "pass", 1)
    assert body["overrides"]["data"] == {"train": "s3://b/train.csv", "base": "models:/m@prod"}
    assert body["overrides"]["artifacts"] == [
        {"name": "model.pt", "path": "out/model.pt"},
        {"name": "w", "path": "ckpt/"},
    ]
    with pytest.raises(UsageError, match="^%%train: --data takes NAME=URI, not 'train'$"):
        build_request("--data train", "pass", 1)
    with pytest.raises(UsageError, match="^%%train: data.m must be models:/NAME@alias"):
        build_request("--data m=models:/x", "pass", 1)


def test_an_exported_job_keeps_its_data_inputs_and_artifacts(host, tmp_path):
    """``trainorch export`` writes the current schema, and a job made from the exported
    template reads the same input and logs the same artifact."""
    from jupyter_trainorch.client.export import export_job
    from jupyter_trainorch.package import build_package, template_files
    from jupyter_trainorch.spec import TemplateRegistry, render_spec
    from jupyter_trainorch.spec.secrets import public_spec

    data = tmp_path / "train.csv"
    data.write_text("a,b\n")
    source = READ_INPUT + WRITE_MODEL
    first = wait_final(host, submit(host, name="exportable", source=source, params={"epochs": 2},
                                    data={"train": str(data)},
                                    artifacts=[{"model.pt": "out/model.pt"}]))  # fmt: skip
    assert first.state == "succeeded", first.error
    package = host.store.get_jobs([first.id], with_packages=True)[first.id][1]
    detail = {**first.to_dict(), "spec": public_spec(first.spec)}
    export_job(detail, package, tmp_path / "export")
    template = TemplateRegistry().load_file(tmp_path / "export" / "exportable.yaml")
    assert template.version == 2
    assert "files:" in (tmp_path / "export" / "exportable.yaml").read_text()
    spec = render_spec(template, workdir=str(tmp_path))
    assert spec.data == {"train": str(data)}
    assert [(a.name, a.path) for a in spec.artifacts] == [("model.pt", "out/model.pt")]
    shipped = build_package(files=template_files(template))  # as trainorch submit FILE sends it
    again = wait_final(host, host.call(lambda o: o.submit(spec, shipped)).id, timeout=120)
    assert again.state == "succeeded", (again.error, log_text(host, again.id))
    assert "text a,b" in log_text(host, again.id)
    run = wait_until(lambda: _attempt_run(host, again), what="the exported job's attempt run")
    listed = [f.path for f in _client(host).list_artifacts(run.info.run_id, "artifacts")]
    assert listed == ["artifacts/model.pt"]
