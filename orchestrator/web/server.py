"""The console's HTTP server: uvicorn, told to end the live feed's streams at shutdown.

uvicorn shuts down gracefully by waiting for every open response to finish. The live
feed's event streams never finish by themselves, so without help every open browser tab
made a shutdown wait out its grace period, then cancel the stream and log the
cancellation as an error. ``ConsoleServer`` ends the streams first, and the shutdown
finishes as soon as the other responses have.
"""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from orchestrator.web.events import Watcher


class ConsoleServer(uvicorn.Server):
    """uvicorn serving ``app`` (from ``create_app``), ending its event streams first at shutdown.

    Args:
        app: the console; its ``state.watcher`` owns the event streams.
        host: the address to listen on (ignored when ``run`` is given sockets).
        port: the port to listen on.
        grace_s: seconds the other responses may take to finish at shutdown.
    """

    def __init__(
        self, app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, grace_s: int = 3
    ) -> None:
        self._watcher: Watcher = app.state.watcher
        super().__init__(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=grace_s,
            )
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the open event streams, then shut down as uvicorn does."""
        self._watcher.end_streams()
        await super().shutdown(sockets)
