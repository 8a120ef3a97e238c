"""Apache Airflow operator for trainorch jobs (importable where Airflow is installed).

    from jupyter_trainorch.airflow import TrainorchSubmitOperator

    train = TrainorchSubmitOperator(
        task_id="train", template="torch", job_params={"lr": 3e-4}, overrides={"gpus": 1}
    )

The task submits the job to the trainorch service of the Airflow connection
``trainorch_default`` (host: the service URL, password: its token or a JupyterHub API
token), waits for it (deferred to the triggerer by default where
``[operators] default_deferrable`` is set, or with ``deferrable=True``), pushes the job's
id, state, outputs and MLflow run to XCom, fails with the job's error sentence and
cancels the job when the task is killed. ``trainorch export ID --format airflow`` writes
a whole pipeline as a DAG of these tasks. ``import jupyter_trainorch`` never imports
Airflow; this subpackage does.
"""

from __future__ import annotations

try:
    import airflow  # noqa: F401
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        "jupyter_trainorch.airflow needs Apache Airflow: install apache-airflow where the "
        "DAGs run (the rest of jupyter_trainorch does not need it)"
    ) from err

from .hooks import DEFAULT_CONNECTION, TrainorchHook
from .operators import TrainorchSubmitOperator
from .triggers import TrainorchJobTrigger

__all__ = [
    "DEFAULT_CONNECTION",
    "TrainorchHook",
    "TrainorchJobTrigger",
    "TrainorchSubmitOperator",
    "get_provider_info",
]


def get_provider_info() -> dict[str, object]:
    """What Airflow's providers manager shows of this package (the ``trainorch``
    connection type in the UI); found through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "jupyter-trainorch",
        "name": "Trainorch",
        "description": "Submit trainorch training jobs to its REST API and wait for them.",
        "connection-types": [
            {
                "connection-type": TrainorchHook.conn_type,
                "hook-class-name": f"{TrainorchHook.__module__}.{TrainorchHook.__qualname__}",
                "hook-name": TrainorchHook.hook_name,
            }
        ],
    }
