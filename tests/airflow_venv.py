"""The virtual environment with Apache Airflow that ``tests/test_airflow.py`` runs DAGs in.

Airflow pins many packages, so it never goes into the test environment: it gets a venv of
its own, made once and kept (``~/.cache/jupyter-trainorch/airflow-<version>-py<X.Y>``, or
``TRAINORCH_AIRFLOW_VENV``), with ``apache-airflow==AIRFLOW_VERSION`` installed from the
package index under the pins of ``tests/data/airflow/`` (as Airflow's own constraints files
pin it). This package is not installed there: the tests put its source on ``PYTHONPATH``,
and the venv gets the few requirements of its own that the Airflow side imports
(``PROVIDER_REQUIREMENTS``), as ``pip install jupyter-trainorch`` would bring them.

``python3 tests/airflow_venv.py`` (what ``.ci/run`` calls) makes it and prints its Python;
about 40 s the first time, nothing once it is there.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

AIRFLOW_VERSION = "3.3.2"
CONSTRAINTS = Path(__file__).parent / "data" / "airflow" / f"constraints-{AIRFLOW_VERSION}.txt"
# What jupyter_trainorch.airflow (through the client) imports besides Airflow's own pins.
PROVIDER_REQUIREMENTS = ["orjson>=3.9"]
# Written last, naming what is installed: a folder without it is an attempt that did not
# finish; one naming other requirements gets them installed.
_COMPLETE = ".trainorch-airflow-complete"
_MARK = f"{AIRFLOW_VERSION} {' '.join(PROVIDER_REQUIREMENTS)}\n"
_PIP_TIMEOUT = 900


class AirflowUnavailable(RuntimeError):
    """Why the venv cannot be made here (one sentence)."""


def venv_folder() -> Path:
    chosen = os.environ.get("TRAINORCH_AIRFLOW_VENV")
    if chosen:
        return Path(chosen).expanduser()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Path.home() / ".cache" / "jupyter-trainorch" / f"airflow-{AIRFLOW_VERSION}-py{version}"


def ensure_airflow_python() -> Path:
    """The venv's Python, making the venv first if it is not there."""
    try:
        return _ensure(venv_folder())
    except OSError as err:  # a cache folder that cannot be written, a full disk
        raise AirflowUnavailable(f"{venv_folder()}: {err.strerror or err}") from None


def _marked(folder: Path) -> bool:
    try:
        return (folder / _COMPLETE).read_text() == _MARK
    except OSError:
        return False


def _ensure(folder: Path) -> Path:
    python = folder / "bin" / "python"
    if _marked(folder):
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Test processes started at once (pytest-xdist) make it once, one after the other.
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _marked(folder):
            return python
        if folder.exists() and any(folder.iterdir()):
            if _has_airflow(python):  # made by hand, by an older version, or the mark was lost
                _install_provider_requirements(python)
                (folder / _COMPLETE).write_text(_MARK)
                return python
            if os.environ.get("TRAINORCH_AIRFLOW_VENV"):  # never remove a folder one named
                raise AirflowUnavailable(
                    f"{folder} (TRAINORCH_AIRFLOW_VENV) has no Apache Airflow {AIRFLOW_VERSION}: "
                    "remove it or name another folder"
                )
            shutil.rmtree(folder)  # our own attempt that did not finish
        _run([sys.executable, "-m", "venv", str(folder)], "python -m venv")
        _run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"apache-airflow=={AIRFLOW_VERSION}", "-c", str(CONSTRAINTS)],
            f"pip install apache-airflow=={AIRFLOW_VERSION}",
        )  # fmt: skip
        _install_provider_requirements(python)
        _run([str(python), "-c", "import airflow.sdk, httpx, jsonschema, orjson"], "import airflow")
        (folder / _COMPLETE).write_text(_MARK)
    return python


def _install_provider_requirements(python: Path) -> None:
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *PROVIDER_REQUIREMENTS, "-c", str(CONSTRAINTS)],
        f"pip install {' '.join(PROVIDER_REQUIREMENTS)}",
    )  # fmt: skip


def _has_airflow(python: Path) -> bool:
    check = f"import airflow, sys; sys.exit(airflow.__version__ != {AIRFLOW_VERSION!r})"
    try:
        return (
            subprocess.run([str(python), "-c", check], capture_output=True, timeout=120).returncode
            == 0
        )
    except OSError:
        return False


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise AirflowUnavailable(f"{what} failed: {err}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise AirflowUnavailable(f"{what} failed: {' / '.join(tail)}")


if __name__ == "__main__":
    try:
        print(ensure_airflow_python())
    except AirflowUnavailable as err:
        print(f"airflow_venv: {err}", file=sys.stderr)
        sys.exit(1)
