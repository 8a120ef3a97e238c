"""Jobs in container images: the ``image`` field, the exact ``podman``/``docker run`` we
build, the refusal at submit when no engine answers, and a job started through that
command line by a real orchestrator on a real local cluster."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import log_text, submit, wait_final, wait_until

from jupyter_trainorch.client.kubeflow import export_kubeflow
from jupyter_trainorch.runner import containers
from jupyter_trainorch.runner.containers import (
    ENV_FILE,
    command_line,
    container_env,
    image_refusal,
    package_dir,
    write_env_file,
)
from jupyter_trainorch.runner.launch import FRESH_START, worker_environment
from jupyter_trainorch.spec import JobSpec, SpecError
from jupyter_trainorch.spec.render import render_spec
from jupyter_trainorch.spec.templates import TemplateRegistry

SECRET = "s3cr3t-value-42"


# -- the field ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "image",
    ["python:3.11-slim", "pytorch/pytorch:2.6.0", "ghcr.io/team/train:v1.2",
     "registry.example:5000/team/train@sha256:" + "ab" * 32, "localhost/train"],
)  # fmt: skip
def test_an_image_reference_is_taken(image):
    assert JobSpec.from_dict({"name": "j", "image": image}).image == image


@pytest.mark.parametrize("image", ["has space", "Upper/case", "x:", "a//b", "x@sha256:nothex"])
def test_a_bad_image_is_one_sentence_naming_the_field(image):
    with pytest.raises(SpecError) as caught:
        JobSpec.from_dict({"name": "j", "image": image})
    assert str(caught.value) == (
        "image must be a container image reference such as pytorch/pytorch:2.6.0 or "
        f"registry.example:5000/team/train@sha256:…, not {image!r}"
    )
    with pytest.raises(SpecError, match="image must be at most 512 characters"):
        JobSpec.from_dict({"name": "j", "image": "a" * 513})


def test_a_templates_image_reaches_the_spec_and_the_kubeflow_export(tmp_path):
    (tmp_path / "boxed.yaml").write_text(
        "version: 1\nname: boxed\ncommand: python train.py\nimage: pytorch/pytorch:2.6.0\n"
    )
    (tmp_path / "broken.yaml").write_text("version: 1\nname: broken\nimage: Not An Image\n")
    registry = TemplateRegistry([tmp_path])
    template = registry.get("boxed")
    spec = render_spec(template)
    assert spec.image == "pytorch/pytorch:2.6.0"
    assert render_spec(template, overrides={"image": "python:3.12"}).image == "python:3.12"
    assert registry.errors[str(tmp_path / "broken.yaml")].startswith(
        f"{tmp_path / 'broken.yaml'}, line 3: image must be a container image reference"
    )
    # A template without an image keeps the hash it always had.
    assert "image" not in registry.get("python-cell").to_dict()

    job = {"id": "0a1b2c3d4e", "name": "boxed", "spec": spec.to_dict(), "priority": 100}
    manifest = export_kubeflow(job, None, tmp_path / "out", "pytorchjob")[0]
    assert "image: pytorch/pytorch:2.6.0" in manifest.read_text()


# -- the command line -----------------------------------------------------------------------
def _attempt(tmp_path: Path, gpu_ids: list[str]) -> tuple[dict, Path]:
    attempt_dir = tmp_path / "attempts" / "trainorch-abc123-2"
    attempt_dir.mkdir(parents=True)
    workdir = tmp_path / "project"
    workdir.mkdir()
    request = {
        "job_id": "abc123", "attempt": 2, "image": "python:3.11-slim", "gpu_ids": gpu_ids,
        "workdir": str(workdir), "checkpoint_dir": str(tmp_path / "nowhere"),
        "env": {"GREETING": "hello"}, "secret_env": {"API_TOKEN": SECRET},
    }  # fmt: skip
    return request, attempt_dir


def test_the_podman_command_line_passes_each_gpu_by_its_cdi_name(tmp_path):
    request, attempt_dir = _attempt(tmp_path, ["1", "3"])
    env_file = attempt_dir / ENV_FILE
    argv = command_line("/usr/bin/podman", request, attempt_dir, request["workdir"], env_file)
    pkg, a, w = str(package_dir()), str(attempt_dir), request["workdir"]
    assert argv == [
        "/usr/bin/podman", "run", "--rm", "--init", "--name", "trainorch-abc123-2",
        "--network", "host", "-v", f"{a}:{a}", "-v", f"{w}:{w}", "-v", f"{pkg}:{pkg}:ro",
        "-w", w, "--env-file", str(env_file),
        "--device", "nvidia.com/gpu=1", "--device", "nvidia.com/gpu=3",
        "python:3.11-slim", "python", "-c", FRESH_START, a,
    ]  # fmt: skip


def test_the_docker_command_line_passes_gpus_as_one_device_list_and_runs_as_the_worker(tmp_path):
    request, attempt_dir = _attempt(tmp_path, ["0", "2"])
    checkpoints = tmp_path / "checkpoints" / "abc123"
    checkpoints.mkdir(parents=True)
    request["checkpoint_dir"] = str(checkpoints)
    env_file = attempt_dir / ENV_FILE
    argv = command_line("docker", request, attempt_dir, str(attempt_dir), env_file)
    pkg, a, w, c = str(package_dir()), str(attempt_dir), request["workdir"], str(checkpoints)
    assert argv == [
        "docker", "run", "--rm", "--init", "--name", "trainorch-abc123-2",
        "--network", "host", "-v", f"{a}:{a}", "-v", f"{w}:{w}", "-v", f"{c}:{c}",
        "-v", f"{pkg}:{pkg}:ro", "-w", a, "--env-file", str(env_file),
        "--user", f"{os.getuid()}:{os.getgid()}", "--gpus", '"device=0,2"',
        "python:3.11-slim", "python", "-c", FRESH_START, a,
    ]  # fmt: skip
    # A CPU-only job asks for no GPU at all.
    request["gpu_ids"] = []
    cpu_only = command_line("docker", request, attempt_dir, a, env_file)
    assert "--gpus" not in cpu_only and "--device" not in cpu_only


def test_the_env_file_is_private_and_holds_the_secrets_the_command_line_does_not(tmp_path):
    request, attempt_dir = _attempt(tmp_path, ["5"])
    modules = str(attempt_dir / "modules")
    env = {
        **worker_environment(), "GREETING": "hello", "API_TOKEN": SECRET,
        "CUDA_VISIBLE_DEVICES": "5", "TRAINORCH_JOB_ID": "abc123", "TRAINORCH_PROGRESS_FD": "7",
        "PYTHONPATH": os.pathsep.join([modules, "/host/only"]),
    }  # fmt: skip
    env_file = attempt_dir / ENV_FILE
    write_env_file(env_file, container_env(env, request, attempt_dir))
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    lines = env_file.read_text().splitlines()
    assert f"API_TOKEN={SECRET}" in lines and "GREETING=hello" in lines
    assert "TRAINORCH_JOB_ID=abc123" in lines and "PYTHONUNBUFFERED=1" in lines
    # Inside, the container's only GPU is its number 0; the host's progress pipe is absent.
    assert "CUDA_VISIBLE_DEVICES=0" in lines
    assert not any(line.startswith("TRAINORCH_PROGRESS_FD=") for line in lines)
    assert f"PYTHONPATH={modules}{os.pathsep}{package_dir().parent}" in lines
    # The worker's own PATH and HOME mean nothing in the image.
    assert not any(line.startswith(("PATH=", "HOME=")) for line in lines)
    argv = command_line("podman", request, attempt_dir, str(attempt_dir), env_file)
    assert not any(SECRET in arg for arg in argv)

    with pytest.raises(containers.ContainerUnavailable, match="variable PEM holds a line break"):
        write_env_file(env_file, {"PEM": "a\nb"})


def test_with_the_engine_off_every_image_is_refused():
    assert image_refusal("python:3.11", "off") == (
        "image 'python:3.11' needs podman or docker with a running engine on the workers; "
        "none answers here (TRAINORCH_CONTAINER_ENGINE is off)"
    )


# -- through a real orchestrator ------------------------------------------------------------
def _engine_answers(name: str) -> bool:
    path = shutil.which(name)
    if path is None:
        return False
    done = subprocess.run([path, "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


REAL_ENGINE = next((name for name in ("podman", "docker") if _engine_answers(name)), None)


@pytest.mark.skipif(REAL_ENGINE is not None, reason="a container engine answers here")
def test_a_job_with_an_image_is_refused_at_submit_when_no_engine_answers(host_factory):
    """The real probe: docker's client is here but no daemon answers (or there is none)."""
    host = host_factory(workers=1, gpus_per_worker=0, mlflow="off")
    with pytest.raises(SpecError) as caught:
        submit(host, name="boxed", source="print(1)", image="python:3.11-slim")
    sentence = str(caught.value)
    assert sentence.startswith(
        "image 'python:3.11-slim' needs podman or docker with a running engine on the "
        "workers; none answers here ("
    )
    if shutil.which("docker") and not shutil.which("podman"):
        assert "(docker: cannot connect to the Docker daemon" in sentence
    assert "\n" not in sentence and host.store.count_jobs() == 0


STAND_IN = """\
#!{python}
# A stand-in for podman: no container engine exists where these tests run. ``run`` runs
# the command on this host after applying -w and --env-file (the mounts are at the same
# paths already); every call is recorded.
import json, os, sys
args = sys.argv[1:]
with open({record!r}, "a") as record:
    record.write(json.dumps(args) + "\\n")
if args[0] in ("info", "kill"):
    sys.exit(0)
assert args[0] == "run", args
env, cwd, i = {{"PATH": os.environ["PATH"]}}, None, 1
takes_value = {{"--name", "--network", "-v", "-w", "--env-file", "--device", "--gpus", "--user"}}
while args[i].startswith("-"):
    flag, value = args[i], args[i + 1] if args[i] in takes_value else None
    if flag == "-w":
        cwd = value
    elif flag == "--env-file":
        with open(value) as handle:
            env.update(line.rstrip("\\n").split("=", 1) for line in handle if "=" in line)
    i += 2 if flag in takes_value else 1
image, command = args[i], args[i + 1:]
os.chdir(cwd)
os.execvpe(command[0], command, env)
"""


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    folder = tmp_path_factory.mktemp("engine")
    record = folder / "calls.jsonl"
    script = folder / "podman"
    script.write_text(STAND_IN.format(python=sys.executable, record=str(record)))
    script.chmod(0o755)
    return folder, record


def _calls(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_a_job_runs_through_the_podman_command_line_with_its_env_output_and_exit_code(
    host_factory, stand_in, tmp_path, monkeypatch
):
    """No container engine exists here, so no container ever ran: the stand-in ``podman``
    runs our exact argv's command on this host, which proves that argv starts the job in
    its working folder with its environment (secrets through the env file), that its
    output and exit code come back, and that cancelling stops the container by name."""
    folder, record = stand_in
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    host = host_factory(workers=1, gpus_per_worker=1, mlflow="off", container_engine="podman")
    workdir = tmp_path / "project"
    workdir.mkdir()
    source = textwrap.dedent(
        """
        import os, sys
        print("cwd", os.getcwd())
        print("greeting", os.environ["GREETING"])
        print("secret ok", os.environ["API_TOKEN"] == "s3cr3t-value-42")
        print("gpus", os.environ["CUDA_VISIBLE_DEVICES"])
        sys.exit(3)
        """
    )
    job_id = submit(
        host, name="boxed", source=source, image="python:3.11-slim", workdir=str(workdir),
        env={"GREETING": "hello"}, secret_env={"API_TOKEN": SECRET}, resources={"gpus": 1},
    )  # fmt: skip
    job = wait_final(host, job_id)
    lines = log_text(host, job_id)
    assert job.state == "failed" and job.attempts[0].exit_code == 3, lines
    assert f"cwd {workdir}" in lines and "greeting hello" in lines
    assert "secret ok True" in lines and "gpus 0" in lines
    run = next(call for call in _calls(record) if call[0] == "run" and f"trainorch-{job_id}-1" in call)  # fmt: skip
    gpu = job.attempts[0].gpu_ids[0]
    assert run[run.index("--device") + 1] == f"nvidia.com/gpu={gpu}"
    assert run[run.index("-w") + 1] == str(workdir) and "python:3.11-slim" in run
    assert not any(SECRET in arg for arg in run)

    sleeper = submit(host, name="sleeper", source="import time\nprint('up', flush=True)\ntime.sleep(120)", image="python:3.11-slim")  # fmt: skip
    wait_until(lambda: "up" in log_text(host, sleeper), what="the job's first line")
    host.call(lambda o: o.cancel(sleeper))
    assert wait_final(host, sleeper).state == "cancelled"
    assert ["kill", f"trainorch-{sleeper}-1"] in _calls(record)


@pytest.mark.skipif(REAL_ENGINE is None, reason="no container engine answers here")
def test_a_job_runs_in_a_real_container(host_factory):
    """Pulls ``TRAINORCH_TEST_IMAGE`` (python:3.11-slim) unless the engine has it."""
    image = os.environ.get("TRAINORCH_TEST_IMAGE", "python:3.11-slim")
    host = host_factory(workers=1, gpus_per_worker=0, mlflow="off", container_engine=REAL_ENGINE)
    source = "import os, sys\nprint('in image', os.path.exists('/.dockerenv') or os.path.exists('/run/.containerenv'))\nprint('python', sys.version_info[:2])"  # fmt: skip
    job_id = submit(host, name="real", source=source, image=image)
    job = wait_final(host, job_id, timeout=600)
    assert job.state == "succeeded", log_text(host, job_id)
    assert "in image True" in log_text(host, job_id)
