"""The base of the push channel's websockets (the service's and the server extension's)."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from tornado import websocket


class PushSocket(JupyterHandler, websocket.WebSocketHandler):
    """Authenticated like every route; one-way: messages from the client are ignored."""

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        result = super().get(*args, **kwargs)
        if result is not None:
            await result

    def on_message(self, message: Any) -> None:
        pass
