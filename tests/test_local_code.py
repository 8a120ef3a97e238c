"""Code and environment on remote workers: the kernel's own modules travel in the code
package, and a job says when the worker's versions of what it imports are not the kernel's.

The end-to-end tests run the jobs on real local clusters; the worker shares this machine's
filesystem, so the kernel's files are moved away before the job starts: only the package's
copy can be what the job imports.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cloudpickle
import nbformat
import pytest
from conftest import wait_until
from nbclient import NotebookClient

from jupyter_trainorch.client.code_package import package_cell
from jupyter_trainorch.client.export import export_job
from jupyter_trainorch.package import (
    KERNEL_VERSIONS,
    MODULES,
    build_package,
    check_package,
    read_meta,
    read_modules,
)
from jupyter_trainorch.runner.versions import compare_versions, mismatch_warnings
from jupyter_trainorch.spec import SpecError


def _project(root: Path) -> Path:
    """A notebook folder with a module that imports another, a package and a module that
    only a variable's class comes from."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mylib.py").write_text(
        "import helper\n\nclass Thing:\n    def __init__(self, v):\n        self.v = v\n"
    )
    (root / "helper.py").write_text("X = 5\n")
    (root / "mypkg" / "__pycache__").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("from . import sub\n")
    (root / "mypkg" / "sub.py").write_text("def f():\n    return 7\n")
    (root / "mypkg" / "__pycache__" / "sub.cpython-311.pyc").write_bytes(b"\0")
    (root / "mypkg" / "notes.txt").write_text("not code\n")
    (root / "shapes.py").write_text("class Square:\n    side = 2\n")
    return root


def _distribution(folder: Path, version: str) -> Path:
    """``tinydist`` installed into ``folder`` as pip lays out a wheel."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tinydist.py").write_text(f"VERSION = {version!r}\n")
    info = folder / f"tinydist-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tinydist\nVersion: {version}\n")
    (info / "RECORD").write_text(f"tinydist.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return folder


def test_the_package_holds_the_local_modules_and_the_kernels_versions(tmp_path, monkeypatch):
    project = _project(tmp_path / "project")
    installed = _distribution(tmp_path / "installed", "1.0")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(installed))
    monkeypatch.syspath_prepend(str(project))
    import shapes

    source = "import mylib, json, tinydist\nfrom mypkg.sub import f\nprint(square.side, f())\n"
    package = package_cell(source, {"square": shapes.Square()})

    # helper: imported by mylib; shapes: the class of a captured variable. Not json (the
    # standard library) nor tinydist (an installed distribution: compared by version).
    assert sorted(read_modules(package)) == [
        "helper.py", "mylib.py", "mypkg/__init__.py", "mypkg/sub.py", "shapes.py",
    ]  # fmt: skip
    assert read_modules(package)["mypkg/sub.py"] == (project / "mypkg" / "sub.py").read_bytes()
    assert json.loads(read_meta(package)[KERNEL_VERSIONS]) == {"tinydist": "1.0"}


def test_an_export_runs_with_the_modules_beside_its_script(tmp_path, monkeypatch):
    project = _project(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    source = "import mylib, mypkg\nprint(mylib.Thing(2).v + mylib.helper.X + mypkg.sub.f())\n"
    package = package_cell(source, {})
    job = {"id": "j1", "name": "calc", "spec": {"kind": "python", "source": source}}
    written = export_job(job, package, tmp_path / "export")

    assert {"mylib.py", "helper.py", "mypkg/__init__.py", "mypkg/sub.py"} <= {
        p.relative_to(tmp_path / "export").as_posix() for p in written
    }
    shutil.rmtree(project)
    ran = subprocess.run([sys.executable, "calc.py"], cwd=tmp_path / "export",
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ran.stdout.strip() == "14", ran.stderr


def test_local_code_past_the_bound_is_refused_in_one_sentence(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "bigpkg").mkdir(parents=True)
    (project / "bigpkg" / "__init__.py").write_text("# " + "x" * (21 * 2**20) + "\n")
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    with pytest.raises(SpecError) as raised:
        package_cell("import bigpkg\n", {})
    assert str(raised.value) == (
        "the local module 'bigpkg' is too large to send with the job (the cell's local code "
        "passes 2,000 files or 20 MiB); install it on the workers or put it on a filesystem "
        "they share"
    )


def test_a_module_path_outside_the_package_is_refused():
    buffer = io.BytesIO(build_package())
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(MODULES + "../evil.py", "print('no')\n")
    with pytest.raises(SpecError, match="must be a relative path to a .py file"):
        check_package(buffer.getvalue())


def test_only_differing_versions_are_warned_about():
    compared = compare_versions({"cloudpickle": cloudpickle.__version__, "nosuchdist": "1.0"})
    assert compared == {
        "cloudpickle": {"kernel": cloudpickle.__version__, "worker": cloudpickle.__version__},
        "nosuchdist": {"kernel": "1.0", "worker": None},
    }
    assert mismatch_warnings(compared) == [
        "warning: nosuchdist is not installed here but 1.0 in the kernel"
    ]


# -- end to end ----------------------------------------------------------------------------
def _text(cell) -> str:
    return "".join(
        output.get("text", "") or output.get("data", {}).get("text/plain", "")
        for output in cell.get("outputs", [])
    )


def test_a_job_imports_the_kernels_modules_from_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")
    monkeypatch.setenv("TRAINORCH_MLFLOW", "off")
    project = _project(tmp_path / "project")
    gate = tmp_path / "gate"
    probe = "import mylib, helper; print(mylib.__file__)"
    cells = [
        f"%load_ext jupyter_trainorch\nimport mylib\nthing = mylib.Thing(3)\ngate = {str(gate)!r}",
        "%%train --name gate\nimport os, time\nwhile not os.path.exists(gate):\n    time.sleep(0.05)",
        "%%train --name remote --after gate --out seen\n"
        "import os, subprocess, sys\nimport mypkg.sub\n"
        f"child = subprocess.run([sys.executable, '-c', {probe!r}], cwd='/', capture_output=True, text=True)\n"
        "seen = {'mylib': sys.modules['mylib'].__file__, 'sub': mypkg.sub.__file__,\n"
        "        'value': thing.v + mypkg.sub.f() + sys.modules['helper'].X,\n"
        "        'child': child.stdout.strip() or child.stderr, 'cwd': os.getcwd()}",
        # Away before the job starts: a job reading the kernel's folder would fail.
        "remote = _\nimport os, shutil\nfor name in ('mylib.py', 'helper.py', 'mypkg'):\n"
        "    shutil.move(name, name + '.moved')\nopen(gate, 'w').close()\nprint(remote.wait(90))",
        "import json\nprint(json.dumps(remote.result()['seen']))",
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(cell) for cell in cells]
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(project)}}).execute()  # fmt: skip
    texts = [_text(cell) for cell in notebook.cells]
    assert texts[3].strip() == "succeeded", texts
    seen = json.loads(texts[4])
    modules = Path(seen["mylib"]).parent
    assert modules.name == "modules" and not modules.is_relative_to(project), seen
    assert seen["sub"] == str(modules / "mypkg" / "sub.py")
    assert seen["child"] == seen["mylib"]  # a process the job starts imports the same copy
    assert seen["value"] == 3 + 7 + 5 and seen["cwd"] == str(project)
    assert not (project / "mylib.py").exists()


def test_a_worker_with_other_versions_says_so_and_records_both(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from jupyter_trainorch.client import transport
    from jupyter_trainorch.client.job import submit

    monkeypatch.setenv("TRAINORCH_WORKERS", "1")
    monkeypatch.setenv("TRAINORCH_GPUS_PER_WORKER", "1")
    kernel_side = _distribution(tmp_path / "kernel-site", "1.0")
    worker_side = _distribution(tmp_path / "worker-site", "2.0")
    monkeypatch.syspath_prepend(str(kernel_side))
    transport.connect()

    source = "import tinydist, cloudpickle\nprint('running tinydist', tinydist.VERSION)\n"
    package = package_cell(source, {})
    assert json.loads(read_meta(package)[KERNEL_VERSIONS]) == {
        "cloudpickle": cloudpickle.__version__,
        "tinydist": "1.0",
    }
    # The worker's environment: the job's import path finds tinydist 2.0.
    path = os.pathsep.join(filter(None, [str(worker_side), os.environ.get("PYTHONPATH")]))
    job = submit(
        {"template": "python-cell", "name": "versions", "source": source,
         "overrides": {"env": {"PYTHONPATH": path}}},
        package,
    )  # fmt: skip
    assert job.wait(90) == "succeeded", job.logs()
    assert job.logs().splitlines() == [
        "warning: tinydist is 2.0 here but 1.0 in the kernel",
        "running tinydist 2.0",
    ]

    # Tracking never holds a job back: on a service just started, the run may come after.
    attempt_run = wait_until(
        lambda: job.to_dict()["attempts"][0]["mlflow_run_id"], timeout=60, what="the attempt's run"
    )
    client = MlflowClient(f"sqlite:///{Path(os.environ['TRAINORCH_DATA_DIR']) / 'mlflow.db'}")
    tags = wait_until(
        lambda: client.get_run(attempt_run).data.tags.get("trainorch.version_mismatch"),
        timeout=60, what="the attempt run's version tag",
    )  # fmt: skip
    assert tags == "tinydist 2.0 (kernel 1.0)"
    recorded = Path(
        client.download_artifacts(attempt_run, "trainorch/versions.json", str(tmp_path))
    ).read_text()
    assert json.loads(recorded) == {
        "cloudpickle": {"kernel": cloudpickle.__version__, "worker": cloudpickle.__version__},
        "tinydist": {"kernel": "1.0", "worker": "2.0"},
    }
    assert sys.modules.get("tinydist") is None  # the kernel only read its metadata
