"""The MLflow UI on the tracking store jobs log to.

One command line serves two callers: ``trainorch mlflow-ui`` (a terminal) and the copy that
JupyterLab starts on first use at ``<base_url>mlflow/`` through jupyter-server-proxy, so that a
run link works on a remote hub with no configuration and no port of its own.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

# MLflow's ids: digits for experiments, hex for runs (uuid4().hex); bounded so a link
# never carries anything else into a redirect.
EXPERIMENT_ID = re.compile(r"[0-9]{1,32}")
RUN_ID = re.compile(r"[0-9a-f]{32}")
PROXY_NAME = "mlflow"
# One worker starts in ~5-10 s; MLflow's four took ~20 s.
START_TIMEOUT_S = 90.0


def ui_command(uri: str, data_dir: Path, host: str, port: int | str) -> list[str]:
    """``mlflow ui`` on ``uri`` with one server worker.

    Experiments made in the UI keep their artifacts in the data folder (not ./mlartifacts of
    the working directory), as plain files, which jobs writing straight to SQLite can reach.
    """
    artifacts = (data_dir / "mlartifacts").resolve()
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            "--default-artifact-root", artifacts.as_uri(), "--no-serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip


def ui_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The UI's environment: MLflow's server also starts job runners (GenAI evaluations,
    trace roll-ups), seven more processes that browsing training runs does not use."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def run_fragment(experiment_id: str, run_id: str | None) -> str:
    """The UI's own route to a run (or to the experiment when no run is given)."""
    if run_id:
        return f"#/experiments/{experiment_id}/runs/{run_id}"
    return f"#/experiments/{experiment_id}"


def local_store(uri: str | None) -> bool:
    """Whether the UI for ``uri`` has to be started here (SQLite or a file store), rather
    than being an MLflow server of its own."""
    return bool(uri) and not str(uri).startswith(("http://", "https://", "databricks"))


def _proxy_command(port: int) -> list[str]:
    from ..settings import TrainOrch
    from .hooks import tracking_uri

    config = TrainOrch().to_config()
    uri = tracking_uri(config.mlflow, config.data_dir)
    if not local_store(uri):
        # Tracking is off or on an MLflow server: the link goes there (trainorch/mlflow);
        # say so rather than serve an empty store.
        message = "jobs are not tracked in a local store: trainorch/mlflow links to the server"
        return [sys.executable, "-c", f"import sys; sys.exit({message!r})"]
    config.data_dir.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not the folder
    return ui_command(str(uri), config.data_dir, "127.0.0.1", port)


def _proxy_environment() -> dict[str, str]:
    env: dict[str, str] = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # Behind a hub the browser's Origin is the hub's public one; MLflow refuses state-changing
    # calls (its run search is a POST) from origins it does not know.
    public = os.environ.get("JUPYTERHUB_PUBLIC_URL", "")
    if public:
        parts = urllib.parse.urlsplit(public)
        if parts.scheme and parts.netloc:
            env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = f"{parts.scheme}://{parts.netloc}"
    return env


def jupyter_proxy_server() -> dict[str, Any]:
    """jupyter-server-proxy's entry point: the UI at ``<base_url>mlflow/``, started on the
    first request and kept while the Jupyter server runs."""
    return {
        "command": _proxy_command,
        "environment": _proxy_environment,
        "timeout": START_TIMEOUT_S,
        # MLflow checks the Host header against loopback names; the browser's is the
        # Jupyter server's public one.
        "request_headers_override": {"Host": "127.0.0.1:{port}"},
        "launcher_entry": {"enabled": True, "title": "MLflow", "category": "Other"},
        "new_browser_tab": True,
    }
