"""``binder/``: the Binder (repo2docker) setup builds an image with a working extension.

repo2docker installs ``binder/environment.yml`` into its conda environment, then runs
``binder/postBuild`` from the repository's root. The test does the same without Docker or
conda: a fresh virtual environment takes the conda environment's place (Node is the
system's, which must be 20 or newer, as the environment pins it), a copy of the repository's
files the checkout's place (the build writes ``jupyter_trainorch/labextension/`` and
``labextension/node_modules/``), and ``postBuild`` installs the package there from the
package index, building the JupyterLab extension for production. Then the venv's own
``jupyter`` must list the extension and its Python package must import.

Where no Node 20 is on ``PATH`` the build test skips, saying so; under ``CI`` it fails
instead. It takes a few minutes (every dependency is installed, without pip's cache, as on
Binder), so it has a timeout of its own.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
BINDER = REPO / "binder"
_BUILD_TIMEOUT = 1500  # seconds for postBuild: pip install, jlpm install, the webpack build
NODE_MAJOR = 20  # what labextension/ needs to build


# -- the configuration files -----------------------------------------------------------------


def _environment() -> dict:
    return yaml.safe_load((BINDER / "environment.yml").read_text())


def _dependency(name: str) -> str:
    """The spec after a conda dependency's name (``"nodejs>=20"`` -> ``">=20"``)."""
    for dep in _environment()["dependencies"]:
        if isinstance(dep, str) and re.match(rf"{name}(?![\w-])", dep):
            return dep[len(name) :].strip()
    raise AssertionError(f"binder/environment.yml does not list {name}")


def test_environment_pins_node_20_or_newer() -> None:
    spec = _dependency("nodejs")
    # A lower bound: ">=20", "=20", "==20.*" (conda's "=20" means 20.*).
    bounds = [int(major) for _, major in re.findall(r"(>=|==?)\s*(\d+)", spec)]
    assert bounds and max(bounds) >= NODE_MAJOR, (
        f"binder/environment.yml must pin nodejs to {NODE_MAJOR} or newer, not {spec!r}"
    )


def test_environment_python_is_one_the_package_supports() -> None:
    spec = _dependency("python")
    version = re.fullmatch(r"=+\s*(\d+\.\d+)(\.\*)?", spec)
    assert version, f"binder/environment.yml must pin python to one x.y version, not {spec!r}"
    # (No tomllib before Python 3.11.)
    requires = re.search(r'^requires-python = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert requires, "pyproject.toml has no requires-python"
    requires = requires.group(1)
    assert SpecifierSet(requires).contains(version.group(1)), (version.group(1), requires)
    assert _environment()["channels"] == ["conda-forge"]
    # repo2docker ignores runtime.txt next to an environment.yml: one would only mislead.
    assert not (BINDER / "runtime.txt").exists()
    assert os.access(BINDER / "postBuild", os.X_OK)


# -- the build -------------------------------------------------------------------------------


def _node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60)
    found = re.match(r"v(\d+)\.", done.stdout.strip())
    return int(found.group(1)) if done.returncode == 0 and found else None


def _copy_repository(target: Path) -> None:
    """The files git would commit (tracked, and new ones not ignored), as they are now:
    no build outputs, no node_modules (``jlpm install`` runs inside the build)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
        names = [name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        names = [
            str(path.relative_to(REPO))
            for path in REPO.rglob("*")
            if not path.is_dir() and not {".git", "__pycache__"} & set(path.parts)
        ]
    for name in names:
        source = REPO / name
        # A node_modules link (to another checkout's) is not ignored by "node_modules/".
        if "node_modules" in Path(name).parts or not source.exists() or source.is_dir():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)


def _clean_env(venv: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Nothing of the test's own environment may make the venv's imports or Jupyter's
    # listings succeed: not the checkout on PYTHONPATH, not the user's Jupyter folders.
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIP_USER", "PIP_TARGET",
                 "PIP_PREFIX", "CONDA_PREFIX", "JUPYTER_PATH", "JUPYTER_PLATFORM_DIRS"):  # fmt: skip
        env.pop(name, None)
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
        VIRTUAL_ENV=str(venv),
        JUPYTER_CONFIG_DIR=str(home / "jupyter-config"),
        JUPYTER_DATA_DIR=str(home / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"),
        PYTHONNOUSERSITE="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    return env


def _labextensions(listing: str) -> dict[str, list[str]]:
    """``jupyter labextension list``'s extension lines, by the folder they were found in."""
    found: dict[str, list[str]] = {}
    folder = ""
    for line in re.sub(r"\x1b\[[0-9;]*m", "", listing).splitlines():
        if line.rstrip().endswith("labextensions") and not line.startswith(" "):
            folder = line.strip()
        elif line.startswith(" ") and folder:
            found.setdefault(folder, []).append(line.strip())
    return found


@pytest.mark.timeout(_BUILD_TIMEOUT + 300)
def test_post_build_installs_a_working_extension(tmp_path: Path) -> None:
    node = _node_major()
    if node is None or node < NODE_MAJOR:
        found = "node is not on PATH" if node is None else f"node on PATH is {node}"
        why = f"binder/postBuild builds the JupyterLab extension with Node >= {NODE_MAJOR}; {found}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)

    log = tmp_path / "postBuild.log"
    # The venv and the copy (every dependency, and node_modules) go when the test ends; the
    # log stays in tmp_path.
    with tempfile.TemporaryDirectory(prefix="trainorch-binder-") as work:
        root = Path(work)
        venv, repo = root / "venv", root / "repo"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        _copy_repository(repo)
        env = _clean_env(venv, root)

        started = time.monotonic()
        with log.open("w") as out:
            done = subprocess.run(["bash", "binder/postBuild"], cwd=repo, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=_BUILD_TIMEOUT)  # fmt: skip
        took = time.monotonic() - started
        output = log.read_text()
        print(f"binder/postBuild took {took:.0f} s; its log: {log}")
        assert done.returncode == 0, f"binder/postBuild exited {done.returncode}:\n{output[-6000:]}"
        assert "jupyter-trainorch is installed" in output
        # The build ran `jlpm install` itself: the copy had no node_modules.
        assert (repo / "labextension" / "node_modules").is_dir()

        # From the venv's own jupyter, in a folder without the sources: the installed copy.
        listing = subprocess.run([str(venv / "bin" / "jupyter"), "labextension", "list"],
                                 cwd=root, env=env, capture_output=True, text=True,
                                 timeout=120)  # fmt: skip
        extensions = _labextensions(listing.stdout + listing.stderr)
        ours = [
            line
            for folder, lines in extensions.items()
            if Path(folder).is_relative_to(venv)
            for line in lines
            if line.startswith("jupyter-trainorch ")
        ]
        assert len(ours) == 1 and re.search(r"\benabled\b.*\bOK\b", ours[0]), extensions
        assert "(python, jupyter-trainorch)" in ours[0]  # installed by the package (install.json)
        labextension = venv / "share" / "jupyter" / "labextensions" / "jupyter-trainorch"
        assert not labextension.is_symlink()  # a copy, not a development link
        assert list((labextension / "static").glob("remoteEntry.*.js"))

        imported = subprocess.run(
            [str(venv / "bin" / "python"), "-c",
             "import jupyter_trainorch, jupyter_trainorch.cli; print(jupyter_trainorch.__file__)"],
            cwd=root, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert imported.returncode == 0, imported.stderr[-3000:]
        # Installed into the venv (not an editable link to the copy of the repository).
        assert Path(imported.stdout.strip()).is_relative_to(venv), imported.stdout
