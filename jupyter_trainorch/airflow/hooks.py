"""``TrainorchHook``: the trainorch service that an Airflow connection points at.

The connection (type ``trainorch``, id ``trainorch_default`` unless told otherwise):
host = the service URL (``http://127.0.0.1:8765/``, or a hub service such as
``https://hub.example.org/services/trainorch/``), password = the service's token or a
JupyterHub API token with access to the service. A host without a scheme takes the
connection's schema (``http`` when empty) and port.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from ..client.transport import RECONNECT_FOR, HTTPTransport
from .compat import AirflowException, BaseHook

DEFAULT_CONNECTION = "trainorch_default"


def service_address(connection: Any) -> tuple[str, str]:
    """``(service URL, token)`` of an Airflow connection."""
    conn_id = connection.conn_id
    host = (connection.host or "").strip()
    if not host:
        raise AirflowException(
            f"Airflow connection {conn_id!r} has no host: set it to the trainorch service "
            "URL, e.g. http://127.0.0.1:8765/"
        )
    if "://" not in host:
        host = f"{connection.schema or 'http'}://{host}"
    parts = urllib.parse.urlsplit(host)
    if connection.port and parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{connection.port}")
    if not connection.password:
        raise AirflowException(
            f"Airflow connection {conn_id!r} has no password: set it to the trainorch "
            "service's token (or a JupyterHub API token with access to the service)"
        )
    return urllib.parse.urlunsplit(parts), connection.password


class TrainorchHook(BaseHook):
    """The REST client (``HTTPTransport``) of the connection ``trainorch_conn_id``."""

    conn_name_attr = "trainorch_conn_id"
    default_conn_name = DEFAULT_CONNECTION
    conn_type = "trainorch"
    hook_name = "Trainorch"

    def __init__(self, trainorch_conn_id: str = DEFAULT_CONNECTION) -> None:
        super().__init__()
        self.trainorch_conn_id = trainorch_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["login", "extra"],
            "relabeling": {"host": "Service URL", "password": "Token", "schema": "Scheme"},
            "placeholders": {
                "host": "https://hub.example.org/services/trainorch/",
                "password": "the service token or a JupyterHub API token",
            },
        }

    def get_conn(
        self, timeout: float = 60.0, reconnect_for: float = RECONNECT_FOR
    ) -> HTTPTransport:
        """A client that retries for ``reconnect_for`` seconds while the service restarts."""
        url, token = service_address(self.get_connection(self.trainorch_conn_id))
        return HTTPTransport(url, token, timeout=timeout, reconnect_for=reconnect_for)

    async def address(self) -> tuple[str, str]:
        """``(service URL, token)``, read without blocking the triggerer's event loop."""
        read = getattr(BaseHook, "aget_connection", None)  # Airflow 3.1+
        if read is not None:
            connection = await read(self.trainorch_conn_id)
        else:
            from asgiref.sync import sync_to_async

            connection = await sync_to_async(self.get_connection)(self.trainorch_conn_id)
        return service_address(connection)
