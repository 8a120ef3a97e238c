"""Templates under version control: the commit a job records, ``templates diff`` between
names, files and commits, and ``templates migrate`` from schema 1 (and 0) to schema 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import stop_services_under, wait_until

from jupyter_trainorch.cli import main
from jupyter_trainorch.client.file_request import template_file_request
from jupyter_trainorch.orchestrator.access import Caller
from jupyter_trainorch.orchestrator.jobservice import JobService
from jupyter_trainorch.settings import TrainOrch
from jupyter_trainorch.spec import SCHEMA_VERSION, SpecError, TemplateRegistry, render_spec

TRAIN_V1 = """\
version: 1
name: train
description: trains a model  # shown by templates list
kind: command
command: python -c "print('lr={{ lr }}')"
resources: {gpus: 1}
params: {lr: 0.1}
"""
OTHER = """\
version: 1
name: other
extends: train
resources: {gpus: 0}
params: {lr: 0.5}
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, str]:
    """A git repository of templates with two commits of ``train``, on the template path
    as a ``file://`` URL of the clone."""
    folder = tmp_path / "templates"
    folder.mkdir()
    git(folder, "init", "-q")
    git(folder, "config", "user.email", "t@example.com")
    git(folder, "config", "user.name", "t")
    first = commit_file(folder, "train.yaml", TRAIN_V1, "train at lr 0.1")
    (folder / "other.yaml").write_text(OTHER)
    git(folder, "add", "other.yaml")
    second = commit_file(
        folder, "train.yaml", TRAIN_V1.replace("lr: 0.1", "lr: 0.2"), "train at lr 0.2"
    )
    monkeypatch.setenv("TRAINORCH_TEMPLATE_PATH", folder.as_uri())
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "no-config"))
    return folder, first, second


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def one_sentence(err: str) -> str:
    (line,) = err.splitlines()
    assert line.startswith("trainorch: ") and "Traceback" not in err
    return line.removeprefix("trainorch: ")


# -- the commit a job records --------------------------------------------------------------


def test_a_job_records_its_template_s_commit_and_whether_it_was_dirty(repo, tmp_path):
    folder, _first, second = repo
    data = tmp_path / "service"
    service = JobService(
        TrainOrch(data_dir=str(data), workers=1, gpus_per_worker=1, slots_per_worker=4).to_config()
    )
    ada = Caller("ada")
    try:
        clean, _ = service.submit(ada, {"template": "train", "params": {"lr": 0.3}})
        assert clean["template"]["commit"] == second and clean["template"]["dirty"] is False
        assert clean["template"]["version"] == 1

        (folder / "train.yaml").write_text(TRAIN_V1.replace("lr: 0.1", "lr: 0.9"))
        service.templates()  # what GET templates does: read the files again
        dirty, _ = service.submit(ada, {"template": "train"})
        assert dirty["template"]["commit"] == second and dirty["template"]["dirty"] is True
        assert dirty["params"] == {"lr": 0.9}
        assert dirty["template"]["hash"] != clean["template"]["hash"]

        # ``trainorch submit FILE`` renders on the client: the same reference travels.
        sent, _ = service.submit(ada, template_file_request(folder / "other.yaml"))
        assert sent["template"]["name"] == "other"
        assert (sent["template"]["commit"], sent["template"]["dirty"]) == (second, False)

        ended = wait_until(
            lambda: (j := service.get(ada, clean["id"]))["terminal"] and j, 90, "the job to end"
        )
        assert ended["state"] == "succeeded"
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")

        def template_tags() -> dict[str, str] | None:
            # Tracking catches up after the job: its run id and tags appear a moment later.
            run_id = service.get(ada, clean["id"])["mlflow"].get("run_id")
            tags = client.get_run(run_id).data.tags if run_id else {}
            return tags if tags.get("trainorch.template.commit") else None

        tags = wait_until(template_tags, 60, "the run's template tags")
        assert tags["trainorch.template.commit"] == second
        assert tags["trainorch.template.dirty"] == "false"
    finally:
        service.stop(detach=False)
        stop_services_under(data)


def test_templates_outside_git_record_no_commit(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "job.yaml").write_text(TRAIN_V1)
    registry = TemplateRegistry([tmp_path / "plain"])
    for template in (registry.get("train"), registry.get("torch")):
        ref = render_spec(template).template
        assert (ref.commit, ref.dirty) == (None, None)


def test_a_template_path_entry_that_is_not_local_is_one_sentence():
    registry = TemplateRegistry(["https://example.com/templates.git"])
    (message,) = registry.errors.values()
    assert message.startswith("the template path entry 'https://example.com/templates.git' is")
    assert "\n" not in message and registry.names() == ["command", "python-cell", "torch"]


# -- templates diff ------------------------------------------------------------------------


def test_diff_between_two_commits(repo, capsys):
    _folder, first, second = repo
    status, out, err = cli(capsys, "templates", "diff", f"train@{first}", f"train@{second[:10]}")
    assert (status, err) == (1, "")
    assert out.splitlines()[:2] == [f"--- train@{first}", f"+++ train@{second[:10]}"]
    changed = [line for line in out.splitlines()[2:] if line[:1] in "+-"]
    assert changed == ["-  lr: 0.1", "+  lr: 0.2"]
    # The newest commit is what the file holds now.
    assert cli(capsys, "templates", "diff", f"train@{second}", "train") == (0, "", "")


def test_diff_between_two_names_resolves_extends(repo, capsys):
    folder, _first, _second = repo
    status, out, _err = cli(capsys, "templates", "diff", "train", "other")
    assert status == 1
    changed = [line for line in out.splitlines()[2:] if line[:1] in "+-"]
    assert sorted(changed) == sorted([
        "+extends: train", "+  gpus: 0", "+  lr: 0.5", "+name: other",
        "-extends: null", "-  gpus: 1", "-  lr: 0.2", "-name: train",
    ])  # fmt: skip
    # A name and its own file are the same template.
    assert cli(capsys, "templates", "diff", "train", str(folder / "train.yaml"))[0] == 0
    # Like diff(1), through the real command: 1 when they differ.
    done = subprocess.run(
        [sys.executable, "-m", "jupyter_trainorch.cli", "templates", "diff", "train", "other"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "+name: other" in done.stdout


def test_diff_errors_are_one_sentence(repo, capsys, tmp_path):
    folder, _first, _second = repo
    status, out, err = cli(capsys, "templates", "diff", "train", "nosuch")
    assert (status, out) == (2, "")
    assert one_sentence(err).startswith("'nosuch' is neither a template file nor a template name")
    status, _out, err = cli(capsys, "templates", "diff", "train", "train@0123abcd")
    assert status == 2
    assert one_sentence(err) == (
        f"'0123abcd' is not a commit of the git repository holding {folder / 'train.yaml'}"
    )
    status, _out, err = cli(capsys, "templates", "diff", "train", "nosuch@HEAD")
    assert status == 2 and "'nosuch' is neither a template file nor a template name" in err
    outside = tmp_path / "outside.yaml"
    outside.write_text(TRAIN_V1)
    status, _out, err = cli(capsys, "templates", "diff", "train", f"{outside}@HEAD")
    assert status == 2
    assert one_sentence(err) == f"{outside} is not in a git repository, so it has no commit 'HEAD'"
    git(folder, "rm", "-q", "--cached", "other.yaml")
    git(folder, "commit", "-qm", "no other")
    status, _out, err = cli(capsys, "templates", "diff", str(folder / "train.yaml"), "other@HEAD")
    assert status == 2 and one_sentence(err).endswith("other.yaml did not exist at commit HEAD")


# -- templates migrate ---------------------------------------------------------------------

V1_FILE = """\
version: 1            # the schema
name: fit
kind: command
command: python fit.py --lr {{ lr }}
# the code and small files that travel with the job
inputs: [fit.py, conf/*.yaml]
outputs: [model]
data: {train: "s3://bucket/train.parquet"}
artifacts: [model.pt]
params: {lr: 0.01}
"""


def test_migrate_a_schema_1_file(tmp_path, capsys):
    path = tmp_path / "fit.yaml"
    path.write_text(V1_FILE)
    (tmp_path / "fit.py").write_text("print('fit')\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.yaml").write_text("a: 1\n")

    status, out, err = cli(capsys, "templates", "migrate", str(path))
    assert status == 0
    assert err.splitlines() == [
        "trainorch: version: 1 → 2",
        "trainorch: inputs → files: the files shipped with the job (fit.py, conf/*.yaml), "
        "named apart from data:, the URIs staged for it",
    ]
    # Only the two names changed: comments and layout stay.
    assert out == V1_FILE.replace("version: 1 ", "version: 2 ").replace("inputs:", "files:")
    assert path.read_text() == V1_FILE  # printing alone writes nothing

    status, out, _err = cli(capsys, "templates", "migrate", str(path), "--write")
    assert status == 0 and out.splitlines()[:2] == [
        "version: 1 → 2",
        "inputs → files: the files shipped with the job (fit.py, conf/*.yaml), named apart "
        "from data:, the URIs staged for it",
    ]
    assert out.splitlines()[-1].endswith(f"(the old file is {path}.bak)")
    assert (tmp_path / "fit.yaml.bak").read_text() == V1_FILE

    registry = TemplateRegistry([])
    old, new = registry.load_file(tmp_path / "fit.yaml.bak"), registry.load_file(path)
    assert (old.version, new.version) == (1, SCHEMA_VERSION)
    assert old.input_files() == new.input_files() == [
        str(tmp_path / "conf" / "a.yaml"), str(tmp_path / "fit.py")
    ]  # fmt: skip
    old_spec, new_spec = (render_spec(t, params={"lr": 0.5}).to_dict() for t in (old, new))
    assert old_spec.pop("template")["version"] == 1
    assert new_spec.pop("template")["version"] == 2
    assert old_spec == new_spec and new_spec["command"] == "python fit.py --lr 0.5"

    # Resolved, the two differ only in the schema they are written in.
    status, out, _err = cli(capsys, "templates", "diff", f"{path}.bak", str(path))
    assert status == 1
    assert [line for line in out.splitlines()[2:] if line[:1] in "+-"] == [
        "-version: 1", "+version: 2"
    ]  # fmt: skip

    # Schema 2 already: nothing to do, nothing written.
    status, out, _err = cli(capsys, "templates", "migrate", str(path), "--write")
    assert (status, out) == (0, f"{path}: already schema version 2, nothing to migrate\n")
    assert path.read_text() == V1_FILE.replace("version: 1 ", "version: 2 ").replace(
        "inputs:", "files:"
    )


def test_migrate_a_schema_0_file_rewrites_it_from_its_data(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("version: 0\nname: old\ngpus: 2\ncpus: 8\ndefaults: {lr: 0.1}\n")
    status, out, err = cli(capsys, "templates", "migrate", str(path))
    assert status == 0
    assert [line.removeprefix("trainorch: ") for line in err.splitlines()] == [
        "version: 0 → 2",
        "gpus, cpus → resources: schema 1 groups a job's resources",
        "defaults → params: the values a template's {{ }} fields take",
        "the file was rewritten from its data, so its comments and layout are gone",
    ]
    assert yaml.safe_load(out) == {
        "version": 2, "name": "old", "resources": {"gpus": 2, "cpus": 8}, "params": {"lr": 0.1}
    }  # fmt: skip
    migrated = tmp_path / "new.yaml"
    migrated.write_text(out)
    registry = TemplateRegistry([])
    old, new = registry.load_file(path), registry.load_file(migrated)
    assert (new.resources, new.params) == (old.resources, old.params)


def test_schema_names_are_checked_against_the_file_s_version(tmp_path, capsys):
    registry = TemplateRegistry([])
    cases = {
        "v2.yaml": ("version: 2\ninputs: [a.py]\n", "line 2: schema 2 calls inputs 'files'"),
        "v1.yaml": ("version: 1\nfiles: [a.py]\n", "line 2: files is a schema 2 field"),
        "both.yaml": ("version: 2\nfiles: [a]\ninputs: [b]\n", "files is the schema 2 name"),
        "up.yaml": ("version: 2\nfiles: [../a.py]\n", "line 2: files: '../a.py' must be a path"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SpecError) as err:
            registry.load_file(tmp_path / name)
        assert message in str(err.value) and "\n" not in str(err.value)
    # An inline template says no version: either name is read.
    assert registry.from_dict({"files": ["a.py"]}).inputs == ["a.py"]
    assert registry.from_dict({"inputs": ["a.py"]}).version == 1
    # A file that does not load is not migrated: the same sentence as validate.
    status, out, err = cli(capsys, "templates", "migrate", str(tmp_path / "v1.yaml"))
    assert (status, out) == (2, "") and "files is a schema 2 field" in one_sentence(err)
    status, _out, err = cli(capsys, "templates", "migrate", str(tmp_path / "missing.yaml"))
    assert status == 2 and "could not be read" in one_sentence(err)


def test_builtin_templates_stay_schema_1_and_inline_ones_say_theirs():
    registry = TemplateRegistry([])
    assert {t.version for t in registry.list()} == {1}
    text = textwrap.dedent(
        """\
        version: 2
        name: cell2
        extends: python-cell
        """
    )
    assert TemplateRegistry([]).from_dict(yaml.safe_load(text)).version == 2
