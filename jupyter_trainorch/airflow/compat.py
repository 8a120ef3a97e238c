"""The Airflow names the operator uses, from Airflow 3's task SDK or Airflow 2."""

from __future__ import annotations

from airflow.triggers.base import BaseTrigger, TriggerEvent

try:  # Airflow 3
    from airflow.sdk import BaseHook, BaseOperator
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
except ImportError:  # Airflow 2.10
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    from airflow.models import BaseOperator  # type: ignore[no-redef]

__all__ = [
    "AirflowException",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "BaseHook",
    "BaseOperator",
    "BaseTrigger",
    "TriggerEvent",
    "default_deferrable",
]


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` (False unless set)."""
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)
