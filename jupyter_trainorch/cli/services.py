"""Verbs that start services: the standalone orchestrator and the MLflow UI."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK, PROG


def cmd_serve(args: argparse.Namespace, rest: list[str]) -> int:
    from ..api.extension import TrainOrchApp

    # A standalone orchestrator is a headless service: no browser unless asked for.
    TrainOrchApp.launch_instance(argv=["--ServerApp.open_browser=False", *rest])
    return EXIT_OK


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the tracking store jobs log to (default: SQLite next to the job store)."""
    import subprocess

    from ..orchestrator import OrchestratorConfig
    from ..tracking import tracking_uri

    config = OrchestratorConfig.from_env()
    uri = tracking_uri(config.mlflow, config.data_dir)
    if uri is None:
        from ..spec.errors import SpecError

        raise SpecError("tracking is off (TRAINORCH_MLFLOW=off); there is no MLflow store to show")
    if uri.startswith(("http://", "https://")):
        print(f"{PROG}: jobs are tracked on the MLflow server at {uri}; open it there")
        return EXIT_OK
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", args.host, "--port", str(args.port)]  # fmt: skip
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port}", flush=True)
    return subprocess.call(command)
